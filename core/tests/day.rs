//! A whole simulated day on one device: every kind of door interaction, an offline stretch, a lost
//! ack, end-of-day expiry, and the upload. Dispatch must verify the entire chain, and afterwards
//! neither the database file nor its WAL (nor the logs) contains any code.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::crypto::sha256;
use doorstep_core::device::{HandoverOutcome, PURGE_GRACE_MS};
use doorstep_core::protocol::{Base64Bytes, FailureReason, Holder, QrToken, ReceiptEvent, ReceiptStatus, genesis_hash};

fn accepted(out: HandoverOutcome) {
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "{out:?}");
}

#[test]
fn a_full_day_reconciles_and_leaves_no_code_on_disk() {
    let mut w = World::with_parcels(30);
    let d = &w.device;

    // Morning, online.
    accepted(d.verify_code(&w.scan(0), &w.code(0), None).unwrap());
    accepted(d.verify_code(&w.scan(1), &w.delegate_code(1, "Neighbour Anna"), None).unwrap());
    accepted(d.deliver_without_code(&w.scan(2), None).unwrap());
    assert!(matches!(d.verify_code(&w.scan(3), &w.wrong_code(3), None).unwrap(), HandoverOutcome::WrongCode { .. }));
    accepted(d.verify_code(&w.scan(3), &w.code(3), None).unwrap());
    let token = w
        .issuer
        .sign_qr(&QrToken {
            parcel_id: "P00004".into(),
            holder: Holder::Customer,
            not_before: morning(),
            not_after: end_of_day(),
            nonce: Base64Bytes(vec![7; 16]),
            issued_at: None,
        })
        .unwrap();
    accepted(d.verify_qr_token(&w.scan(4), &token, None).unwrap());
    let first_upload = w.upload_all();
    // Five hand-overs and the wrong code before P00003's (it travels to dispatch as a receipt).
    assert_eq!(first_upload.iter().map(|v| v.count(ReceiptStatus::Accepted)).sum::<usize>(), 6);

    // Midday, in a basement with no signal.
    let d = &w.device;
    // (Parcels 2, 5, 8, ... need no code.)
    for _ in 0..5 {
        let _ = d.verify_code(&w.scan(6), &w.wrong_code(6), None).unwrap();
    }
    d.record_failure(&w.scan(6), FailureReason::CodeLockedOut, None, None).unwrap();
    d.record_failure(&w.scan(7), FailureReason::RecipientUnavailable, None, None).unwrap();
    d.record_failure(&w.scan(8), FailureReason::RefusedByRecipient, None, None).unwrap();
    accepted(d.verify_code(&w.scan(9), &w.code(9), None).unwrap());
    d.reverse_delivery("P00009", FailureReason::DamagedNotDelivered, Some("box crushed".into()), None).unwrap();
    for i in 10..20 {
        if i % 3 == 2 {
            accepted(d.deliver_without_code(&w.scan(i), None).unwrap());
        } else {
            accepted(d.verify_code(&w.scan(i), &w.code(i), None).unwrap());
        }
    }
    w.clock.advance(TimeDelta::hours(2));

    // Signal returns; the first ack is lost, the app retries.
    let batch = w.device.next_batch(8, 1 << 20).unwrap().unwrap();
    let _lost = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &batch.bytes, w.clock.now()).unwrap();
    w.device.record_upload_failure("connection reset").unwrap();
    w.reopen();
    let verdicts = w.upload_all();
    assert_eq!(verdicts[0].count(ReceiptStatus::Duplicate), 8);

    // End of day: the rest expire.
    w.clock.set_wall(end_of_day() + TimeDelta::milliseconds(PURGE_GRACE_MS + 1));
    let purge = w.device.purge_expired().unwrap();
    assert_eq!(purge.expired, 30 - 15, "every parcel not delivered expires (locked, failed, reversed, pending)");
    assert_eq!(w.device.purge_expired().unwrap().expired, 0, "purge is idempotent");
    w.upload_all();

    // Dispatch holds every receipt, all accepted, in one unbroken chain.
    let status = w.device.status().unwrap();
    assert_eq!(status.pending_receipts, 0);
    let chain = &w.ledger.chains["dev-1"];
    let mut prev = genesis_hash("dev-1");
    for (i, r) in chain.iter().enumerate() {
        assert_eq!(r.body.seq, i as u64 + 1);
        assert_eq!(r.body.prev_hash, prev);
        assert_eq!(r.status, ReceiptStatus::Accepted, "{:?}: {:?}", r.body.event, r.reason);
        prev = sha256(&r.receipt.body.0);
    }
    let count = |e: ReceiptEvent| chain.iter().filter(|r| r.body.event == e).count();
    assert_eq!(count(ReceiptEvent::Delivered), 16);
    assert_eq!(count(ReceiptEvent::Reversed), 1);
    assert_eq!(count(ReceiptEvent::LockedOut), 1);
    assert_eq!(count(ReceiptEvent::Failed), 3);
    assert_eq!(count(ReceiptEvent::Expired) as u32, purge.expired);
    assert_eq!(status.parcels.delivered, 15);

    // No code, and not the device secret, anywhere in the files or the logs.
    drop(std::mem::replace(
        &mut w.device,
        doorstep_core::device::Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).unwrap(),
    ));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        files.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(files.iter().map(Vec::len).sum::<usize>() > 10_000);
    let logs = w.logger.lines.lock().unwrap().join("\n");
    for code in w.codes.all_codes() {
        let digits = code.reveal().as_bytes();
        for f in &files {
            assert!(!f.windows(6).any(|win| win == digits), "a code's digits are in a database file");
        }
        assert!(!logs.contains(code.reveal()), "a code is in the logs");
    }
    for f in &files {
        assert!(!f.windows(32).any(|win| win == w.record.secret.expose()), "the device secret is on disk unsealed");
    }
}
