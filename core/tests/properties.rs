//! Property tests over random sequences of operations: the attempt counter follows the PIN-try
//! model exactly, and the receipt chain reaches dispatch whole whatever the order of uploads, lost
//! acks, crashes and restarts.

mod common;

use common::*;
use doorstep_core::CoreError;
use doorstep_core::device::{HandoverOutcome, ParcelState};
use doorstep_core::issuer::ReceiptLedger;
use doorstep_core::protocol::{FailureReason, Holder, ManifestKind, ReceiptStatus, genesis_hash};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum CounterOp {
    Wrong,
    Right,
    Malformed,
    Reopen,
    Reset,
}

fn counter_op() -> impl Strategy<Value = CounterOp> {
    prop_oneof![
        6 => Just(CounterOp::Wrong),
        1 => Just(CounterOp::Right),
        2 => Just(CounterOp::Malformed),
        1 => Just(CounterOp::Reopen),
        1 => Just(CounterOp::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn the_attempt_counter_follows_the_pin_try_model(ops in proptest::collection::vec(counter_op(), 1..30)) {
        let mut w = World::new();
        w.add_parcel(0, &[Holder::Customer]);
        w.push_full();
        let max = 5u32;
        let (mut used, mut delivered) = (0u32, false);
        for op in ops {
            let locked = used >= max;
            match op {
                CounterOp::Wrong | CounterOp::Right => {
                    let code = if matches!(op, CounterOp::Right) { w.code(0) } else { w.wrong_code(0) };
                    let out = w.device.verify_code(&w.scan(0), &code, None).unwrap();
                    if delivered {
                        prop_assert!(matches!(out, HandoverOutcome::AlreadyDelivered { .. }), "{:?}", out);
                    } else if locked {
                        prop_assert!(matches!(out, HandoverOutcome::Locked { receipt: None, .. }), "{:?}", out);
                    } else {
                        used += 1;
                        match op {
                            CounterOp::Right => {
                                delivered = true;
                                prop_assert!(matches!(out, HandoverOutcome::Accepted { .. }), "{:?}", out);
                            }
                            _ if used >= max => prop_assert!(matches!(out, HandoverOutcome::Locked { receipt: Some(_), .. }), "{:?}", out),
                            _ => prop_assert_eq!(out, HandoverOutcome::WrongCode { attempts_left: max - used }),
                        }
                    }
                }
                CounterOp::Malformed => {
                    prop_assert!(matches!(w.device.verify_code(&w.scan(0), "12 34 5", None), Err(CoreError::MalformedCode)));
                }
                CounterOp::Reopen => w.reopen(),
                CounterOp::Reset => {
                    let mut spec = w.spec(ManifestKind::Delta);
                    spec.resets = vec!["P00000".into()];
                    let signed = w.sign(&spec);
                    w.device.apply_manifest(&signed).unwrap();
                    if !delivered {
                        used = 0;
                    }
                }
            }
            let p = w.device.parcel("P00000").unwrap();
            prop_assert_eq!(p.attempts_used, used);
            let state = if delivered { ParcelState::Delivered } else if used >= max { ParcelState::Locked } else { ParcelState::Pending };
            prop_assert_eq!(p.state, state);
        }
    }
}

#[derive(Clone, Debug)]
enum ChainOp {
    Deliver(usize),
    Fail(usize),
    Wrong(usize),
    Upload(u32),
    LoseAck(u32),
    FailUpload,
    Reopen,
}

fn chain_op() -> impl Strategy<Value = ChainOp> {
    prop_oneof![
        3 => (0..12usize).prop_map(ChainOp::Deliver),
        2 => (0..12usize).prop_map(ChainOp::Fail),
        2 => (0..12usize).prop_map(ChainOp::Wrong),
        2 => (1..6u32).prop_map(ChainOp::Upload),
        1 => (1..6u32).prop_map(ChainOp::LoseAck),
        1 => Just(ChainOp::FailUpload),
        1 => Just(ChainOp::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_receipt_chain_reaches_dispatch_whole(ops in proptest::collection::vec(chain_op(), 1..40)) {
        let mut w = World::new();
        for i in 0..12 {
            w.add_parcel(i, &[Holder::Customer]);
        }
        w.push_full();
        for op in ops {
            match op {
                ChainOp::Deliver(i) => { let _ = w.device.verify_code(&w.scan(i), &w.code(i), None).unwrap(); }
                ChainOp::Wrong(i) => { let _ = w.device.verify_code(&w.scan(i), &w.wrong_code(i), None).unwrap(); }
                ChainOp::Fail(i) => { let _ = w.device.record_failure(&w.scan(i), FailureReason::NoAccess, None, None); }
                ChainOp::Upload(n) | ChainOp::LoseAck(n) => {
                    if let Some(batch) = w.device.next_batch(n, 1 << 20).unwrap() {
                        let verdict = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &batch.bytes, w.clock.now()).unwrap();
                        prop_assert_eq!(verdict.count(ReceiptStatus::Rejected) + verdict.count(ReceiptStatus::Flagged), 0);
                        if matches!(op, ChainOp::Upload(_)) {
                            w.device.apply_ack(&verdict.signed_ack).unwrap();
                        }
                    }
                }
                ChainOp::FailUpload => { w.device.record_upload_failure("offline").unwrap(); }
                ChainOp::Reopen => w.reopen(),
            }
            // Nothing lost, nothing twice: the device holds exactly the receipts after its ack
            // checkpoint, without gaps, and dispatch holds at least up to that checkpoint (it may be
            // ahead after a lost ack).
            let pending = w.device.status().unwrap().pending_receipts as i64;
            let held = w.ledger.head("dev-1").unwrap().map_or(0, |h| h.seq) as i64;
            let conn = rusqlite::Connection::open(&w.path).unwrap();
            let (acked, first, last): (i64, Option<i64>, Option<i64>) = conn
                .query_row("SELECT acked_seq, (SELECT min(seq) FROM receipt), (SELECT max(seq) FROM receipt) FROM device_state", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap();
            if pending > 0 {
                prop_assert_eq!(first, Some(acked + 1));
                prop_assert_eq!(last, Some(acked + pending));
            }
            prop_assert!(held >= acked && held <= acked + pending);
        }
        w.upload_all();
        prop_assert_eq!(w.device.status().unwrap().pending_receipts, 0);
        let chain = w.ledger.chains.get("dev-1").cloned().unwrap_or_default();
        let mut prev = genesis_hash("dev-1");
        for (i, r) in chain.iter().enumerate() {
            prop_assert_eq!(r.body.seq, i as u64 + 1);
            prop_assert_eq!(r.body.prev_hash, prev);
            prop_assert_eq!(r.status, ReceiptStatus::Accepted);
            prev = r.receipt.hash();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Invariant 8: no input makes the core panic. Random bytes, and valid messages with random
    /// bytes changed, go to every parser; each returns a typed error or a normal answer, and a
    /// refused input changes nothing.
    #[test]
    fn no_input_makes_the_core_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        text in ".{0,40}",
    ) {
        let mut w = World::with_parcels(3);
        let _ = w.device.apply_manifest(&junk);
        let _ = w.device.apply_ack(&junk);
        let _ = w.device.complete_enrolment(&junk);
        let _ = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &junk, w.clock.now());
        let _ = w.issuer.enrol(&junk, "x", w.clock.now());
        let _ = w.device.verify_qr_token(&w.scan(0), &text, None);
        let _ = w.device.verify_code(&w.scan(0), &text, None);
        let _ = w.device.parcel_by_barcode(&text);
        // A valid manifest with random edits: refused, it changes nothing.
        let before = (w.device.parcels().unwrap(), w.device.status().unwrap().manifest_sequence);
        let spec = w.spec(ManifestKind::Delta);
        let mut edited = w.issuer.build_manifest(&w.record, &spec).unwrap();
        for (pos, byte) in &edits {
            let i = pos % edited.len();
            edited[i] = *byte;
        }
        if w.device.apply_manifest(&edited).is_err() {
            let after = (w.device.parcels().unwrap(), w.device.status().unwrap().manifest_sequence);
            prop_assert_eq!(after, before);
        }
    }
}
