//! At the door, a parcel's rules beyond its code: an addressee-only parcel goes to the addressee
//! alone, after an ID check whose kind (never a number) the receipt names; an open-box parcel goes
//! to a customer who opened it, and the receipt carries what they found. The phone refuses a
//! hand-over that lacks a confirmation before it counts anything; dispatch flags a receipt that
//! lacks one (a phone of an earlier build, or a forgery); and a rule lost on disk is damage, never
//! a parcel that quietly asks for less.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::CoreError;
use doorstep_core::device::{HandoverOutcome, ScannedParcel};
use doorstep_core::error::QrRejection;
use doorstep_core::protocol::{
    Base64Bytes, DoorRules, FailureReason, Holder, IdDocument, Inspection, ManifestKind, ManifestPayload, QrToken,
    ReceiptStatus, SignedEnvelope,
};

const ADDRESSEE_ONLY: DoorRules = DoorRules { addressee_only: true, open_box: false };
const OPEN_BOX: DoorRules = DoorRules { addressee_only: false, open_box: true };

/// A world whose phone holds P00000 (customer code) under `rules`, and P00001 (no code) open-box.
fn world(rules: DoorRules) -> World {
    world_with(rules, OPEN_BOX)
}

/// P00000 (customer code) under `first`, P00001 (no code) under `second`.
fn world_with(first: DoorRules, second: DoorRules) -> World {
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer]);
    w.add_parcel(1, &[]);
    w.parcels[0].rules = first;
    w.parcels[1].rules = second;
    for p in w.parcels.clone() {
        w.codes.issue(&p, p.not_before);
    }
    w.push_full();
    w
}

fn with_id(w: &World, i: usize) -> Vec<ScannedParcel> {
    vec![w.scan(i).remove(0).with_id(IdDocument::Passport)]
}

fn missing(r: Result<HandoverOutcome, CoreError>) -> String {
    match r {
        Err(CoreError::DoorCheckMissing { parcel, .. }) => parcel,
        other => panic!("expected a missing door check, got {other:?}"),
    }
}

fn verdicts(w: &mut World) -> Vec<ReceiptStatus> {
    w.upload_all().iter().flat_map(|v| v.ack.results.iter().map(|r| r.status)).collect()
}

#[test]
fn an_addressee_only_parcel_asks_for_an_id_check_before_any_attempt_is_counted() {
    let mut w = world(ADDRESSEE_ONLY);
    assert!(w.device.parcel("P00000").unwrap().rules.addressee_only);
    // Without an ID check: refused before the code is even compared, nothing counted or written.
    assert_eq!(missing(w.device.verify_code(&w.scan(0), &w.code(0), None)), "P00000");
    assert_eq!(missing(w.device.verify_code(&w.scan(0), &w.wrong_code(0), None)), "P00000");
    assert_eq!((attempts_on_disk(&w, "P00000"), receipts_on_disk(&w)), (0, 0));
    // With one: the code decides, and the receipt names the kind of ID.
    let wrong = w.device.verify_code(&with_id(&w, 0), &w.wrong_code(0), None).unwrap();
    assert!(matches!(wrong, HandoverOutcome::WrongCode { .. }), "{wrong:?}");
    let out = w.device.verify_code(&with_id(&w, 0), &w.code(0), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { holder: Holder::Customer, .. }), "{out:?}");
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted, ReceiptStatus::Accepted]);
    let body = &w.ledger.chains["dev-1"][1].body;
    assert_eq!(body.parcels[0].id_checked, Some(IdDocument::Passport));
    // A failure needs no ID: "no ID shown" is one.
    let mut w = world(ADDRESSEE_ONLY);
    w.device.record_failure(&w.scan(0), FailureReason::NoIdShown, None, None).unwrap();
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted]);
}

#[test]
fn an_addressee_only_parcel_never_opens_for_a_delegate_code_or_token() {
    // Dispatch's issuer refuses to put a delegate's code on an addressee-only parcel.
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer, Holder::Delegate("Anna".into())]);
    w.parcels[0].rules = ADDRESSEE_ONLY;
    let spec = w.spec(ManifestKind::Full);
    assert!(matches!(w.issuer.build_manifest(&w.record, &spec), Err(CoreError::InvalidInput { .. })));
    // A manifest that carries one anyway (signed by dispatch's key, as a bug would): the phone
    // still opens the parcel with the customer's code alone.
    w.parcels[0].rules = DoorRules::default();
    let spec = w.spec(ManifestKind::Full);
    let envelope: SignedEnvelope = serde_json::from_slice(&w.issuer.build_manifest(&w.record, &spec).unwrap()).unwrap();
    let mut payload: ManifestPayload = serde_json::from_slice(&envelope.payload).unwrap();
    payload.parcels[0].rules = ADDRESSEE_ONLY;
    w.codes.send(&w.record.device_id, ["P00000"]);
    w.device.apply_manifest(&w.issuer.sign_manifest(&payload).unwrap()).unwrap();
    let delegate = w.delegate_code(0, "Anna");
    let out = w.device.verify_code(&with_id(&w, 0), &delegate, None).unwrap();
    assert!(matches!(out, HandoverOutcome::WrongCode { .. }), "the delegate's code opened it: {out:?}");
    let token = w
        .issuer
        .sign_qr(&QrToken {
            parcel_id: "P00000".into(),
            holder: Holder::Delegate("Anna".into()),
            not_before: w.clock.now() - TimeDelta::minutes(1),
            not_after: w.clock.now() + TimeDelta::hours(1),
            nonce: Base64Bytes(doorstep_core::crypto::random_bytes::<16>().unwrap().to_vec()),
            issued_at: None,
        })
        .unwrap();
    match w.device.verify_qr_token(&with_id(&w, 0), &token, None) {
        Err(CoreError::QrRejected(QrRejection::HolderNotAuthorised)) => {}
        other => panic!("a delegate's token opened an addressee-only parcel: {other:?}"),
    }
}

#[test]
fn an_open_box_parcel_is_taken_with_what_the_customer_found_or_refused_on_inspection() {
    let mut w = world(DoorRules::default());
    assert!(w.device.parcel("P00001").unwrap().rules.open_box);
    assert_eq!(missing(w.device.deliver_without_code(&w.scan(1), None)), "P00001");
    let unsaid = [w.scan(1).remove(0).with_inspection(Inspection::AcceptedWithReservation { note: " ".into() })];
    assert!(matches!(w.device.deliver_without_code(&unsaid, None), Err(CoreError::InvalidInput { .. })));
    assert_eq!(receipts_on_disk(&w), 0);
    let dented = Inspection::AcceptedWithReservation { note: "corner of the box dented".into() };
    let taken = [w.scan(1).remove(0).with_inspection(dented.clone())];
    let out = w.device.deliver_without_code(&taken, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "{out:?}");
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted]);
    assert_eq!(w.ledger.chains["dev-1"][0].body.parcels[0].inspection, Some(dented));
    // Refused on opening: a failure with its own reason.
    let mut w = world(DoorRules::default());
    w.device.record_failure(&w.scan(1), FailureReason::RefusedOnInspection, None, None).unwrap();
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Accepted]);
}

#[test]
fn dispatch_flags_a_hand_over_that_lacks_what_the_parcel_asks() {
    // The phone holds the parcels without their rules (an earlier build, or a forged receipt);
    // dispatch knows them.
    let mut w = world_with(DoorRules::default(), DoorRules::default());
    w.codes.parcels.get_mut("P00000").unwrap().rules = ADDRESSEE_ONLY;
    w.codes.parcels.get_mut("P00001").unwrap().rules = OPEN_BOX;
    w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    w.device.deliver_without_code(&w.scan(1), None).unwrap();
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Flagged, ReceiptStatus::Flagged]);
    let reasons: Vec<String> = w.ledger.chains["dev-1"].iter().filter_map(|r| r.reason.clone()).collect();
    assert!(reasons[0].contains("addressee only") && reasons[1].contains("open-box"), "{reasons:?}");
}

#[test]
fn an_addressee_only_parcel_is_handed_over_on_its_own() {
    // With a parcel of another holder, the addressee-only parcel could leave on their code.
    let w = world_with(ADDRESSEE_ONLY, DoorRules::default());
    let both = [w.scan(0).remove(0).with_id(IdDocument::Passport), w.scan(1).remove(0)];
    match w.device.verify_code(&both, &w.code(0), None) {
        Err(CoreError::InvalidInput { why, .. }) => assert!(why.contains("on its own"), "{why}"),
        other => panic!("an addressee-only parcel went along with another: {other:?}"),
    }
    assert_eq!((attempts_on_disk(&w, "P00000"), receipts_on_disk(&w)), (0, 0));
    // A phone that did it anyway (an earlier build): dispatch flags it.
    let mut w = world_with(DoorRules::default(), DoorRules::default());
    w.codes.parcels.get_mut("P00000").unwrap().rules = ADDRESSEE_ONLY;
    let both = [w.scan(0).remove(0).with_id(IdDocument::Passport), w.scan(1).remove(0)];
    w.device.verify_code(&both, &w.code(0), None).unwrap();
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Flagged]);
}

#[test]
fn a_rule_cleared_on_disk_is_named_as_damage_not_obeyed() {
    let w = world(ADDRESSEE_ONLY);
    let conn = rusqlite::Connection::open(&w.path).unwrap();
    conn.execute("UPDATE parcel SET rules = 0 WHERE parcel_id = 'P00000'", []).unwrap();
    match w.device.verify_code(&w.scan(0), &w.code(0), None) {
        Err(CoreError::ParcelDamaged(p)) => assert_eq!(p, "P00000"),
        other => panic!("a parcel whose rule was cleared on disk was handed over: {other:?}"),
    }
    assert_eq!((attempts_on_disk(&w, "P00000"), receipts_on_disk(&w)), (0, 0));
    // A seal removed with the rule is damage too.
    conn.execute("UPDATE parcel SET seal = NULL WHERE parcel_id = 'P00000'", []).unwrap();
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None), Err(CoreError::ParcelDamaged(_))));
}

#[test]
fn dispatch_flags_an_addressee_only_parcel_that_went_to_a_delegate() {
    // A phone that does not know the rule holds the parcel with a delegate's tag; dispatch knows
    // it is for the addressee only.
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer, Holder::Delegate("Anna".into())]);
    w.push_full();
    w.codes.parcels.get_mut("P00000").unwrap().rules = ADDRESSEE_ONLY;
    let out = w.device.verify_code(&with_id(&w, 0), &w.delegate_code(0, "Anna"), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { holder: Holder::Delegate(_), .. }), "{out:?}");
    assert_eq!(verdicts(&mut w), [ReceiptStatus::Flagged]);
    let reason = w.ledger.chains["dev-1"][0].reason.clone().unwrap();
    assert!(reason.contains("went to a delegate"), "{reason}");
}
