//! Damage on disk is named, not mistaken for a person's doing: a parcel row whose code data changed
//! (a tag, its salt, its window) is refused at the door as damaged, spending no attempt (a failure
//! can still be recorded for it, and the purge leaves it alone), and a full manifest restores it;
//! a receipt in the outbox whose bytes changed, or that went missing, is named when an upload
//! batch is built, while the phone goes on handing over.

mod common;

use common::*;
use doorstep_core::CoreError;
use doorstep_core::device::{Device, HandoverOutcome};
use doorstep_core::protocol::FailureReason;

/// Runs `sql` on the device's file behind the device's back, as a failing disk would change it.
fn damage(w: &World, sql: &str) {
    let raw = rusqlite::Connection::open(&w.path).unwrap();
    assert!(raw.execute(sql, []).unwrap() > 0, "{sql}");
}

fn integrity(result: Result<(), CoreError>) -> String {
    match result {
        Err(CoreError::Integrity(why)) => why,
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

#[test]
fn a_parcel_whose_code_data_changed_on_disk_is_refused_as_damaged_and_spends_no_attempt() {
    let mut w = World::with_parcels(3);
    for (parcel, sql) in [
        ("P00000", "UPDATE code_tag SET tag = X'000000' WHERE parcel_id = 'P00000'"),
        ("P00001", "UPDATE parcel SET not_after_ms = not_after_ms + 86400000 WHERE parcel_id = 'P00001'"),
    ] {
        damage(&w, sql);
        let i: usize = parcel[1..].parse().unwrap();
        let refused = w.device.verify_code(&w.scan(i), &w.code(i), None).unwrap_err();
        assert!(matches!(&refused, CoreError::ParcelDamaged(p) if p == parcel), "{refused:?}");
        assert!(refused.to_string().contains("no attempt was counted"), "{refused}");
        assert_eq!(w.device.parcel(parcel).unwrap().attempts_used, 0);
    }
    // A failure needs no code data: it is still recorded for a damaged parcel.
    w.device.record_failure(&w.scan(0), FailureReason::RecipientUnavailable, None, None).unwrap();
    // A full manifest of the day restores them.
    w.reopen();
    w.push_full();
    for i in 0..2 {
        let outcome = w.device.verify_code(&w.scan(i), &w.code(i), None).unwrap();
        assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    }
}

#[test]
fn a_receipt_changed_on_disk_is_named_by_the_upload_and_the_phone_goes_on() {
    let w = World::with_parcels(3);
    for i in [0, 1, 2] {
        w.device.record_failure(&w.scan(i), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
    // One byte of a body changed.
    damage(
        &w,
        "UPDATE receipt SET body = CAST(replace(CAST(body AS TEXT), 'recipient_unavailable', 'recipient_unavailablf') \
         AS BLOB) WHERE seq = 2",
    );
    // The phone opens and hands over; the upload names the receipt.
    let device = Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).unwrap();
    let outcome = device.verify_code(&w.scan(1), &w.code(1), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    let why = integrity(device.next_batch(100, 64 * 1024).map(|_| ()));
    assert!(why.contains("receipt 2") && why.contains("does not match its hash"), "{why}");
}

#[test]
fn a_receipt_missing_from_the_middle_of_the_outbox_is_named_by_the_upload() {
    let w = World::with_parcels(3);
    for i in [0, 1, 2] {
        w.device.record_failure(&w.scan(i), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
    damage(&w, "DELETE FROM receipt WHERE seq = 2");
    let device = Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).unwrap();
    let why = integrity(device.next_batch(100, 64 * 1024).map(|_| ()));
    assert!(why.contains("should hold receipt 2"), "{why}");
}
