//! Dispatch's state and operations: enrolment tokens, devices, parcels and their codes, manifests,
//! and the receipt ledger, in one SQLite file; signing keys as files beside it.
//!
//! All writes go through one connection behind a mutex, each operation in one transaction, so a
//! failed request leaves nothing half-written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use doorstep_core::crypto::{Code, DeviceSecret, SigningKey, VerifyingKey, random_bytes, sha256};
use doorstep_core::device::{Clock, SystemClock};
use doorstep_core::issuer::{
    ChainHead, CodeBook, EnrolledDevice, IssuedCode, IssuedParcel, Issuer, ManifestSpec, ParcelRecord, PriorHandover,
    ReceiptLedger, StoredReceipt, Verdict,
};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{Holder, ManifestKind, ReceiptBody, ReceiptEvent, ReceiptStatus, SignedReceipt, Stop};
use doorstep_core::{CoreError, Result as CoreResult};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DispatchError, Result};
use crate::mail::{CodeMail, MailConfig};
use crate::operators::{Operator, audit};
use crate::sealing::{SealingKey, private_file, private_folder, write_private};
use crate::validate;

mod customers;
mod mail;
mod schema;

use mail::mail_aad;
use schema::{SCHEMA, has_sealed_rows, upgrade};

/// Parcels one route may carry on one day, at most; fewer when the code policy's delegates make
/// the worst-case manifest entry larger (see [`route_day_capacity`]).
pub const MAX_PARCELS_PER_ROUTE_DAY: usize = 5_000;

/// How many parcels a phone's full manifest (at most `MAX_MANIFEST_BYTES`, 16 MiB) holds when every
/// entry is as large as the API lets it be: ids and hints at their longest and made of `"` (two
/// bytes each in JSON), every holder the policy allows with the longest label, and the payload
/// base64-encoded in the envelope. Measured on a real entry, so it follows the wire format.
pub fn route_day_capacity(policy: &Policy) -> usize {
    let json = serde_json::to_vec(&widest_entry(policy)).map_or(usize::MAX, |b| b.len() + 1);
    // Base64 in the envelope: 4 bytes for every 3; 64 KiB kept for the manifest's own fields.
    let per_entry = json.div_ceil(3) * 4;
    ((doorstep_core::protocol::MAX_MANIFEST_BYTES - 64 * 1024) / per_entry).min(MAX_PARCELS_PER_ROUTE_DAY)
}

/// The largest manifest entry the API lets a parcel have under `policy`.
fn widest_entry(policy: &Policy) -> doorstep_core::protocol::ParcelEntry {
    use doorstep_core::crypto::Tag;
    use doorstep_core::protocol::{Base64Bytes, HolderTag, MAX_HINT_LEN, MAX_ID_LEN, ParcelEntry, SALT_LEN};
    let widest = |n: usize| "\"".repeat(n);
    let holders = (0..=usize::from(policy.max_delegates)).map(|i| HolderTag {
        holder: if i == 0 { Holder::Customer } else { Holder::Delegate(widest(validate::MAX_LABEL_LEN)) },
        tag: Base64Bytes(vec![0xff; Tag::len_for(policy.tag_bits)]),
        qr_minted_after: Some(DateTime::<Utc>::MAX_UTC),
    });
    ParcelEntry {
        parcel_id: widest(MAX_ID_LEN),
        barcode: widest(MAX_ID_LEN),
        stop: Stop { id: widest(MAX_ID_LEN), sequence: u32::MAX },
        address_hint: widest(MAX_HINT_LEN),
        recipient_hint: widest(MAX_HINT_LEN),
        salt: Base64Bytes(vec![0xff; SALT_LEN]),
        tags: holders.collect(),
        not_before: DateTime::<Utc>::MAX_UTC,
        not_after: DateTime::<Utc>::MAX_UTC,
        attempts_used: u32::MAX,
        attempt_epoch: u32::MAX,
    }
}

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
}

impl Default for HighValuePolicy {
    fn default() -> Self {
        HighValuePolicy { value_threshold_cents: 50_000, categories: vec!["electronics".into(), "jewellery".into()] }
    }
}

impl HighValuePolicy {
    pub fn needs_code(&self, p: &NewParcel) -> bool {
        p.declared_value_cents >= self.value_threshold_cents || self.categories.iter().any(|c| c == &p.category)
    }
}

/// An order line as imported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewParcel {
    pub parcel_id: String,
    pub barcode: String,
    pub route_id: String,
    pub stop_id: String,
    pub stop_sequence: u32,
    pub delivery_date: NaiveDate,
    /// IANA zone of the delivery address, e.g. "Europe/Berlin".
    pub time_zone: String,
    pub declared_value_cents: i64,
    pub category: String,
    pub customer_email: String,
    #[serde(default)]
    pub address_hint: String,
    #[serde(default)]
    pub recipient_hint: String,
}

/// The service's state.
pub struct Dispatch {
    conn: Mutex<Connection>,
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
        // The folder and every file in it are the owner's only: 0700 and 0600 (the database is
        // created 0600 before SQLite opens it; SQLite gives its WAL and shared-memory files the
        // database's mode).
        let db = folder.join("dispatch.db");
        // Dispatch's own: it has the database or the keys folder (`doorstep keys add` before the
        // first start makes only that).
        let ours = db.exists() || folder.join("keys").is_dir();
        let foreign = folder.is_dir() && !ours && std::fs::read_dir(folder)?.next().is_some();
        if foreign {
            // Never chmod someone else's folder (`--state $HOME` by mistake).
            return Err(bad(format!(
                "{} is not empty and is no dispatch state folder: choose a new or an existing one",
                folder.display()
            )));
        }
        private_folder(folder)?;
        private_folder(&folder.join("keys"))?;
        let fresh = !db.exists();
        if fresh {
            write_private(&db, b"")?;
        }
        for file in ["dispatch.db", "dispatch.db-wal", "dispatch.db-shm"] {
            private_file(&folder.join(file))?;
        }
        for key_file in std::fs::read_dir(folder.join("keys"))? {
            private_file(&key_file?.path())?;
        }
        let kek_path = folder.join("keys").join(KEK_FILE);
        finish_kek_rotation(&folder.join("keys"), &db)?;
        if !fresh && !kek_path.exists() && has_sealed_rows(&db)? {
            // A database restored without its keys: a new KEK would open none of its secrets.
            return Err(bad(format!(
                "{} is missing but dispatch.db holds sealed codes and device secrets: restore keys/ with it",
                kek_path.display()
            )));
        }
        let kek = SealingKey::load_or_create(&kek_path)?;
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        // secure_delete: freed pages are zeroed, so a secret an upgrade sealed or a row deleted
        // leaves no copy behind in the file.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
        conn.execute_batch(SCHEMA)?;
        upgrade(&conn, &kek)?;
        let (issuer, announced_keys) = load_or_create_issuer(&folder.join("keys"))?;
        Ok(Dispatch {
            conn: Mutex::new(conn),
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
        })
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
    pub fn with_code_policy(mut self, policy: Policy) -> Result<Dispatch> {
        policy.validate().map_err(|e| bad(e.to_string()))?;
        self.code_policy = policy;
        Ok(self)
    }

    /// Sends customer e-mail through `mail` instead of the state folder's `outbox/`.
    pub fn with_mail(mut self, mail: MailConfig) -> Dispatch {
        self.mail = mail;
        self
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.issuer.verifying_keys()
    }

    /// A one-time token that enrols one device for `route_id`.
    pub fn create_enrolment_token(&self, route_id: &str, by: &Operator) -> Result<String> {
        validate::id("route_id", route_id)?;
        let token = Uuid::from_bytes(random_bytes::<16>().map_err(DispatchError::Core)?).simple().to_string();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = self.now_ms()?;
        tx.execute(
            "INSERT INTO enrolment_token (token, route_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash(&token), route_id, now, now.saturating_add(self.enrolment_token_ttl_ms)],
        )?;
        audit(&tx, now, by, "enrolment_token", None, Some(&format!("route {route_id}")))?;
        tx.commit()?;
        Ok(token)
    }

    /// Enrols a device with a one-time token; returns the enrolment bundle (contains the device
    /// secret: answer only over TLS).
    pub fn enrol(&self, token: &str, request: &[u8]) -> Result<Vec<u8>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let route: Option<(String, Option<String>, i64, Option<i64>)> = tx
            .query_row(
                "SELECT route_id, used_by, created_at_ms, expires_at_ms FROM enrolment_token WHERE token = ?1",
                [token_hash(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        // Tokens made before their expiry was stored live the default lifetime.
        let default_end = |created: i64| created.saturating_add(DEFAULT_ENROLMENT_TOKEN_HOURS * 3_600_000);
        let route_id = match route {
            None => return Err(DispatchError::Forbidden("unknown enrolment token".into())),
            Some((_, Some(_), _, _)) => return Err(DispatchError::Forbidden("enrolment token already used".into())),
            Some((_, None, created, expires)) if self.now_ms()? >= expires.unwrap_or_else(|| default_end(created)) => {
                return Err(DispatchError::Forbidden("enrolment token expired; ask for a new one".into()));
            }
            Some((route_id, None, _, _)) => route_id,
        };
        let device_id = format!("dev-{}", Uuid::now_v7().simple());
        let (device, bundle) = self.issuer.enrol(request, &device_id, self.now()?)?;
        let key_taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM device WHERE public_key = ?1)",
            [device.public_key.public.to_vec()],
            |r| r.get(0),
        )?;
        if key_taken {
            return Err(DispatchError::Conflict("this device key is already enrolled".into()));
        }
        tx.execute(
            "INSERT INTO device (device_id, route_id, secret, public_key, enrolled_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                device_id,
                route_id,
                self.kek.seal(&device_secret_aad(&device_id), device.secret.expose())?,
                device.public_key.public.to_vec(),
                self.now_ms()?
            ],
        )?;
        tx.execute("UPDATE enrolment_token SET used_by = ?1 WHERE token = ?2", params![device_id, token_hash(token)])?;
        tx.commit()?;
        Ok(bundle)
    }

    /// Imports order lines (all or nothing); returns how many need a code under the policy.
    pub fn import_parcels(&self, parcels: &[NewParcel], by: &Operator) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = self.now_ms()?;
        let mut coded = 0;
        for p in parcels {
            validate::new_parcel(p)?;
            delivery_window(p.delivery_date, &p.time_zone)?;
            let on_route: i64 = tx.query_row(
                "SELECT count(*) FROM parcel WHERE route_id = ?1 AND delivery_date = ?2",
                params![p.route_id, p.delivery_date.to_string()],
                |r| r.get(0),
            )?;
            self.room_on_route(on_route, &p.route_id, p.delivery_date)?;
            let needs_code = self.policy.needs_code(p);
            coded += usize::from(needs_code);
            tx.execute(
                "INSERT INTO parcel (parcel_id, barcode, route_id, stop_id, stop_seq, delivery_date, time_zone,
                                     value_cents, category, customer_email, address_hint, recipient_hint, needs_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    p.parcel_id,
                    p.barcode,
                    p.route_id,
                    p.stop_id,
                    p.stop_sequence,
                    p.delivery_date.to_string(),
                    p.time_zone,
                    p.declared_value_cents,
                    p.category,
                    p.customer_email,
                    p.address_hint,
                    p.recipient_hint,
                    needs_code
                ],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    DispatchError::Conflict(format!("parcel {} or its barcode already exists", p.parcel_id))
                }
                _ => e.into(),
            })?;
            audit(&tx, now, by, "import", Some(&p.parcel_id), Some(&format!("route {}", p.route_id)))?;
        }
        tx.commit()?;
        Ok(coded)
    }

    /// "Left the warehouse": the parcel goes on the van; a high-value parcel gets its customer code,
    /// and phones already holding the route's manifest get it as a delta. Returns the code (to
    /// e-mail to the customer), or None when no code is needed. Idempotent.
    pub fn parcel_departed(&self, parcel_id: &str, by: &Operator) -> Result<Option<String>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (needs_code, already): (bool, bool) = tx
            .query_row(
                "SELECT needs_code, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
                [parcel_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        tx.execute(
            "UPDATE parcel SET departed_at_ms = coalesce(departed_at_ms, ?2) WHERE parcel_id = ?1",
            params![parcel_id, self.now_ms()?],
        )?;
        let mut queued = None;
        let code = if needs_code {
            let existing = self.codes_of(&tx, parcel_id)?.into_iter().find(|(h, _)| *h == Holder::Customer);
            match existing {
                Some((_, c)) => Some(c.reveal().to_owned()),
                None => {
                    let code = self.store_code(&tx, parcel_id, &Holder::Customer)?;
                    // Queued in the same transaction: the code exists only with its e-mail.
                    queued = Some(self.mail_code(&tx, parcel_id, code.reveal(), false)?);
                    Some(code.reveal().to_owned())
                }
            }
        } else {
            None
        };
        if !already {
            audit(&tx, self.now_ms()?, by, "departed", Some(parcel_id), None)?;
            let (route, date) = Self::route_and_date(&tx, parcel_id)?;
            let entry: Vec<IssuedParcel> = self.parcel_entry(&tx, parcel_id)?.into_iter().collect();
            self.push_delta(&tx, &route, date, entry, vec![], vec![])?;
        }
        tx.commit()?;
        drop(conn);
        if let Some(mail) = queued {
            self.mail_now(mail);
        }
        Ok(code)
    }

    /// Names a trusted person who may receive the parcel with their own code; returns that code
    /// (for the customer to pass on). Only for parcels that need a code.
    pub fn name_delegate(&self, parcel_id: &str, label: &str) -> Result<String> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let code = self.name_delegate_in(&tx, parcel_id, label)?;
        tx.commit()?;
        Ok(code)
    }

    fn name_delegate_in(&self, tx: &Transaction<'_>, parcel_id: &str, label: &str) -> Result<String> {
        validate::label(label)?;
        Self::count_delegate_change(tx, parcel_id)?;
        // The policy's cap: each delegate is another valid code at the door. Renaming a delegate
        // already named replaces its code and does not count twice.
        let holder = Holder::Delegate(label.to_owned()).to_key();
        let others: u32 = tx.query_row(
            "SELECT count(DISTINCT holder) FROM code
             WHERE parcel_id = ?1 AND holder LIKE 'delegate:%' AND holder != ?2 AND revoked_at_ms IS NULL",
            params![parcel_id, holder],
            |r| r.get(0),
        )?;
        if others >= u32::from(self.code_policy.max_delegates) {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} already has {others} delegates, the most the policy allows"
            )));
        }
        let code = self.issue_code(tx, parcel_id, &Holder::Delegate(label.to_owned()))?;
        Ok(code.reveal().to_owned())
    }

    /// Refuses the change once a parcel's delegates changed [`MAX_DELEGATE_CHANGES_PER_PARCEL`]
    /// times (named or revoked); counts it otherwise.
    fn count_delegate_change(tx: &Transaction<'_>, parcel_id: &str) -> Result<()> {
        let counted = tx.execute(
            "INSERT INTO delegate_changes (parcel_id, changes) VALUES (?1, 1)
             ON CONFLICT (parcel_id) DO UPDATE SET changes = changes + 1 WHERE changes < ?2",
            params![parcel_id, MAX_DELEGATE_CHANGES_PER_PARCEL],
        )?;
        if counted == 0 {
            return Err(DispatchError::Conflict(format!(
                "the delegates of parcel {parcel_id} changed {MAX_DELEGATE_CHANGES_PER_PARCEL} times, the most allowed; \
                 the delegates named now keep their codes"
            )));
        }
        Ok(())
    }

    /// Issues a new code for `holder` on a parcel that needs one, replacing the holder's earlier
    /// code on the devices that carry the parcel (a delta). Dispatch keeps the earlier code, so
    /// proofs made with it still verify.
    fn issue_code(&self, tx: &Transaction<'_>, parcel_id: &str, holder: &Holder) -> Result<Code> {
        let (route, date) = Self::route_and_date(tx, parcel_id)?;
        let needs_code: bool =
            tx.query_row("SELECT needs_code FROM parcel WHERE parcel_id = ?1", [parcel_id], |r| r.get(0))?;
        if !needs_code {
            return Err(DispatchError::Conflict(format!("parcel {parcel_id} needs no code")));
        }
        let code = self.store_code(tx, parcel_id, holder)?;
        let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
        if !entry.is_empty() {
            self.push_delta(tx, &route, date, entry, vec![], vec![])?;
        }
        Ok(code)
    }

    /// A fresh code for `holder`, stored sealed (never in the clear at rest).
    fn store_code(&self, tx: &Transaction<'_>, parcel_id: &str, holder: &Holder) -> Result<Code> {
        let code = Code::generate()?;
        let (key, issued) = (holder.to_key(), self.now_ms()?);
        let sealed = self.kek.seal(&code_aad(parcel_id, &key, issued), code.reveal().as_bytes())?;
        tx.execute(
            "INSERT INTO code (parcel_id, holder, code, issued_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![parcel_id, key, sealed, issued],
        )?;
        Ok(code)
    }

    /// A QR token for the customer app: signed by dispatch, for one parcel and holder, valid for
    /// the parcel's delivery day.
    pub fn qr_token(&self, parcel_id: &str, holder: Holder) -> Result<String> {
        self.qr_token_in(&self.lock(), parcel_id, holder)
    }

    fn qr_token_in(&self, conn: &Connection, parcel_id: &str, holder: Holder) -> Result<String> {
        let (date, zone): (String, String) = conn
            .query_row("SELECT delivery_date, time_zone FROM parcel WHERE parcel_id = ?1", [parcel_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        let (not_before, not_after) = stored_window(&date, &zone)?;
        Ok(self.issuer.sign_qr(&doorstep_core::protocol::QrToken {
            parcel_id: parcel_id.to_owned(),
            holder,
            not_before,
            not_after,
            nonce: doorstep_core::protocol::Base64Bytes(random_bytes::<16>()?.to_vec()),
            issued_at: Some(self.now()?),
        })?)
    }

    /// The current code of each holder of a parcel (the customer's own view; tests).
    pub fn codes(&self, parcel_id: &str) -> Result<Vec<(Holder, String)>> {
        Ok(self.codes_of(&self.lock(), parcel_id)?.into_iter().map(|(h, c)| (h, c.reveal().to_owned())).collect())
    }

    fn device(&self, tx: &Transaction<'_>, device_id: &str) -> Result<(EnrolledDevice, String, i64)> {
        let row: Option<(String, Vec<u8>, i64)> = tx
            .query_row("SELECT route_id, secret, manifest_seq FROM device WHERE device_id = ?1", [device_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (route_id, secret, seq) = row.ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?;
        let public_key =
            Self::device_key(tx, device_id)?.ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?;
        let device = EnrolledDevice {
            device_id: device_id.to_owned(),
            secret: DeviceSecret::from_bytes(&self.kek.open(&device_secret_aad(device_id), &secret)?)?,
            public_key,
        };
        Ok((device, route_id, seq))
    }

    /// A device's enrolled request- and receipt-signing key (`None` for an unknown device): all a
    /// request's signature needs, without unsealing the device secret.
    fn device_key(tx: &Transaction<'_>, device_id: &str) -> Result<Option<VerifyingKey>> {
        let public: Option<Vec<u8>> = tx
            .prepare_cached("SELECT public_key FROM device WHERE device_id = ?1")?
            .query_row([device_id], |r| r.get(0))
            .optional()?;
        public
            .map(|p| {
                let public: [u8; 32] = p.try_into().map_err(|_| bad("stored public key is not 32 bytes"))?;
                Ok(VerifyingKey { key_id: format!("device:{device_id}"), public })
            })
            .transpose()
    }

    /// The manifest a device should apply next. Without `since` (or when `since` is not a sequence
    /// this device can continue from, or the date changed): a new full manifest. With `since` equal
    /// to the latest sequence: `None`, nothing new. Otherwise the delta `since + 1`.
    pub fn manifest(&self, device_id: &str, date: NaiveDate, since: Option<u64>) -> Result<Option<Vec<u8>>> {
        self.manifest_or_refuse_full(device_id, date, since, &|| Ok(()))
    }

    /// [`Dispatch::manifest`], asking `before_full` first whenever it is about to build a full
    /// manifest (the costly kind, from the whole route-day): the API draws the device's
    /// full-manifest budget there, whatever `since` the request named.
    pub fn manifest_or_refuse_full(
        &self,
        device_id: &str,
        date: NaiveDate,
        since: Option<u64>,
        before_full: &dyn Fn() -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (device, route_id, seq) = self.device(&tx, device_id)?;
        let current_date: Option<String> =
            tx.query_row("SELECT manifest_date FROM device WHERE device_id = ?1", [device_id], |r| r.get(0))?;
        if let Some(n) = since
            && current_date.as_deref() == Some(&date.to_string())
        {
            if i64::try_from(n) == Ok(seq) {
                return Ok(None);
            }
            // A `since` beyond any stored delta (even past i64) finds none: a full manifest follows.
            let next = i64::try_from(n).ok().and_then(|n| n.checked_add(1)).unwrap_or(i64::MAX);
            let delta: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT envelope FROM delta WHERE device_id = ?1 AND seq = ?2",
                    params![device_id, next],
                    |r| r.get(0),
                )
                .optional()?;
            if delta.is_some() {
                return Ok(delta);
            }
        }
        before_full()?;
        let ids: Vec<String> = tx
            .prepare(
                "SELECT parcel_id FROM parcel WHERE route_id = ?1 AND delivery_date = ?2 AND departed_at_ms IS NOT NULL
                 ORDER BY stop_seq, parcel_id",
            )?
            .query_map(params![route_id, date.to_string()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut parcels = Vec::with_capacity(ids.len());
        for id in &ids {
            // One parcel that cannot be put into a manifest never breaks the route: it is left
            // out and the reason recorded in its history (once per reason).
            match self.parcel_entry(&tx, id) {
                Ok(entry) => parcels.extend(entry),
                Err(e @ (DispatchError::Conflict(_) | DispatchError::BadRequest(_) | DispatchError::Core(_))) => {
                    let why = format!("left out of the manifest: {e}");
                    let known: bool = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM operator_action WHERE parcel_id = ?1 AND detail = ?2)",
                        params![id, why],
                        |r| r.get(0),
                    )?;
                    if !known {
                        audit(&tx, self.now_ms()?, &Operator::dispatch(), "left_out", Some(id), Some(&why))?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let envelope =
            self.sign_for(&tx, &device, &route_id, date, seq + 1, ManifestKind::Full, parcels, vec![], vec![])?;
        tx.execute(
            "UPDATE device SET manifest_seq = ?1, manifest_date = ?2 WHERE device_id = ?3",
            params![seq + 1, date.to_string(), device_id],
        )?;
        tx.commit()?;
        Ok(Some(envelope))
    }

    /// A signed full manifest of the departed parcels of the device's route for `date`.
    pub fn full_manifest(&self, device_id: &str, date: NaiveDate) -> Result<Vec<u8>> {
        self.manifest(device_id, date, None)?.ok_or_else(|| bad("no manifest"))
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_for(
        &self,
        tx: &Transaction<'_>,
        device: &EnrolledDevice,
        route_id: &str,
        date: NaiveDate,
        sequence: i64,
        kind: ManifestKind,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<Vec<u8>> {
        let zone: Option<String> = tx
            .query_row(
                "SELECT time_zone FROM parcel WHERE route_id = ?1 AND delivery_date = ?2 LIMIT 1",
                params![route_id, date.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        // The phone may make receipts for these parcels from now on.
        let mut sent = tx.prepare_cached(
            "INSERT INTO parcel_sent (device_id, parcel_id) VALUES (?1, ?2)
             ON CONFLICT (device_id, parcel_id) DO UPDATE SET withdrawn_at_ms = NULL",
        )?;
        for p in &parcels {
            sent.execute([&device.device_id, &p.parcel_id])?;
        }
        let spec = ManifestSpec {
            manifest_id: Uuid::now_v7().to_string(),
            route_id: route_id.to_owned(),
            delivery_date: date,
            time_zone: zone.unwrap_or_else(|| "UTC".into()),
            issued_at: self.now()?,
            sequence: sequence as u64,
            kind,
            policy: self.code_policy,
            parcels,
            removals,
            resets,
            // Announce the key set while a rotation is under way (more than one key on disk).
            dispatch_keys: if self.announced_keys.len() > 1 { self.announced_keys.clone() } else { Vec::new() },
        };
        Ok(self.issuer.build_manifest(device, &spec)?)
    }

    /// Appends one signed delta to the journal of every device that holds `route_id`'s manifest
    /// for `date`. Returns how many devices get it (none: the next full manifest carries it).
    fn push_delta(
        &self,
        tx: &Transaction<'_>,
        route_id: &str,
        date: NaiveDate,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<usize> {
        let devices: Vec<String> = tx
            .prepare("SELECT device_id FROM device WHERE route_id = ?1 AND manifest_date = ?2 AND manifest_seq > 0")?
            .query_map(params![route_id, date.to_string()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for device_id in &devices {
            let (device, _, seq) = self.device(tx, device_id)?;
            let envelope = self.sign_for(
                tx,
                &device,
                route_id,
                date,
                seq + 1,
                ManifestKind::Delta,
                parcels.clone(),
                removals.clone(),
                resets.clone(),
            )?;
            tx.execute(
                "INSERT INTO delta (device_id, seq, envelope) VALUES (?1, ?2, ?3)",
                params![device_id, seq + 1, envelope],
            )?;
            tx.execute("UPDATE device SET manifest_seq = ?1 WHERE device_id = ?2", params![seq + 1, device_id])?;
        }
        Ok(devices.len())
    }

    /// `Conflict` unless the parcel left the warehouse (its code was not e-mailed before that).
    fn departed(tx: &Transaction<'_>, parcel_id: &str) -> Result<()> {
        let departed: bool =
            tx.query_row("SELECT departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1", [parcel_id], |r| {
                r.get(0)
            })?;
        if departed {
            Ok(())
        } else {
            Err(DispatchError::Conflict(format!("parcel {parcel_id} has not left the warehouse yet")))
        }
    }

    fn route_and_date(tx: &Transaction<'_>, parcel_id: &str) -> Result<(String, NaiveDate)> {
        let (route, date): (String, String) = tx
            .query_row("SELECT route_id, delivery_date FROM parcel WHERE parcel_id = ?1", [parcel_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        Ok((route, date.parse().map_err(|_| bad("stored date"))?))
    }

    /// Operator: resets a parcel's lockout on the devices that carry it (as a delta).
    pub fn reset_lockout(&self, parcel_id: &str, by: &Operator) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (route, date) = Self::route_and_date(&tx, parcel_id)?;
        Self::departed(&tx, parcel_id)?;
        let resets: u32 = tx.query_row(
            "SELECT count(*) FROM operator_action WHERE parcel_id = ?1 AND action = 'reset'",
            [parcel_id],
            |r| r.get(0),
        )?;
        if resets >= self.max_resets_per_parcel {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} was reset {resets} times, the most allowed; hand it back to the depot"
            )));
        }
        // A new attempt epoch: receipts from the old one (even those uploaded later) no longer count,
        // and the parcel's entry carries the epoch to every phone it reaches, also one that
        // missed this delta. The reset list is for phones of protocol 1.0, which know no epochs.
        tx.execute(
            "INSERT INTO parcel_epoch (parcel_id, attempt_epoch, reset_at_ms) VALUES (?1, 1, ?2)
             ON CONFLICT (parcel_id) DO UPDATE SET attempt_epoch = attempt_epoch + 1, reset_at_ms = excluded.reset_at_ms",
            params![parcel_id, self.now_ms()?],
        )?;
        let entry: Vec<IssuedParcel> = self.parcel_entry(&tx, parcel_id)?.into_iter().collect();
        let n = self.push_delta(&tx, &route, date, entry, vec![], vec![parcel_id.to_owned()])?;
        audit(&tx, self.now_ms()?, by, "reset", Some(parcel_id), None)?;
        tx.commit()?;
        Ok(n)
    }

    /// Operator: issues a new customer code (the old one stops working on the devices); returns it
    /// for the customer's e-mail.
    pub fn reissue_code(&self, parcel_id: &str, by: &Operator) -> Result<String> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::route_and_date(&tx, parcel_id)?;
        Self::departed(&tx, parcel_id)?;
        let reissues: u32 = tx.query_row(
            "SELECT count(*) FROM operator_action WHERE parcel_id = ?1 AND action = 'reissue'",
            [parcel_id],
            |r| r.get(0),
        )?;
        if reissues >= MAX_REISSUES_PER_PARCEL {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} was reissued {reissues} times, the most allowed; hand it back to the depot"
            )));
        }
        // A reissue answers a leaked code or e-mail: the earlier links stop opening the parcel,
        // and the new e-mail carries the only live one. Whoever held the leak may have named
        // delegates with it, so every delegate's code ends too (the delta below carries the
        // parcel without them); the customer names again whom they still trust.
        tx.execute("DELETE FROM customer_link WHERE parcel_id = ?1", [parcel_id])?;
        tx.execute(
            "UPDATE code SET revoked_at_ms = ?2 WHERE parcel_id = ?1 AND holder LIKE 'delegate:%' AND revoked_at_ms IS NULL",
            params![parcel_id, self.now_ms()?],
        )?;
        // What the leaked link spent (delegate changes, QR tokens) is given back to the customer:
        // the reissue cap bounds how often.
        tx.execute("DELETE FROM delegate_changes WHERE parcel_id = ?1", [parcel_id])?;
        tx.execute("DELETE FROM qr_issued WHERE parcel_id = ?1", [parcel_id])?;
        audit(&tx, self.now_ms()?, by, "reissue", Some(parcel_id), None)?;
        let code = self.issue_code(&tx, parcel_id, &Holder::Customer)?;
        let mail = self.mail_code(&tx, parcel_id, code.reveal(), true)?;
        tx.commit()?;
        drop(conn);
        self.mail_now(mail);
        Ok(code.reveal().to_owned())
    }

    /// Operator: every stored receipt about a parcel, with dispatch's verdict, oldest first.
    pub fn parcel_history(&self, parcel_id: &str) -> Result<Vec<StoredReceipt>> {
        stored_receipts(
            &self.lock(),
            "SELECT r.body, r.signature, r.status, r.reason FROM receipt_parcel rp JOIN receipt r ON r.receipt_id = rp.receipt_id
             WHERE rp.parcel_id = ?1 ORDER BY r.device_id, r.seq",
            parcel_id,
        )
    }

    /// Operator: moves a parcel to another route: it leaves the old route's devices and joins the
    /// new route's (both as deltas).
    /// Refuses one more parcel on a route-day that already holds `on_route`, once a phone's
    /// manifest could no longer carry them all (409, naming the route).
    fn room_on_route(&self, on_route: i64, route_id: &str, date: NaiveDate) -> Result<()> {
        let capacity = route_day_capacity(&self.code_policy);
        if on_route >= capacity as i64 {
            return Err(DispatchError::Conflict(format!(
                "route {route_id} already has {capacity} parcels on {date}: the most one phone's manifest holds \
                 under this code policy; split the route"
            )));
        }
        Ok(())
    }

    pub fn reassign(&self, parcel_id: &str, new_route: &str, by: &Operator) -> Result<()> {
        validate::id("route_id", new_route)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (old_route, date) = Self::route_and_date(&tx, parcel_id)?;
        if old_route == new_route {
            return Ok(());
        }
        let on_new_route: i64 = tx.query_row(
            "SELECT count(*) FROM parcel WHERE route_id = ?1 AND delivery_date = ?2",
            params![new_route, date.to_string()],
            |r| r.get(0),
        )?;
        self.room_on_route(on_new_route, new_route, date)?;
        tx.execute("UPDATE parcel SET route_id = ?1 WHERE parcel_id = ?2", params![new_route, parcel_id])?;
        tx.execute(
            "UPDATE parcel_sent SET withdrawn_at_ms = ?3
             WHERE parcel_id = ?1 AND withdrawn_at_ms IS NULL
               AND device_id IN (SELECT device_id FROM device WHERE route_id = ?2)",
            params![parcel_id, old_route, self.now_ms()?],
        )?;
        audit(
            &tx,
            self.now_ms()?,
            by,
            "reassign",
            Some(parcel_id),
            Some(&format!("route {old_route} to {new_route}")),
        )?;
        self.push_delta(&tx, &old_route, date, vec![], vec![parcel_id.to_owned()], vec![])?;
        let entry: Vec<IssuedParcel> = self.parcel_entry(&tx, parcel_id)?.into_iter().collect();
        if !entry.is_empty() {
            self.push_delta(&tx, new_route, date, entry, vec![], vec![])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// What can be checked of a device request before its body is read: the device exists and
    /// the `Device-Signature` names it, in form and in time. Refused like any bad signature.
    ///
    /// The trade-off: an upload naming an unknown device is answered at once, one naming a known
    /// device only after its body, so the timing confirms that a (leaked) device id exists. Ids
    /// carry 74 random bits, and reading every stranger's body would let strangers fill the
    /// upload places instead.
    pub fn check_device_request_header(&self, device_id: &str, header: Option<&str>) -> Result<()> {
        let refused = || DispatchError::Unauthorized(DEVICE_REFUSED.into());
        let header = header.ok_or_else(refused)?;
        let now = self.now_ms()?;
        doorstep_core::protocol::check_request_header(header, device_id, now, self.request_skew_ms)
            .map_err(|_| refused())?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        Self::device_key(&tx, device_id)?.ok_or_else(refused)?;
        Ok(())
    }

    /// Checks a device request's `Device-Signature` header (method, path with query, body) against
    /// the device's enrolled key and the server's clock, and answers each signed request once (a
    /// replay inside the clock window is refused). An unknown device, a bad or missing signature, a
    /// clock out of the window and a replay all get the same 401, and the time to answer
    /// does not depend on it either (uploads aside: see above).
    pub fn verify_device_request(
        &self,
        device_id: &str,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<()> {
        let refused = || DispatchError::Unauthorized(DEVICE_REFUSED.into());
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let known = Self::device_key(&tx, device_id)?;
        let header = header.ok_or_else(refused)?;
        let now = self.now_ms()?;
        // An unknown device goes through the same verification, against a key nobody holds, so
        // the time to answer does not tell which device ids exist.
        let key = known.clone().unwrap_or_else(|| VerifyingKey { key_id: String::new(), public: NOBODYS_KEY });
        let verified = doorstep_core::protocol::verify_request(
            header,
            device_id,
            &key,
            method,
            path,
            body,
            now,
            self.request_skew_ms,
        );
        if known.is_none() || verified.is_err() {
            return Err(refused());
        }
        // Older signatures fall outside the window anyway; forget them.
        tx.prepare_cached("DELETE FROM seen_request WHERE at_ms < ?1")?
            .execute([now.saturating_sub(2 * self.request_skew_ms)])?;
        let fresh = tx
            .prepare_cached("INSERT OR IGNORE INTO seen_request (signature_hash, at_ms) VALUES (?1, ?2)")?
            .execute(params![sha256(header.as_bytes()).to_vec(), now])?;
        if fresh == 0 {
            return Err(refused());
        }
        tx.commit()?;
        Ok(())
    }

    /// Verifies an uploaded batch, stores what verifies (accepted or flagged), and returns the
    /// signed acknowledgement. Sending the same batch again changes nothing (duplicates).
    pub fn upload(&self, device_id: &str, batch: &[u8]) -> Result<Vec<u8>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (device, _, _) = self.device(&tx, device_id)?;
        // Any storage error fails the whole upload here (the transaction rolls back, nothing is
        // accepted) and the device sends the batch again.
        let verdict = self.issuer.verify_batch(
            &device,
            &mut SqlLedger { tx: &tx },
            &SqlCodes { tx: &tx, kek: &self.kek },
            batch,
            self.now()?,
        )?;
        tx.commit()?;
        Ok(verdict.signed_ack)
    }

    /// Receipts held for a device with their verdicts, in chain order.
    pub fn receipts(&self, device_id: &str) -> Result<Vec<StoredReceipt>> {
        stored_receipts(
            &self.lock(),
            "SELECT body, signature, status, reason FROM receipt WHERE device_id = ?1 ORDER BY seq",
            device_id,
        )
    }
}

/// Runs a query selecting `body, signature, status, reason` of stored receipts.
fn stored_receipts(conn: &Connection, sql: &str, key: &str) -> Result<Vec<StoredReceipt>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([key], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, String>(2)?, r.get::<_, Option<String>>(3)?))
    })?;
    rows.map(|r| {
        let (body, signature, status, reason) = r?;
        let receipt = SignedReceipt {
            body: doorstep_core::protocol::Base64Bytes(body),
            signature: doorstep_core::protocol::Base64Bytes(signature),
        };
        let body = receipt.parse_body().map_err(|e| bad(e.to_string()))?;
        let status = serde_json::from_value(serde_json::Value::String(status)).map_err(|e| bad(e.to_string()))?;
        Ok(StoredReceipt { receipt, body, status, reason })
    })
    .collect()
}

impl Dispatch {
    /// The manifest entry of a departed parcel (None if it has not left the warehouse yet), with the
    /// latest code of each holder.
    fn parcel_entry(&self, tx: &Transaction<'_>, parcel_id: &str) -> Result<Option<IssuedParcel>> {
        let max_attempts = self.code_policy.max_attempts;
        let row = tx
            .query_row(
                "SELECT barcode, stop_id, stop_seq, delivery_date, time_zone, address_hint, recipient_hint, needs_code
             FROM parcel WHERE parcel_id = ?1 AND departed_at_ms IS NOT NULL",
                [parcel_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, bool>(7)?,
                    ))
                },
            )
            .optional()?;
        let Some((barcode, stop_id, stop_seq, date, tz, address_hint, recipient_hint, needs_code)) = row else {
            return Ok(None);
        };
        let (not_before, not_after) = stored_window(&date, &tz)?;
        let current = if needs_code { self.current_codes(tx, parcel_id)? } else { Vec::new() };
        let qr_minted_after = current.iter().filter_map(|c| Some((c.holder.clone(), c.reissued_at?))).collect();
        let codes: Vec<(Holder, Code)> = current.into_iter().map(|c| (c.holder, c.code)).collect();
        let attempt_epoch: u32 = tx
            .prepare_cached("SELECT attempt_epoch FROM parcel_epoch WHERE parcel_id = ?1")?
            .query_row([parcel_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let (receipts, highest): (u32, u32) = tx
            .prepare_cached(
                "SELECT count(*), coalesce(max(attempts_used), 0) FROM wrong_attempt
             WHERE parcel_id = ?1 AND attempt_epoch = ?2",
            )?
            .query_row(params![parcel_id, attempt_epoch], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let attempts_used = receipts.max(highest).min(u32::from(max_attempts));
        if codes.len() > 1 + usize::from(self.code_policy.max_delegates) {
            // Named under an earlier, looser policy: the phones would refuse the whole manifest.
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} has more delegates than the policy allows ({}); revoke some",
                self.code_policy.max_delegates
            )));
        }
        if needs_code && codes.is_empty() {
            // Never ship a parcel that needs a code without its tags: it would look like a parcel
            // that needs none.
            return Err(DispatchError::Conflict(format!("parcel {parcel_id} needs a code but none was issued")));
        }
        Ok(Some(IssuedParcel {
            parcel_id: parcel_id.to_owned(),
            barcode,
            stop: Stop { id: stop_id, sequence: stop_seq },
            address_hint,
            recipient_hint,
            codes,
            qr_minted_after,
            not_before,
            not_after,
            attempts_used,
            attempt_epoch,
        }))
    }

    /// The latest code of each holder of a parcel (a reissued code replaces the earlier one).
    fn codes_of(&self, conn: &Connection, parcel_id: &str) -> Result<Vec<(Holder, Code)>> {
        Ok(self.current_codes(conn, parcel_id)?.into_iter().map(|c| (c.holder, c.code)).collect())
    }

    /// Each holder's current code, with its issue instant when it replaced an earlier one.
    fn current_codes(&self, conn: &Connection, parcel_id: &str) -> Result<Vec<CurrentCode>> {
        let mut stmt = conn.prepare_cached(
            "SELECT holder, code, issued_at_ms,
                    EXISTS (SELECT 1 FROM code o WHERE o.parcel_id = c.parcel_id AND o.holder = c.holder
                                                   AND o.rowid < c.rowid)
               FROM code c WHERE parcel_id = ?1 AND revoked_at_ms IS NULL
                AND rowid = (SELECT max(rowid) FROM code WHERE parcel_id = c.parcel_id AND holder = c.holder)
              ORDER BY holder",
        )?;
        let rows = stmt.query_map([parcel_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?))
        })?;
        rows.map(|r| {
            let (h, sealed, issued, replaced) = r?;
            let code = open_code(&self.kek, parcel_id, &h, issued, &sealed)?;
            let reissued_at = match replaced {
                true => Some(DateTime::from_timestamp_millis(issued).ok_or_else(|| bad("stored issue instant"))?),
                false => None,
            };
            Ok(CurrentCode { holder: Holder::from_key(&h).ok_or_else(|| bad("stored holder"))?, code, reissued_at })
        })
        .collect()
    }
}

/// A holder's current code; `reissued_at` when it replaced an earlier one (QR tokens minted
/// before that are refused at the door).
struct CurrentCode {
    holder: Holder,
    code: Code,
    reissued_at: Option<DateTime<Utc>>,
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

const CURRENT_KEY_FILE: &str = "current";
/// The key-encryption key's file in `keys/` (never a signing key: `load_or_create_issuer` reads
/// `*.pk8` only).
const KEK_FILE: &str = "kek";
/// The new key-encryption key while a rotation runs.
const NEXT_KEK_FILE: &str = "kek.next";

/// Loads the signing keys: `keys/<key_id>.pk8`, in key-id order; the one named in `keys/current`
/// (or the first, when none is named) signs; keys after it are announced but do not sign yet.
/// Creates `dispatch-1` on first start.
fn load_or_create_issuer(dir: &Path) -> Result<(Issuer, Vec<VerifyingKey>)> {
    let mut keys = read_keys(dir)?;
    if keys.is_empty() {
        let key = SigningKey::generate("dispatch-1")?;
        write_private(&dir.join("dispatch-1.pk8"), key.pkcs8())?;
        keys.push(key);
    }
    let announced: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
    let current = match std::fs::read_to_string(dir.join(CURRENT_KEY_FILE)) {
        Ok(id) => id.trim().to_owned(),
        Err(_) => keys[0].key_id().to_owned(),
    };
    let position = keys
        .iter()
        .position(|k| k.key_id() == current)
        .ok_or_else(|| bad(format!("keys/current names {current:?}, which is not in keys/")))?;
    keys.truncate(position + 1);
    let mut keys = keys.into_iter();
    let mut issuer = Issuer::new(keys.next().ok_or_else(|| bad("no signing key"))?);
    for key in keys {
        issuer.rotate_to(key)?;
    }
    Ok((issuer, announced))
}

fn read_keys(dir: &Path) -> Result<Vec<SigningKey>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pk8"))
        .collect();
    // dispatch-2 before dispatch-10: order by the number after the last '-', then by name.
    files.sort_by_key(|f| {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let n: u64 = stem.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, stem)
    });
    let mut keys = Vec::new();
    for f in &files {
        let key_id = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        keys.push(SigningKey::from_pkcs8(key_id, &std::fs::read(f)?)?);
    }
    Ok(keys)
}

/// Key rotation, step 1: adds a new signing key to the state folder's `keys/`. Manifests announce
/// it from the next start on; it signs only after [`promote_key`]. Returns its id.
pub fn add_key(state: &Path) -> Result<String> {
    let dir = state.join("keys");
    private_folder(&dir)?;
    let next = read_keys(&dir)?.len() + 1;
    let key_id = format!("dispatch-{next}");
    let key = SigningKey::generate(key_id.clone())?;
    write_private(&dir.join(format!("{key_id}.pk8")), key.pkcs8())?;
    Ok(key_id)
}

/// Replaces the key-encryption key: every sealed code and device secret is re-sealed under a new
/// `keys/kek` in one transaction, then the old key file is deleted. Stop dispatch first. A run cut
/// short is finished (or undone) by the next open: see [`finish_kek_rotation`]. Returns how many
/// values were re-sealed.
pub fn rotate_kek(state: &Path) -> Result<usize> {
    rotate_kek_until(state, true)
}

fn rotate_kek_until(state: &Path, swap_files: bool) -> Result<usize> {
    // Opening brings the folder up to date and checks the old key opens it.
    drop(Dispatch::open(state, HighValuePolicy::default())?);
    let keys = state.join("keys");
    let old = SealingKey::load_or_create(&keys.join(KEK_FILE))?;
    let next_path = keys.join(NEXT_KEK_FILE);
    if next_path.exists() {
        std::fs::remove_file(&next_path)?;
    }
    let next = SealingKey::load_or_create(&next_path)?;
    let mut conn = Connection::open(state.join("dispatch.db"))?;
    conn.execute_batch("PRAGMA secure_delete = ON;")?;
    let tx = conn.transaction()?;
    let resealed = reseal(
        &tx,
        (&old, &next),
        "SELECT rowid, parcel_id, holder, issued_at_ms, code FROM code",
        |r| {
            Ok((
                r.get::<_, i64>(0)?.into(),
                code_aad(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?, r.get(3)?),
                r.get(4)?,
            ))
        },
        "UPDATE code SET code = ?2 WHERE rowid = ?1",
    )? + reseal(
        &tx,
        (&old, &next),
        "SELECT device_id, secret FROM device",
        |r| {
            let id: String = r.get(0)?;
            Ok((id.clone().into(), device_secret_aad(&id), r.get(1)?))
        },
        "UPDATE device SET secret = ?2 WHERE device_id = ?1",
    )? + reseal(
        // Customer e-mail still queued carries a code too.
        &tx,
        (&old, &next),
        "SELECT id, message FROM mail_outbox",
        |r| Ok((r.get::<_, i64>(0)?.into(), mail_aad(r.get(0)?), r.get(1)?)),
        "UPDATE mail_outbox SET message = ?2 WHERE id = ?1",
    )?;
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    if swap_files {
        finish_kek_rotation(&keys, &state.join("dispatch.db"))?;
    }
    Ok(resealed)
}

/// Re-seals, from the first key to the second, every value `select` yields as (row key,
/// associated data, sealed value), writing each back with `update` (`?1` the key, `?2` the value).
fn reseal(
    tx: &Transaction<'_>,
    (old, next): (&SealingKey, &SealingKey),
    select: &str,
    row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<(rusqlite::types::Value, String, Vec<u8>)>,
    update: &str,
) -> Result<usize> {
    let rows: Vec<_> = tx.prepare(select)?.query_map([], row)?.collect::<rusqlite::Result<_>>()?;
    let mut write = tx.prepare(update)?;
    for (key, aad, sealed) in &rows {
        write.execute(params![key, next.seal(aad, &old.open(aad, sealed)?)?])?;
    }
    Ok(rows.len())
}

/// Completes a KEK rotation that stopped between its commit and the file swap: when the sealed
/// rows open under `keys/kek.next`, it becomes `keys/kek` (the old key is deleted); when they do
/// not, the rotation never committed and `kek.next` is deleted.
fn finish_kek_rotation(keys: &Path, db: &Path) -> Result<()> {
    let next_path = keys.join(NEXT_KEK_FILE);
    if !next_path.exists() {
        return Ok(());
    }
    let next = SealingKey::load_or_create(&next_path)?;
    let conn = Connection::open(db)?;
    let sample: Option<(String, Vec<u8>)> = conn
        .query_row("SELECT device_id, secret FROM device LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let sample_code: Option<(String, String, i64, Vec<u8>)> = conn
        .query_row("SELECT parcel_id, holder, issued_at_ms, code FROM code LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let committed = match (sample, sample_code) {
        (Some((device_id, sealed)), _) => next.open(&device_secret_aad(&device_id), &sealed).is_ok(),
        (None, Some((parcel, holder, issued, sealed))) => {
            next.open(&code_aad(&parcel, &holder, issued), &sealed).is_ok()
        }
        (None, None) => true,
    };
    if committed {
        std::fs::rename(&next_path, keys.join(KEK_FILE))?;
    } else {
        std::fs::remove_file(&next_path)?;
    }
    Ok(())
}

/// Key rotation, step 2 (once devices have synced a manifest announcing it): the key signs from
/// the next start on. Devices that never saw the announcement must enrol again.
pub fn promote_key(state: &Path, key_id: &str) -> Result<()> {
    let dir = state.join("keys");
    if !read_keys(&dir)?.iter().any(|k| k.key_id() == key_id) {
        return Err(DispatchError::NotFound(format!("key {key_id}")));
    }
    let path = dir.join(CURRENT_KEY_FILE);
    std::fs::write(&path, key_id)?;
    private_file(&path)?;
    Ok(())
}

/// The receipt ledger in dispatch's database, inside the upload's transaction.
struct SqlLedger<'a> {
    tx: &'a Transaction<'a>,
}

impl ReceiptLedger for SqlLedger<'_> {
    fn head(&self, device_id: &str) -> CoreResult<Option<ChainHead>> {
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = self
            .tx
            .prepare_cached("SELECT seq, hash, body FROM receipt WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1")?
            .query_row([device_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((seq, hash, body)) = row else {
            return Ok(None);
        };
        let integrity = |what: &str| CoreError::Integrity(format!("stored receipt {what}"));
        let body: ReceiptBody = serde_json::from_slice(&body).map_err(|_| integrity("body"))?;
        Ok(Some(ChainHead {
            seq: u64::try_from(seq).map_err(|_| integrity("sequence"))?,
            hash: hash.try_into().map_err(|_| integrity("hash"))?,
            trusted_time: body.trusted_time,
        }))
    }

    fn holder_of(&self, receipt_id: &Uuid) -> CoreResult<Option<(String, u64)>> {
        let row: Option<(String, i64)> = self
            .tx
            .prepare_cached("SELECT device_id, seq FROM receipt WHERE receipt_id = ?1")?
            .query_row([receipt_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(device, seq)| {
            Ok((device, u64::try_from(seq).map_err(|_| CoreError::Integrity("stored receipt sequence".into()))?))
        })
        .transpose()
    }

    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, verdict: Verdict<'_>) -> CoreResult<()> {
        let Verdict { status, reason, binding } = verdict;
        let status_name = match status {
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Duplicate => "duplicate",
            ReceiptStatus::Flagged => "flagged",
            ReceiptStatus::Rejected => "rejected",
        };
        self.tx.execute(
            "INSERT INTO receipt (device_id, seq, receipt_id, body, signature, hash, status, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                body.device_id,
                body.seq as i64,
                body.receipt_id.to_string(),
                receipt.body.0,
                receipt.signature.0,
                receipt.hash().to_vec(),
                status_name,
                reason
            ],
        )?;
        if body.event == ReceiptEvent::Reversed
            && let Some(reversed) = body.reverses
        {
            self.tx.execute(
                "UPDATE handover SET reversed = 1 WHERE receipt_id = ?1 AND device_id = ?2",
                params![reversed.to_string(), body.device_id],
            )?;
        }
        let t = body.trusted_time.timestamp_millis();
        for p in &body.parcels {
            self.tx.execute(
                "INSERT OR IGNORE INTO receipt_parcel (receipt_id, parcel_id) VALUES (?1, ?2)",
                params![body.receipt_id.to_string(), p.parcel_id],
            )?;
            if !binding {
                continue;
            }
            if body.event == ReceiptEvent::Delivered {
                self.tx
                    .execute(
                        "INSERT OR IGNORE INTO handover (parcel_id, receipt_id, device_id, flagged) VALUES (?1, ?2, ?3, ?4)",
                        params![p.parcel_id, body.receipt_id.to_string(), body.device_id, status == ReceiptStatus::Flagged],
                    )?;
            }
            // An accepted wrong-code or lock-out receipt counts in the epoch it names, never in
            // one dispatch has not reached yet. A phone the parcel was withdrawn from (reassigned)
            // may have guessed on before it synced, so its receipts count too, unless the epoch
            // began after the withdrawal: a reset then also shuts out the old route's phones. A 1.0
            // receipt names no epoch: it counts in the current one if made after the last reset.
            let counts = matches!(body.event, ReceiptEvent::WrongCode | ReceiptEvent::LockedOut)
                && status == ReceiptStatus::Accepted;
            if counts {
                let legacy = body.version == "1.0";
                self.tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO wrong_attempt (parcel_id, receipt_id, attempt_epoch, attempts_used)
                         SELECT ?1, ?2, CASE WHEN ?7 THEN e.attempt_epoch ELSE ?3 END, ?4
                         FROM (SELECT coalesce(max(attempt_epoch), 0) AS attempt_epoch,
                                      coalesce(max(reset_at_ms), -9223372036854775808) AS reset_at_ms
                               FROM parcel_epoch WHERE parcel_id = ?1) e
                         WHERE (CASE WHEN ?7 THEN ?6 >= e.reset_at_ms ELSE ?3 <= e.attempt_epoch END)
                           AND EXISTS (SELECT 1 FROM parcel_sent s WHERE s.device_id = ?5 AND s.parcel_id = ?1
                                       AND (s.withdrawn_at_ms IS NULL OR e.reset_at_ms < s.withdrawn_at_ms))",
                    )?
                    .execute(params![
                        p.parcel_id,
                        body.receipt_id.to_string(),
                        p.attempt_epoch,
                        p.attempts_used,
                        body.device_id,
                        t,
                        legacy
                    ])?;
            }
        }
        Ok(())
    }

    fn handovers(&self, parcel_id: &str) -> CoreResult<Vec<PriorHandover>> {
        let mut stmt =
            self.tx.prepare_cached("SELECT receipt_id, flagged, reversed FROM handover WHERE parcel_id = ?1")?;
        let rows =
            stmt.query_map([parcel_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, bool>(2)?)))?;
        rows.map(|row| {
            let (id, flagged, reversed) = row?;
            let receipt_id = Uuid::parse_str(&id).map_err(|_| CoreError::Integrity("stored receipt id".into()))?;
            Ok(PriorHandover { receipt_id, flagged, reversed })
        })
        .collect()
    }

    fn claim_qr_nonce(&mut self, nonce: &[u8], receipt_id: &Uuid) -> CoreResult<bool> {
        let inserted = self.tx.execute(
            "INSERT OR IGNORE INTO qr_nonce (nonce, receipt_id) VALUES (?1, ?2)",
            params![nonce, receipt_id.to_string()],
        )?;
        Ok(inserted == 1)
    }
}

/// What dispatch issued, read from its database inside the upload's transaction.
struct SqlCodes<'a> {
    tx: &'a Transaction<'a>,
    /// Opens the sealed codes.
    kek: &'a SealingKey,
}

impl CodeBook for SqlCodes<'_> {
    fn sent_to(&self, parcel_id: &str, device_id: &str) -> CoreResult<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM parcel_sent WHERE device_id = ?1 AND parcel_id = ?2")?
            .query_row([device_id, parcel_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn parcel(&self, parcel_id: &str) -> CoreResult<Option<ParcelRecord>> {
        let row: Option<(bool, String, String, bool)> = self
            .tx
            .prepare_cached(
                "SELECT needs_code, delivery_date, time_zone, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
            )
            .and_then(|mut s| s.query_row([parcel_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional())?;
        let Some((needs_code, date, zone, departed)) = row else {
            return Ok(None);
        };
        let (not_before, not_after) = stored_window(&date, &zone)
            .map_err(|e| CoreError::Integrity(format!("stored window of parcel {parcel_id}: {e}")))?;
        // Each code ends when it is revoked or when a later code for the same holder replaces it.
        let mut stmt = self.tx.prepare_cached(
            "SELECT holder, code, issued_at_ms, revoked_at_ms,
                        (SELECT min(n.issued_at_ms) FROM code n
                         WHERE n.parcel_id = c.parcel_id AND n.holder = c.holder AND n.rowid > c.rowid)
                 FROM code c WHERE parcel_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([parcel_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?;
        let instant = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| CoreError::Integrity("stored instant out of range".into()))
        };
        let mut codes = Vec::new();
        for row in rows {
            let (holder, code, issued, revoked, replaced) = row?;
            let ended = match (revoked, replaced) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            codes.push(IssuedCode {
                holder: Holder::from_key(&holder).ok_or_else(|| CoreError::Integrity("stored holder".into()))?,
                code: open_code(self.kek, parcel_id, &holder, issued, &code)
                    .map_err(|e| CoreError::Integrity(format!("code of parcel {parcel_id}: {e}")))?,
                issued_at: instant(issued)?,
                ended_at: ended.map(instant).transpose()?,
            });
        }
        Ok(Some(ParcelRecord { needs_code, departed, not_before, not_after, codes }))
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
        assert_eq!(version, 5);
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
            let current = dir.path().join("keys").join(CURRENT_KEY_FILE);
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
                    parcels: vec![widest_entry(&policy); n],
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
        assert_eq!(rotate_kek(dir.path()).unwrap(), 1);
        let after = kek();
        assert_ne!(before, after, "a new key");
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert_eq!(d.codes("P1").unwrap()[0].1, code, "every secret still opens");
        drop(d);
        // Cut short after the commit, before the files were swapped: the next open finishes it.
        rotate_kek_until(dir.path(), false).unwrap();
        assert!(dir.path().join("keys").join(NEXT_KEK_FILE).exists());
        let d = Dispatch::open(dir.path(), HighValuePolicy::default()).unwrap();
        assert_eq!(d.codes("P1").unwrap()[0].1, code);
        assert!(!dir.path().join("keys").join(NEXT_KEK_FILE).exists());
        assert_ne!(kek(), after);
    }
}
