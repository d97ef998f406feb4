//! A return collected with a code, through a running dispatch: a pickup imported as one gets a
//! pickup code e-mailed like a delivery code; the phone collects it only with that code; the
//! customer is told it was collected, their page says so, and the EPCIS export shows it as a
//! collection of returned goods.

use doorstep_core::device::{HandoverOutcome, ScannedParcel};
use doorstep_core::protocol::{ReceiptEvent, ReceiptStatus, Task};
use doorstep_dispatch::store::ParcelStatus;
use doorstep_tests::http::Server;

fn outbox_texts(server: &Server) -> Vec<String> {
    std::fs::read_dir(server.state.path().join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn a_return_is_collected_with_its_pickup_code_and_the_customer_is_told() {
    let server = Server::start();
    let mut parcels = server.parcels(4);
    parcels[0].task = Task::Pickup;
    parcels[1].task = Task::Pickup;
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    for p in &parcels {
        assert_eq!(server.op_post(&format!("/v1/parcels/{}/departed", p.parcel_id), b"").0, 200);
    }
    // The customer's e-mail names a pickup code.
    let (code, token) = server.read_email("P0");
    let mail = outbox_texts(&server).into_iter().find(|t| t.contains("Parcel: P0")).unwrap();
    assert!(mail.contains("Subject: Your pickup code for parcel P0"), "{mail}");
    assert!(mail.contains("A driver will collect your return."), "{mail}");
    assert!(mail.contains(&format!("Pickup code: {code}")));

    let dir = tempfile::tempdir().unwrap();
    let (phone, device_id) = server.synced_phone("R1", &dir.path().join("d.db"));
    assert_eq!(phone.parcel("P0").unwrap().task, Task::Pickup);
    let scan = [ScannedParcel::scanned("BC0")];
    let out = phone.verify_code(&scan, &code, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { ref receipt, .. } if receipt.event == ReceiptEvent::Collected));
    // P1's customer is not home.
    let not_home = doorstep_core::protocol::FailureReason::RecipientUnavailable;
    phone.record_failure(&[ScannedParcel::scanned("BC1")], not_home, None, None).unwrap();
    server.upload(&phone, &device_id);
    assert_eq!(server.dispatch.parcel_history("P0").unwrap()[0].status, ReceiptStatus::Accepted);

    // Told at once, in words that fit; the page says so too.
    while server.dispatch.send_pending_mail().unwrap() > 0 {}
    let told = outbox_texts(&server).into_iter().find(|t| t.contains("Your return P0 was collected")).unwrap();
    assert!(told.contains("from you (with your code)"), "{told}");
    let missed =
        outbox_texts(&server).into_iter().find(|t| t.contains("Collection attempt for your return P1")).unwrap();
    assert!(missed.contains("The driver could not collect your return P1"), "{missed}");
    let page = server.dispatch.customer_page(&token, "P0").unwrap();
    assert!(matches!(page.status, ParcelStatus::Collected { .. }), "{:?}", page.status);

    // EPCIS: a collection of returned goods; the failed collection moved nothing, so no event.
    let (status, body) = server.op_get(&format!("/v1/epcis/events?date={}", server.scene.date));
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!((event["bizStep"].as_str(), event["disposition"].as_str()), (Some("collecting"), Some("returned")));
}
