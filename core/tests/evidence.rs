//! Evidence anyone can check: a parcel's receipts with dispatch's signed statement verify offline
//! with only dispatch's public key, and changing any byte, leaving a receipt out, slipping in
//! another phone's or another parcel's receipt, or trusting another key is caught.

mod common;

use common::*;
use doorstep_core::crypto::SigningKey;
use doorstep_core::device::HandoverOutcome;
use doorstep_core::evidence::{self, EvidenceRejection, Statement};
use doorstep_core::protocol::{FailureReason, ReceiptEvent, ReceiptStatus};

/// A day where parcel 0 got a wrong code and then its right one, with other parcels' receipts
/// before, between and after; everything uploaded. Returns the world and parcel 0's evidence.
fn evidence_of_parcel_0() -> (World, Vec<u8>) {
    let mut w = World::with_parcels(6);
    w.device.record_failure(&w.scan(3), FailureReason::RecipientUnavailable, None, None).unwrap();
    let wrong = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
    assert!(matches!(wrong, HandoverOutcome::WrongCode { .. }), "{wrong:?}");
    assert!(matches!(w.device.verify_code(&w.scan(1), &w.code(1), None).unwrap(), HandoverOutcome::Accepted { .. }));
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Accepted { .. }));
    assert!(matches!(w.device.verify_code(&w.scan(4), &w.code(4), None).unwrap(), HandoverOutcome::Accepted { .. }));
    w.upload_all();
    let bytes = seal(&w, "P00000", |_, _| {});
    (w, bytes)
}

/// Dispatch's evidence about `parcel` from the world's ledger, after `edit` (a dishonest dispatch
/// signing what it likes).
fn seal(
    w: &World,
    parcel: &str,
    edit: impl FnOnce(&mut Statement, &mut Vec<doorstep_core::protocol::SignedReceipt>),
) -> Vec<u8> {
    let chain = &w.ledger.chains[&w.record.device_id];
    let (extract, mut receipts) =
        evidence::extract(&w.record.device_id, &w.record.public_key, chain, parcel).unwrap().unwrap();
    let mut statement = Statement { parcel_id: parcel.into(), issued_at: w.clock.now(), chains: vec![extract] };
    edit(&mut statement, &mut receipts);
    w.issuer.evidence(&statement, receipts).unwrap()
}

fn trusted(w: &World) -> Vec<doorstep_core::crypto::VerifyingKey> {
    vec![w.issuer.current_key().verifying_key()]
}

#[test]
fn a_parcels_evidence_verifies_with_only_dispatchs_public_key() {
    let (w, bytes) = evidence_of_parcel_0();
    let report = evidence::verify(&bytes, &trusted(&w)).unwrap();
    assert_eq!(report.parcel_id, "P00000");
    let events: Vec<(ReceiptEvent, ReceiptStatus)> = report.events.iter().map(|e| (e.event, e.status)).collect();
    assert_eq!(
        events,
        [(ReceiptEvent::WrongCode, ReceiptStatus::Accepted), (ReceiptEvent::Delivered, ReceiptStatus::Accepted)]
    );
    assert_eq!(report.events[1].holder, Some(doorstep_core::protocol::Holder::Customer));
    // Other parcels' receipts are in it only as hashes: no barcode, note or location of theirs.
    let text = String::from_utf8_lossy(&bytes);
    for other in ["BC00000001", "BC00000003", "BC00000004"] {
        assert!(!text.contains(other), "{other} is readable in the evidence");
    }
}

#[test]
fn changing_any_byte_of_the_file_is_detected() {
    let (w, bytes) = evidence_of_parcel_0();
    let keys = trusted(&w);
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        assert!(evidence::verify(&changed, &keys).is_err(), "byte {i} changed and still verified");
    }
}

#[test]
fn another_key_is_not_trusted() {
    let (_, bytes) = evidence_of_parcel_0();
    let other = SigningKey::generate("dispatch-1").unwrap().verifying_key();
    assert_eq!(evidence::verify(&bytes, &[other]), Err(EvidenceRejection::BadStatementSignature));
    let elsewhere = SigningKey::generate("carrier-2").unwrap().verifying_key();
    assert_eq!(evidence::verify(&bytes, &[elsewhere]), Err(EvidenceRejection::UntrustedKey("dispatch-1".into())));
}

#[test]
fn even_under_dispatchs_own_signature_receipts_and_verdicts_must_match_the_chain() {
    let (w, _) = evidence_of_parcel_0();
    let keys = trusted(&w);
    let verify = |bytes: Vec<u8>| evidence::verify(&bytes, &keys).unwrap_err();
    // A receipt left out while its verdict stays.
    let dropped = seal(&w, "P00000", |_, receipts| {
        receipts.remove(0);
    });
    assert!(matches!(verify(dropped), EvidenceRejection::Mismatch(_)));
    // A verdict left out while its receipt stays.
    let unstated = seal(&w, "P00000", |s, _| {
        s.chains[0].verdicts.remove(0);
    });
    assert!(matches!(verify(unstated), EvidenceRejection::Mismatch(_)));
    // A receipt about another parcel slipped in.
    let other = w.ledger.chains[&w.record.device_id][0].receipt.clone();
    let slipped = seal(&w, "P00000", |_, receipts| receipts.push(other));
    assert!(matches!(verify(slipped), EvidenceRejection::Mismatch(_) | EvidenceRejection::BrokenChain { .. }));
    // A chain hash changed: the receipt no longer sits where it is said to.
    let rewritten = seal(&w, "P00000", |s, _| s.chains[0].hashes[1].0[0] ^= 1);
    assert!(matches!(verify(rewritten), EvidenceRejection::BrokenChain { .. }));
    // A verdict upgraded to another receipt's sequence.
    let moved = seal(&w, "P00000", |s, _| s.chains[0].verdicts[0].seq += 1);
    assert!(matches!(verify(moved), EvidenceRejection::Mismatch(_) | EvidenceRejection::BrokenChain { .. }));
    // The phone's key swapped for another: its receipts no longer verify.
    let swapped = seal(&w, "P00000", |s, _| {
        s.chains[0].device.public = SigningKey::generate("x").unwrap().verifying_key().public;
    });
    assert!(matches!(verify(swapped), EvidenceRejection::BadReceiptSignature { .. }));
}

#[test]
fn garbage_is_a_typed_rejection() {
    let (w, bytes) = evidence_of_parcel_0();
    let keys = trusted(&w);
    for input in [&b""[..], b"{}", b"[]", b"null", &bytes[..bytes.len() / 2], "é".as_bytes()] {
        assert!(matches!(evidence::verify(input, &keys), Err(EvidenceRejection::Malformed(_))), "{input:?}");
    }
    let huge = vec![b' '; evidence::MAX_EVIDENCE_BYTES + 1];
    assert!(matches!(evidence::verify(&huge, &keys), Err(EvidenceRejection::TooLarge { .. })));
}

#[test]
fn the_same_content_spelled_otherwise_is_refused_as_not_what_dispatch_wrote() {
    let (w, bytes) = evidence_of_parcel_0();
    let text = String::from_utf8(bytes).unwrap();
    // `"P00000"` spelled with a JSON escape reads the same, but is not the file dispatch wrote.
    let respelled = text.replacen("\"parcel_id\":\"P00000\"", "\"parcel_id\":\"\\u005000000\"", 1);
    assert_ne!(respelled, text);
    assert_eq!(evidence::verify(respelled.as_bytes(), &trusted(&w)), Err(EvidenceRejection::NotAsWritten));
}
