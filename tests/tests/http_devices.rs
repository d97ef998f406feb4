//! Enrolment and signed device requests over real HTTP: an enrolment token works once and only
//! within its lifetime; a device key enrols once; an unknown device, a bad signature and a
//! replayed signed request all get the same 401, so nothing tells which device ids exist, and a
//! replay changes nothing.

use chrono::TimeDelta;
use doorstep_tests::http::{Scene, Server, get_as, get_with, post};

fn token(server: &Server, route: &str) -> String {
    let body = serde_json::to_vec(&serde_json::json!({ "route_id": route })).unwrap();
    let (status, answer) = server.op_post("/v1/enrolment-tokens", &body);
    assert_eq!(status, 201);
    serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["token"].as_str().unwrap().to_owned()
}

#[test]
fn an_enrolment_token_expires_after_its_lifetime() {
    let server = Server::start_with(Scene::default_day(), |d| d.with_enrolment_token_ttl(TimeDelta::hours(2)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let fresh = token(&server, "R1");
    let stale = token(&server, "R1");
    server.clock.advance(TimeDelta::minutes(119));
    let phone = server.phone(&dir.path().join("a.db"));
    let (status, _) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &fresh)], &phone.enrolment_request().unwrap());
    assert_eq!(status, 200, "inside its lifetime");
    server.clock.advance(TimeDelta::minutes(2));
    let late = server.phone(&dir.path().join("b.db"));
    let (status, body) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &stale)], &late.enrolment_request().unwrap());
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
}

#[test]
fn a_device_key_enrols_once_even_with_a_second_token() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let phone = server.phone(&dir.path().join("a.db"));
    let request = phone.enrolment_request().unwrap();
    let (status, _) = post(&server.url("/v1/enrol"), &[("Enrolment-Token", &token(&server, "R1"))], &request);
    assert_eq!(status, 200);
    // The same request body (replayed, or a copy of the key) with another valid token.
    let second = token(&server, "R2");
    let (status, body) = post(&server.url("/v1/enrol"), &[("Enrolment-Token", &second)], &request);
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let other = server.phone(&dir.path().join("b.db"));
    let (status, _) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &second)], &other.enrolment_request().unwrap());
    assert_eq!(status, 200, "the refused attempt did not spend the token");
}

#[test]
fn unknown_devices_bad_signatures_and_replays_get_the_same_401() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let path = format!("/v1/devices/{device_id}/manifest?date={}", server.scene.date);
    let signature = phone.sign_request("GET", &path, b"").unwrap();
    let (status, first) = get_with(&server.url(&path), &[("Device-Signature", &signature)]);
    assert_eq!(status, 200);
    let answers = [
        // The same signed request again: a replay.
        get_with(&server.url(&path), &[("Device-Signature", &signature)]),
        // A device id nobody enrolled, with a well-formed header.
        get_with(
            &server.url(&format!("/v1/devices/dev-nobody/manifest?date={}", server.scene.date)),
            &[("Device-Signature", &signature.replacen(&device_id, "dev-nobody", 1))],
        ),
        // A real device, a signature that does not verify.
        get_with(&server.url(&path), &[("Device-Signature", &format!("{device_id}.1.AAAA"))]),
        // No signature at all.
        get_with(&server.url(&path), &[]),
    ];
    let bodies: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 401);
            String::from_utf8_lossy(body).into_owned()
        })
        .collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer for all: {bodies:?}");
    assert!(!first.is_empty());
    // The replay changed nothing: the first answer (sequence 2, a full manifest) is still the latest.
    assert!(server.manifest(&phone, &device_id, Some(2)).is_none(), "a replay would have issued sequence 3");
}

/// Past its limit a client address gets 429 with `Retry-After` and the JSON error body, before
/// any work: on customer links, enrolment and device requests alike.
#[test]
fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    use doorstep_dispatch::api::Limits;
    let limits = Limits { customer_per_minute: 3, enrol_per_minute: 3, device_per_minute: 4, ..Limits::unlimited() };
    let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
    let (phone, _dir, device_id) = server.day(); // two enrolment requests (one refused), one manifest
    let (_, link) = server.read_email("P0");
    let customer =
        || get_with(&server.url("/v1/customer/parcels/P0/code"), &[("Authorization", &format!("Bearer {link}"))]);
    let device = || {
        let path = format!("/v1/devices/{device_id}/manifest?date={}&since=1", server.scene.date);
        get_with(&server.url(&path), &[("Device-Signature", &phone.sign_request("GET", &path, b"").unwrap())])
    };
    let enrol = || post(&server.url("/v1/enrol"), &[("Enrolment-Token", "no-such-token")], b"{}");
    for (what, call, allowed) in
        [("customer", &customer as &dyn Fn() -> (u16, Vec<u8>), 3), ("device", &device, 3), ("enrolment", &enrol, 1)]
    {
        for _ in 0..allowed {
            assert_ne!(call().0, 429, "{what} within its limit");
        }
        let (status, body) = call();
        assert_eq!(status, 429, "{what} over its limit");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"], "too_many_requests");
    }
    let resp = doorstep_tests::http::agent().get(server.url("/v1/customer/parcels/P0/code")).call().unwrap();
    let retry: u64 = resp.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// A token's lifetime is fixed when it is made: restarting dispatch with a longer
/// `--enrolment-token-hours` does not bring an expired token back.
#[test]
fn an_enrolment_token_keeps_the_lifetime_it_was_made_with() {
    let server = Server::start_with(Scene::default_day(), |d| d.with_enrolment_token_ttl(TimeDelta::hours(2)).unwrap());
    let short = token(&server, "R1");
    server.clock.advance(TimeDelta::hours(3));
    let restarted =
        server.reopen().with_clock(server.clock.clone()).with_enrolment_token_ttl(TimeDelta::hours(48)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let phone = server.phone(&dir.path().join("a.db"));
    let refused = restarted.enrol(&short, &phone.enrolment_request().unwrap()).unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
}

/// The enrolment request proves the phone holds the key it enrols: a copy of another phone's
/// public key, or a request without the proof (a 1.0 app), is refused and spends no token.
#[test]
fn an_enrolment_request_must_be_signed_by_the_key_it_enrols() {
    use doorstep_core::protocol::{Base64Bytes, EnrolmentRequest};
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let honest = server.phone(&dir.path().join("a.db"));
    let mut stolen: EnrolmentRequest = serde_json::from_slice(&honest.enrolment_request().unwrap()).unwrap();
    let other = server.phone(&dir.path().join("b.db"));
    let other_request: EnrolmentRequest = serde_json::from_slice(&other.enrolment_request().unwrap()).unwrap();
    let token = token(&server, "R1");
    let enrol = |request: &EnrolmentRequest| {
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &token)], &serde_json::to_vec(request).unwrap())
    };
    // Another phone's proof beside the honest phone's key.
    stolen.proof = other_request.proof.clone();
    assert_eq!(enrol(&stolen).0, 400);
    stolen.proof = None;
    let (status, body) = enrol(&stolen);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("update it"));
    stolen.proof = Some(Base64Bytes(vec![0; 64]));
    assert_eq!(enrol(&stolen).0, 400);
    let (status, bundle) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &token)], &honest.enrolment_request().unwrap());
    assert_eq!(status, 200, "the refused attempts spent no token");
    honest.complete_enrolment(&bundle).unwrap();
}

/// The review enrolled the identity point as a device key, with the "signature" R = identity,
/// S = 0 that verifies for any message under it: then anyone who knew the device id could sign
/// its requests and receipts. Small-order keys and second spellings of a key are refused.
#[test]
fn a_small_order_or_non_canonical_device_key_is_refused_at_enrolment() {
    use doorstep_core::protocol::{Base64Bytes, EnrolmentRequest};
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let honest = server.phone(&dir.path().join("a.db"));
    let mut weak: EnrolmentRequest = serde_json::from_slice(&honest.enrolment_request().unwrap()).unwrap();
    let token = token(&server, "R1");
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_again = [0xffu8; 32];
    identity_again[0] = 0xee;
    identity_again[31] = 0x7f;
    for key in [identity, identity_again, [0; 32]] {
        weak.device_public_key = key;
        weak.proof = Some(Base64Bytes([identity.to_vec(), vec![0; 32]].concat()));
        let (status, body) =
            post(&server.url("/v1/enrol"), &[("Enrolment-Token", &token)], &serde_json::to_vec(&weak).unwrap());
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("not a usable Ed25519 public key"));
    }
    let (status, _) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", &token)], &honest.enrolment_request().unwrap());
    assert_eq!(status, 200, "the refused attempts spent no token");
}

/// Behind a trusted proxy each client has its own budget (the proxy's last `X-Forwarded-For`
/// entry); without that trust the header is ignored, so a client cannot pick a fresh budget.
#[test]
fn the_proxys_client_header_counts_only_when_the_proxy_is_trusted() {
    use doorstep_dispatch::api::Limits;
    for trusted in [true, false] {
        let limits = Limits { customer_per_minute: 1, trust_forwarded_for: trusted, ..Limits::default() };
        let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
        let (_phone, _dir, _) = server.day();
        let (_, link) = server.read_email("P0");
        let auth = format!("Bearer {link}");
        let ask = |client: &str| {
            get_with(
                &server.url("/v1/customer/parcels/P0/code"),
                &[("Authorization", auth.as_str()), ("X-Forwarded-For", &format!("198.51.100.9, {client}"))],
            )
            .0
        };
        assert_eq!(ask("203.0.113.1"), 200);
        let second_client = ask("203.0.113.2");
        assert_eq!(second_client == 200, trusted, "trusted: {trusted}");
        assert_eq!(ask("203.0.113.1"), 429, "the first client is over its budget either way");
    }
}

/// One phone has its own budget too, wherever its requests come from, so it cannot keep dispatch
/// rebuilding full manifests; another phone is not held back by it.
#[test]
fn one_device_has_its_own_request_budget() {
    use doorstep_dispatch::api::Limits;
    let limits = Limits { each_device_per_minute: 3, ..Limits::unlimited() };
    let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
    let (phone, dir, device_id) = server.day(); // one manifest request
    let (other, other_id) = server.synced_phone("R1", &dir.path().join("other.db"));
    let ask = |device: &doorstep_core::device::Device, id: &str| {
        let path = format!("/v1/devices/{id}/manifest?date={}", server.scene.date);
        get_with(&server.url(&path), &[("Device-Signature", &device.sign_request("GET", &path, b"").unwrap())]).0
    };
    assert_eq!(ask(&phone, &device_id), 200);
    assert_eq!(ask(&phone, &device_id), 200);
    assert_eq!(ask(&phone, &device_id), 429, "this phone is over its budget");
    assert_eq!(ask(&other, &other_id), 200, "the other phone is not");
}

/// The review spent a phone's budget with 130 unsigned requests naming its id (then the phone got
/// 429), and a phone got a fresh budget by percent-encoding its own id. The budget is drawn only
/// after the signature verified, and is the decoded id's.
#[test]
fn a_stranger_cannot_spend_a_phones_budget_and_a_phone_cannot_respell_its_id() {
    use doorstep_dispatch::api::Limits;
    let limits = Limits { each_device_per_minute: 3, ..Limits::unlimited() };
    let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
    let (phone, _dir, device_id) = server.day(); // one of the 3
    let path = format!("/v1/devices/{device_id}/manifest?date={}", server.scene.date);
    for _ in 0..20 {
        assert_eq!(get_with(&server.url(&path), &[("Device-Signature", "forged")]).0, 401);
    }
    let ask = |path: &str| {
        get_with(&server.url(path), &[("Device-Signature", &phone.sign_request("GET", path, b"").unwrap())]).0
    };
    assert_eq!(ask(&path), 200, "the stranger's requests spent nothing");
    assert_eq!(ask(&path), 200);
    assert_eq!(ask(&path), 429);
    let respelled = path.replacen("/v1/devices/d", "/v1/devices/%64", 1);
    assert_ne!(respelled, path);
    assert_eq!(ask(&respelled), 429, "the same device, however its id is spelled");
}

/// The fourth review replayed a phone's captured request: each replay verified, drew on the
/// phone's own budget and only then got 401, so a replayer kept the phone at 429. A replay is now
/// refused before the budget is drawn.
#[test]
fn a_replayed_request_does_not_spend_the_phones_budget() {
    use doorstep_dispatch::api::Limits;
    let limits = Limits { each_device_per_minute: 3, ..Limits::unlimited() };
    let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
    let (phone, _dir, device_id) = server.day(); // one of the 3
    let path = format!("/v1/devices/{device_id}/manifest?date={}", server.scene.date);
    let captured = phone.sign_request("GET", &path, b"").unwrap();
    assert_eq!(get_with(&server.url(&path), &[("Device-Signature", &captured)]).0, 200); // two of 3
    for _ in 0..10 {
        assert_eq!(get_with(&server.url(&path), &[("Device-Signature", &captured)]).0, 401, "a replay");
    }
    let fresh = phone.sign_request("GET", &path, b"").unwrap();
    assert_eq!(get_with(&server.url(&path), &[("Device-Signature", &fresh)]).0, 200, "the replays spent nothing");
}

/// The fourth review got a 500 from PostgreSQL (which refuses text holding NUL, where SQLite does
/// not) with `%00` in an id, unauthenticated. A path holding a control character is a 400 on both
/// backends, never a storage error a phone would retry forever.
#[test]
fn a_path_holding_a_control_character_is_refused_not_an_error() {
    let server = Server::start();
    let (phone, _dir, _device_id) = server.day();
    let path = format!("/v1/devices/dev-%00/manifest?date={}", server.scene.date);
    let signature = phone.sign_request("GET", &path, b"").unwrap();
    assert_eq!(get_with(&server.url(&path), &[("Device-Signature", &signature)]).0, 400);
    assert_eq!(server.op_get("/v1/parcels/P%000/history").0, 400);
    let (status, body) = get_as(&server.url("/v1/customer/parcels/%0a/code"), "0123456789abcdef0123456789abcdef");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("control character"));
}

/// The second review held 600 MB with uploads to an unknown device that never finished their
/// bodies. An upload's header is checked before its body is read: a stranger's is refused at once.
#[test]
fn an_upload_that_names_no_enrolled_device_is_refused_before_its_body_is_read() {
    use std::io::{Read, Write};
    let server = Server::start();
    let addr = server.base.trim_start_matches("http://").to_owned();
    for signature in ["", "Device-Signature: dev-x.1.AAAA.AAAA\r\n"] {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/devices/dev-x/receipts HTTP/1.1\r\nHost: {addr}\r\n{signature}Content-Length: 2000000\r\n\r\n"
        )
        .unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer[9..12], b"401", "{signature:?}: answered without the body");
    }
}

/// The second review slowed every other request with one phone fetching full manifests (each
/// built from the whole route-day under dispatch's write lock). Full manifests have their own
/// small budget per device; deltas do not count against it.
#[test]
fn full_manifests_have_their_own_budget_per_device() {
    use doorstep_dispatch::api::Limits;
    let limits = Limits { full_manifests_per_device_per_minute: 2, ..Limits::unlimited() };
    let server = Server::start_with_limits(Scene::default_day(), |d| d, limits);
    let (phone, _dir, device_id) = server.day(); // one full manifest
    let full = format!("/v1/devices/{device_id}/manifest?date={}", server.scene.date);
    let ask = |path: &str| {
        get_with(&server.url(path), &[("Device-Signature", &phone.sign_request("GET", path, b"").unwrap())]).0
    };
    let signed = |path: &str| {
        get_with(&server.url(path), &[("Device-Signature", &phone.sign_request("GET", path, b"").unwrap())])
    };
    let (status, envelope) = signed(&full);
    assert_eq!(status, 200);
    phone.apply_manifest(&envelope).unwrap();
    assert_eq!(ask(&full), 429);
    let seq = phone.status().unwrap().manifest_sequence.unwrap();
    assert_eq!(ask(&format!("{full}&since={seq}")), 204, "the phone still syncs by deltas");
    // The third review got full manifests past the budget by naming a `since` no delta has.
    assert_eq!(ask(&format!("{full}&since=99999")), 429, "a full manifest however it is asked for");
}

/// The third review held all 16 upload places with forged headers naming one known device, and a
/// genuine phone waited a minute. One device id holds at most two places.
#[test]
fn one_device_id_holds_at_most_two_upload_places() {
    use std::io::{Read, Write};
    let server = Server::start();
    let (_phone, _dir, device_id) = server.day();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let now = server.clock.now().timestamp_millis();
    let stalled = |n: usize| {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/devices/{device_id}/receipts HTTP/1.1\r\nHost: {addr}\r\n\
             Device-Signature: {device_id}.{now}.nonce{n}.AAAA\r\nContent-Length: 1000\r\n\r\nx"
        )
        .unwrap();
        stream
    };
    let held: Vec<_> = (0..2).map(stalled).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut third = stalled(2);
    third.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 12];
    third.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[9..12], b"429", "refused at once, not queued");
    // The clients hang up: their places come back.
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut fourth = stalled(3);
    fourth.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
    let waited = fourth.read_exact(&mut answer).unwrap_err();
    assert_eq!(waited.kind(), std::io::ErrorKind::WouldBlock, "admitted: it waits for its body");
}
