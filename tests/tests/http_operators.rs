//! Operator routes over real HTTP: once an operator key exists, every operator route refuses a
//! request with no key, a malformed one, a wrong secret, another id or a revoked key (401, the
//! JSON error body) and changes nothing; with a valid key the action is recorded with who did it,
//! and the parcel's history shows it.

use doorstep_core::device::ScannedParcel;
use doorstep_tests::http::{Server, get_with, post};

/// Every operator route with a body that would succeed with a valid key.
fn operator_calls() -> Vec<(&'static str, &'static str, &'static [u8])> {
    vec![
        ("POST", "/v1/enrolment-tokens", br#"{"route_id":"R9"}"#),
        ("POST", "/v1/parcels", b"[]"),
        ("POST", "/v1/parcels/P7/departed", b""),
        ("POST", "/v1/parcels/P0/reset", b""),
        ("POST", "/v1/parcels/P0/reissue", b""),
        ("POST", "/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#),
        ("GET", "/v1/parcels/P0/history", b""),
    ]
}

fn call(server: &Server, method: &str, path: &str, body: &[u8], auth: Option<&str>) -> (u16, Vec<u8>) {
    let header = auth.map(|a| format!("Bearer {a}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
    match method {
        "GET" => get_with(&server.url(path), &headers),
        _ => post(&server.url(path), &headers, body),
    }
}

/// What an operator action would change: actions recorded, enrolment tokens, P0's code and route,
/// the deltas issued to phones.
fn snapshot(server: &Server) -> (i64, i64, String, String, i64) {
    let count = |table: &str| server.sql(&format!("SELECT count(*) FROM {table}")).parse().unwrap();
    let route = server.sql("SELECT route_id FROM parcel WHERE parcel_id = 'P0'");
    (count("operator_action"), count("enrolment_token"), server.code("P0"), route, count("delta"))
}

#[test]
fn every_operator_route_refuses_a_missing_wrong_or_revoked_key_and_changes_nothing() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    let (_, revoked_key) = server.dispatch.add_operator("leaver").unwrap();
    let leaver = server.dispatch.operators().unwrap().into_iter().find(|o| o.name == "leaver").unwrap();
    server.dispatch.revoke_operator(&leaver.operator_id).unwrap();
    let (id, _) = server.operator_key.trim_start_matches("dso_").split_once('_').unwrap();
    let wrong_secret = format!("dso_{id}_{}", "0".repeat(64));
    let other_id = format!("dso_000000000000_{}", server.operator_key.rsplit('_').next().unwrap());
    let bad_keys: [Option<&str>; 6] =
        [None, Some(""), Some("nonsense"), Some(&wrong_secret), Some(&other_id), Some(&revoked_key)];
    let before = snapshot(&server);
    for (method, path, body) in operator_calls() {
        for key in bad_keys {
            let (status, answer) = call(&server, method, path, body, key);
            assert_eq!(status, 401, "{method} {path} with {key:?}");
            let error: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(error["error"], "unauthorized");
        }
    }
    assert_eq!(snapshot(&server), before, "nothing changed");
    assert_eq!(server.sync(&phone, &device_id), 0, "no delta reached the phone");
    drop(dir);
}

#[test]
fn an_operator_action_is_recorded_with_who_did_it_and_shown_in_the_history() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    for _ in 0..5 {
        phone.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
    }
    let (_, key) = server.dispatch.add_operator("Ada at the depot").unwrap();
    assert_eq!(call(&server, "POST", "/v1/parcels/P0/reset", b"", Some(&key)).0, 200);
    assert_eq!(server.sync(&phone, &device_id), 1);
    let (status, history) = server.op_get("/v1/parcels/P0/history");
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_slice(&history).unwrap();
    let actions = history["actions"].as_array().unwrap();
    let ada = server.dispatch.operators().unwrap().into_iter().find(|o| o.name == "Ada at the depot").unwrap();
    let reset = actions.iter().find(|a| a["action"] == "reset").expect("the reset is in the history");
    assert_eq!(reset["operator_id"], ada.operator_id.as_str());
    // Import and departure were recorded too, by the harness's operator.
    for action in ["import", "departed"] {
        let found = actions.iter().find(|a| a["action"] == action).unwrap();
        assert_eq!(found["operator_id"], server.operator.operator_id.as_str());
    }
}

#[test]
fn a_revoked_key_stops_working_at_once_and_revoking_twice_is_not_found() {
    let server = Server::start();
    let (operator, key) = server.dispatch.add_operator("temp").unwrap();
    let body = br#"{"route_id":"R1"}"#;
    assert_eq!(call(&server, "POST", "/v1/enrolment-tokens", body, Some(&key)).0, 201);
    server.dispatch.revoke_operator(&operator.operator_id).unwrap();
    assert_eq!(call(&server, "POST", "/v1/enrolment-tokens", body, Some(&key)).0, 401);
    assert!(server.dispatch.revoke_operator(&operator.operator_id).is_err());
    let trail: Vec<(String, Option<String>)> =
        server.dispatch.service_actions().unwrap().into_iter().map(|a| (a.action, a.detail)).collect();
    assert!(trail.contains(&("operator_add".into(), Some(format!("{} temp", operator.operator_id)))));
    assert!(trail.contains(&("operator_revoke".into(), Some(operator.operator_id.clone()))));
    assert!(server.dispatch.add_operator("").is_err(), "a name is required");
    assert!(server.dispatch.add_operator("bad\nname").is_err(), "no control characters");
}

#[test]
fn unknown_routes_and_methods_answer_with_the_json_error_body() {
    let server = Server::start();
    for (status, body) in [get_with(&server.url("/v1/nowhere"), &[]), get_with(&server.url("/v1/enrol"), &[])] {
        let error: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
        assert!(matches!(
            (status, error["error"].as_str()),
            (404, Some("not_found")) | (405, Some("method_not_allowed"))
        ));
    }
    assert_eq!(get_with(&server.url("/v1/enrol"), &[]).0, 405);
}

/// With no operator key yet the routes are open to a direct local caller only: not through a
/// proxy on the same host (it adds `X-Forwarded-For`, `Forwarded` or `Via`), and not from a web
/// page (`Origin`), which could otherwise reach a developer's loopback dispatch.
#[test]
fn without_operator_keys_only_a_direct_local_caller_opens_the_operator_routes() {
    let server = Server::start_without_operator_keys();
    let body = br#"{"route_id":"R1"}"#;
    for header in [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7;proto=https"),
        ("Via", "1.1 proxy"),
        ("Origin", "https://evil.example"),
        // The review's: a proxy that adds only these, or passes on the public name.
        ("X-Real-IP", "203.0.113.7"),
        ("X-Forwarded-Host", "dispatch.example"),
        ("Host", "dispatch.example"),
        // A page whose name was rebound to 127.0.0.1 (DNS rebinding) still sends its own name.
        ("Host", "rebound.attacker.example:8080"),
        // The second review's: more proxies' and browsers' headers.
        ("X-Forwarded-Server", "proxy"),
        ("Fastly-Client-Ip", "203.0.113.7"),
        ("Referer", "https://evil.example/"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (status, answer) = post(&server.url("/v1/enrolment-tokens"), &[header], body);
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["error"], "unauthorized");
    }
    assert_eq!(post(&server.url("/v1/enrolment-tokens"), &[], body).0, 201, "a developer's own call");
    // The third review's: two Host headers (the first said localhost), and an absolute-form line.
    let addr = server.base.trim_start_matches("http://").to_owned();
    for head in [
        "POST /v1/enrolment-tokens HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n",
        "POST http://evil.example/v1/enrolment-tokens HTTP/1.1\r\nHost: localhost\r\n",
    ] {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(stream, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let status = String::from_utf8_lossy(&answer[..12]).into_owned();
        assert!(status.ends_with("401") || status.ends_with("400"), "{head:?}: {status}");
    }
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), "127.0.0.1".to_owned()] {
        assert_eq!(post(&server.url("/v1/enrolment-tokens"), &[("Host", &host)], body).0, 201, "{host}");
    }
}

#[test]
fn the_history_of_an_unknown_parcel_is_not_found_and_of_a_forged_one_shows_its_receipt() {
    let server = Server::start();
    let (phone, dir, _) = server.day();
    let (status, body) = server.op_get("/v1/parcels/P404/history");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["message"].as_str().unwrap_or_default().contains("P404") || error.to_string().contains("P404"),
        "{error}"
    );
    // A receipt about a parcel dispatch never issued (an insider's) is kept, and its history shows it.
    let insider = doorstep_tests::insider::Insider::of(&dir.path().join("d.db"));
    let body =
        insider.handover("P404", doorstep_core::protocol::HandoverMethod::NoCode, None, None, server.clock.now());
    let verdict = insider.upload(&server, &phone, body).unwrap();
    assert_eq!(verdict.status, doorstep_core::protocol::ReceiptStatus::Flagged);
    let (status, body) = server.op_get("/v1/parcels/P404/history");
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(history["receipts"].as_array().map(Vec::len), Some(1), "{history}");
}
