//! A simulated delivery day, end to end, in one process: dispatch (the issuer library) enrols a
//! device, issues codes for the high-value parcels and signs the manifest; the device works the
//! route offline (right codes, typos, a delegate, QR tokens, guessing until lockout, absent and
//! refusing recipients), uploads when back online (one acknowledgement is lost on the way), and
//! expires what is left at the end of the day. Dispatch then verifies every receipt.
//!
//! `cargo run --release -p doorstep-core --example day [-- PARCELS]` (default 240). Exits non-zero
//! if anything does not reconcile.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_core::crypto::{Code, SigningKey, random_bytes};
use doorstep_core::device::{Clock, Device, HandoverOutcome, HostError, KeyVault, PURGE_GRACE_MS, ScannedParcel};
use doorstep_core::issuer::{IssuedParcel, Issuer, ManifestSpec, MemoryLedger, ReceiptLedger};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{Base64Bytes, FailureReason, Holder, ManifestKind, QrToken, ReceiptStatus, Stop};

/// For this demo only: a vault that XORs with a fixed key stream. Apps use the Android Keystore or
/// the iOS Keychain.
struct DemoVault;

impl KeyVault for DemoVault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(plaintext.iter().enumerate().map(|(i, b)| b ^ (i as u8).wrapping_mul(73).wrapping_add(19)).collect())
    }
    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        self.seal(sealed)
    }
}

/// The day's clock, moved by the simulation.
struct DayClock(AtomicI64);

impl DayClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
    fn advance(&self, minutes: i64) {
        self.0.fetch_add(minutes * 60_000, Ordering::SeqCst);
    }
}

impl Clock for DayClock {
    fn wall_time_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    fn monotonic_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let parcels: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(240);
    let date = NaiveDate::from_ymd_opt(2026, 11, 26).ok_or("bad date")?;
    let start = date.and_hms_opt(7, 30, 0).ok_or("bad time")?.and_utc();
    let end_of_day = date.and_hms_opt(22, 59, 59).ok_or("bad time")?.and_utc();
    let clock = Arc::new(DayClock(AtomicI64::new(start.timestamp_millis())));
    let dir = tempfile::tempdir()?;

    // Dispatch enrols the phone.
    let issuer = Issuer::new(SigningKey::generate("dispatch-2026-11")?);
    let device = Device::open(dir.path().join("device.db"), Arc::new(DemoVault), clock.clone(), None)?;
    let (record, bundle) = issuer.enrol(&device.enrolment_request()?, "van-17", clock.now())?;
    device.complete_enrolment(&bundle)?;

    // The day's parcels; 40 % high-value (they need a code), some with a delegate.
    let mut codes: HashMap<(String, Holder), Vec<Code>> = HashMap::new();
    let mut issued = Vec::with_capacity(parcels);
    for i in 0..parcels {
        let id = format!("PCL-{i:05}");
        let mut parcel_codes = Vec::new();
        if i % 5 < 2 {
            parcel_codes.push((Holder::Customer, Code::generate()?));
            if i % 25 == 1 {
                parcel_codes.push((Holder::Delegate("neighbour".into()), Code::generate()?));
            }
        }
        for (h, c) in &parcel_codes {
            codes.insert((id.clone(), h.clone()), vec![c.clone()]);
        }
        issued.push(IssuedParcel {
            parcel_id: id,
            barcode: format!("1Z{i:010}"),
            stop: Stop { id: format!("stop-{}", i / 3), sequence: (i / 3 + 1) as u32 },
            address_hint: format!("{} Market St", 10 + i),
            recipient_hint: "K. M.".into(),
            codes: parcel_codes,
            not_before: date.and_hms_opt(0, 0, 0).ok_or("bad time")?.and_utc(),
            not_after: end_of_day,
        });
    }
    let spec = ManifestSpec {
        manifest_id: "manifest-van-17-2026-11-26".into(),
        route_id: "route-17".into(),
        delivery_date: date,
        time_zone: "Europe/Berlin".into(),
        issued_at: clock.now(),
        sequence: 1,
        kind: ManifestKind::Full,
        policy: Policy::default(),
        parcels: issued.clone(),
        removals: Vec::new(),
        resets: Vec::new(),
        dispatch_keys: Vec::new(),
    };
    let applied = device.apply_manifest(&issuer.build_manifest(&record, &spec)?)?;
    println!(
        "synced manifest: {} parcels, {} need a code",
        applied.added,
        codes.keys().filter(|k| k.1 == Holder::Customer).count()
    );

    // The route. The van is offline from parcel 1/3 to 2/3.
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ledger = MemoryLedger::default();
    let mut lost_one_ack = false;
    for (i, p) in issued.iter().enumerate() {
        clock.advance(3);
        let scan = [ScannedParcel::scanned(p.barcode.clone())];
        let code = |h: &Holder| codes.get(&(p.parcel_id.clone(), h.clone())).map(|c| c[0].reveal().to_owned());
        let label = match (code(&Holder::Customer), i % 20) {
            (None, 7) => {
                device.record_failure(&scan, FailureReason::RecipientUnavailable, None, None)?;
                "absent (no code needed)"
            }
            (None, _) => {
                device.deliver_without_code(&scan, None)?;
                "delivered, no code needed"
            }
            (Some(_), 0) => {
                let token = issuer.sign_qr(&QrToken {
                    parcel_id: p.parcel_id.clone(),
                    holder: Holder::Customer,
                    not_before: clock.now(),
                    not_after: end_of_day,
                    nonce: Base64Bytes(random_bytes::<16>()?.to_vec()),
                });
                expect_accepted(device.verify_qr_token(&scan, &token, None)?)?;
                "delivered, QR token"
            }
            (Some(right), 1) => match code(&Holder::Delegate("neighbour".into())) {
                Some(delegate) => {
                    expect_accepted(device.verify_code(&scan, &delegate, None)?)?;
                    "delivered, delegate's code"
                }
                None => {
                    expect_accepted(device.verify_code(&scan, &right, None)?)?;
                    "delivered, code"
                }
            },
            (Some(right), 5) => {
                let typo = wrong(&right);
                if !matches!(device.verify_code(&scan, &typo, None)?, HandoverOutcome::WrongCode { attempts_left: 4 }) {
                    return Err("a typo was not reported as wrong with 4 attempts left".into());
                }
                expect_accepted(device.verify_code(&scan, &right, None)?)?;
                "delivered, code after a typo"
            }
            (Some(right), 6) => {
                let mut locked = false;
                for _ in 0..5 {
                    locked = matches!(device.verify_code(&scan, &wrong(&right), None)?, HandoverOutcome::Locked { .. });
                }
                if !locked {
                    return Err("five wrong codes did not lock the parcel".into());
                }
                device.record_failure(&scan, FailureReason::CodeLockedOut, None, None)?;
                "locked out after 5 wrong codes"
            }
            (Some(_), 10) => {
                device.record_failure(&scan, FailureReason::RefusedByRecipient, None, None)?;
                "refused by recipient"
            }
            (Some(_), 11) => {
                device.record_failure(&scan, FailureReason::RecipientUnavailable, None, None)?;
                "recipient absent"
            }
            (Some(_), 15) => "not reached today",
            (Some(right), _) => {
                expect_accepted(device.verify_code(&scan, &right, None)?)?;
                "delivered, code"
            }
        };
        *outcomes.entry(label).or_default() += 1;
        let online = i < parcels / 3 || i >= 2 * parcels / 3;
        if online && i % 10 == 9 {
            upload(&device, &issuer, &record, &mut ledger, &codes, clock.now(), &mut lost_one_ack)?;
        }
    }

    // End of day: what was not handed over expires; the last receipts go up.
    clock.0.store(end_of_day.timestamp_millis() + PURGE_GRACE_MS + 60_000, Ordering::SeqCst);
    let purge = device.purge_expired()?;
    upload(&device, &issuer, &record, &mut ledger, &codes, clock.now(), &mut lost_one_ack)?;

    println!("\n{:<34} {:>8}", "at the door", "parcels");
    for (label, n) in &outcomes {
        println!("{label:<34} {n:>8}");
    }
    println!("{:<34} {:>8}", "expired at end of day", purge.expired);

    let held = ledger.chains.get(&record.device_id).cloned().unwrap_or_default();
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &held {
        *verdicts.entry(format!("{:?} {:?}", r.body.event, r.status).to_lowercase()).or_default() += 1;
    }
    println!("\n{:<34} {:>8}", "dispatch's verdict", "receipts");
    for (label, n) in &verdicts {
        println!("{label:<34} {n:>8}");
    }
    let status = device.status()?;
    let all_accepted = held.iter().all(|r| r.status == ReceiptStatus::Accepted);
    let (head, _) = ledger.head(&record.device_id);
    let reconciled = status.pending_receipts == 0 && all_accepted && head == held.len() as u64 && lost_one_ack;
    println!(
        "\nreceipts held by dispatch: {} in one unbroken chain; pending on the phone: {}; a lost ack was recovered: {}",
        held.len(),
        status.pending_receipts,
        lost_one_ack
    );
    println!("{}", if reconciled { "RECONCILED" } else { "NOT RECONCILED" });
    Ok(reconciled)
}

fn expect_accepted(outcome: HandoverOutcome) -> Result<(), String> {
    match outcome {
        HandoverOutcome::Accepted { .. } => Ok(()),
        other => Err(format!("expected a hand-over, got {other:?}")),
    }
}

/// A 6-digit code that differs from `right` in every digit.
fn wrong(right: &str) -> String {
    right.bytes().map(|b| char::from(b'0' + (b - b'0' + 5) % 10)).collect()
}

/// Uploads everything pending; the first answer of the day is "lost" and the batch resent.
fn upload(
    device: &Device,
    issuer: &Issuer,
    record: &doorstep_core::issuer::EnrolledDevice,
    ledger: &mut MemoryLedger,
    codes: &HashMap<(String, Holder), Vec<Code>>,
    now: DateTime<Utc>,
    lost_one_ack: &mut bool,
) -> Result<(), Box<dyn std::error::Error>> {
    while let Some(batch) = device.next_batch(50, 256 * 1024)? {
        let verdict = issuer.verify_batch(record, ledger, codes, &batch.bytes, now)?;
        if !*lost_one_ack {
            *lost_one_ack = true;
            device.record_upload_failure("simulated: connection reset before the answer")?;
            continue;
        }
        device.apply_ack(&verdict.signed_ack)?;
    }
    Ok(())
}
