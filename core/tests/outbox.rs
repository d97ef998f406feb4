//! The outbox: nothing is forgotten before a verified server ack covers it; lost acks and crashes
//! mid-upload are recovered by resending; dispatch flags forged hand-overs and tampered receipts.

mod common;

use std::time::Duration;

use common::*;
use doorstep_core::CoreError;
use doorstep_core::crypto::{Code, SigningKey, Tag};
use doorstep_core::device::HandoverOutcome;
use doorstep_core::error::AckRejection;
use doorstep_core::issuer::{FLAGGED_FOR_PHONE, Issuer, ReceiptLedger};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{FailureReason, Holder, ManifestKind, ReceiptStatus, UploadBatch};

fn make_receipts(w: &World, n: usize) {
    for i in 0..n {
        w.device.record_failure(&w.scan(i % 3), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
}

fn pending(w: &World) -> u32 {
    w.device.status().unwrap().pending_receipts
}

#[test]
fn batches_are_bounded_by_count_and_size() {
    let w = World::with_parcels(3);
    make_receipts(&w, 12);
    let b = w.device.next_batch(5, 1 << 20).unwrap().unwrap();
    assert_eq!((b.receipt_count, b.first_seq, b.last_seq, b.resend), (5, 1, 5, false));
    let parsed: UploadBatch = serde_json::from_slice(&b.bytes).unwrap();
    assert_eq!(parsed.receipts.len(), 5);
    // Asking again while it is in flight returns the same batch.
    let again = w.device.next_batch(50, 1 << 20).unwrap().unwrap();
    assert_eq!((again.batch_id, again.receipt_count, again.resend), (b.batch_id, 5, true));

    let w = World::with_parcels(3);
    make_receipts(&w, 12);
    let small = w.device.next_batch(100, 2048).unwrap().unwrap();
    assert!(small.receipt_count >= 1 && small.receipt_count < 12, "{}", small.receipt_count);
    assert!(matches!(w.device.next_batch(0, 2048), Err(CoreError::InvalidInput { .. })));
}

#[test]
fn no_receipt_is_forgotten_without_a_verified_ack() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 4);
    let batch = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    let verdict = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &batch.bytes, w.clock.now()).unwrap();
    assert_eq!(verdict.count(ReceiptStatus::Accepted), 4);
    assert_eq!(pending(&w), 4, "handing out a batch deletes nothing");

    // An ack signed by someone else.
    let rogue = Issuer::new(SigningKey::generate("dispatch-1").unwrap());
    let err = w.device.apply_ack(&rogue.sign_ack(&verdict.ack).unwrap()).unwrap_err();
    assert!(matches!(err, CoreError::AckRejected(AckRejection::BadSignature)));
    // A correctly signed ack whose checkpoint hash is wrong.
    let mut wrong_hash = verdict.ack.clone();
    wrong_hash.checkpoint.head_hash[0] ^= 1;
    let err = w.device.apply_ack(&w.issuer.sign_ack(&wrong_hash).unwrap()).unwrap_err();
    assert!(matches!(err, CoreError::AckRejected(AckRejection::CheckpointMismatch { .. })));
    // A checkpoint beyond what the device ever wrote.
    let mut ahead = verdict.ack.clone();
    ahead.checkpoint.seq = 99;
    assert!(w.device.apply_ack(&w.issuer.sign_ack(&ahead).unwrap()).is_err());
    // Another device's ack.
    let mut other = verdict.ack.clone();
    other.device_id = "dev-2".into();
    assert!(matches!(
        w.device.apply_ack(&w.issuer.sign_ack(&other).unwrap()),
        Err(CoreError::AckRejected(AckRejection::WrongDevice))
    ));
    // Every byte flipped.
    for i in 0..verdict.signed_ack.len() {
        let mut bad = verdict.signed_ack.clone();
        bad[i] ^= 0x01;
        assert!(w.device.apply_ack(&bad).is_err(), "byte {i}");
    }
    assert_eq!(pending(&w), 4, "refused acks delete nothing");

    let report = w.device.apply_ack(&verdict.signed_ack).unwrap();
    assert_eq!((report.acked_through, report.removed, report.accepted), (4, 4, 4));
    assert_eq!(pending(&w), 0);
    // The chain continues after the deleted receipts.
    make_receipts(&w, 2);
    let verdicts = w.upload_all();
    assert_eq!(verdicts[0].count(ReceiptStatus::Accepted), 2);
    assert_eq!(w.ledger.head("dev-1").unwrap().map_or(0, |h| h.seq), 6);
}

#[test]
fn a_lost_ack_is_recovered_by_resending_the_same_batch() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 3);
    let first = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    let _lost = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &first.bytes, w.clock.now()).unwrap();
    // The answer never arrived; the app reports the failure and retries later.
    let advice = w.device.record_upload_failure("timeout").unwrap();
    assert_eq!(advice.consecutive_failures, 1);
    assert!(advice.retry_after <= Duration::from_secs(5));
    make_receipts(&w, 1); // a new receipt meanwhile does not change the batch in flight
    let again = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!((again.batch_id, again.bytes.clone(), again.resend), (first.batch_id, first.bytes.clone(), true));
    let verdict = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &again.bytes, w.clock.now()).unwrap();
    assert_eq!(verdict.count(ReceiptStatus::Duplicate), 3);
    let report = w.device.apply_ack(&verdict.signed_ack).unwrap();
    assert_eq!((report.removed, report.duplicates), (3, 3));
    assert_eq!(w.device.status().unwrap().upload_failures, 0, "a good exchange resets the backoff");
    let rest = w.upload_all();
    assert_eq!(rest[0].count(ReceiptStatus::Accepted), 1);
}

#[test]
fn a_batch_in_flight_when_the_process_died_is_sent_again() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 3);
    let first = w.device.next_batch(2, 1 << 20).unwrap().unwrap();
    w.reopen();
    let again = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!((again.batch_id, again.last_seq, again.resend), (first.batch_id, first.last_seq, true));
}

#[test]
fn upload_failures_back_off_exponentially_with_full_jitter() {
    let w = World::with_parcels(3);
    make_receipts(&w, 1);
    w.device.next_batch(10, 1 << 20).unwrap();
    let mut windows = Vec::new();
    for n in 1..=12u32 {
        let advice = w.device.record_upload_failure("HTTP 503").unwrap();
        assert_eq!(advice.consecutive_failures, n);
        let window = Duration::from_millis((5_000u64 << (n - 1).min(30)).min(15 * 60 * 1000));
        assert!(advice.retry_after <= window, "failure {n}: {:?} > {window:?}", advice.retry_after);
        windows.push(advice.retry_after);
    }
    let b = w.device.next_batch(10, 1 << 20).unwrap().unwrap();
    assert!(b.retry_after <= Duration::from_secs(15 * 60));
    assert_eq!(w.device.status().unwrap().upload_failures, 12);
}

#[test]
fn tampered_receipts_are_rejected_and_stay_on_the_device() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 3);
    let batch = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    let mut parsed: UploadBatch = serde_json::from_slice(&batch.bytes).unwrap();
    // Edit the second receipt's body: its signature no longer verifies, and the third then has a gap.
    let body = &mut parsed.receipts[1].body.0;
    let from = b"recipient_unavailable";
    let pos = body.windows(from.len()).position(|w| w == from).unwrap();
    body.splice(pos..pos + from.len(), b"refused_by_recipient".iter().copied());
    let bytes = serde_json::to_vec(&parsed).unwrap();
    let verdict = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &bytes, w.clock.now()).unwrap();
    let statuses: Vec<_> = verdict.ack.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![ReceiptStatus::Accepted, ReceiptStatus::Rejected, ReceiptStatus::Rejected]);
    assert!(verdict.ack.results[1].reason.as_deref().unwrap().contains("signature"));
    let report = w.device.apply_ack(&verdict.signed_ack).unwrap();
    assert_eq!((report.removed, report.rejected.len()), (1, 2));
    assert_eq!(w.device.status().unwrap().pending_receipts, 2);
    // The genuine receipts, sent again, are accepted.
    let verdicts = w.upload_all();
    assert_eq!(verdicts[0].count(ReceiptStatus::Accepted), 2);
}

#[test]
fn a_batch_from_another_device_or_in_bad_shape_is_refused() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 1);
    let batch = w.device.next_batch(100, 1 << 20).unwrap().unwrap();
    let mut parsed: UploadBatch = serde_json::from_slice(&batch.bytes).unwrap();
    parsed.device_id = "dev-2".into();
    let bytes = serde_json::to_vec(&parsed).unwrap();
    assert!(matches!(
        w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &bytes, w.clock.now()),
        Err(CoreError::BatchRejected(_))
    ));
    for junk in [&b""[..], b"{}", b"[]", b"\x00"] {
        assert!(w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, junk, w.clock.now()).is_err());
    }
}

/// The insider attack: someone with the extracted device secret brute-forces a truncated tag,
/// finds a code that is not the true one but shares its tag, and uses it. The device cannot tell
/// (the tag matches), but dispatch re-checks the code proof with the true code and flags it.
#[test]
fn a_forged_handover_with_a_colliding_code_is_flagged_by_dispatch() {
    let mut w = World::new();
    w.add_parcel(0, &[Holder::Customer]);
    let mut spec = w.spec(ManifestKind::Full);
    spec.policy = Policy { tag_bits: 16, ..Policy::default() };
    let signed = w.sign(&spec);
    w.device.apply_manifest(&signed).unwrap();

    // The insider's brute force, with the secret and the salt and tag read from the device file.
    let conn = rusqlite::Connection::open(&w.path).unwrap();
    let (salt, tag): (Vec<u8>, Vec<u8>) = conn
        .query_row("SELECT p.salt, t.tag FROM parcel p JOIN code_tag t USING (parcel_id)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let key = w.record.secret.tag_key(0);
    let truth = w.code(0);
    let candidates: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|c| Tag::matches(&key, "P00000", &salt, &Code::parse(c).unwrap(), 16, &tag))
        .collect();
    assert!(candidates.contains(&truth));
    assert!(candidates.len() > 1, "with 16-bit tags about 16 codes share a tag");
    let forged = candidates.iter().find(|c| **c != truth).unwrap();

    let out = w.device.verify_code(&w.scan(0), forged, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "the tag matches, so the device accepts");
    let verdicts = w.upload_all();
    let result = &verdicts[0].ack.results[0];
    assert_eq!(result.status, ReceiptStatus::Flagged);
    // The phone learns only that it is held; why stays at dispatch (no oracle for a forger).
    assert_eq!(result.reason.as_deref(), Some(FLAGGED_FOR_PHONE));
    let stored = &w.ledger.chains["dev-1"][0];
    assert!(stored.reason.as_deref().unwrap().contains("code proof"), "{stored:?}");
    // It is stored (evidence) but flagged, and the device learns it.
    assert_eq!(w.ledger.head("dev-1").unwrap().map_or(0, |h| h.seq), 1);
}

#[test]
fn an_ack_older_than_the_last_one_changes_nothing() {
    let mut w = World::with_parcels(3);
    make_receipts(&w, 2);
    let b1 = w.device.next_batch(1, 1 << 20).unwrap().unwrap();
    let v1 = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &b1.bytes, w.clock.now()).unwrap();
    w.device.apply_ack(&v1.signed_ack).unwrap();
    let b2 = w.device.next_batch(1, 1 << 20).unwrap().unwrap();
    let v2 = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &b2.bytes, w.clock.now()).unwrap();
    w.device.apply_ack(&v2.signed_ack).unwrap();
    let report = w.device.apply_ack(&v1.signed_ack).unwrap();
    assert_eq!((report.removed, report.acked_through), (0, 2));
}
