//! What any uploaded receipt must be, whatever it claims, checked by dispatch over real HTTP: a
//! bounded number of distinct parcels, a receipt id no other phone holds, a trusted time that never
//! went backwards along the phone's chain and is not ahead of dispatch's clock. An insider with a
//! phone's keys (`doorstep_tests::insider`) gets each of these flagged or rejected, never a server
//! error, and never an accepted receipt.

use chrono::TimeDelta;
use doorstep_core::protocol::{
    FailureReason, HandoverMethod, MAX_PARCELS_PER_RECEIPT, ReceiptBody, ReceiptEvent, ReceiptStatus,
};
use doorstep_tests::http::Server;
use doorstep_tests::insider::Insider;

fn status_and_reason(result: Result<doorstep_core::protocol::ReceiptResult, (u16, String)>) -> (ReceiptStatus, String) {
    let result = result.expect("the upload itself is answered, never a server error");
    (result.status, result.reason.unwrap_or_default())
}

/// A "failed" receipt (the driver could not hand over) for the given parcels of the phone.
fn failed(insider: &Insider, server: &Server, parcels: &[&str]) -> ReceiptBody {
    let mut body = insider.handover(parcels[0], HandoverMethod::NoCode, None, None, server.clock.now());
    body.event = ReceiptEvent::Failed;
    body.method = None;
    body.reason = Some(FailureReason::RecipientUnavailable);
    let template = body.parcels[0].clone();
    body.parcels = parcels
        .iter()
        .map(|p| {
            let mut parcel = template.clone();
            parcel.parcel_id = (*p).to_owned();
            parcel
        })
        .collect();
    body
}

/// No phone makes such a receipt, so it is rejected and not stored: it writes nothing at dispatch
/// (no hand-over that would hold the parcels it names, no history rows).
#[test]
fn a_receipt_naming_more_parcels_than_one_stop_holds_or_one_parcel_twice_is_rejected_and_not_stored() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    let many: Vec<String> = (0..=MAX_PARCELS_PER_RECEIPT).map(|i| format!("X{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, reason) = status_and_reason(insider.upload(&server, &phone, failed(&insider, &server, &many)));
    assert_eq!(status, ReceiptStatus::Rejected);
    assert!(reason.contains("more than 50"), "{reason}");
    let (status, reason) = status_and_reason(insider.upload(&server, &phone, failed(&insider, &server, &["P3", "P3"])));
    assert_eq!(status, ReceiptStatus::Rejected);
    assert!(reason.contains("names a parcel twice"), "{reason}");
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty());
    assert!(server.dispatch.parcel_history("P3").unwrap().is_empty());
    let (status, _) = status_and_reason(insider.upload(&server, &phone, failed(&insider, &server, &["P3", "P5"])));
    assert_eq!(status, ReceiptStatus::Accepted, "a genuine two-parcel failure");
}

/// Receipt ids are unique across phones. A phone (or an insider) that sends one another phone's
/// receipt already holds gets it rejected; before, the database refused the row and every later
/// upload of that phone failed with a server error.
#[test]
fn a_receipt_id_another_phone_already_used_is_rejected_not_a_server_error() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    let (two, two_id) = server.enrol_device("R1", &dir.path().join("two.db"));
    server.sync(&two, &two_id);
    let insider_one = Insider::of(&dir.path().join("d.db"));
    let insider_two = Insider::of(&dir.path().join("two.db"));
    let taken = failed(&insider_one, &server, &["P3"]);
    let taken_id = taken.receipt_id;
    assert_eq!(status_and_reason(insider_one.upload(&server, &one, taken)).0, ReceiptStatus::Accepted);
    let mut copy = failed(&insider_two, &server, &["P3"]);
    copy.receipt_id = taken_id;
    let (status, reason) = status_and_reason(insider_two.upload(&server, &two, copy));
    assert_eq!(status, ReceiptStatus::Rejected);
    assert!(reason.contains("another device"), "{reason}");
    // Phone two's own receipts still land.
    let (status, _) = status_and_reason(insider_two.upload(&server, &two, failed(&insider_two, &server, &["P5"])));
    assert_eq!(status, ReceiptStatus::Accepted);
    assert_eq!(server.dispatch.receipts(&one_id).unwrap().len(), 1);
}

/// A phone's trusted time never goes backwards (design invariant 6), so a chain whose times do is
/// not a phone's; and a receipt from dispatch's future was made on a clock dispatch cannot trust.
#[test]
fn a_trusted_time_that_goes_backwards_or_runs_ahead_of_dispatch_is_flagged() {
    let server = Server::start();
    let (phone, dir, _) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    let first = failed(&insider, &server, &["P3"]);
    assert_eq!(status_and_reason(insider.upload(&server, &phone, first)).0, ReceiptStatus::Accepted);
    let mut earlier = failed(&insider, &server, &["P5"]);
    earlier.trusted_time -= TimeDelta::hours(1);
    let (status, reason) = status_and_reason(insider.upload(&server, &phone, earlier));
    assert_eq!(status, ReceiptStatus::Flagged);
    assert!(reason.contains("before the previous receipt"), "{reason}");
    let mut ahead = failed(&insider, &server, &["P7"]);
    ahead.trusted_time += TimeDelta::hours(1);
    let (status, reason) = status_and_reason(insider.upload(&server, &phone, ahead));
    assert_eq!(status, ReceiptStatus::Flagged);
    assert!(reason.contains("ahead of dispatch's clock"), "{reason}");
}

#[test]
fn a_manifest_request_since_the_largest_sequence_gets_a_full_manifest() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    for since in [i64::MAX as u64, u64::MAX] {
        let full = server.manifest(&phone, &device_id, Some(since)).expect("a full manifest, not a crash");
        assert!(phone.apply_manifest(&full).is_ok());
    }
}
