//! Door rules through a running dispatch: set by the import (`addressee_only`, `open_box`) or by a
//! category rule, carried to the phone in its manifest, kept at the door, and re-checked by
//! dispatch: a receipt that hands over an addressee-only parcel without an ID check is flagged,
//! however well its code proof checks out; an addressee-only parcel cannot get a delegate.

use doorstep_core::CoreError;
use doorstep_core::device::ScannedParcel;
use doorstep_core::protocol::{HandoverMethod, Holder, IdDocument, Inspection, ReceiptStatus};
use doorstep_dispatch::HighValuePolicy;
use doorstep_tests::http::{Scene, Server, post};
use doorstep_tests::insider::Insider;

#[test]
fn door_rules_from_the_import_and_a_category_reach_the_phone_and_are_rechecked_by_dispatch() {
    let policy = HighValuePolicy { addressee_only_categories: vec!["jewellery".into()], ..Default::default() };
    let server = Server::start_with(Scene::default_day(), |d| d.with_high_value_policy(policy));
    let mut parcels = server.parcels(8);
    parcels[0].addressee_only = true; // P0: by the import
    parcels[3].open_box = true; // P3: needs no code, opened at the door
    // P1 and P6 are jewellery: addressee only by the category rule.
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    for p in &parcels {
        assert_eq!(server.op_post(&format!("/v1/parcels/{}/departed", p.parcel_id), b"").0, 200);
    }
    // The code e-mail says not to pass the code on; the customer cannot name a delegate.
    let outbox = server.state.path().join("outbox");
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|t| t.contains("Parcel: P0"))
        .unwrap();
    assert!(mail.contains("do not pass the code to anyone") && !mail.contains("pass the code to a person"), "{mail}");
    let (_, token) = server.read_email("P0");
    let auth = format!("Bearer {token}");
    let (status, body) =
        post(&server.url("/v1/customer/parcels/P0/delegates"), &[("Authorization", &auth)], br#"{"label":"Anna"}"#);
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("addressee only"));

    let dir = tempfile::tempdir().unwrap();
    let (phone, device_id) = server.synced_phone("R1", &dir.path().join("d.db"));
    let rules = |id: &str| phone.parcel(id).unwrap().rules;
    assert!(rules("P0").addressee_only && rules("P1").addressee_only && rules("P6").addressee_only);
    assert!(rules("P3").open_box && !rules("P2").addressee_only && !rules("P2").open_box);

    let scan = |barcode: &str| ScannedParcel::scanned(barcode);
    match phone.verify_code(&[scan("BC0")], &server.code("P0"), None) {
        Err(CoreError::DoorCheckMissing { parcel, .. }) => assert_eq!(parcel, "P0"),
        other => panic!("handed over without an ID check: {other:?}"),
    }
    phone.verify_code(&[scan("BC0").with_id(IdDocument::DrivingLicence)], &server.code("P0"), None).unwrap();
    phone.deliver_without_code(&[scan("BC3").with_inspection(Inspection::Accepted)], None).unwrap();
    server.upload(&phone, &device_id);
    let history = |id: &str| server.dispatch.parcel_history(id).unwrap();
    assert_eq!(history("P0")[0].status, ReceiptStatus::Accepted);
    assert_eq!(history("P0")[0].body.parcels[0].id_checked, Some(IdDocument::DrivingLicence));
    assert_eq!(history("P3")[0].status, ReceiptStatus::Accepted);

    // A receipt made with the phone's own keys and the right code, but no ID check, for P1:
    // flagged, with the reason kept at dispatch.
    let insider = Insider::of(&dir.path().join("d.db"));
    let forged = insider.handover(
        "P1",
        HandoverMethod::Code,
        Some(Holder::Customer),
        Some(&server.code("P1")),
        server.clock.now(),
    );
    let verdict = insider.upload(&server, &phone, forged).unwrap();
    assert_eq!(verdict.status, ReceiptStatus::Flagged);
    assert!(history("P1")[0].reason.as_deref().unwrap().contains("addressee only"), "{:?}", history("P1")[0]);

    // EPCIS tells partners what dispatch accepted; the flagged one only when asked for, marked.
    let epcis = |query: &str| -> Vec<serde_json::Value> {
        let (status, body) = server.op_get(&format!("/v1/epcis/events?date={}{query}", server.scene.date));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        document["epcisBody"]["eventList"].as_array().unwrap().clone()
    };
    let about_p1 = |events: &[serde_json::Value]| {
        events.iter().filter(|e| e["epcList"][0] == "urn:doorstep:parcel:P1").cloned().collect::<Vec<_>>()
    };
    assert!(about_p1(&epcis("")).is_empty());
    let flagged = about_p1(&epcis("&include_flagged=true"));
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["ds:verdict"], "flagged");
    let checked = epcis("").into_iter().find(|e| e["epcList"][0] == "urn:doorstep:parcel:P0").unwrap();
    assert_eq!(checked["ds:idChecked"], "yes", "that an ID was checked, never its kind");
    assert_eq!(server.op_get("/v1/epcis/events?include_flagged=maybe").0, 400);
}

#[test]
fn an_import_field_misspelt_is_refused_instead_of_dropping_its_rule() {
    let server = Server::start();
    let mut line = serde_json::to_value(&server.parcels(1)[0]).unwrap();
    line["adressee_only"] = serde_json::json!(true);
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[line]).unwrap());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("adressee_only"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.op_get("/v1/parcels/P0/history").0, 404, "nothing imported");
}
