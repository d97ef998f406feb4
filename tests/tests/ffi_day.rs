//! The FFI surface (doorstep-ffi) over the core, driven from Rust: what Kotlin and Swift call, with
//! host traits implemented on this side. Checks the one error-mapping point and a day through the
//! exported API, without a JVM.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorstep_ffi::{
    Clock, DoorstepDevice, DoorstepError, FailureReason, HandoverOutcome, Holder, HostError, KeyVault, ScannedParcel,
    TestDispatch, Timestamp, quarantine_database,
};

struct Vault;

impl KeyVault for Vault {
    fn seal(&self, plaintext: Vec<u8>) -> Result<Vec<u8>, HostError> {
        Ok(plaintext.iter().map(|b| b ^ 0x5C).collect())
    }
    fn unseal(&self, sealed: Vec<u8>) -> Result<Vec<u8>, HostError> {
        self.seal(sealed)
    }
}

struct FixedClock(AtomicI64);

impl Clock for FixedClock {
    fn wall_time(&self) -> Result<Timestamp, HostError> {
        Ok(Timestamp::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap())
    }
    fn monotonic(&self) -> Result<Duration, HostError> {
        Ok(Duration::from_millis(self.0.load(Ordering::SeqCst) as u64))
    }
}

struct BrokenClock;

impl Clock for BrokenClock {
    fn wall_time(&self) -> Result<Timestamp, HostError> {
        Err(HostError::Failed { reason: "no time".into() })
    }
    fn monotonic(&self) -> Result<Duration, HostError> {
        Err(HostError::Failed { reason: "no time".into() })
    }
}

const DAY_START: u64 = 1_795_651_200; // 2026-11-26T00:00:00Z

fn at(hours: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(DAY_START + hours * 3600)
}

fn scan(barcode: &str) -> Vec<ScannedParcel> {
    vec![ScannedParcel::scanned(barcode)]
}

fn setup() -> (tempfile::TempDir, Arc<DoorstepDevice>, Arc<TestDispatch>, Vec<Option<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FixedClock(AtomicI64::new((DAY_START as i64 + 8 * 3600) * 1000)));
    let device =
        DoorstepDevice::open(dir.path().join("d.db").to_string_lossy().into(), Arc::new(Vault), clock, None).unwrap();
    let dispatch = TestDispatch::new().unwrap();
    let mut codes = Vec::new();
    for i in 0..6u32 {
        let issued = dispatch
            .add_parcel(format!("P{i}"), format!("BC{i}"), format!("S{i}"), i + 1, i != 5, vec![], at(0), at(23))
            .unwrap();
        codes.push(issued.customer);
    }
    let bundle = dispatch.enrol(device.enrolment_request().unwrap(), "ffi-1".into(), at(8)).unwrap();
    device.complete_enrolment(bundle).unwrap();
    device.apply_manifest(dispatch.full_manifest("R1".into(), "2026-11-26".into(), at(8)).unwrap()).unwrap();
    (dir, device, dispatch, codes)
}

#[test]
fn a_day_through_the_exported_api() {
    let (_dir, device, dispatch, codes) = setup();
    let code = codes[0].clone().unwrap();
    let out = device.verify_code(scan("BC0"), code, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { holder: Holder::Customer, .. }), "{out:?}");
    let token = dispatch.qr_token("P1".into(), Holder::Customer, at(8), at(20)).unwrap();
    assert!(matches!(device.verify_qr_token(scan("BC1"), token, None).unwrap(), HandoverOutcome::Accepted { .. }));
    device.record_failure(scan("BC2"), FailureReason::RecipientUnavailable, None, None).unwrap();
    assert_eq!(device.verify_code(scan("BC5"), "123456".into(), None).unwrap(), HandoverOutcome::NoCodeNeeded);
    while let Some(batch) = device.next_batch(2, 64 * 1024).unwrap() {
        let verdict = dispatch.verify_batch(batch.bytes, at(9)).unwrap();
        assert_eq!((verdict.flagged, verdict.rejected), (0, 0));
        device.apply_ack(verdict.signed_ack).unwrap();
    }
    assert_eq!(dispatch.verified_chain_length().unwrap(), 3);
    let status = device.status().unwrap();
    assert_eq!((status.pending_receipts, status.parcels.delivered, status.parcels.failed), (0, 2, 1));
}

#[test]
fn core_errors_reach_the_app_as_actionable_cases() {
    let (dir, device, dispatch, _) = setup();
    assert!(matches!(device.verify_code(scan("BC0"), "12-34".into(), None), Err(DoorstepError::CodeFormat)));
    assert!(matches!(device.verify_code(vec![], "123456".into(), None), Err(DoorstepError::InvalidInput { .. })));
    assert!(matches!(device.parcel("nope".into()), Err(DoorstepError::UnknownParcel { .. })));
    assert!(matches!(
        device.reverse_delivery("P0".into(), FailureReason::Other, Some("x".into()), None),
        Err(DoorstepError::NotAllowed { .. })
    ));
    assert!(matches!(
        device.apply_manifest(b"{}".to_vec()),
        Err(DoorstepError::ManifestRejected { fetch_full: false, .. })
    ));
    let _skipped = dispatch.reset_lockout("P0".into(), at(9)).unwrap();
    let gap = dispatch.reset_lockout("P0".into(), at(9)).unwrap();
    assert!(matches!(device.apply_manifest(gap), Err(DoorstepError::ManifestRejected { fetch_full: true, .. })));
    assert!(matches!(
        device.verify_qr_token(scan("BC0"), "x".into(), None),
        Err(DoorstepError::QrTokenRejected { .. })
    ));
    assert!(matches!(device.apply_ack(vec![1, 2, 3]), Err(DoorstepError::AckRejected { .. })));
    assert!(matches!(device.complete_enrolment(vec![]), Err(DoorstepError::EnrolmentRejected { .. })));

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, [0x42u8; 4096]).unwrap();
    let opened = DoorstepDevice::open(junk.to_string_lossy().into(), Arc::new(Vault), Arc::new(BrokenClock), None);
    assert!(matches!(opened, Err(DoorstepError::DatabaseUnusable { .. })));
    let moved = quarantine_database(junk.to_string_lossy().into()).unwrap();
    assert!(std::path::Path::new(&moved).exists() && !junk.exists());

    let nowhere = dir.path().join("missing-folder/d.db");
    let opened = DoorstepDevice::open(nowhere.to_string_lossy().into(), Arc::new(Vault), Arc::new(BrokenClock), None);
    assert!(matches!(opened, Err(DoorstepError::StorageUnavailable { .. })), "{:?}", opened.err());

    let fresh = DoorstepDevice::open(
        dir.path().join("fresh.db").to_string_lossy().into(),
        Arc::new(Vault),
        Arc::new(BrokenClock),
        None,
    )
    .unwrap();
    assert!(matches!(fresh.status(), Err(DoorstepError::ClockUnavailable { .. })));
    assert!(matches!(
        fresh.verify_code(scan("BC0"), "123456".into(), None),
        Err(DoorstepError::ClockUnavailable { .. })
    ));
}
