//! Returns collected with a code: a pickup task on the manifest is collected from the customer
//! only against their pickup code (the same tags, attempt counter, trusted time and receipts as a
//! delivery); its receipt says `collected`, the phone shows it collected, dispatch checks the
//! event fits the task, and a collection is corrected by a reversal like a hand-over.

mod common;

use common::*;
use doorstep_core::CoreError;
use doorstep_core::device::{HandoverOutcome, ParcelState};
use doorstep_core::protocol::{FailureReason, Holder, ReceiptEvent, ReceiptStatus, Task};

/// P00000 a pickup with a code, P00001 a delivery with a code, P00002 a pickup needing none.
fn world(pickups_on_phone: bool) -> World {
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer]);
    w.add_parcel(1, &[Holder::Customer]);
    w.add_parcel(2, &[]);
    for i in [0, 2] {
        w.parcels[i].task = Task::Pickup;
    }
    for p in w.parcels.clone() {
        w.codes.issue(&p, p.not_before);
    }
    if !pickups_on_phone {
        // A phone that does not know pickups (an earlier build) sees deliveries.
        let spec = w.spec(doorstep_core::protocol::ManifestKind::Full);
        let mut spec = spec;
        spec.parcels.iter_mut().for_each(|p| p.task = Task::Delivery);
        let bytes = w.sign(&spec);
        w.device.apply_manifest(&bytes).unwrap();
        return w;
    }
    w.push_full();
    w
}

fn verdicts(w: &mut World) -> Vec<ReceiptStatus> {
    w.upload_all().iter().flat_map(|v| v.ack.results.iter().map(|r| r.status)).collect()
}

#[test]
fn a_pickup_is_collected_only_with_its_pickup_code_and_its_receipt_says_collected() {
    let mut w = world(true);
    assert_eq!(w.device.parcel("P00000").unwrap().task, Task::Pickup);
    let wrong = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
    assert_eq!(wrong, HandoverOutcome::WrongCode { attempts_left: 4 }, "the same attempt counter");
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    let HandoverOutcome::Accepted { receipt, holder, .. } = out else { panic!("{out:?}") };
    assert_eq!((receipt.event, holder), (ReceiptEvent::Collected, Holder::Customer));
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Collected);
    // Collected once: the second try is refused like a second hand-over.
    let again = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(again, HandoverOutcome::AlreadyDelivered { .. }), "{again:?}");
    // A pickup that needs no code is collected without one; its receipt says so too.
    let out = w.device.deliver_without_code(&w.scan(2), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { ref receipt, .. } if receipt.event == ReceiptEvent::Collected));
    let status = w.device.status().unwrap();
    assert_eq!((status.parcels.collected, status.parcels.delivered), (2, 0));
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted; 3]);
}

#[test]
fn a_delivery_and_a_pickup_do_not_change_hands_in_one_go() {
    let w = world(true);
    let both = [w.scan(0).remove(0), w.scan(1).remove(0)];
    match w.device.verify_code(&both, &w.code(0), None) {
        Err(CoreError::InvalidInput { why, .. }) => assert!(why.contains("pickups"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.device.parcel("P00000").unwrap().attempts_used, 0, "nothing counted");
}

#[test]
fn dispatch_flags_a_pickup_handed_over_as_a_delivery() {
    let mut w = world(false);
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { ref receipt, .. } if receipt.event == ReceiptEvent::Delivered));
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Flagged]);
    let reason = w.ledger.chains["dev-1"][0].reason.clone().unwrap();
    assert!(reason.contains("pickup"), "{reason}");
}

#[test]
fn a_collection_made_by_mistake_is_reversed_and_can_be_made_again() {
    let mut w = world(true);
    w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    w.device.reverse_delivery("P00000", FailureReason::AddressIncorrect, None, None).unwrap();
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Failed);
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { ref receipt, .. } if receipt.event == ReceiptEvent::Collected));
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted; 3]);
}

#[test]
fn dispatch_flags_a_delivery_handed_over_as_a_collection() {
    // The phone was told P00000 is a pickup; dispatch holds it as a delivery.
    let mut w = world(true);
    w.codes.parcels.get_mut("P00000").unwrap().task = Task::Delivery;
    w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Flagged]);
    let reason = w.ledger.chains["dev-1"][0].reason.clone().unwrap();
    assert!(reason.contains("is a delivery") && reason.contains("Collected"), "{reason}");
}
