//! Damage on disk is named, not mistaken for a person's doing: a parcel row whose code data changed
//! (a tag, its salt, its window) is refused at the door as damaged, spending no attempt, and a
//! full manifest restores it; a receipt in the outbox whose bytes changed, or that went missing,
//! stops the device from opening with the receipt named (dispatch would otherwise refuse it later
//! and it would stay stuck).

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

fn corrupt(result: Result<impl std::fmt::Debug, CoreError>) -> String {
    match result {
        Err(CoreError::DatabaseCorrupt(why)) => why,
        other => panic!("expected DatabaseCorrupt, got {other:?}"),
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
    // A parcel left alone still hands over; a full manifest of the day restores the others.
    w.reopen();
    w.push_full();
    for i in 0..2 {
        let outcome = w.device.verify_code(&w.scan(i), &w.code(i), None).unwrap();
        assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    }
}

#[test]
fn a_receipt_changed_on_disk_is_named_when_the_device_opens() {
    let w = World::with_parcels(3);
    for i in [0, 1, 2] {
        w.device.record_failure(&w.scan(i), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
    let open = || Device::open(&w.path, w.vault.clone(), w.clock.clone(), None);
    drop(open().unwrap());
    // One byte of a body changed.
    damage(
        &w,
        "UPDATE receipt SET body = CAST(replace(CAST(body AS TEXT), 'recipient_unavailable', 'recipient_unavailablf') \
         AS BLOB) WHERE seq = 2",
    );
    let why = corrupt(open().map(|_| ()));
    assert!(why.contains("receipt 2") && why.contains("does not match its hash"), "{why}");
}

#[test]
fn a_receipt_missing_from_the_middle_of_the_outbox_is_named_when_the_device_opens() {
    let w = World::with_parcels(3);
    for i in [0, 1, 2] {
        w.device.record_failure(&w.scan(i), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
    damage(&w, "DELETE FROM receipt WHERE seq = 2");
    let why = corrupt(Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).map(|_| ()));
    assert!(why.contains("should hold receipt 2"), "{why}");
}
