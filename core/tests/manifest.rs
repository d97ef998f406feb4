//! Manifests: forged, replayed, misdirected or malformed manifests are refused and change nothing;
//! accepted ones apply all-or-nothing; delivered parcels are never reverted.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::CoreError;
use doorstep_core::crypto::SigningKey;
use doorstep_core::device::{HandoverOutcome, ParcelState, ParcelView};
use doorstep_core::error::ManifestRejection;
use doorstep_core::protocol::{Holder, ManifestKind, ManifestPayload, SignedEnvelope, domain, signing_domain};

fn snapshot(w: &World) -> (Vec<ParcelView>, Option<u64>, u32) {
    let st = w.device.status().unwrap();
    (w.device.parcels().unwrap(), st.manifest_sequence, st.pending_receipts)
}

fn rejection(result: Result<doorstep_core::device::ApplyReport, CoreError>) -> ManifestRejection {
    match result {
        Err(CoreError::ManifestRejected(r)) => r,
        other => panic!("expected a manifest rejection, got {other:?}"),
    }
}

fn payload_of(envelope: &[u8]) -> ManifestPayload {
    let env: SignedEnvelope = serde_json::from_slice(envelope).unwrap();
    serde_json::from_slice(&env.payload).unwrap()
}

/// A signed delta with the next sequence number, built from `edit`.
fn delta(w: &mut World, edit: impl FnOnce(&mut doorstep_core::issuer::ManifestSpec)) -> Vec<u8> {
    let mut spec = w.spec(ManifestKind::Delta);
    edit(&mut spec);
    w.issuer.build_manifest(&w.record, &spec).unwrap()
}

#[test]
fn flipping_any_single_byte_is_rejected_and_changes_nothing() {
    let mut w = World::with_parcels(3);
    let spec = w.spec(ManifestKind::Full);
    let good = w.issuer.build_manifest(&w.record, &spec).unwrap();
    let before = snapshot(&w);
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            assert!(w.device.apply_manifest(&bad).is_err(), "byte {i} ^ {flip:#x} was accepted");
        }
    }
    assert_eq!(snapshot(&w), before);
    w.device.apply_manifest(&good).unwrap();
}

#[test]
fn replayed_and_out_of_order_manifests_are_rejected() {
    let mut w = World::with_parcels(3);
    let mut first_spec = w.spec(ManifestKind::Full);
    first_spec.sequence = 1;
    let first = w.issuer.build_manifest(&w.record, &first_spec);
    // Sequence 1 was already applied by with_parcels: replaying it is stale.
    assert_eq!(
        rejection(w.device.apply_manifest(&first.unwrap())),
        ManifestRejection::StaleSequence { got: 1, current: 1 }
    );
    let d2 = delta(&mut w, |_| {}); // sequence 3 (spec() counted 2 above)
    let before = snapshot(&w);
    assert_eq!(rejection(w.device.apply_manifest(&d2)), ManifestRejection::SequenceGap { got: 3, expected: 2 });
    assert_eq!(snapshot(&w), before);
    w.sequence = 1;
    let d_ok = delta(&mut w, |_| {});
    w.device.apply_manifest(&d_ok).unwrap();
    assert_eq!(rejection(w.device.apply_manifest(&d_ok)), ManifestRejection::StaleSequence { got: 2, current: 2 });
    w.device.apply_manifest(&d2).unwrap(); // now 3 follows 2
}

#[test]
fn a_delta_without_a_base_is_rejected() {
    let mut w = World::new();
    let d = delta(&mut w, |_| {});
    assert_eq!(rejection(w.device.apply_manifest(&d)), ManifestRejection::DeltaWithoutBase);
}

#[test]
fn misdirected_manifests_are_rejected() {
    let mut w = World::with_parcels(2);
    // Another device's manifest.
    let other_request = {
        let dir = tempfile::tempdir().unwrap();
        let d = doorstep_core::device::Device::open(dir.path().join("o.db"), TestVault::new(), w.clock.clone(), None)
            .unwrap();
        d.enrolment_request().unwrap()
    };
    let (other, _) = w.issuer.enrol(&other_request, "dev-2", w.clock.now()).unwrap();
    let spec = w.spec(ManifestKind::Full);
    let for_other = w.issuer.build_manifest(&other, &spec).unwrap();
    assert_eq!(rejection(w.device.apply_manifest(&for_other)), ManifestRejection::WrongDevice);
    // A delta for another route.
    w.sequence = 1;
    let wrong_route = delta(&mut w, |s| s.route_id = "R9".into());
    assert!(matches!(rejection(w.device.apply_manifest(&wrong_route)), ManifestRejection::WrongRoute { .. }));
    // A delta for a day the device does not hold changes none of its parcels (days.rs).
    w.sequence = 1;
    let other_day = delta(&mut w, |s| s.delivery_date = date().succ_opt().unwrap());
    let parcels = w.device.parcels().unwrap();
    assert_eq!(w.device.apply_manifest(&other_day).unwrap().added, 0);
    assert_eq!(w.device.parcels().unwrap(), parcels);
    // A full manifest for an earlier day.
    let mut earlier = w.spec(ManifestKind::Full);
    earlier.delivery_date = date().pred_opt().unwrap();
    for p in &mut earlier.parcels {
        p.not_before -= TimeDelta::days(1);
        p.not_after -= TimeDelta::days(1);
    }
    let earlier = w.issuer.build_manifest(&w.record, &earlier).unwrap();
    // Signed and next in sequence: taken, so the journal moves on, but none of it applies.
    let parcels = w.device.parcels().unwrap();
    let report = w.device.apply_manifest(&earlier).unwrap();
    assert!(report.not_applied.unwrap().contains("delivery date 2026-11-25, the device holds 2026-11-26"));
    assert_eq!(w.device.parcels().unwrap(), parcels);
}

#[test]
fn unknown_key_and_unknown_major_version_are_rejected() {
    let mut w = World::with_parcels(2);
    let spec = w.spec(ManifestKind::Full);
    let good = w.issuer.build_manifest(&w.record, &spec).unwrap();
    let payload = payload_of(&good);

    let rogue = doorstep_core::issuer::Issuer::new(SigningKey::generate("dispatch-9").unwrap());
    assert_eq!(
        rejection(w.device.apply_manifest(&rogue.sign_manifest(&payload).unwrap())),
        ManifestRejection::UnknownKeyId("dispatch-9".into())
    );
    // Same key id, different key: the signature does not verify.
    let impostor = doorstep_core::issuer::Issuer::new(SigningKey::generate("dispatch-1").unwrap());
    assert_eq!(
        rejection(w.device.apply_manifest(&impostor.sign_manifest(&payload).unwrap())),
        ManifestRejection::BadSignature
    );

    // A correctly signed envelope of major version 2.
    let bytes = serde_json::to_vec(&payload).unwrap();
    let key = w.issuer.current_key();
    let v2 = SignedEnvelope {
        format: domain::MANIFEST.into(),
        version: "2.0".into(),
        key_id: key.key_id().into(),
        signature: key.sign(&signing_domain(domain::MANIFEST, "2.0"), &bytes),
        payload: bytes.clone(),
    };
    assert_eq!(rejection(w.device.apply_manifest(&v2.to_bytes())), ManifestRejection::UnsupportedVersion("2.0".into()));
    // A newer minor version is fine.
    let v1_3 = SignedEnvelope {
        version: "1.3".into(),
        signature: key.sign(&signing_domain(domain::MANIFEST, "1.3"), &bytes),
        ..v2
    };
    w.device.apply_manifest(&v1_3.to_bytes()).unwrap();
}

#[test]
fn inconsistent_payloads_are_rejected_each_with_its_own_error() {
    let mut w = World::with_parcels(4);
    let spec = w.spec(ManifestKind::Full);
    let base = payload_of(&w.issuer.build_manifest(&w.record, &spec).unwrap());
    let before = snapshot(&w);
    type Expect = fn(&ManifestRejection) -> bool;
    let mut cases: Vec<(ManifestPayload, Expect)> = Vec::new();

    let mut dup = base.clone();
    dup.parcels[1].parcel_id = dup.parcels[0].parcel_id.clone();
    cases.push((dup, |r| matches!(r, ManifestRejection::DuplicateParcel(_))));

    let mut dup_bc = base.clone();
    dup_bc.parcels[1].barcode = dup_bc.parcels[0].barcode.clone();
    cases.push((dup_bc, |r| matches!(r, ManifestRejection::DuplicateBarcode(_))));

    let mut window = base.clone();
    window.parcels[0].not_after = window.parcels[0].not_before;
    cases.push((window, |r| matches!(r, ManifestRejection::InvalidValidity(_))));

    let mut too_long = base.clone();
    too_long.parcels[0].not_after = too_long.parcels[0].not_before + TimeDelta::days(5);
    cases.push((too_long, |r| matches!(r, ManifestRejection::InvalidValidity(_))));

    for (attempts, bits) in [(2u8, 20u8), (11, 20), (5, 12), (5, 40)] {
        let mut policy = base.clone();
        policy.policy.max_attempts = attempts;
        policy.policy.tag_bits = bits;
        cases.push((policy, |r| matches!(r, ManifestRejection::PolicyOutOfRange { .. })));
    }

    let mut short_tag = base.clone();
    short_tag.parcels[0].tags[0].tag.0.pop();
    cases.push((short_tag, |r| matches!(r, ManifestRejection::InvalidParcel { .. })));

    let mut delegate_only = base.clone();
    delegate_only.parcels[0].tags[0].holder = Holder::Delegate("X".into());
    cases.push((delegate_only, |r| matches!(r, ManifestRejection::InvalidParcel { .. })));

    for (payload, expected) in cases {
        let r = rejection(w.device.apply_manifest(&w.issuer.sign_manifest(&payload).unwrap()));
        assert!(expected(&r), "unexpected rejection {r:?}");
        assert_eq!(snapshot(&w), before);
    }
}

#[test]
fn an_oversized_manifest_is_rejected_before_parsing() {
    let w = World::with_parcels(1);
    let huge = vec![b' '; doorstep_core::protocol::MAX_MANIFEST_BYTES + 1];
    assert!(matches!(rejection(w.device.apply_manifest(&huge)), ManifestRejection::TooLarge { .. }));
}

#[test]
fn garbage_is_a_typed_error() {
    let w = World::with_parcels(1);
    for junk in [&b""[..], b"{}", b"null", b"[1,2]", b"\xff\xfe", br#"{"format":"doorstep.manifest"}"#] {
        assert!(matches!(rejection(w.device.apply_manifest(junk)), ManifestRejection::Malformed(_)), "{junk:?}");
    }
}

#[test]
fn a_delta_applies_all_or_nothing() {
    let mut w = World::with_parcels(3);
    let before = snapshot(&w);
    w.add_parcel(10, &[Holder::Customer]);
    w.add_parcel(11, &[Holder::Customer]);
    let good_new = w.parcels[3].clone();
    let mut clash = w.parcels[4].clone();
    clash.barcode = "BC00000000".into(); // already used by P00000
    let d = delta(&mut w, |s| s.parcels = vec![good_new.clone(), clash.clone()]);
    assert!(matches!(rejection(w.device.apply_manifest(&d)), ManifestRejection::DuplicateBarcode(_)));
    assert_eq!(snapshot(&w), before, "the first parcel of a refused delta must not be applied");
}

#[test]
fn deltas_add_update_remove_reset_and_reissue() {
    let mut w = World::with_parcels(6);
    // Lock parcel 0 with wrong codes.
    for _ in 0..5 {
        let _ = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
    }
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Locked);

    // Reissue parcel 1's code with a new delegate; add parcel 20; remove parcel 3; reset parcel 0.
    w.add_parcel(20, &[Holder::Customer]);
    let old_code_1 = w.code(1);
    let new_code = doorstep_core::crypto::Code::generate().unwrap();
    let mut p1 = w.parcels[1].clone();
    p1.codes = vec![
        (Holder::Customer, new_code.clone()),
        (Holder::Delegate("Bob".into()), doorstep_core::crypto::Code::generate().unwrap()),
    ];
    let added = w.parcels.last().unwrap().clone();
    let d = delta(&mut w, |s| {
        s.parcels = vec![p1.clone(), added.clone()];
        s.removals = vec!["P00003".into()];
        s.resets = vec!["P00000".into()];
    });
    let report = w.device.apply_manifest(&d).unwrap();
    assert_eq!((report.added, report.updated, report.removed, report.reset), (1, 1, 1, 1));

    let p0 = w.device.parcel("P00000").unwrap();
    assert_eq!((p0.state, p0.attempts_used), (ParcelState::Pending, 0));
    assert!(matches!(w.device.parcel("P00003"), Err(CoreError::UnknownParcel(_))));
    assert_eq!(w.device.parcel("P00020").unwrap().state, ParcelState::Pending);
    let p1v = w.device.parcel("P00001").unwrap();
    assert_eq!(p1v.holders, vec![Holder::Customer, Holder::Delegate("Bob".into())]);
    // The old code no longer works (unless the new code happens to equal it); the new one does.
    if old_code_1 != new_code.reveal() {
        assert!(matches!(
            w.device.verify_code(&w.scan(1), &old_code_1, None).unwrap(),
            HandoverOutcome::WrongCode { .. }
        ));
    }
    assert!(matches!(
        w.device.verify_code(&w.scan(1), new_code.reveal(), None).unwrap(),
        HandoverOutcome::Accepted { .. }
    ));
    // The reset parcel accepts its code again.
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Accepted { .. }));
}

#[test]
fn a_delivered_parcel_is_never_reverted_by_a_manifest() {
    let mut w = World::with_parcels(3);
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }));
    let delivered = w.device.parcel("P00000").unwrap();

    // A delta that re-issues it, resets it and removes it...
    let p0 = w.parcels[0].clone();
    let d = delta(&mut w, |s| {
        s.parcels = vec![p0.clone()];
        s.resets = vec!["P00000".into()];
    });
    let r = w.device.apply_manifest(&d).unwrap();
    assert_eq!(r.kept_delivered, 1);
    let d = delta(&mut w, |s| s.removals = vec!["P00000".into()]);
    w.device.apply_manifest(&d).unwrap();
    // ...and a full manifest of the same day that omits it.
    let mut full = w.spec(ManifestKind::Full);
    full.parcels.remove(0);
    let signed = w.sign(&full);
    w.device.apply_manifest(&signed).unwrap();

    assert_eq!(w.device.parcel("P00000").unwrap(), delivered);
    assert!(matches!(
        w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(),
        HandoverOutcome::AlreadyDelivered { .. }
    ));
}

#[test]
fn reassignment_moves_a_parcel_between_devices() {
    let mut w = World::with_parcels(3);
    let d = delta(&mut w, |s| s.removals = vec!["P00001".into()]);
    w.device.apply_manifest(&d).unwrap();
    assert!(matches!(
        w.device.verify_code(&w.scan(1), &w.code(1), None).unwrap(),
        HandoverOutcome::UnknownParcel { .. }
    ));
}

#[test]
fn key_rotation_is_announced_by_a_signed_manifest() {
    let mut w = World::with_parcels(2);
    let new_key = SigningKey::generate("dispatch-2").unwrap();
    let mut keys = w.issuer.verifying_keys();
    keys.push(new_key.verifying_key());
    let d = delta(&mut w, |s| s.dispatch_keys = keys.clone());
    w.device.apply_manifest(&d).unwrap();
    w.issuer.rotate_to(new_key).unwrap();
    let d = delta(&mut w, |_| {});
    w.device.apply_manifest(&d).unwrap();
    // The key set survives a restart.
    w.reopen();
    let d = delta(&mut w, |_| {});
    w.device.apply_manifest(&d).unwrap();
    // An announcement that omits the signing key is refused.
    let only_old = vec![keys[0].clone()];
    let d = delta(&mut w, |s| s.dispatch_keys = only_old.clone());
    assert!(matches!(rejection(w.device.apply_manifest(&d)), ManifestRejection::Malformed(_)));
}
