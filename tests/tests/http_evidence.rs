//! Evidence anyone can check, from a running dispatch: an operator downloads a parcel's evidence
//! file, and it verifies offline against the keys dispatch publishes, with only the parcel's own
//! receipts readable in it; the `doorstep evidence` / `verify-evidence` path does the same.

use doorstep_core::crypto::VerifyingKey;
use doorstep_core::device::ScannedParcel;
use doorstep_core::evidence;
use doorstep_core::protocol::{FailureReason, ReceiptEvent, ReceiptStatus};
use doorstep_tests::http::{Server, get};

fn scan(barcode: &str) -> Vec<ScannedParcel> {
    vec![ScannedParcel::scanned(barcode)]
}

/// A wrong code for `right`.
fn wrong(right: &str) -> String {
    right.bytes().map(|b| char::from(b'0' + (b - b'0' + 5) % 10)).collect()
}

#[test]
fn a_parcels_evidence_from_dispatch_verifies_offline_with_its_published_keys() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    phone.record_failure(&scan("BC2"), FailureReason::RecipientUnavailable, None, None).unwrap();
    phone.verify_code(&scan("BC0"), &wrong(&server.code("P0")), None).unwrap();
    phone.verify_code(&scan("BC1"), &server.code("P1"), None).unwrap();
    phone.verify_code(&scan("BC0"), &server.code("P0"), None).unwrap();
    server.upload(&phone, &device_id);

    let (status, file) = server.op_get("/v1/parcels/P0/evidence");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&file));
    let (status, keys) = get(&server.url("/v1/dispatch-keys"));
    assert_eq!(status, 200);
    let keys: Vec<VerifyingKey> = serde_json::from_slice(&keys).unwrap();
    let report = evidence::verify(&file, &keys).unwrap();
    let events: Vec<(ReceiptEvent, ReceiptStatus)> = report.events.iter().map(|e| (e.event, e.status)).collect();
    assert_eq!(
        events,
        [(ReceiptEvent::WrongCode, ReceiptStatus::Accepted), (ReceiptEvent::Delivered, ReceiptStatus::Accepted)]
    );
    assert!(report.events.iter().all(|e| e.device_id == device_id));
    // The other parcels' receipts in between are there only as hashes.
    let text = String::from_utf8_lossy(&file);
    assert!(!text.contains("BC1") && !text.contains("BC2"), "another parcel is readable: {text}");
    // One byte changed anywhere in the file is caught.
    for i in (0..file.len()).step_by(7) {
        let mut changed = file.clone();
        changed[i] ^= 0x20;
        assert!(evidence::verify(&changed, &keys).is_err(), "byte {i} changed and still verified");
    }

    // A parcel with no receipt yet: a valid statement that there is none. An unknown id: 404.
    let (status, none) = server.op_get("/v1/parcels/P5/evidence");
    assert_eq!(status, 200);
    assert!(evidence::verify(&none, &keys).unwrap().events.is_empty());
    assert_eq!(server.op_get("/v1/parcels/NOPE/evidence").0, 404);
}

#[test]
fn the_evidence_command_writes_a_file_that_verify_evidence_accepts_and_a_changed_one_it_refuses() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    phone.record_failure(&scan("BC4"), FailureReason::RefusedByRecipient, None, None).unwrap();
    server.upload(&phone, &device_id);
    let (out, keys) = (dir.path().join("evidence-P4.json"), dir.path().join("keys.json"));
    let said = doorstep_dispatch::proof::write(&server.dispatch, "P4", &out, Some(&keys)).unwrap();
    assert!(said.contains("doorstep verify-evidence"), "{said}");

    let trusted = doorstep_dispatch::proof::read_keys(&keys).unwrap();
    let report = doorstep_dispatch::proof::check(&out, &trusted).unwrap().unwrap();
    let lines = doorstep_dispatch::proof::describe(&report);
    assert!(lines[0].starts_with("valid: evidence about parcel P4"), "{lines:?}");
    assert!(lines[1].contains("failed (refused_by_recipient)  dispatch: accepted"), "{lines:?}");

    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&out, &bytes).unwrap();
    assert!(doorstep_dispatch::proof::check(&out, &trusted).unwrap().is_err());
    // A keys document that is not one is bad input, not "invalid evidence".
    std::fs::write(&keys, b"{\"key\": 1}").unwrap();
    assert!(doorstep_dispatch::proof::read_keys(&keys).is_err());
}

#[test]
fn evidence_tells_nothing_of_other_customers_nor_why_dispatch_flagged_a_receipt() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    // One failure recorded for two parcels of two customers: no file for either.
    let both = vec![ScannedParcel::scanned("BC2"), ScannedParcel::scanned("BC3")];
    phone.record_failure(&both, FailureReason::NoAccess, Some("gate code 4711".into()), None).unwrap();
    // P0 handed over, then handed over again by a forger: the second is flagged.
    phone.verify_code(&scan("BC0"), &server.code("P0"), None).unwrap();
    server.upload(&phone, &device_id);
    let insider = doorstep_tests::insider::Insider::of(&dir.path().join("d.db"));
    let again = insider.handover(
        "P0",
        doorstep_core::protocol::HandoverMethod::Code,
        Some(doorstep_core::protocol::Holder::Customer),
        Some(&server.code("P0")),
        server.clock.now(),
    );
    let verdict = insider.upload(&server, &phone, again).unwrap();
    assert_eq!(verdict.status, ReceiptStatus::Flagged);

    let (status, body) = server.op_get("/v1/parcels/P2/evidence");
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("another customer"));

    let (status, file) = server.op_get("/v1/parcels/P0/evidence");
    assert_eq!(status, 200);
    let keys: Vec<VerifyingKey> = serde_json::from_slice(&get(&server.url("/v1/dispatch-keys")).1).unwrap();
    let report = evidence::verify(&file, &keys).unwrap();
    let flagged = report.events.iter().find(|e| e.status == ReceiptStatus::Flagged).unwrap();
    assert_eq!(flagged.status_reason.as_deref(), Some(doorstep_core::issuer::FLAGGED_FOR_PHONE));
    assert!(!String::from_utf8_lossy(&file).contains("already handed over"), "dispatch's own reason stays at dispatch");
}
