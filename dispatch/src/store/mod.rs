//! Dispatch's state and operations, one module per concern, all written against one storage
//! interface ([`db::Tx`]) with two backends: a SQLite file in the state folder (the zero-setup
//! default) or a PostgreSQL database shared by several nodes (`--database`). Signing keys and the
//! key-encryption key are files in the state folder's `keys/` ([`keys`]), the same on every node.
//!
//! Every operation runs in one transaction that behaves as if it ran alone, so a failed request
//! leaves nothing half-written and two nodes never interleave.
//!
//! | concern | module |
//! |---|---|
//! | tables and their versioned upgrades | `schema` |
//! | enrolment tokens, devices, signed device requests | `enrolment` |
//! | parcels, their codes, delegates, operator actions on a parcel | `parcels` |
//! | manifests and deltas | `manifests` |
//! | uploads, the receipt ledger, histories | `receipts` |
//! | what a customer link opens | `customers` |
//! | the customer e-mail outbox | `mail` |
//! | signing keys and the key-encryption key | `keys` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use doorstep_core::crypto::{Code, DeviceSecret, SigningKey, VerifyingKey, random_bytes, sha256};
use doorstep_core::device::{Clock, SystemClock};
use doorstep_core::issuer::{
    ChainHead, CheckedBatch, CodeBook, EnrolledDevice, IssuedCode, IssuedParcel, Issuer, ManifestSpec, ParcelRecord,
    PriorHandover, ReceiptLedger, StoredReceipt, Verdict,
};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{
    DoorRules, Holder, ManifestKind, ReceiptBody, ReceiptEvent, ReceiptStatus, SignedReceipt, Stop, Task,
};
use doorstep_core::{CoreError, Result as CoreResult};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DispatchError, Result};
use crate::mail::{CodeMail, MailConfig};
use crate::operators::{Operator, audit};
use crate::sealing::{SealingKey, private_file, private_folder, write_private};
use crate::validate;

mod console;
mod customers;
pub(crate) mod db;
mod enrolment;
mod epcis;
mod evidence;
mod keys;
mod ledger;
mod mail;
mod manifests;
mod notices;
mod parcels;
mod receipts;
mod schema;

pub use console::{ConsoleParcel, ConsolePhone};
pub use customers::{CustomerPage, ParcelStatus};
pub use db::PostgresConfig;
pub(crate) use db::{Db, Tx, params};
pub use enrolment::VerifiedRequest;
use keys::{KEK_FILE, finish_kek_rotation, load_or_create_issuer};
pub use keys::{add_key, promote_key, rotate_kek};
pub use mail::Undelivered;
use mail::mail_aad;
pub use manifests::route_day_capacity;
pub use notices::{Alert, MAX_ALERTS};
use schema::{SCHEMA, has_sealed_rows, upgrade};

/// Parcels one route may carry on one day, at most; fewer when the code policy's delegates make
/// the worst-case manifest entry larger (see [`route_day_capacity`]).
pub const MAX_PARCELS_PER_ROUTE_DAY: usize = 5_000;

/// QR tokens a customer may fetch per parcel.
pub const MAX_QR_TOKENS_PER_HOLDER: u32 = 10;

/// Lockout resets an operator may make per parcel by default (each gives a full set of attempts).
pub const DEFAULT_RESETS_PER_PARCEL: u32 = 3;

/// A fixed, valid Ed25519 public key (RFC 8032, test 1). A request naming an unknown device is
/// verified against it only so that it takes as long as a known one; it is refused either way.
const NOBODYS_KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72,
    0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

/// The one answer to every device request that does not verify, whatever the reason.
const DEVICE_REFUSED: &str = "Device-Signature does not verify for this device (unknown device, bad signature, a \
     replay, or a clock more than 5 minutes off)";

/// Code reissues an operator may make per parcel (each one e-mails the customer and sends every
/// phone on the route a delta).
pub const MAX_REISSUES_PER_PARCEL: u32 = 3;

/// Delegates a customer may name or revoke per parcel, in all (each change is a delta to every
/// phone on the route; without a cap, renaming one delegate in a loop floods the route).
pub const MAX_DELEGATE_CHANGES_PER_PARCEL: u32 = 10;

/// How long an enrolment token stays valid by default.
pub const DEFAULT_ENROLMENT_TOKEN_HOURS: i64 = 24;

/// Which parcels need a code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HighValuePolicy {
    /// Declared value at or above which a code is required, in cents.
    pub value_threshold_cents: i64,
    /// Categories that always need a code.
    pub categories: Vec<String>,
    /// Categories handed over to the addressee only, after an ID check.
    pub addressee_only_categories: Vec<String>,
    /// Categories the customer inspects, opened, before taking them.
    pub open_box_categories: Vec<String>,
}

impl Default for HighValuePolicy {
    fn default() -> Self {
        HighValuePolicy {
            value_threshold_cents: 50_000,
            categories: vec!["electronics".into(), "jewellery".into()],
            addressee_only_categories: Vec::new(),
            open_box_categories: Vec::new(),
        }
    }
}

impl HighValuePolicy {
    pub fn needs_code(&self, p: &NewParcel) -> bool {
        p.declared_value_cents >= self.value_threshold_cents || self.categories.iter().any(|c| c == &p.category)
    }

    /// The parcel's rules at the door: its import's, and its category's.
    pub fn rules(&self, p: &NewParcel) -> DoorRules {
        DoorRules {
            addressee_only: p.addressee_only || self.addressee_only_categories.contains(&p.category),
            open_box: p.open_box || self.open_box_categories.contains(&p.category),
        }
    }
}

/// An order line as imported. Ids (`parcel_id`, `barcode`, `route_id`, `stop_id`, `category`)
/// are 1 to 128 bytes without control or invisible characters; hints at most 256 bytes.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "parcel_id": "P1", "barcode": "BC1", "route_id": "R1", "stop_id": "S1", "stop_sequence": 1,
    "delivery_date": "2026-11-28", "time_zone": "Europe/Berlin", "declared_value_cents": 120000,
    "category": "electronics", "customer_email": "anna@example.com",
    "address_hint": "3rd floor, left", "recipient_hint": "A. M."
}))]
#[serde(deny_unknown_fields)]
pub struct NewParcel {
    #[schema(min_length = 1, max_length = 128)]
    pub parcel_id: String,
    /// What the driver's phone scans.
    #[schema(min_length = 1, max_length = 128)]
    pub barcode: String,
    #[schema(min_length = 1, max_length = 128)]
    pub route_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub stop_id: String,
    /// The stop's place on the route, from 1.
    #[schema(minimum = 1)]
    pub stop_sequence: u32,
    /// The delivery day, `YYYY-MM-DD`: the code opens the parcel from local midnight to the next
    /// in `time_zone`.
    pub delivery_date: NaiveDate,
    /// IANA zone of the delivery address, e.g. "Europe/Berlin".
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// From the policy's threshold (`serve --value-threshold-cents`) the parcel needs a code.
    #[schema(minimum = 0)]
    pub declared_value_cents: i64,
    /// Categories in `serve --category` always need a code; may be empty.
    #[schema(max_length = 128)]
    pub category: String,
    /// Where the code e-mail goes (never shown to the driver).
    #[schema(max_length = 254, example = "anna@example.com")]
    pub customer_email: String,
    /// Shown to the driver; optional.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub address_hint: String,
    /// Shown to the driver; optional.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub recipient_hint: String,
    /// The parcel's SSCC, where it has one: 18 digits (check digit included) or an
    /// `urn:epc:id:sscc:` URN. EPCIS events name the parcel by it (`doorstep export --epcis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "340123450000000017")]
    pub sscc: Option<String>,
    /// Hand over to the addressee only, after an ID check (no delegate, no one else's QR token);
    /// also set by `serve --addressee-only-category`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub addressee_only: bool,
    /// The customer inspects the opened parcel before taking it (or refuses it); also set by
    /// `serve --open-box-category`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_box: bool,
    /// `delivery` (the default), or `pickup`: a return the driver collects from the customer, who
    /// is e-mailed a pickup code as they would be a delivery code.
    #[serde(default, skip_serializing_if = "Task::is_delivery")]
    #[schema(value_type = Option<String>, example = "pickup")]
    pub task: Task,
}

/// The service's state.
pub struct Dispatch {
    db: Db,
    issuer: Issuer,
    /// Every key on disk, including ones added but not yet promoted; announced in manifests so
    /// devices learn a new key before it signs.
    announced_keys: Vec<VerifyingKey>,
    policy: HighValuePolicy,
    code_policy: Policy,
    mail: MailConfig,
    /// How far a signed device request's time may be from the server's.
    request_skew_ms: i64,
    /// How long an enrolment token stays valid after it was created.
    enrolment_token_ttl_ms: i64,
    max_resets_per_parcel: u32,
    /// The key-encryption key every code and device secret is sealed under (`keys/kek`).
    kek: SealingKey,
    /// Dispatch's time: the system clock when serving, a test's or the demo's clock otherwise.
    /// Every instant dispatch records or judges by comes from here.
    clock: Arc<dyn Clock>,
    /// The minute this node last forgot request signatures older than the clock window.
    seen_purged_minute: std::sync::atomic::AtomicI64,
    /// Signed requests this node is answering now (their signatures' hashes): a copy arriving
    /// meanwhile is refused before it costs any work.
    answering: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Where customers reach this service (`https://dispatch.example`): code e-mails link the
    /// parcel's page under it. `None`: the e-mail carries only the app token.
    public_url: Option<String>,
}

fn bad(why: impl Into<String>) -> DispatchError {
    DispatchError::BadRequest(why.into())
}

/// The validity window of a delivery day: local midnight to the next local midnight in the
/// delivery's time zone, as UTC instants (23, 24 or 25 hours long across DST changes).
pub fn delivery_window(date: NaiveDate, zone: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let tz: Tz = zone.parse().map_err(|_| bad(format!("unknown time zone {zone:?}")))?;
    let local_midnight = |d: NaiveDate| {
        let naive = d.and_hms_opt(0, 0, 0).ok_or_else(|| bad("invalid date"))?;
        // Midnight may not exist (a DST jump at 00:00): take the earliest valid instant after it.
        (0..3)
            .find_map(|h| tz.from_local_datetime(&(naive + chrono::TimeDelta::hours(h))).earliest())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| bad("no valid local midnight"))
    };
    let next = date.succ_opt().ok_or_else(|| bad("date out of range"))?;
    Ok((local_midnight(date)?, local_midnight(next)?))
}

/// The delivery window of a parcel as stored (its `delivery_date` and `time_zone` columns).
fn stored_window(date: &str, zone: &str) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    delivery_window(date.parse().map_err(|_| bad("stored date"))?, zone)
}

impl Dispatch {
    /// Opens (creating) the state folder: `dispatch.db` and `keys/`. The first start creates the
    /// signing key `dispatch-1`.
    pub fn open(folder: &Path, policy: HighValuePolicy) -> Result<Dispatch> {
        Dispatch::open_with(folder, None, policy)
    }

    /// Opens dispatch with its state in `database` (PostgreSQL) when given, in the state folder's
    /// `dispatch.db` otherwise. The state folder keeps `keys/` (and `outbox/` when no relay is
    /// configured) either way. On PostgreSQL, every node must hold the same keys: the first node
    /// of a new database registers its keys there, and a node whose keys differ is refused.
    pub fn open_with(folder: &Path, database: Option<&PostgresConfig>, policy: HighValuePolicy) -> Result<Dispatch> {
        let keys_dir = folder.join("keys");
        let db_file = folder.join("dispatch.db");
        // Dispatch's own: it has the database or the keys folder (`doorstep keys add` before the
        // first start makes only that).
        let ours = db_file.exists() || keys_dir.is_dir();
        let foreign = folder.is_dir() && !ours && std::fs::read_dir(folder)?.next().is_some();
        if foreign {
            // Never chmod someone else's folder (`--state $HOME` by mistake).
            return Err(bad(format!(
                "{} is not empty and is no dispatch state folder: choose a new or an existing one",
                folder.display()
            )));
        }
        // The folder and every file in it are the owner's only: 0700 and 0600.
        private_folder(folder)?;
        private_folder(&keys_dir)?;
        for key_file in std::fs::read_dir(&keys_dir)? {
            private_file(&key_file?.path())?;
        }
        let kek_path = keys_dir.join(KEK_FILE);
        let (db, kek) = match database {
            None => Self::open_sqlite(folder, &kek_path)?,
            Some(config) => {
                let db = Db::postgres(config)?;
                db.run(schema::migrate_postgres)?;
                finish_kek_rotation(&keys_dir, &db)?;
                (db, SealingKey::load_or_create(&kek_path)?)
            }
        };
        let (issuer, announced_keys) = load_or_create_issuer(&keys_dir)?;
        db.run(|tx| keys::register(tx, &kek, &announced_keys))?;
        Ok(Dispatch {
            db,
            issuer,
            announced_keys,
            policy,
            code_policy: Policy::default(),
            mail: MailConfig::Folder(folder.join("outbox")),
            request_skew_ms: doorstep_core::protocol::REQUEST_SKEW_MS,
            enrolment_token_ttl_ms: DEFAULT_ENROLMENT_TOKEN_HOURS * 3_600_000,
            max_resets_per_parcel: DEFAULT_RESETS_PER_PARCEL,
            clock: Arc::new(SystemClock),
            kek,
            seen_purged_minute: std::sync::atomic::AtomicI64::new(i64::MIN),
            answering: Default::default(),
            public_url: None,
        })
    }

    /// The state folder's `dispatch.db`, created 0600 before SQLite opens it (SQLite gives its WAL
    /// and shared-memory files the database's mode) and brought up to this build's schema.
    fn open_sqlite(folder: &Path, kek_path: &Path) -> Result<(Db, SealingKey)> {
        let db = folder.join("dispatch.db");
        let fresh = !db.exists();
        if fresh {
            write_private(&db, b"")?;
        }
        for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
            private_file(&folder.join(file))?;
        }
        if !fresh && !kek_path.exists() && has_sealed_rows(&db)? {
            // A database restored without its keys: a new KEK would open none of its secrets.
            return Err(bad(format!(
                "{} is missing but dispatch.db holds sealed codes and device secrets: restore keys/ with it",
                kek_path.display()
            )));
        }
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        // secure_delete: freed pages are zeroed, so a secret an upgrade sealed or a row deleted
        // leaves no copy behind in the file.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
        conn.execute_batch(SCHEMA)?;
        let db = Db::sqlite(conn);
        finish_kek_rotation(&folder.join("keys"), &db)?;
        let kek = SealingKey::load_or_create(kek_path)?;
        db.with_sqlite(|conn| upgrade(conn, &kek)).unwrap_or(Ok(()))?;
        Ok((db, kek))
    }

    /// Takes dispatch's time from `clock` instead of the system clock (tests, benchmarks and the
    /// demo run a delivery day on any date this way).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Dispatch {
        self.clock = clock;
        self
    }

    /// Now, in milliseconds since the Unix epoch, from dispatch's clock.
    pub(crate) fn now_ms(&self) -> Result<i64> {
        self.clock.wall_time_ms().map_err(|e| DispatchError::Core(CoreError::Clock(e.0)))
    }

    /// Now, from dispatch's clock.
    pub fn now(&self) -> Result<DateTime<Utc>> {
        let ms = self.now_ms()?;
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| DispatchError::Core(CoreError::Clock(format!("clock reading {ms} ms is out of range"))))
    }

    /// How many lockout resets an operator may make per parcel.
    pub fn with_max_resets_per_parcel(mut self, max: u32) -> Dispatch {
        self.max_resets_per_parcel = max;
        self
    }

    /// How long enrolment tokens stay valid (at least a minute).
    pub fn with_enrolment_token_ttl(mut self, ttl: chrono::TimeDelta) -> Result<Dispatch> {
        if ttl < chrono::TimeDelta::minutes(1) {
            return Err(bad("an enrolment token must live at least a minute"));
        }
        self.enrolment_token_ttl_ms = ttl.num_milliseconds();
        Ok(self)
    }

    /// Sets the attempt limit and tag length that manifests carry (validated as the devices do).
    /// Which parcels need a code and which have rules at the door (`serve --category`,
    /// `--addressee-only-category`, `--open-box-category`).
    pub fn with_high_value_policy(mut self, policy: HighValuePolicy) -> Dispatch {
        self.policy = policy;
        self
    }

    pub fn with_code_policy(mut self, policy: Policy) -> Result<Dispatch> {
        policy.validate().map_err(|e| bad(e.to_string()))?;
        self.code_policy = policy;
        Ok(self)
    }

    /// Links each code e-mail to the parcel's page at `url` (`serve --public-url`; without it,
    /// `serve` uses the address it listens on).
    pub fn with_public_url(mut self, url: &str) -> Dispatch {
        self.public_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// The customer's page of `parcel_id` opened with `token` (what the code e-mail links).
    pub fn customer_link(&self, parcel_id: &str, token: &str) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|base| format!("{base}/parcel/{}/{}", crate::pages::segment(parcel_id), crate::pages::segment(token)))
    }

    /// Sends customer e-mail through `mail` instead of the state folder's `outbox/`.
    pub fn with_mail(mut self, mail: MailConfig) -> Dispatch {
        self.mail = mail;
        self
    }

    /// Runs `work` in one transaction (see [`Db::run`]).
    pub(crate) fn run<T>(&self, work: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.db.run(work)
    }

    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.issuer.verifying_keys()
    }
}

/// How a one-time token is kept: the hex SHA-256 (tokens are 128 random bits or more).
fn token_hash(token: &str) -> String {
    crate::operators::hex(&sha256(token.as_bytes()))
}

/// What a sealed code is bound to: its parcel, holder and issue instant (its row).
fn code_aad(parcel_id: &str, holder_key: &str, issued_at_ms: i64) -> String {
    format!("code/{parcel_id}/{holder_key}/{issued_at_ms}")
}

fn open_code(kek: &SealingKey, parcel_id: &str, holder_key: &str, issued_at_ms: i64, sealed: &[u8]) -> Result<Code> {
    let plain = kek.open(&code_aad(parcel_id, holder_key, issued_at_ms), sealed)?;
    Ok(Code::parse(std::str::from_utf8(&plain).map_err(|_| bad("stored code"))?)?)
}

fn device_secret_aad(device_id: &str) -> String {
    format!("device-secret/{device_id}")
}

#[cfg(test)]
impl Dispatch {
    /// The SQLite connection itself, for tests that look under the storage interface.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.db {
            Db::Sqlite(db) => db.lock(),
            Db::Postgres(_) => panic!("a SQLite test opened PostgreSQL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap().verifying_keys();
        let again = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap().verifying_keys();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys/dispatch-1.pk8")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    struct Vault;
    impl doorstep_core::device::KeyVault for Vault {
        fn seal(&self, p: &[u8]) -> Result<Vec<u8>, doorstep_core::device::HostError> {
            Ok(p.iter().map(|b| b ^ 0x77).collect())
        }
        fn unseal(&self, s: &[u8]) -> Result<Vec<u8>, doorstep_core::device::HostError> {
            self.seal(s)
        }
    }

    fn phone(
        d: &Dispatch,
        dir: &Path,
        name: &str,
        clock: &Arc<crate::SetClock>,
    ) -> (doorstep_core::device::Device, String) {
        let device = doorstep_core::device::Device::open(dir.join(name), Arc::new(Vault), clock.clone(), None).unwrap();
        let token = d.create_enrolment_token("R1", &Operator::loopback()).unwrap();
        device.complete_enrolment(&d.enrol(&token, &device.enrolment_request().unwrap()).unwrap()).unwrap();
        let id = device.status().unwrap().device_id.unwrap();
        (device, id)
    }

    #[test]
    fn a_rotated_key_is_announced_before_it_signs() {
        let state = tempfile::tempdir().unwrap();
        let phones = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2031, 2, 14).unwrap();
        let clock = Arc::new(crate::SetClock::at(date.and_hms_opt(9, 0, 0).unwrap().and_utc()));
        let open = || Dispatch::open(state.path(), HighValuePolicy::default()).unwrap().with_clock(clock.clone());
        let d = open();
        d.import_parcels(
            &[NewParcel {
                parcel_id: "P1".into(),
                barcode: "BC1".into(),
                route_id: "R1".into(),
                stop_id: "S1".into(),
                stop_sequence: 1,
                delivery_date: date,
                time_zone: "UTC".into(),
                declared_value_cents: 100_000,
                category: "books".into(),
                customer_email: "a@example.test".into(),
                address_hint: String::new(),
                recipient_hint: String::new(),
                sscc: None,
                addressee_only: false,
                open_box: false,
                task: Default::default(),
            }],
            &Operator::loopback(),
        )
        .unwrap();
        d.parcel_departed("P1", &Operator::loopback()).unwrap();
        let (synced, synced_id) = phone(&d, phones.path(), "synced.db", &clock);
        let (stale, stale_id) = phone(&d, phones.path(), "stale.db", &clock);
        synced.apply_manifest(&d.full_manifest(&synced_id, date).unwrap()).unwrap();
        stale.apply_manifest(&d.full_manifest(&stale_id, date).unwrap()).unwrap();
        drop(d);

        // Step 1: the new key is announced in manifests still signed by the old one.
        let new_key = add_key(state.path()).unwrap();
        assert_eq!(new_key, "dispatch-2");
        let d = open();
        synced.apply_manifest(&d.full_manifest(&synced_id, date).unwrap()).unwrap();
        drop(d);

        // Step 2: the new key signs. The phone that synced the announcement accepts it; the one
        // that did not refuses it (it must enrol again).
        promote_key(state.path(), &new_key).unwrap();
        let d = open();
        synced.apply_manifest(&d.full_manifest(&synced_id, date).unwrap()).unwrap();
        let refused = stale.apply_manifest(&d.full_manifest(&stale_id, date).unwrap());
        assert!(
            matches!(
                refused,
                Err(doorstep_core::CoreError::ManifestRejected(doorstep_core::error::ManifestRejection::UnknownKeyId(ref k)))
                    if k == "dispatch-2"
            ),
            "{refused:?}"
        );
        assert!(promote_key(state.path(), "dispatch-9").is_err());
    }

    #[test]
    fn the_delivery_day_follows_the_time_zone_across_dst() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let (from, to) = delivery_window(d(2026, 11, 26), "Europe/Berlin").unwrap();
        assert_eq!((from.to_rfc3339(), (to - from).num_hours()), ("2026-11-25T23:00:00+00:00".into(), 24));
        // Clocks go back on 2026-10-25 in Berlin: a 25-hour day; forward on 2026-03-29: 23 hours.
        let (from, to) = delivery_window(d(2026, 10, 25), "Europe/Berlin").unwrap();
        assert_eq!((to - from).num_hours(), 25);
        let (from, to) = delivery_window(d(2026, 3, 29), "Europe/Berlin").unwrap();
        assert_eq!((to - from).num_hours(), 23);
        assert!(delivery_window(d(2026, 3, 29), "Mars/Olympus").is_err());
    }

    #[test]
    fn a_state_folder_from_before_1_1_keeps_what_its_phones_hold_and_the_attempts_counted_and_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What an earlier build left: a phone that synced its route, a parcel with 4 attempts.
            let conn = Connection::open(dir.path().join("dispatch.db")).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "DROP TABLE parcel_sent; DROP TABLE wrong_attempt; DROP TABLE customer_link;
                 CREATE TABLE customer (email TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE);
                 INSERT INTO customer VALUES ('a@b.c', 'old-token');
                 INSERT INTO enrolment_token (token, route_id, created_at_ms) VALUES ('0123456789abcdef0123456789abcdef', 'R1', 0);
                 CREATE TABLE parcel_attempts (parcel_id TEXT PRIMARY KEY, attempts_used INTEGER NOT NULL, reset_at_ms INTEGER);
                 INSERT INTO device (device_id, route_id, secret, public_key, manifest_seq, manifest_date, enrolled_at_ms)
                     VALUES ('dev-1', 'R1', x'00', x'00', 3, '2026-11-26', 0);
                 INSERT INTO parcel (parcel_id, barcode, route_id, stop_id, stop_seq, delivery_date, time_zone, value_cents,
                                     category, customer_email, address_hint, recipient_hint, needs_code, departed_at_ms)
                     VALUES ('P1', 'B1', 'R1', 'S1', 1, '2026-11-26', 'UTC', 1, 'books', 'a@b.c', '', '', 1, 5),
                            ('P2', 'B2', 'R1', 'S1', 1, '2026-11-26', 'UTC', 1, 'books', 'a@b.c', '', '', 1, NULL),
                            ('P3', 'B3', 'R2', 'S1', 1, '2026-11-26', 'UTC', 1, 'books', 'a@b.c', '', '', 1, 5);
                 INSERT INTO parcel_attempts VALUES ('P1', 4, NULL);
                 INSERT INTO code (parcel_id, holder, code, issued_at_ms) VALUES ('P1', 'customer', '123456', 7);
                 INSERT INTO device (device_id, route_id, secret, public_key, enrolled_at_ms)
                     VALUES ('dev-2', 'R1', zeroblob(32), x'00', 0);",
            )
            .unwrap();
        }
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        let conn = d.lock();
        let sent: Vec<String> = conn
            .prepare("SELECT parcel_id FROM parcel_sent WHERE device_id = 'dev-1'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(sent, ["P1"], "departed parcels of the phone's route and day only");
        let counted: u32 =
            conn.query_row("SELECT attempts_used FROM wrong_attempt WHERE parcel_id = 'P1'", [], |r| r.get(0)).unwrap();
        assert_eq!(counted, 4, "the count kept before carries over (epoch 0)");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, schema::SCHEMA_VERSION);
        // Tokens are hashes now; the customer's old token became a link per parcel of theirs.
        let enrolment: String = conn.query_row("SELECT token FROM enrolment_token", [], |r| r.get(0)).unwrap();
        assert_eq!(enrolment, token_hash("0123456789abcdef0123456789abcdef"));
        let links: i64 = conn.query_row("SELECT count(*) FROM customer_link", [], |r| r.get(0)).unwrap();
        assert_eq!(links, 3, "P1, P2 and P3 are a@b.c's");
        // The code and the device secret kept in the clear are sealed now, and still read back.
        let (kind, stored): (String, Vec<u8>) =
            conn.query_row("SELECT typeof(code), code FROM code", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(kind, "blob");
        assert!(!stored.windows(6).any(|w| w == b"123456"));
        let secret: Vec<u8> =
            conn.query_row("SELECT secret FROM device WHERE device_id = 'dev-2'", [], |r| r.get(0)).unwrap();
        assert_ne!(secret, vec![0; 32]);
        drop(conn);
        assert_eq!(d.codes("P1").unwrap(), vec![(Holder::Customer, "123456".to_owned())]);
        // No freed page or WAL frame keeps the secrets the upgrade replaced (secure_delete, VACUUM).
        for file in ["dispatch.db", "dispatch.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            for secret in [&b"123456"[..], b"old-token", b"0123456789abcdef0123456789abcdef"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{file} keeps {secret:?}");
            }
        }
    }

    #[test]
    fn a_state_folder_whose_key_encryption_key_is_missing_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
            d.create_enrolment_token("R1", &Operator::loopback()).unwrap();
            d.import_parcels(&[sample_parcel()], &Operator::loopback()).unwrap();
            d.parcel_departed("P1", &Operator::loopback()).unwrap();
        }
        std::fs::remove_file(dir.path().join("keys").join(KEK_FILE)).unwrap();
        let refused = Dispatch::open(dir.path(), HighValuePolicy::default()).err().expect("refused").to_string();
        assert!(refused.contains("restore keys/"), "{refused}");
        assert!(!dir.path().join("keys").join(KEK_FILE).exists(), "no new key was made over the sealed data");
    }

    #[test]
    fn a_foreign_folder_is_not_taken_over_and_key_files_are_made_private() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("notes.txt"), b"mine").unwrap();
        assert!(Dispatch::open(home.path(), HighValuePolicy::default()).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            drop(Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap());
            let current = dir.path().join("keys").join(keys::CURRENT_KEY_FILE);
            std::fs::write(&current, "dispatch-1").unwrap();
            std::fs::set_permissions(&current, std::fs::Permissions::from_mode(0o644)).unwrap();
            drop(Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap());
            for file in std::fs::read_dir(dir.path().join("keys")).unwrap() {
                let path = file.unwrap().path();
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{path:?}");
            }
        }
    }

    #[test]
    fn a_route_takes_at_most_the_parcels_one_manifest_holds_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        {
            let conn = d.lock();
            let mut insert = conn
                .prepare(
                    "INSERT INTO parcel (parcel_id, barcode, route_id, stop_id, stop_seq, delivery_date, time_zone,
                                         value_cents, category, customer_email, address_hint, recipient_hint, needs_code)
                     VALUES (?1, ?1, 'R1', 'S', 1, '2026-11-26', 'UTC', 1, 'books', 'a@b.test', '', '', 0)",
                )
                .unwrap();
            for i in 0..route_day_capacity(&Policy::default()) {
                insert.execute([format!("F{i}")]).unwrap();
            }
        }
        let refused = d.import_parcels(&[sample_parcel()], &Operator::loopback()).unwrap_err();
        assert!(matches!(refused, DispatchError::Conflict(_)), "{refused}");
    }

    /// The review built 40 parcels with every field at its widest and extrapolated: 5,000 of them
    /// made a 16.6 MiB manifest that every phone of the route refuses. A full manifest of
    /// `route_day_capacity` such entries, signed as dispatch signs it, fits; a tenth more would not.
    #[test]
    fn a_full_manifest_at_the_route_capacity_fits_a_phone_whatever_the_fields_hold() {
        use doorstep_core::protocol::{MAX_MANIFEST_BYTES, ManifestPayload};
        for max_delegates in [0, 3, 15] {
            let policy = Policy { max_delegates, ..Policy::default() };
            let capacity = route_day_capacity(&policy);
            eprintln!("{max_delegates} delegates: {capacity} parcels per route-day");
            let issuer = Issuer::new(SigningKey::generate("k1").unwrap());
            let size = |n: usize| {
                let payload = ManifestPayload {
                    manifest_id: "M".repeat(128),
                    device_id: "d".repeat(128),
                    route_id: "\"".repeat(128),
                    delivery_date: NaiveDate::MAX,
                    time_zone: "America/Argentina/ComodRivadavia".into(),
                    issued_at: DateTime::<Utc>::MAX_UTC,
                    sequence: i64::MAX as u64,
                    kind: ManifestKind::Full,
                    policy,
                    parcels: vec![manifests::widest_entry(&policy); n],
                    removals: Vec::new(),
                    resets: Vec::new(),
                    dispatch_keys: vec![issuer.verifying_keys()[0].clone(); 4],
                };
                issuer.sign_manifest(&payload).unwrap().len()
            };
            assert!(size(capacity) <= MAX_MANIFEST_BYTES, "{max_delegates} delegates: {capacity} parcels");
            if capacity < MAX_PARCELS_PER_ROUTE_DAY {
                assert!(size(capacity + capacity / 10) > MAX_MANIFEST_BYTES, "the bound is not far below the limit");
            }
        }
        assert!(route_day_capacity(&Policy::default()) < MAX_PARCELS_PER_ROUTE_DAY);
    }

    fn sample_parcel() -> NewParcel {
        NewParcel {
            parcel_id: "P1".into(),
            barcode: "BC1".into(),
            route_id: "R1".into(),
            stop_id: "S1".into(),
            stop_sequence: 1,
            delivery_date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
            time_zone: "UTC".into(),
            declared_value_cents: 100_000,
            category: "books".into(),
            customer_email: "a@example.test".into(),
            address_hint: "1 Elm St".into(),
            recipient_hint: "A. B.".into(),
            sscc: None,
            addressee_only: false,
            open_box: false,
            task: Default::default(),
        }
    }

    #[test]
    fn rotating_the_kek_reseals_everything_and_a_run_cut_short_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let code = {
            let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
            d.import_parcels(&[sample_parcel()], &Operator::loopback()).unwrap();
            d.parcel_departed("P1", &Operator::loopback()).unwrap().unwrap()
        };
        let kek = || std::fs::read(dir.path().join("keys").join(KEK_FILE)).unwrap();
        let before = kek();
        assert_eq!(rotate_kek(dir.path(), None).unwrap(), 1);
        let after = kek();
        assert_ne!(before, after, "a new key");
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert_eq!(d.codes("P1").unwrap()[0].1, code, "every secret still opens");
        drop(d);
        // Cut short after the commit, before the files were swapped: the next open finishes it.
        keys::rotate_kek_until(dir.path(), None, false).unwrap();
        assert!(dir.path().join("keys").join(keys::NEXT_KEK_FILE).exists());
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert_eq!(d.codes("P1").unwrap()[0].1, code);
        assert!(!dir.path().join("keys").join(keys::NEXT_KEK_FILE).exists());
        assert_ne!(kek(), after);
    }

    /// The fourth review: a rotation cut short before its file swap, then a start on another
    /// database (one that never saw these keys) deleted `kek.next`, the only key to the rotated
    /// data. Both files are kept and the start is refused; the right database finishes it.
    #[test]
    fn a_rotation_left_over_is_kept_when_neither_key_opens_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let code = {
            let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
            d.import_parcels(&[sample_parcel()], &Operator::loopback()).unwrap();
            d.parcel_departed("P1", &Operator::loopback()).unwrap().unwrap()
        };
        keys::rotate_kek_until(dir.path(), None, false).unwrap();
        let aside = tempfile::tempdir().unwrap();
        for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
            let _ = std::fs::rename(dir.path().join(file), aside.path().join(file));
        }
        let refused = Dispatch::open(dir.path(), HighValuePolicy::default()).err().expect("refused");
        assert!(refused.to_string().contains("neither it nor keys/kek opens this database"), "{refused}");
        assert!(dir.path().join("keys").join(keys::NEXT_KEK_FILE).exists(), "the rotated key is kept");
        for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(file));
            let _ = std::fs::rename(aside.path().join(file), dir.path().join(file));
        }
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert_eq!(d.codes("P1").unwrap()[0].1, code, "the right database finishes the rotation");
        assert!(!dir.path().join("keys").join(keys::NEXT_KEK_FILE).exists());
    }

    /// The fourth review: a node left running through a KEK rotation kept sealing new codes under
    /// the old key, which no node could open again (the route's manifests then failed). It now
    /// refuses, and stores nothing.
    #[test]
    fn a_node_left_running_through_a_kek_rotation_seals_nothing_under_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let running = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        let mut second = sample_parcel();
        (second.parcel_id, second.barcode) = ("P2".into(), "B2".into());
        running.import_parcels(&[sample_parcel(), second], &Operator::loopback()).unwrap();
        running.parcel_departed("P1", &Operator::loopback()).unwrap();
        rotate_kek(dir.path(), None).unwrap();
        let refused = running.parcel_departed("P2", &Operator::loopback()).unwrap_err();
        assert!(refused.to_string().contains("rotated away"), "{refused}");
        drop(running);
        let restarted = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert!(restarted.codes("P2").unwrap().is_empty(), "nothing was sealed under the old key");
        let code = restarted.parcel_departed("P2", &Operator::loopback()).unwrap().unwrap();
        assert_eq!(restarted.codes("P2").unwrap()[0].1, code);
        assert_eq!(restarted.codes("P1").unwrap().len(), 1);
    }
}
