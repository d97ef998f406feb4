//! At the door: the code check, the PIN-try-style attempt counter, delegates, QR tokens, failures and
//! reversals.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::CoreError;
use doorstep_core::crypto::Code;
use doorstep_core::device::{HandoverOutcome, ParcelState, ScannedParcel};
use doorstep_core::error::QrRejection;
use doorstep_core::protocol::{
    Base64Bytes, FailureReason, HandoverMethod, Holder, ManifestKind, QrToken, ReceiptEvent,
};

#[test]
fn the_right_code_hands_over_and_commits_the_receipt_before_answering() {
    let w = World::with_parcels(3);
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    let HandoverOutcome::Accepted { holder, method, receipt } = out else { panic!("{out:?}") };
    assert_eq!(
        (holder, method, receipt.event, receipt.seq),
        (Holder::Customer, HandoverMethod::Code, ReceiptEvent::Delivered, 1)
    );
    // Already on disk, seen through another connection.
    assert_eq!(receipts_on_disk(&w), 1);
    let conn = rusqlite::Connection::open(&w.path).unwrap();
    let state: String =
        conn.query_row("SELECT state FROM parcel WHERE parcel_id = 'P00000'", [], |r| r.get(0)).unwrap();
    assert_eq!(state, "delivered");
    assert!(matches!(
        w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(),
        HandoverOutcome::AlreadyDelivered { .. }
    ));
}

#[test]
fn spaces_and_hyphens_are_ignored_and_a_typo_costs_one_attempt() {
    let w = World::with_parcels(2);
    let code = w.code(0);
    assert_eq!(
        w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap(),
        HandoverOutcome::WrongCode { attempts_left: 4 }
    );
    let spaced = format!("{} {}-{}", &code[..2], &code[2..4], &code[4..]);
    assert!(matches!(w.device.verify_code(&w.scan(0), &spaced, None).unwrap(), HandoverOutcome::Accepted { .. }));
}

#[test]
fn malformed_input_is_an_error_and_spends_no_attempt() {
    let w = World::with_parcels(2);
    for bad in ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "DROP TABLE"] {
        assert!(matches!(w.device.verify_code(&w.scan(0), bad, None), Err(CoreError::MalformedCode)), "{bad:?}");
    }
    assert_eq!(attempts_on_disk(&w, "P00000"), 0);
    assert!(matches!(w.device.verify_code(&[], &w.code(0), None), Err(CoreError::InvalidInput { .. })));
    let twice = [ScannedParcel::scanned("BC00000000"), ScannedParcel::scanned("BC00000000")];
    assert!(matches!(w.device.verify_code(&twice, &w.code(0), None), Err(CoreError::InvalidInput { .. })));
    assert_eq!(attempts_on_disk(&w, "P00000"), 0);
}

#[test]
fn five_wrong_codes_lock_the_parcel_and_the_lock_survives_reopening() {
    let mut w = World::with_parcels(2);
    for left in (1..5).rev() {
        assert_eq!(
            w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap(),
            HandoverOutcome::WrongCode { attempts_left: left }
        );
    }
    let out = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
    let HandoverOutcome::Locked { receipt: Some(r), .. } = out else { panic!("{out:?}") };
    assert_eq!(r.event, ReceiptEvent::LockedOut);
    w.reopen();
    let p = w.device.parcel("P00000").unwrap();
    assert_eq!((p.state, p.attempts_used, p.attempts_left), (ParcelState::Locked, 5, 0));
    // The right code no longer helps, and spends nothing more.
    assert!(matches!(
        w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(),
        HandoverOutcome::Locked { receipt: None, .. }
    ));
    assert_eq!(attempts_on_disk(&w, "P00000"), 5);
}

#[test]
fn a_delegate_code_is_accepted_and_names_the_delegate() {
    let w = World::with_parcels(3);
    let out = w.device.verify_code(&w.scan(1), &w.delegate_code(1, "Neighbour Anna"), None).unwrap();
    let HandoverOutcome::Accepted { holder, method, .. } = out else { panic!("{out:?}") };
    assert_eq!(holder, Holder::Delegate("Neighbour Anna".into()));
    assert_eq!(method, HandoverMethod::DelegateCode);
}

#[test]
fn expiry_and_not_yet_valid_are_judged_on_trusted_time() {
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer]);
    w.add_parcel(1, &[Holder::Customer]);
    w.parcels[1].not_before = morning() + TimeDelta::hours(4);
    w.push_full();
    let out = w.device.verify_code(&w.scan(1), &w.code(1), None).unwrap();
    assert!(matches!(out, HandoverOutcome::NotYetValid { .. }), "{out:?}");
    assert_eq!(attempts_on_disk(&w, "P00001"), 0);
    w.clock.advance(TimeDelta::hours(16)); // past 23:00
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Expired { .. }));
    assert_eq!(attempts_on_disk(&w, "P00000"), 0);
}

#[test]
fn unknown_barcodes_and_parcels_without_codes() {
    let w = World::with_parcels(3);
    assert_eq!(
        w.device.verify_code(&[ScannedParcel::scanned("NOPE")], "123456", None).unwrap(),
        HandoverOutcome::UnknownParcel { barcode: "NOPE".into() }
    );
    // Parcel 2 needs no code.
    assert_eq!(w.device.verify_code(&w.scan(2), "123456", None).unwrap(), HandoverOutcome::NoCodeNeeded);
    assert!(matches!(w.device.deliver_without_code(&w.scan(0), None), Err(CoreError::InvalidState { .. })));
    let out = w.device.deliver_without_code(&w.scan(2), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { method: HandoverMethod::NoCode, .. }));
}

#[test]
fn one_code_can_cover_several_parcels_of_one_order() {
    let mut w = World::new();
    let shared = Code::generate().unwrap();
    for i in 0..4 {
        w.add_parcel(i, &[Holder::Customer]);
    }
    for p in w.parcels.iter_mut().filter(|p| p.parcel_id != "P00002") {
        p.codes = vec![(Holder::Customer, shared.clone())];
        w.codes.issue(p, p.not_before);
    }
    w.push_full();
    let both = [w.scan(0), w.scan(1)].concat();
    let out = w.device.verify_code(&both, shared.reveal(), None).unwrap();
    let HandoverOutcome::Accepted { receipt, .. } = out else { panic!("{out:?}") };
    assert_eq!(receipt.parcel_ids, vec!["P00000".to_string(), "P00001".to_string()]);
    // A code that fits one parcel but not the other is wrong for the hand-over, and counted on both.
    let mixed = [w.scan(2), w.scan(3)].concat();
    assert_eq!(
        w.device.verify_code(&mixed, shared.reveal(), None).unwrap(),
        HandoverOutcome::WrongCode { attempts_left: 4 }
    );
    assert_eq!((attempts_on_disk(&w, "P00002"), attempts_on_disk(&w, "P00003")), (1, 1));
    // A hand-over that includes a delivered parcel is refused as a whole.
    let again = [w.scan(3), w.scan(0)].concat();
    assert!(matches!(
        w.device.verify_code(&again, shared.reveal(), None).unwrap(),
        HandoverOutcome::AlreadyDelivered { .. }
    ));
    let verdicts = w.upload_all();
    assert_eq!(
        verdicts[0].count(doorstep_core::protocol::ReceiptStatus::Accepted),
        2,
        "the hand-over and the wrong code"
    );
}

fn qr(w: &World, parcel: usize, holder: Holder, valid: TimeDelta) -> String {
    w.issuer
        .sign_qr(&QrToken {
            parcel_id: format!("P{parcel:05}"),
            holder,
            not_before: w.clock.now() - TimeDelta::minutes(1),
            not_after: w.clock.now() + valid,
            nonce: Base64Bytes(doorstep_core::crypto::random_bytes::<16>().unwrap().to_vec()),
            issued_at: None,
        })
        .unwrap()
}

fn qr_err(r: Result<HandoverOutcome, CoreError>) -> QrRejection {
    match r {
        Err(CoreError::QrRejected(q)) => q,
        other => panic!("expected a QR rejection, got {other:?}"),
    }
}

#[test]
fn a_qr_token_hands_over_once() {
    let mut w = World::with_parcels(3);
    let token = qr(&w, 0, Holder::Customer, TimeDelta::hours(2));
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(1), &token, None)), QrRejection::WrongParcel);
    let out = w.device.verify_qr_token(&w.scan(0), &token, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { method: HandoverMethod::QrToken, .. }), "{out:?}");
    // Replay on the same parcel after a reversal: the token is spent.
    w.device.reverse_delivery("P00000", FailureReason::Other, Some("handed to wrong person".into()), None).unwrap();
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &token, None)), QrRejection::AlreadyUsed);
    let verdicts = w.upload_all();
    assert!(verdicts.iter().all(|v| v.count(doorstep_core::protocol::ReceiptStatus::Flagged) == 0));
}

#[test]
fn forged_expired_or_revoked_qr_tokens_are_refused_without_changes() {
    let w = World::with_parcels(3);
    let expired = qr(&w, 0, Holder::Customer, TimeDelta::hours(1));
    w.clock.advance(TimeDelta::hours(2));
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &expired, None)), QrRejection::Expired);
    let good = qr(&w, 0, Holder::Customer, TimeDelta::hours(1));
    let mut forged = good.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
    assert!(w.device.verify_qr_token(&w.scan(0), std::str::from_utf8(&forged).unwrap(), None).is_err());
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), "not a token", None)), QrRejection::Malformed);
    let stranger = qr(&w, 0, Holder::Delegate("Stranger".into()), TimeDelta::hours(1));
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &stranger, None)), QrRejection::HolderNotAuthorised);
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Pending);
    assert_eq!(receipts_on_disk(&w), 0);
}

#[test]
fn after_a_reissue_the_phone_refuses_qr_tokens_minted_before_it_or_naming_no_mint_time() {
    let mut w = World::with_parcels(2);
    let reissued_at = w.clock.now();
    let mut parcel = w.parcels[0].clone();
    parcel.codes = vec![(Holder::Customer, Code::generate().unwrap())];
    parcel.qr_minted_after = vec![(Holder::Customer, reissued_at)];
    w.codes.issue(&parcel, reissued_at);
    w.parcels[0] = parcel;
    w.push_full();
    let minted = |at: Option<chrono::DateTime<chrono::Utc>>| {
        w.issuer
            .sign_qr(&QrToken {
                parcel_id: "P00000".into(),
                holder: Holder::Customer,
                not_before: w.clock.now() - TimeDelta::minutes(1),
                not_after: w.clock.now() + TimeDelta::hours(2),
                nonce: Base64Bytes(doorstep_core::crypto::random_bytes::<16>().unwrap().to_vec()),
                issued_at: at,
            })
            .unwrap()
    };
    let early = minted(Some(reissued_at - TimeDelta::seconds(1)));
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &early, None)), QrRejection::Superseded);
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &minted(None), None)), QrRejection::Superseded);
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Pending);
    assert_eq!(receipts_on_disk(&w), 0);
    // A holder whose code was never reissued still takes a token of an earlier build (no mint time).
    let legacy = qr(&w, 1, Holder::Customer, TimeDelta::hours(2));
    assert!(matches!(w.device.verify_qr_token(&w.scan(1), &legacy, None).unwrap(), HandoverOutcome::Accepted { .. }));
    let same_millisecond = minted(Some(reissued_at));
    assert_eq!(qr_err(w.device.verify_qr_token(&w.scan(0), &same_millisecond, None)), QrRejection::Superseded);
    let current = minted(Some(reissued_at + TimeDelta::milliseconds(1)));
    assert!(matches!(w.device.verify_qr_token(&w.scan(0), &current, None).unwrap(), HandoverOutcome::Accepted { .. }));
    let verdicts = w.upload_all();
    assert!(verdicts.iter().all(|v| v.count(doorstep_core::protocol::ReceiptStatus::Flagged) == 0));
}

#[test]
fn a_qr_token_opens_a_parcel_locked_by_guessing() {
    let w = World::with_parcels(2);
    for _ in 0..5 {
        let _ = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
    }
    let token = qr(&w, 0, Holder::Customer, TimeDelta::hours(1));
    assert!(matches!(w.device.verify_qr_token(&w.scan(0), &token, None).unwrap(), HandoverOutcome::Accepted { .. }));
}

#[test]
fn failures_are_recorded_with_reasons_and_need_a_note_for_other() {
    let w = World::with_parcels(4);
    let r = w.device.record_failure(&w.scan(0), FailureReason::RecipientUnavailable, None, None).unwrap();
    assert_eq!(r.event, ReceiptEvent::Failed);
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Failed);
    w.device.record_failure(&w.scan(1), FailureReason::RefusedByRecipient, None, None).unwrap();
    assert!(matches!(
        w.device.record_failure(&w.scan(3), FailureReason::Other, None, None),
        Err(CoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        w.device.record_failure(&w.scan(3), FailureReason::Other, Some("  ".into()), None),
        Err(CoreError::InvalidInput { .. })
    ));
    w.device.record_failure(&w.scan(3), FailureReason::Other, Some("dog in the garden".into()), None).unwrap();
    // A failed parcel can still be handed over later the same day.
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Accepted { .. }));
    // An unknown parcel is an error and writes nothing.
    let before = receipts_on_disk(&w);
    assert!(matches!(
        w.device.record_failure(&[ScannedParcel::scanned("NOPE")], FailureReason::NoAccess, None, None),
        Err(CoreError::UnknownParcel(_))
    ));
    assert_eq!(receipts_on_disk(&w), before);
    // A bad location is refused.
    let bad = doorstep_core::protocol::Location { latitude: 91.0, longitude: 0.0, accuracy_m: 5.0 };
    assert!(matches!(
        w.device.record_failure(&w.scan(1), FailureReason::NoAccess, None, Some(bad)),
        Err(CoreError::InvalidInput { .. })
    ));
}

#[test]
fn a_reversal_is_a_new_receipt_and_deletes_nothing() {
    let w = World::with_parcels(2);
    let HandoverOutcome::Accepted { receipt, .. } = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap() else {
        panic!()
    };
    let rev = w.device.reverse_delivery("P00000", FailureReason::DamagedNotDelivered, None, None).unwrap();
    assert_eq!((rev.event, rev.seq), (ReceiptEvent::Reversed, receipt.seq + 1));
    assert_eq!(receipts_on_disk(&w), 2);
    assert_eq!(w.device.parcel("P00000").unwrap().state, ParcelState::Failed);
    assert!(matches!(
        w.device.reverse_delivery("P00000", FailureReason::DamagedNotDelivered, None, None),
        Err(CoreError::InvalidState { .. })
    ));
}

#[test]
fn the_device_refuses_to_work_unenrolled() {
    let dir = tempfile::tempdir().unwrap();
    let d =
        doorstep_core::device::Device::open(dir.path().join("d.db"), TestVault::new(), TestClock::at(morning()), None)
            .unwrap();
    assert!(matches!(d.apply_manifest(b"{}"), Err(CoreError::NotEnrolled)));
    assert!(matches!(d.verify_code(&[ScannedParcel::scanned("X")], "123456", None), Err(CoreError::NotEnrolled)));
    assert!(matches!(d.next_batch(10, 10_000), Err(CoreError::NotEnrolled)));
    assert!(matches!(d.complete_enrolment(b"{}"), Err(CoreError::EnrolmentRejected(_))));
    let _ = ManifestKind::Full;
}

#[test]
fn a_locked_key_vault_is_reported_not_hidden() {
    let w = World::with_parcels(1);
    w.vault.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = doorstep_core::device::Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).err().unwrap();
    assert!(matches!(err, CoreError::KeyVault(_)));
}

#[test]
fn a_signed_request_verifies_only_as_sent() {
    use doorstep_core::protocol::{RequestRejection, request_device, verify_request};
    let w = World::with_parcels(1);
    let now = w.clock.now().timestamp_millis();
    let header = w.device.sign_request("POST", "/v1/devices/dev-1/receipts", b"{\"batch\":1}").unwrap();
    assert_eq!(request_device(&header), Some("dev-1"));
    let key = &w.record.public_key;
    let skew = doorstep_core::protocol::REQUEST_SKEW_MS;
    let check = |method: &str, path: &str, body: &[u8], at: i64| {
        verify_request(&header, "dev-1", key, method, path, body, at, skew)
    };
    assert_eq!(check("POST", "/v1/devices/dev-1/receipts", b"{\"batch\":1}", now), Ok(()));
    assert_eq!(check("GET", "/v1/devices/dev-1/receipts", b"{\"batch\":1}", now), Err(RequestRejection::BadSignature));
    assert_eq!(check("POST", "/v1/devices/dev-2/receipts", b"{\"batch\":1}", now), Err(RequestRejection::BadSignature));
    assert_eq!(check("POST", "/v1/devices/dev-1/receipts", b"{\"batch\":2}", now), Err(RequestRejection::BadSignature));
    assert_eq!(
        check("POST", "/v1/devices/dev-1/receipts", b"{\"batch\":1}", now + 6 * 60_000),
        Err(RequestRejection::Stale)
    );
    assert_eq!(
        verify_request(&header, "dev-2", key, "POST", "/v1/devices/dev-1/receipts", b"{\"batch\":1}", now, skew),
        Err(RequestRejection::WrongDevice)
    );
    assert_eq!(verify_request("junk", "dev-1", key, "GET", "/", b"", now, skew), Err(RequestRejection::Malformed));
}
