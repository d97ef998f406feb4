//! EPCIS 2.0 events from a running dispatch (GET /v1/epcis/events): the day's hand-overs and
//! failed attempts as ObjectEvents, a reversal as an errorDeclaration that keeps the eventID of
//! the hand-over it corrects, parcels named by the SSCC their import gave, each eventID the
//! CBV 2.0 event hash (checked against GS1's reference by scripts/epcis-tests.sh), and nothing
//! that is the customer's business. An SSCC with a wrong check digit is refused at import.

use chrono::TimeDelta;
use doorstep_core::device::ScannedParcel;
use doorstep_core::protocol::FailureReason;
use doorstep_tests::http::{Server, get_with};

fn scan(barcode: &str) -> Vec<ScannedParcel> {
    vec![ScannedParcel::scanned(barcode)]
}

/// A wrong code for `right`.
fn wrong(right: &str) -> String {
    right.bytes().map(|b| char::from(b'0' + (b - b'0' + 5) % 10)).collect()
}

#[test]
fn the_days_hand_overs_failures_and_reversals_come_as_epcis_events() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    // One more parcel on the route, imported with its SSCC.
    let mut extra = server.parcels(9).pop().unwrap();
    extra.sscc = Some("340123450000000017".into());
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[extra]).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.op_post("/v1/parcels/P8/departed", b"").0, 200);
    server.sync(&phone, &device_id);

    // A minute between doors: events come in the order they happened.
    let next = || server.clock.advance(TimeDelta::seconds(60));
    phone.verify_code(&scan("BC0"), &wrong(&server.code("P0")), None).unwrap();
    next();
    phone.verify_code(&scan("BC0"), &server.code("P0"), None).unwrap();
    next();
    phone.record_failure(&scan("BC2"), FailureReason::RecipientUnavailable, None, None).unwrap();
    next();
    phone.deliver_without_code(&scan("BC3"), None).unwrap();
    next();
    phone.reverse_delivery("P3", FailureReason::AddressIncorrect, None, None).unwrap();
    next();
    phone.verify_code(&scan("BC8"), &server.code("P8"), None).unwrap();
    server.upload(&phone, &device_id);

    let (name, value) = server.operator_auth();
    let url = server.url(&format!("/v1/epcis/events?date={}", server.scene.date));
    let (status, body) = get_with(&url, &[(name, &value)]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["type"], "EPCISDocument");
    assert_eq!(document["schemaVersion"], "2.0");
    let events = document["epcisBody"]["eventList"].as_array().unwrap();
    let steps: Vec<(&str, bool)> =
        events.iter().map(|e| (e["bizStep"].as_str().unwrap(), e.get("errorDeclaration").is_some())).collect();
    assert_eq!(
        steps,
        [
            ("arriving", false),  // the wrong code
            ("accepting", false), // P0
            ("arriving", false),  // P2 not at home
            ("accepting", false), // P3, by mistake
            ("accepting", true),  // … declared: did not occur
            ("accepting", false), // P8
        ]
    );
    assert_eq!(events[3]["eventID"], events[4]["eventID"], "a declaration keeps the eventID");
    assert_eq!(events[4]["errorDeclaration"]["reason"], "did_not_occur");
    assert_eq!(events[5]["epcList"][0], "https://id.gs1.org/00/340123450000000017");
    assert_eq!(events[1]["epcList"][0], "urn:doorstep:parcel:P0");
    assert!(events.iter().all(|e| e["eventID"].as_str().unwrap().starts_with("ni:///sha-256;")));
    let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e["eventID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "one id per event, the declaration's shared with its event");
    // Nothing that is the customer's: no e-mail, hint or barcode.
    let text = String::from_utf8_lossy(&body);
    for private in ["@example.test", "Elm St", "BC0"] {
        assert!(!text.contains(private), "{private} in the export");
    }

    // Another day has none; a date that is not one is refused; an operator key is needed.
    let other = server.url("/v1/epcis/events?date=2030-01-01");
    let none: serde_json::Value = serde_json::from_slice(&get_with(&other, &[(name, &value)]).1).unwrap();
    assert_eq!(none["epcisBody"]["eventList"].as_array().unwrap().len(), 0);
    assert_eq!(get_with(&server.url("/v1/epcis/events?date=soon"), &[(name, &value)]).0, 400);
    assert_eq!(get_with(&url, &[]).0, 401);
    // Every day's, when no date is named.
    let all: serde_json::Value =
        serde_json::from_slice(&get_with(&server.url("/v1/epcis/events"), &[(name, &value)]).1).unwrap();
    assert_eq!(all["epcisBody"]["eventList"].as_array().unwrap().len(), 6);
}

#[test]
fn an_sscc_that_is_not_one_is_refused_at_import_and_nothing_is_imported() {
    let server = Server::start();
    for bad in ["340123450000000018", "34012345000000001", "urn:epc:id:sscc:4012345.000000001", "00000000000000000x"] {
        let mut parcels = server.parcels(2);
        parcels[1].sscc = Some(bad.into());
        let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap());
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("sscc"), "{}", String::from_utf8_lossy(&body));
        assert_eq!(server.op_get("/v1/parcels/P0/history").0, 404, "{bad}: nothing imported");
    }
    let mut parcels = server.parcels(2);
    parcels[0].sscc = Some("urn:epc:id:sscc:4012345.0000000001".into());
    parcels[1].sscc = Some("340123450000000017".into());
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap()).0, 201);
}
