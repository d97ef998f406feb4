//! `doorstep device ...`: a phone in the terminal, for app developers and support. It keeps its
//! database and a sealing key in one folder and talks to a running dispatch over HTTP.
//!
//! The sealing key (`vault.key`, 0600) stands in for the Android Keystore / iOS Keychain: it seals
//! the device secret and signing key with AES-256-GCM (ring). Fine for a developer's terminal, not
//! for a phone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use doorstep_core::CoreError;
use doorstep_core::device::{Clock, Device, HandoverOutcome, HostError, KeyVault, ScannedParcel, SystemClock};
use doorstep_core::protocol::{FailureReason, IdDocument, Inspection, REQUEST_HEADER};
use serde_json::{Value, json};

use crate::sealing::SealingKey;

mod days;
mod ending;

pub use ending::{Ending, TerminalError};

type CliResult<T> = Result<T, TerminalError>;

/// A mistake in the command's input.
fn bad_input(message: impl Into<String>) -> TerminalError {
    TerminalError::new(Ending::BadInput, message)
}

/// Seals with AES-256-GCM under a key kept in a 0600 file beside the database.
struct FileVault {
    key: SealingKey,
}

impl FileVault {
    /// The folder's key, created with a new device; a database without its key is refused
    /// before anything is created (a new key could never open the sealed secrets).
    fn open(dir: &Path) -> CliResult<FileVault> {
        let (key, db) = (dir.join("vault.key"), dir.join("device.db"));
        if !key.exists() && db.exists() {
            return Err(TerminalError::new(
                Ending::Failed,
                format!(
                    "{} is missing beside {}: the device's secrets are sealed under it. Restore it from where \
                     it was copied; nothing was created or changed",
                    key.display(),
                    db.display()
                ),
            ));
        }
        Ok(FileVault { key: SealingKey::load_or_create(&key)? })
    }
}

impl KeyVault for FileVault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        self.key.seal("", plaintext).map_err(|e| HostError(e.to_string()))
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        self.key.open("", sealed).map_err(|e| HostError(e.to_string()))
    }
}

/// What the terminal device can do.
pub enum Action {
    Enrol {
        token: String,
    },
    /// `date`: today in the zone of the held days when not given. `full`: after the changes,
    /// fetch a new full manifest of the day too (it restores a parcel damaged on disk).
    Sync {
        date: Option<chrono::NaiveDate>,
        full: bool,
    },
    Parcels {
        stop: Option<String>,
    },
    Verify {
        barcode: String,
        code: Option<String>,
        qr: Option<String>,
        /// What the driver confirms when the parcel's rules ask.
        door: DoorConfirmations,
    },
    Fail {
        barcode: String,
        reason: String,
        note: Option<String>,
    },
    Upload,
    Status,
}

/// What the driver confirms at the door, as typed: the kind of ID checked (`passport`,
/// `national_id_card`, …), and the customer's inspection of an open-box parcel (taken as it is,
/// or with a reservation in their words).
#[derive(Clone, Debug, Default)]
pub struct DoorConfirmations {
    pub id_checked: Option<String>,
    pub inspected: bool,
    pub reservation: Option<String>,
}

impl DoorConfirmations {
    /// The scanned parcel with what was confirmed for it.
    fn apply(&self, mut scan: ScannedParcel) -> Result<ScannedParcel, TerminalError> {
        if let Some(kind) = &self.id_checked {
            let id: IdDocument = serde_json::from_value(Value::String(kind.clone())).map_err(|_| {
                bad_input(format!(
                    "unknown ID kind {kind:?} (one of national_id_card, passport, driving_licence, residence_permit, other_photo_id)"
                ))
            })?;
            scan = scan.with_id(id);
        }
        match (&self.reservation, self.inspected) {
            (Some(note), _) => scan = scan.with_inspection(Inspection::AcceptedWithReservation { note: note.clone() }),
            (None, true) => scan = scan.with_inspection(Inspection::Accepted),
            (None, false) => {}
        }
        Ok(scan)
    }
}

struct Terminal {
    device: Device,
    dispatch: String,
    agent: ureq::Agent,
}

impl Terminal {
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> CliResult<(u16, Vec<u8>)> {
        let url = format!("{}{path}", self.dispatch.trim_end_matches('/'));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call()?
            }
            (_, body) => {
                let mut req = self.agent.post(&url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.send(body.unwrap_or_default())?
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        if !(200..300).contains(&status) {
            return Err(TerminalError::from_dispatch(status, &bytes));
        }
        Ok((status, bytes))
    }

    fn device_id(&self) -> CliResult<String> {
        self.device.status()?.device_id.ok_or_else(|| CoreError::NotEnrolled.into())
    }
}

fn outcome_json(o: &HandoverOutcome) -> Value {
    match o {
        HandoverOutcome::Accepted { holder, method, receipt } => json!({
            "outcome": "accepted", "holder": holder, "method": method, "receipt_seq": receipt.seq
        }),
        HandoverOutcome::WrongCode { attempts_left } => {
            json!({ "outcome": "wrong_code", "attempts_left": attempts_left })
        }
        HandoverOutcome::Locked { barcode, .. } => json!({ "outcome": "locked", "barcode": barcode }),
        HandoverOutcome::Expired { barcode } => json!({ "outcome": "expired", "barcode": barcode }),
        HandoverOutcome::NotYetValid { barcode, valid_from } => {
            json!({ "outcome": "not_yet_valid", "barcode": barcode, "valid_from": valid_from })
        }
        HandoverOutcome::AlreadyDelivered { barcode } => json!({ "outcome": "already_delivered", "barcode": barcode }),
        HandoverOutcome::UnknownParcel { barcode } => json!({ "outcome": "unknown_parcel", "barcode": barcode }),
        HandoverOutcome::NoCodeNeeded => json!({ "outcome": "no_code_needed" }),
    }
}

/// The dispatch the terminal phone talks to: its base URL (`http://` or `https://`) and, for a
/// certificate from a private CA (or a self-signed one), the PEM file to trust instead of the
/// public roots.
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    pub ca: Option<PathBuf>,
}

impl From<&str> for Remote {
    fn from(url: &str) -> Remote {
        Remote { url: url.to_owned(), ca: None }
    }
}

impl Remote {
    fn agent(&self) -> CliResult<ureq::Agent> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = &self.ca {
            let pem =
                std::fs::read(ca).map_err(|e| bad_input(format!("cannot read --dispatch-ca {}: {e}", ca.display())))?;
            let roots = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_input(format!("--dispatch-ca {}: {e}", ca.display())))?;
            if roots.is_empty() {
                return Err(bad_input(format!("--dispatch-ca {} holds no PEM certificate", ca.display())));
            }
            let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build();
            config = config.tls_config(tls);
        }
        Ok(config.build().into())
    }
}

/// Runs one action on the phone's system clock; returns the result as JSON (printed as JSON or as
/// plain lines by the caller).
pub fn run(dir: &Path, dispatch: &Remote, action: Action) -> CliResult<Value> {
    run_with_clock(dir, dispatch, action, Arc::new(SystemClock))
}

/// [`run`] on the given clock (tests play a day on a chosen date this way).
pub fn run_with_clock(dir: &Path, dispatch: &Remote, action: Action, clock: Arc<dyn Clock>) -> CliResult<Value> {
    let agent = dispatch.agent()?;
    std::fs::create_dir_all(dir)?;
    let device = Device::open(dir.join("device.db"), Arc::new(FileVault::open(dir)?), clock, None)?;
    let t = Terminal { device, dispatch: dispatch.url.clone(), agent };
    Ok(match action {
        Action::Enrol { token } => {
            let request = t.device.enrolment_request()?;
            let (_, bundle) = t.call("POST", "/v1/enrol", &[("Enrolment-Token", &token)], Some(&request))?;
            t.device.complete_enrolment(&bundle)?;
            json!({ "enrolled": true, "device_id": t.device_id()? })
        }
        Action::Sync { date, full } => {
            let id = t.device_id()?;
            // Days that are over expire and are let go first, so they do not count against the
            // days a phone holds.
            t.device.purge_expired()?;
            let (date, note) = days::plan(&t.device.status()?, date)?;
            let mut applied = Vec::new();
            // With --full, one more round once up to date, naming no sequence: a new full manifest.
            let mut fresh = false;
            loop {
                let status = t.device.status()?;
                let since = match (fresh, status.manifest_sequence) {
                    (false, Some(s)) => format!("&since={s}"),
                    _ => String::new(),
                };
                let held: Vec<String> = status.days.iter().map(|d| d.delivery_date.to_string()).collect();
                let held = if held.is_empty() { String::new() } else { format!("&held={}", held.join(",")) };
                let path = format!("/v1/devices/{id}/manifest?date={date}{since}{held}");
                let signature = t.device.sign_request("GET", &path, b"")?;
                let (status, body) = t.call("GET", &path, &[(REQUEST_HEADER, &signature)], None)?;
                if status == 204 {
                    if full && !fresh {
                        fresh = true;
                        continue;
                    }
                    break;
                }
                let r = t.device.apply_manifest(&body)?;
                applied.push(json!({
                    "sequence": r.sequence, "full": r.full, "added": r.added, "updated": r.updated,
                    "removed": r.removed, "reset": r.reset, "not_applied": r.not_applied
                }));
                if fresh {
                    break;
                }
            }
            let mut answer = json!({ "date": date, "applied": applied });
            if let Some(note) = note {
                answer["note"] = json!(note);
            }
            answer
        }
        Action::Parcels { stop } => {
            let parcels = match stop {
                Some(stop) => t.device.parcels_at_stop(&stop)?,
                None => t.device.parcels()?,
            };
            Value::Array(
                parcels
                    .iter()
                    .map(|p| {
                        json!({
                            "parcel_id": p.parcel_id, "date": p.delivery_date, "barcode": p.barcode, "stop": p.stop_id,
                            "needs_code": p.needs_code, "state": p.state.as_str(), "task": p.task.as_str(),
                            "addressee_only": p.rules.addressee_only, "open_box": p.rules.open_box,
                            "attempts_left": p.attempts_left, "not_after": p.not_after
                        })
                    })
                    .collect(),
            )
        }
        Action::Verify { barcode, code, qr, door } => {
            let scan = [door.apply(ScannedParcel::scanned(barcode))?];
            let outcome = match (code, qr) {
                (_, Some(token)) => t.device.verify_qr_token(&scan, &token, None)?,
                (Some(code), None) => t.device.verify_code(&scan, &code, None)?,
                (None, None) => t.device.deliver_without_code(&scan, None).map_err(|e| match e {
                    CoreError::InvalidState { parcel, state } if state == "needs a code" => bad_input(format!(
                        "parcel {parcel} needs the recipient's code: `doorstep device verify BARCODE CODE` \
                         (or --qr TOKEN); nothing was recorded"
                    )),
                    other => other.into(),
                })?,
            };
            outcome_json(&outcome)
        }
        Action::Fail { barcode, reason, note } => {
            let reason: FailureReason = serde_json::from_value(Value::String(reason.clone())).map_err(|_| {
                bad_input(format!("unknown reason {reason:?} (e.g. recipient_unavailable, refused_by_recipient)"))
            })?;
            let r = t.device.record_failure(&[ScannedParcel::scanned(barcode)], reason, note, None)?;
            json!({ "receipt_seq": r.seq })
        }
        Action::Upload => {
            let id = t.device_id()?;
            let (mut removed, mut flagged, mut rejected) = (0, 0, 0);
            while let Some(batch) = t.device.next_batch(100, 512 * 1024)? {
                let path = format!("/v1/devices/{id}/receipts");
                let signature = t.device.sign_request("POST", &path, &batch.bytes)?;
                let (_, ack) = t.call("POST", &path, &[(REQUEST_HEADER, &signature)], Some(&batch.bytes))?;
                let report = t.device.apply_ack(&ack)?;
                removed += report.removed;
                flagged += report.flagged.len();
                rejected += report.rejected.len();
                if report.removed == 0 {
                    break;
                }
            }
            json!({ "acknowledged": removed, "flagged": flagged, "rejected": rejected })
        }
        Action::Status => {
            let s = t.device.status()?;
            json!({
                "enrolled": s.enrolled, "device_id": s.device_id, "route": s.route_id,
                "delivery_date": s.delivery_date, "manifest_sequence": s.manifest_sequence,
                "days": s.days.iter().map(|d| json!({
                    "date": d.delivery_date, "route": d.route_id, "zone": d.time_zone,
                    "pending": d.parcels.pending, "delivered": d.parcels.delivered, "failed": d.parcels.failed,
                    "locked": d.parcels.locked, "expired": d.parcels.expired, "collected": d.parcels.collected
                })).collect::<Vec<_>>(),
                "parcels": {
                    "pending": s.parcels.pending, "delivered": s.parcels.delivered, "failed": s.parcels.failed,
                    "locked": s.parcels.locked, "expired": s.parcels.expired, "collected": s.parcels.collected
                },
                "pending_receipts": s.pending_receipts, "trusted_time": s.clock.trusted_time,
                "wall_clock_set_back": s.clock.wall_clock_set_back
            })
        }
    })
}

/// Writes a result for people: one `key: value` line per field, one line per list item.
pub fn print_plain(out: &mut impl std::io::Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Array(items) => {
            for item in items {
                print_plain(out, item)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            let line: Vec<String> =
                map.iter().map(|(k, v)| format!("{k}: {}", v.to_string().trim_matches('"'))).collect();
            writeln!(out, "{}", line.join("  "))
        }
        other => writeln!(out, "{other}"),
    }
}

/// Writes one line to standard output. A reader that went away (`doorstep … | head`) ends the
/// command quietly, as it ends `cat`, instead of a panic.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::terminal::say(format_args!($($arg)*))
    };
}

/// The default device folder (`./doorstep-device`).
pub fn default_dir() -> PathBuf {
    PathBuf::from("doorstep-device")
}
