//! What dispatch tells people when receipts arrive: the customer hears of each hand-over (to whom,
//! when, in the delivery address's time) and each failed attempt, once, whatever number of times
//! the phone sends the batch; a receipt flagged for review is an operator alert (`GET /v1/alerts`)
//! and no customer is told it happened.

use doorstep_core::device::ScannedParcel;
use doorstep_core::protocol::{FailureReason, HandoverMethod, Holder, ReceiptStatus};
use doorstep_tests::http::Server;
use doorstep_tests::insider::Insider;

/// Every message in the state folder's outbox whose subject names `parcel`'s door event.
fn notices(server: &Server, parcel: &str) -> Vec<String> {
    server.dispatch.send_pending_mail().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(server.state.path().join("outbox")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let about = format!("Subject: Parcel {parcel} was handed over");
        let attempt = format!("Subject: Delivery attempt for parcel {parcel}");
        if text.contains(&about) || text.contains(&attempt) {
            found.push(text);
        }
    }
    found
}

#[test]
fn the_customer_is_told_of_each_handover_and_failed_attempt_once() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    phone.verify_code(&[ScannedParcel::scanned("BC0")], &server.code("P0"), None).unwrap();
    phone.record_failure(&[ScannedParcel::scanned("BC1")], FailureReason::RecipientUnavailable, None, None).unwrap();
    let batches = server.upload(&phone, &device_id);
    // Sent again (a lost ack): all duplicates, nobody is told twice.
    for batch in &batches {
        let (status, _) = server.signed_post(&phone, &format!("/v1/devices/{device_id}/receipts"), batch);
        assert_eq!(status, 200);
    }
    let handed = notices(&server, "P0");
    assert_eq!(handed.len(), 1, "{handed:?}");
    let local = server.clock.now().with_timezone(&server.scene.zone.parse::<chrono_tz::Tz>().unwrap());
    let text = handed[0].replace("\r\n", "\n");
    assert!(text.contains("Parcel P0 was handed over to you (with your code)"), "{text}");
    assert!(text.contains(&format!("on {} ({})", local.format("%Y-%m-%d at %H:%M"), server.scene.zone)), "{text}");
    assert!(text.contains("If that was not you"), "{text}");
    assert!(!text.contains(&server.code("P0")), "no code in the notice");
    let failed = notices(&server, "P1");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].replace("\r\n", "\n").contains("recipient unavailable"), "{}", failed[0]);
}

#[test]
fn a_flagged_receipt_is_an_operator_alert_and_no_customer_is_told() {
    let server = Server::start();
    let (phone, dir, _) = server.day();
    let (status, body) = server.op_get("/v1/alerts");
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    let insider = Insider::of(&dir.path().join("d.db"));
    let forged =
        insider.handover("P2", HandoverMethod::Code, Some(Holder::Customer), Some("000000"), server.clock.now());
    let verdict = insider.upload(&server, &phone, forged).unwrap();
    assert_eq!(verdict.status, ReceiptStatus::Flagged);
    let (status, body) = server.op_get("/v1/alerts");
    assert_eq!(status, 200);
    let alerts: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alerts.as_array().map(Vec::len), Some(1), "{alerts}");
    assert_eq!(alerts[0]["receipt_id"], verdict.receipt_id.to_string());
    assert_eq!(alerts[0]["parcels"], serde_json::json!(["P2"]));
    assert!(alerts[0]["reason"].as_str().unwrap().contains("does not match"), "{alerts}");
    assert!(notices(&server, "P2").is_empty(), "the customer is not told of a hand-over held for review");
}

#[test]
fn a_receipt_sent_twice_in_one_batch_is_told_once_not_hidden() {
    let server = Server::start();
    let (phone, dir, _) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    let code = server.code("P4");
    let body = insider.handover("P4", HandoverMethod::Code, Some(Holder::Customer), Some(&code), server.clock.now());
    let mut receipts = insider.sign_chained(&server, vec![body]);
    receipts.push(receipts[0].clone());
    let results = insider.upload_receipts(&server, &phone, receipts).unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [ReceiptStatus::Accepted, ReceiptStatus::Duplicate]);
    assert_eq!(notices(&server, "P4").len(), 1, "the stored copy is told, once");
}
