//! Several dispatch nodes on one PostgreSQL database, raced: the same phone's uploads reaching two
//! nodes at once store each receipt once in chain order; two phones handing over one parcel at
//! two nodes at once get one hand-over accepted and the other flagged; one enrolment token reaching two nodes
//! enrols one phone; operator changes made on two nodes at once number every phone's deltas with
//! no gap and no repeat; a node holding other keys is refused. Each race is run many times.
//!
//! These need PostgreSQL (`DOORSTEP_TEST_POSTGRES`, which `scripts/test-all.sh` sets after
//! `scripts/postgres.sh` started a private server); without it they say so and pass, since one
//! SQLite file has one node by design.

use std::sync::{Arc, Barrier};
use std::thread;

use doorstep_core::device::{HandoverOutcome, ScannedParcel};
use doorstep_core::protocol::{Ack, REQUEST_HEADER, ReceiptStatus, SignedEnvelope, domain};
use doorstep_tests::http::{Server, post, test_database};

fn fleet() -> Option<(Server, Server)> {
    if test_database().is_none() {
        eprintln!("skipped: set DOORSTEP_TEST_POSTGRES (scripts/postgres.sh) to race nodes on PostgreSQL");
        return None;
    }
    let a = Server::start();
    let b = a.another_node();
    Some((a, b))
}

/// One request to send from its own thread.
type Job<T> = Box<dyn FnOnce() -> T + Send>;

/// Runs `jobs` at the same instant, one thread each; returns their results in order.
fn at_once<T: Send + 'static>(jobs: Vec<Job<T>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                job()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn one_phone_uploading_the_same_batch_to_two_nodes_at_once_stores_each_receipt_once_in_chain_order() {
    let Some((a, b)) = fleet() else { return };
    let (phone, _dir, device_id) = a.day();
    let path = format!("/v1/devices/{device_id}/receipts");
    // Each parcel that needs a code: four wrong codes, then the right one; raced as made (one or
    // two receipts a batch).
    let mut attempts: Vec<(String, String)> = Vec::new();
    for i in 0..8 {
        let id = format!("P{i}");
        if a.dispatch.codes(&id).unwrap().is_empty() {
            continue;
        }
        attempts.extend((0..4).map(|_| (format!("BC{i}"), "000000".to_owned())));
        attempts.push((format!("BC{i}"), a.code(&id)));
    }
    assert!(attempts.len() >= 10, "{attempts:?}");
    let mut made = 0;
    for (round, chunk) in attempts.chunks(2).enumerate() {
        for (barcode, code) in chunk {
            let out = phone.verify_code(&[ScannedParcel::scanned(barcode)], code, None).unwrap();
            assert!(matches!(out, HandoverOutcome::WrongCode { .. } | HandoverOutcome::Accepted { .. }), "{out:?}");
            made += 1;
        }
        let batch = phone.next_batch(10, 64 * 1024).unwrap().unwrap();
        let jobs: Vec<Job<(u16, Vec<u8>)>> = [&a, &b]
            .into_iter()
            .map(|node| {
                let (url, body) = (node.url(&path), batch.bytes.clone());
                let signature = phone.sign_request("POST", &path, &body).unwrap();
                Box::new(move || post(&url, &[(REQUEST_HEADER, &signature)], &body)) as Box<_>
            })
            .collect();
        let answers = at_once(jobs);
        for (status, body) in &answers {
            assert_eq!(*status, 200, "round {round}: {}", String::from_utf8_lossy(body));
            // Each node's verdicts: stored now, or stored already by the other node.
            for status in verdicts(&a, body) {
                assert!(
                    matches!(status, ReceiptStatus::Accepted | ReceiptStatus::Duplicate),
                    "round {round}: {status:?}"
                );
            }
        }
        // Either ack is the truth: both nodes judged the same chain.
        phone.apply_ack(&answers[round % 2].1).unwrap();
    }
    assert_eq!(phone.status().unwrap().pending_receipts, 0, "every receipt acknowledged");
    let held = a.dispatch.receipts(&device_id).unwrap();
    let seqs: Vec<u64> = held.iter().map(|r| r.body.seq).collect();
    assert_eq!(seqs, (1..=made as u64).collect::<Vec<_>>(), "each receipt once, no gap, no fork");
    assert!(held.iter().all(|r| r.status == ReceiptStatus::Accepted), "{held:?}");
    assert_eq!(b.dispatch.receipts(&device_id).unwrap().len(), made, "both nodes read one ledger");
}

/// The verdicts of a signed ack.
fn verdicts(server: &Server, ack: &[u8]) -> Vec<ReceiptStatus> {
    let ack = SignedEnvelope::open(ack, domain::ACK, &server.dispatch.verifying_keys()).unwrap();
    serde_json::from_slice::<Ack>(&ack).unwrap().results.iter().map(|r| r.status).collect()
}

#[test]
fn two_phones_handing_over_one_parcel_at_two_nodes_at_once_get_one_handover_accepted() {
    let Some((a, b)) = fleet() else { return };
    let (first, dir, first_id) = a.day();
    let (second, second_id) = a.synced_phone("R1", &dir.path().join("second.db"));
    let phones = [(&first, &first_id, &a), (&second, &second_id, &b)];
    let mut raced = 0;
    for i in 0..8 {
        let parcel = format!("P{i}");
        if a.dispatch.codes(&parcel).unwrap().is_empty() {
            continue;
        }
        // Both phones hold the parcel and its code, offline: each hands it over.
        let code = a.code(&parcel);
        let jobs: Vec<Job<(u16, Vec<u8>)>> = phones
            .iter()
            .map(|(phone, id, node)| {
                let out = phone.verify_code(&[ScannedParcel::scanned(format!("BC{i}"))], &code, None).unwrap();
                assert!(matches!(out, HandoverOutcome::Accepted { .. }), "{out:?}");
                let batch = phone.next_batch(10, 64 * 1024).unwrap().unwrap();
                let path = format!("/v1/devices/{id}/receipts");
                let signature = phone.sign_request("POST", &path, &batch.bytes).unwrap();
                let url = node.url(&path);
                Box::new(move || post(&url, &[(REQUEST_HEADER, &signature)], &batch.bytes)) as Box<_>
            })
            .collect();
        let answers = at_once(jobs);
        let mut statuses: Vec<ReceiptStatus> = Vec::new();
        for ((phone, _, _), (status, body)) in phones.iter().zip(&answers) {
            assert_eq!(*status, 200, "{parcel}: {}", String::from_utf8_lossy(body));
            statuses.extend(verdicts(&a, body));
            phone.apply_ack(body).unwrap();
        }
        statuses.sort_by_key(|s| *s != ReceiptStatus::Accepted);
        assert_eq!(statuses, [ReceiptStatus::Accepted, ReceiptStatus::Flagged], "{parcel}: one hand-over counts");
        raced += 1;
    }
    assert!(raced >= 4, "{raced} parcels raced");
}

#[test]
fn an_enrolment_token_reaching_two_nodes_at_once_enrols_one_phone() {
    let Some((a, b)) = fleet() else { return };
    let dir = tempfile::tempdir().unwrap();
    for round in 0..12 {
        let (status, token) = a.op_post("/v1/enrolment-tokens", br#"{"route_id":"R1"}"#);
        assert_eq!(status, 201);
        let token = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["token"].as_str().unwrap().to_owned();
        let jobs: Vec<Job<u16>> = [&a, &b]
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                let phone = node.phone(&dir.path().join(format!("{round}-{i}.db")));
                let (url, request, token) = (node.url("/v1/enrol"), phone.enrolment_request().unwrap(), token.clone());
                Box::new(move || post(&url, &[("Enrolment-Token", &token)], &request).0) as Box<_>
            })
            .collect();
        let mut statuses = at_once(jobs);
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 403], "round {round}: one node enrols, the other refuses the spent token");
    }
    assert_eq!(a.sql("SELECT count(*) FROM device"), "12");
}

#[test]
fn operator_changes_made_on_two_nodes_at_once_number_each_phones_deltas_without_gap_or_repeat() {
    let Some((a, b)) = fleet() else { return };
    let (phone, _dir, device_id) = a.day();
    for round in 0..6 {
        // A reset on one node and a reissue on the other, at once, each a delta to the phone.
        let jobs: Vec<Job<(u16, Vec<u8>)>> = vec![
            {
                let (url, auth) = (a.url(&format!("/v1/parcels/P{}/reset", round % 3)), a.operator_auth());
                Box::new(move || post(&url, &[(auth.0, &auth.1)], b""))
            },
            {
                let (url, auth) = (b.url(&format!("/v1/parcels/P{}/reissue", 3 + round % 3)), b.operator_auth());
                Box::new(move || post(&url, &[(auth.0, &auth.1)], b""))
            },
        ];
        for (status, body) in at_once(jobs) {
            assert!(status == 200 || status == 409, "round {round}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    let (deltas, highest): (String, String) = (
        a.sql(&format!("SELECT count(*) FROM delta WHERE device_id = '{device_id}'")),
        a.sql(&format!("SELECT max(seq) FROM delta WHERE device_id = '{device_id}'")),
    );
    assert_eq!(deltas, highest, "the journal holds 1..=n, each number once (the full manifest is 1)");
    // The phone applies every one of them in order, half from each node.
    let mut applied = 0;
    while let Some(envelope) =
        [&a, &b][applied % 2].manifest(&phone, &device_id, phone.status().unwrap().manifest_sequence)
    {
        phone.apply_manifest(&envelope).unwrap();
        applied += 1;
    }
    assert_eq!((applied + 1).to_string(), deltas, "every delta after the full manifest the phone applied first");
}

#[test]
fn a_node_holding_other_keys_than_the_database_was_started_with_is_refused() {
    let Some((a, _b)) = fleet() else { return };
    // A node whose keys/ was never copied from the others: it would make keys of its own.
    let fresh = tempfile::tempdir().unwrap();
    let refused = a.open_node(fresh.path()).err().expect("refused");
    assert!(refused.to_string().contains("same keys/"), "{refused}");
    // A node with the right key-encryption key but another signing key of the same id.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("keys")).unwrap();
    std::fs::copy(a.state.path().join("keys/kek"), other.path().join("keys/kek")).unwrap();
    let refused = a.open_node(other.path()).err().expect("refused");
    assert!(refused.to_string().contains("dispatch-1.pk8"), "{refused}");
}
