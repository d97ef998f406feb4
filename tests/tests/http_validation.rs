//! Nothing one customer or one row does breaks a route (issue 9, replayed from the outside review
//! that found each case): every posted field is checked at the door of the API (400 naming the
//! field), delegates are capped by the policy, reset and reissue wait for departure, resets per
//! parcel are capped, and after every refused request the route still syncs.

use doorstep_tests::http::{Server, get_as, post};

/// How a test spoils one order line.
type Spoil = Box<dyn Fn(&mut doorstep_dispatch::NewParcel)>;

/// A customer names a delegate for P0 with their link: the status and the answer's body.
fn name_delegate(server: &Server, link: &str, label: &str) -> (u16, Vec<u8>) {
    let body = serde_json::to_vec(&serde_json::json!({ "label": label })).unwrap();
    post(&server.url("/v1/customer/parcels/P0/delegates"), &[("Authorization", &format!("Bearer {link}"))], &body)
}

fn detail(body: &[u8]) -> String {
    let error: serde_json::Value = serde_json::from_slice(body).expect("the JSON error body");
    error["detail"].as_str().unwrap_or_default().to_owned()
}

/// The route's phone still gets a full manifest with every parcel it had.
fn route_still_syncs(server: &Server, dir: &std::path::Path, name: &str) {
    let (phone, _) = server.synced_phone("R1", &dir.join(name));
    assert_eq!(phone.parcels().unwrap().len(), 8);
}

#[test]
fn bad_fields_at_import_are_refused_naming_the_field_and_the_route_still_syncs() {
    let server = Server::start();
    let (_phone, dir, _) = server.day();
    let cases: Vec<(&str, Spoil)> = vec![
        ("parcel_id", Box::new(|p| p.parcel_id = "x".repeat(129))),
        ("barcode", Box::new(|p| p.barcode = "x".repeat(129))),
        ("stop_id", Box::new(|p| p.stop_id = "x".repeat(129))),
        ("address_hint", Box::new(|p| p.address_hint = "x".repeat(257))),
        ("recipient_hint", Box::new(|p| p.recipient_hint = "line\nbreak".into())),
        ("route_id", Box::new(|p| p.route_id = "R\u{0}1".into())),
        ("parcel_id", Box::new(|p| p.parcel_id = "P\r\nX".into())),
        ("customer_email", Box::new(|p| p.customer_email = "a@b.test\r\nBcc: x@y.test".into())),
        ("customer_email", Box::new(|p| p.customer_email = "no-at-sign".into())),
    ];
    for (field, spoil) in cases {
        let mut row = server.parcels(9)[8].clone();
        spoil(&mut row);
        let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[row]).unwrap());
        assert_eq!(status, 400, "{field}");
        assert!(detail(&body).contains(field), "{field}: {}", detail(&body));
    }
    route_still_syncs(&server, dir.path(), "after-import.db");
}

#[test]
fn control_characters_in_a_route_or_a_delegate_label_are_refused() {
    let server = Server::start();
    let (_phone, dir, _) = server.day();
    for route in ["R\u{0}", "R\n1", "", &"r".repeat(129)] {
        let body = serde_json::to_vec(&serde_json::json!({ "route_id": route })).unwrap();
        assert_eq!(server.op_post("/v1/enrolment-tokens", &body).0, 400, "{route:?}");
        assert_eq!(server.op_post("/v1/parcels/P0/reassign", &body).0, 400, "{route:?}");
    }
    let (_, token) = server.read_email("P0");
    for label in ["Anna\r\nBcc", "\u{0}", " ", &"a".repeat(65)] {
        let (status, answer) = name_delegate(&server, &token, label);
        assert_eq!(status, 400, "{label:?}");
        assert!(detail(&answer).contains("delegate label"));
    }
    route_still_syncs(&server, dir.path(), "after-labels.db");
}

/// The review named 15 delegates (16 valid codes at the door, 16× the guess chance) and a 16th that
/// broke every manifest of the route with a 500.
#[test]
fn delegates_are_capped_by_the_policy_and_the_route_still_syncs() {
    let server = Server::start();
    let (_phone, dir, _) = server.day();
    let (_, token) = server.read_email("P0");
    let name = |label: &str| name_delegate(&server, &token, label);
    for i in 0..doorstep_core::policy::DEFAULT_DELEGATES {
        assert_eq!(name(&format!("neighbour {i}")).0, 201);
    }
    let (status, body) = name("one too many");
    assert_eq!(status, 409);
    assert!(detail(&body).contains("delegates"));
    assert_eq!(name("neighbour 0").0, 201, "renaming one already named replaces its code");
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/code"), &token).0, 200);
    route_still_syncs(&server, dir.path(), "after-delegates.db");
}

#[test]
fn reset_and_reissue_wait_for_departure_and_resets_are_capped() {
    let server = Server::start();
    let (_phone, dir, _) = server.day();
    let mut late = server.parcels(9)[8].clone();
    late.declared_value_cents = 500_000;
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&[late]).unwrap()).0, 201);
    for action in ["reset", "reissue"] {
        let (status, body) = server.op_post(&format!("/v1/parcels/P8/{action}"), b"");
        assert_eq!(status, 409, "{action} before departure");
        assert!(detail(&body).contains("not left the warehouse"));
    }
    for _ in 0..doorstep_dispatch::store::DEFAULT_RESETS_PER_PARCEL {
        assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    }
    let (status, body) = server.op_post("/v1/parcels/P0/reset", b"");
    assert_eq!(status, 409);
    assert!(detail(&body).contains("reset 3 times"));
    for _ in 0..doorstep_dispatch::store::MAX_REISSUES_PER_PARCEL {
        assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    }
    let (status, body) = server.op_post("/v1/parcels/P0/reissue", b"");
    assert_eq!(status, 409, "each reissue mails the customer and sends the route a delta");
    assert!(detail(&body).contains("reissued 3 times"));
    route_still_syncs(&server, dir.path(), "after-resets.db");
}

/// The review renamed one delegate 240 times in 1.5 s: 240 deltas the route's phones then spent a
/// minute fetching. Names and revocations together are capped per parcel.
#[test]
fn a_customer_cannot_flood_the_route_with_delegate_changes() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    let (_, token) = server.read_email("P0");
    let auth = format!("Bearer {token}");
    let name = || name_delegate(&server, &token, "Anna").0;
    for _ in 0..doorstep_dispatch::store::MAX_DELEGATE_CHANGES_PER_PARCEL {
        assert_eq!(name(), 201);
    }
    assert_eq!(name(), 409);
    let revoke = doorstep_tests::http::agent()
        .delete(&server.url("/v1/customer/parcels/P0/delegates/Anna"))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 409, "revoking counts too");
    assert_eq!(server.sync(&phone, &device_id), 10, "one delta per accepted change, no more");
    route_still_syncs(&server, dir.path(), "after-flood.db");
    // A leaked link could spend the budget; after a reissue the customer has it back.
    assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    let (_, fresh) = server.latest_email("P0");
    assert_eq!(name_delegate(&server, &fresh, "Anna").0, 201);
}

/// A reissue answers a leak. Whoever held the leaked link may have named a delegate with it: the
/// reissue ends every delegate's code, and the phones drop their tags.
#[test]
fn a_reissue_ends_the_codes_of_delegates_named_before_it() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let (_, leaked) = server.read_email("P0");
    let (status, named) = name_delegate(&server, &leaked, "Mallory");
    assert_eq!(status, 201);
    let mallory: serde_json::Value = serde_json::from_slice(&named).unwrap();
    let mallory = mallory["code"].as_str().unwrap().to_owned();
    assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    server.sync(&phone, &device_id);
    assert_eq!(phone.parcel("P0").unwrap().holders, vec![doorstep_core::protocol::Holder::Customer]);
    let scan = [doorstep_core::device::ScannedParcel::scanned("BC0")];
    let at_door = phone.verify_code(&scan, &mallory, None).unwrap();
    assert!(matches!(at_door, doorstep_core::device::HandoverOutcome::WrongCode { .. }), "{at_door:?}");
    let (_, fresh) = server.latest_email("P0");
    assert_ne!(fresh, leaked, "the new e-mail carries a new link");
}

/// Delegates named under a looser policy (an earlier build, or a lower `--max-delegates` after a
/// restart) leave that parcel out of the manifest with the reason in its history; the rest of the
/// route still syncs.
#[test]
fn a_parcel_with_more_delegates_than_the_policy_allows_is_left_out_not_a_500() {
    let loose = doorstep_core::policy::Policy { max_delegates: 5, ..Default::default() };
    let server = Server::start_with(doorstep_tests::http::Scene::default_day(), |d| d.with_code_policy(loose).unwrap());
    let (phone, dir, device_id) = server.day();
    for i in 0..5 {
        server.dispatch.name_delegate("P0", &format!("neighbour {i}")).unwrap();
    }
    let strict = server.reopen().with_clock(server.clock.clone());
    let manifest = strict.full_manifest(&device_id, server.scene.date).expect("the route's manifest, not a 500");
    let report = phone.apply_manifest(&manifest).unwrap();
    assert_eq!(report.removed, 1, "P0 left out");
    let actions = strict.parcel_actions("P0").unwrap();
    assert!(actions.iter().any(|a| a.action == "left_out" && a.detail.as_deref().unwrap_or("").contains("delegates")));
    drop(dir);
}

/// A path segment that is not UTF-8 was answered in plain text by axum's extractor; every error
/// is the JSON body.
#[test]
fn a_path_that_is_not_utf8_gets_the_json_error_body() {
    let server = Server::start();
    let (_phone, _dir, _) = server.day();
    for (status, body) in [
        server.op_get("/v1/parcels/%FF/history"),
        get_as(&server.url("/v1/customer/parcels/%FF/code"), "x"),
        doorstep_tests::http::get(&server.url("/v1/devices/%FF/manifest?date=2026-11-26")),
    ] {
        assert_eq!(status, 400);
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"], "bad_request", "{error}");
    }
}
