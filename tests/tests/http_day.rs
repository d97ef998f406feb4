//! dispatch over real HTTP on loopback, with a device from the core: enrolment with a one-time
//! token, import, departure (codes issued), manifest, hand-overs, upload and ack; the same upload
//! twice is harmless; malformed and oversized requests are refused and change nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::NaiveDate;
use doorstep_core::device::{Clock, Device, HandoverOutcome, HostError, KeyVault, ScannedParcel};
use doorstep_core::protocol::{FailureReason, Holder, REQUEST_HEADER, ReceiptStatus};
use doorstep_dispatch::{Dispatch, HighValuePolicy, NewParcel, service};

struct Vault;
impl KeyVault for Vault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(plaintext.iter().map(|b| b ^ 0x3C).collect())
    }
    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        self.seal(sealed)
    }
}

struct TestClock(AtomicI64);
impl Clock for TestClock {
    fn wall_time_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    fn monotonic_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

/// A dispatch served on an ephemeral loopback port for the life of the test.
struct Server {
    base: String,
    dispatch: Arc<Dispatch>,
    state: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn serve() -> Server {
    serve_with(doorstep_core::policy::Policy::default())
}

fn serve_with(code_policy: doorstep_core::policy::Policy) -> Server {
    serve_configured(|d| d.with_code_policy(code_policy).unwrap())
}

fn serve_configured(configure: impl FnOnce(Dispatch) -> Dispatch) -> Server {
    let state = tempfile::tempdir().unwrap();
    let dispatch = Arc::new(configure(Dispatch::open(state.path(), HighValuePolicy::default()).unwrap()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = service::router(dispatch.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server { base: format!("http://{addr}"), dispatch, state, _runtime: runtime }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    (resp.status().as_u16(), resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

fn get(url: &str) -> (u16, Vec<u8>) {
    get_as(url, None)
}

fn get_as(url: &str, bearer: Option<&str>) -> (u16, Vec<u8>) {
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    get_with(url, &headers)
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    (resp.status().as_u16(), resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

/// A device request, signed by `device` as the apps do.
fn signed_get(server: &Server, device: &Device, path: &str) -> (u16, Vec<u8>) {
    let signature = device.sign_request("GET", path, b"").unwrap();
    get_with(&format!("{}{path}", server.base), &[(REQUEST_HEADER, &signature)])
}

fn signed_post(server: &Server, device: &Device, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let signature = device.sign_request("POST", path, body).unwrap();
    post(&format!("{}{path}", server.base), &[(REQUEST_HEADER, &signature)], body)
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn parcels(n: usize) -> Vec<NewParcel> {
    (0..n)
        .map(|i| NewParcel {
            parcel_id: format!("P{i}"),
            barcode: format!("BC{i}"),
            route_id: "R1".into(),
            stop_id: format!("S{}", i / 2),
            stop_sequence: (i / 2 + 1) as u32,
            delivery_date: date(),
            time_zone: "Europe/Berlin".into(),
            declared_value_cents: if i % 2 == 0 { 120_000 } else { 2_500 },
            category: if i % 5 == 1 { "jewellery".into() } else { "books".into() },
            customer_email: format!("customer{i}@example.test"),
            address_hint: format!("{i} Elm St"),
            recipient_hint: "A. B.".into(),
        })
        .collect()
}

/// A dispatch with 8 departed parcels and an enrolled, synced device.
fn day(server: &Server) -> (Device, tempfile::TempDir, String) {
    let (status, _) = post(&format!("{}/v1/parcels", server.base), &[], &serde_json::to_vec(&parcels(8)).unwrap());
    assert_eq!(status, 201);
    for i in 0..8 {
        let (status, body) = post(&format!("{}/v1/parcels/P{i}/departed", server.base), &[], b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        // The code goes to the customer, never back to the warehouse's caller.
        assert!(String::from_utf8_lossy(&body).chars().filter(char::is_ascii_digit).count() < 6);
    }
    let dir = tempfile::tempdir().unwrap();
    let (device, device_id) = enrol_device(server, "R1", &dir.path().join("d.db"));
    let report = device.apply_manifest(&manifest(server, &device, &device_id, None).unwrap()).unwrap();
    assert_eq!(report.added, 8);
    (device, dir, device_id)
}

fn noon() -> i64 {
    date().and_hms_opt(11, 0, 0).unwrap().and_utc().timestamp_millis()
}

/// A phone enrolled on `route` with a one-time token (which then cannot be used again).
fn enrol_device(server: &Server, route: &str, db: &std::path::Path) -> (Device, String) {
    let body = serde_json::to_vec(&serde_json::json!({ "route_id": route })).unwrap();
    let (status, token) = post(&format!("{}/v1/enrolment-tokens", server.base), &[], &body);
    assert_eq!(status, 201);
    let token = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["token"].as_str().unwrap().to_owned();
    let device = Device::open(db, Arc::new(Vault), Arc::new(TestClock(AtomicI64::new(noon()))), None).unwrap();
    let (status, bundle) = post(
        &format!("{}/v1/enrol", server.base),
        &[("Enrolment-Token", &token)],
        &device.enrolment_request().unwrap(),
    );
    assert_eq!(status, 200);
    device.complete_enrolment(&bundle).unwrap();
    let again =
        Device::open(db.with_extension("other"), Arc::new(Vault), Arc::new(TestClock(AtomicI64::new(noon()))), None)
            .unwrap();
    let (status, _) =
        post(&format!("{}/v1/enrol", server.base), &[("Enrolment-Token", &token)], &again.enrolment_request().unwrap());
    assert_eq!(status, 403, "an enrolment token is single-use");
    let device_id = device.status().unwrap().device_id.unwrap();
    (device, device_id)
}

/// The device's next manifest (`since`: its current sequence), or None when it is up to date.
fn manifest(server: &Server, device: &Device, device_id: &str, since: Option<u64>) -> Option<Vec<u8>> {
    let since = since.map_or(String::new(), |s| format!("&since={s}"));
    let (status, body) =
        signed_get(server, device, &format!("/v1/devices/{device_id}/manifest?date=2026-11-26{since}"));
    match status {
        200 => Some(body),
        204 => None,
        other => panic!("manifest: HTTP {other}: {}", String::from_utf8_lossy(&body)),
    }
}

/// Applies every manifest the device is due; returns how many.
fn sync(server: &Server, device: &Device, device_id: &str) -> usize {
    let mut applied = 0;
    while let Some(envelope) = manifest(server, device, device_id, device.status().unwrap().manifest_sequence) {
        device.apply_manifest(&envelope).unwrap();
        applied += 1;
    }
    applied
}

fn code(server: &Server, parcel: &str) -> String {
    server.dispatch.codes(parcel).unwrap().into_iter().find(|(h, _)| *h == Holder::Customer).unwrap().1
}

fn upload(server: &Server, device: &Device, device_id: &str) -> Vec<Vec<u8>> {
    let mut acks = Vec::new();
    while let Some(batch) = device.next_batch(3, 64 * 1024).unwrap() {
        let (status, ack) = signed_post(server, device, &format!("/v1/devices/{device_id}/receipts"), &batch.bytes);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ack));
        device.apply_ack(&ack).unwrap();
        acks.push(batch.bytes);
    }
    acks
}

#[test]
fn a_day_over_http_reconciles_and_a_repeated_upload_is_harmless() {
    let server = serve();
    let (device, _dir, device_id) = day(&server);
    // P0, P2, P4, P6 are high-value; P1 and P6 are jewellery.
    let needs: Vec<bool> = device.parcels().unwrap().iter().map(|p| p.needs_code).collect();
    assert_eq!(needs, vec![true, true, true, false, true, false, true, false]);
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];
    assert!(matches!(
        device.verify_code(&scan(0), &code(&server, "P0"), None).unwrap(),
        HandoverOutcome::Accepted { .. }
    ));
    assert!(matches!(
        device.verify_code(&scan(1), &code(&server, "P1"), None).unwrap(),
        HandoverOutcome::Accepted { .. }
    ));
    assert!(matches!(device.deliver_without_code(&scan(3), None).unwrap(), HandoverOutcome::Accepted { .. }));
    device.record_failure(&scan(2), FailureReason::RecipientUnavailable, None, None).unwrap();
    let bodies = upload(&server, &device, &device_id);
    assert_eq!(device.status().unwrap().pending_receipts, 0);

    // The same batches again: duplicates, nothing stored twice.
    for body in &bodies {
        let (status, _) = signed_post(&server, &device, &format!("/v1/devices/{device_id}/receipts"), body);
        assert_eq!(status, 200);
    }
    let held = server.dispatch.receipts(&device_id).unwrap();
    assert_eq!(held.len(), 4);
    assert!(held.iter().all(|r| r.status == ReceiptStatus::Accepted));
    assert_eq!(held.iter().map(|r| r.body.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_change_nothing() {
    let server = serve();
    let (device, _dir, device_id) = day(&server);
    let url = |p: &str| format!("{}{p}", server.base);
    assert_eq!(post(&url("/v1/parcels/P0/reassign"), &[], b"{}").0, 400);
    assert_eq!(post(&url("/v1/parcels/P3/reissue"), &[], b"").0, 409, "P3 needs no code");
    assert_eq!(get(&url(&format!("/v1/devices/{device_id}/manifest?date=2026-11-26&since=x"))).0, 400);
    assert_eq!(post(&url("/v1/parcels"), &[], b"{not json").0, 400);
    assert_eq!(post(&url("/v1/enrolment-tokens"), &[], b"{}").0, 400);
    assert_eq!(post(&url("/v1/enrol"), &[], b"{}").0, 403);
    assert_eq!(post(&url("/v1/enrol"), &[("Enrolment-Token", "nope")], b"{}").0, 403);
    assert_eq!(post(&url("/v1/parcels/NOPE/departed"), &[], b"").0, 404);
    assert_eq!(get(&url("/v1/devices/nobody/manifest?date=2026-11-26")).0, 404);
    assert_eq!(get(&url(&format!("/v1/devices/{device_id}/manifest?date=yesterday"))).0, 400);
    assert_eq!(post(&url(&format!("/v1/devices/{device_id}/receipts")), &[], b"[]").0, 401, "unsigned");
    assert_eq!(signed_post(&server, &device, &format!("/v1/devices/{device_id}/receipts"), b"[]").0, 400);
    // A duplicate import is refused as a whole (the first line is new, the second exists).
    let mut again = parcels(9);
    again.swap(0, 8);
    assert_eq!(post(&url("/v1/parcels"), &[], &serde_json::to_vec(&again[..2]).unwrap()).0, 409);
    assert_eq!(post(&url("/v1/parcels/P8/departed"), &[], b"").0, 404, "the refused import left nothing behind");
    // Oversized bodies are refused before they are read.
    let huge = vec![b' '; service::MAX_BODY_BYTES + 1];
    let (status, body) = post(&url(&format!("/v1/devices/{device_id}/receipts")), &[], &huge);
    assert_eq!(status, 413);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "too_large");
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty());
    drop(device);
}

#[test]
fn the_demo_day_reconciles() {
    let server = serve_configured(|d| d.with_request_skew_ms(doorstep_dispatch::demo::CLOCK_SKEW_MS));
    let report = doorstep_dispatch::demo::run(&server.base, &server.dispatch, 90, 2, true).unwrap();
    assert!(report.reconciled, "{report:?}");
    assert_eq!(report.at_the_door.values().sum::<usize>(), 90);
    assert_eq!(report.pending_on_phones, 0);
    assert_eq!(report.lost_acks_recovered, 1);
    assert!(report.verdicts.keys().all(|k| k.ends_with(" accepted")), "{:?}", report.verdicts);
}

#[test]
fn operator_actions_reach_the_devices_as_deltas() {
    let server = serve();
    let (one, dir, one_id) = day(&server);
    let (two, two_id) = enrol_device(&server, "R2", &dir.path().join("two.db"));
    two.apply_manifest(&manifest(&server, &two, &two_id, None).unwrap()).unwrap();
    // One phone cannot fetch another's manifest, nor can anyone unsigned.
    let path = format!("/v1/devices/{two_id}/manifest?date=2026-11-26");
    assert_eq!(signed_get(&server, &one, &path).0, 401);
    assert_eq!(get(&format!("{}{path}", server.base)).0, 401);
    assert_eq!(sync(&server, &one, &one_id), 0, "up to date: 204");
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];
    let url = |p: &str| format!("{}{p}", server.base);

    // A lockout reset.
    for _ in 0..5 {
        let _ = one.verify_code(&scan(0), "000000", None).unwrap();
    }
    assert!(matches!(one.verify_code(&scan(0), &code(&server, "P0"), None).unwrap(), HandoverOutcome::Locked { .. }));
    assert_eq!(post(&url("/v1/parcels/P0/reset"), &[], b"").0, 200);
    assert_eq!(sync(&server, &one, &one_id), 1);
    assert!(matches!(one.verify_code(&scan(0), &code(&server, "P0"), None).unwrap(), HandoverOutcome::Accepted { .. }));

    // A reissued code: the old one stops working, the new one works.
    let old = code(&server, "P2");
    assert_eq!(post(&url("/v1/parcels/P2/reissue"), &[], b"").0, 200);
    let new = code(&server, "P2");
    assert_eq!(sync(&server, &one, &one_id), 1);
    if old != new {
        assert!(matches!(one.verify_code(&scan(2), &old, None).unwrap(), HandoverOutcome::WrongCode { .. }));
    }
    assert!(matches!(one.verify_code(&scan(2), &new, None).unwrap(), HandoverOutcome::Accepted { .. }));

    // A parcel reassigned to route R2 leaves phone one and reaches phone two.
    assert_eq!(post(&url("/v1/parcels/P4/reassign"), &[], br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(sync(&server, &one, &one_id), 1);
    assert!(matches!(
        one.verify_code(&scan(4), &code(&server, "P4"), None).unwrap(),
        HandoverOutcome::UnknownParcel { .. }
    ));
    assert_eq!(sync(&server, &two, &two_id), 1);
    assert!(matches!(two.verify_code(&scan(4), &code(&server, "P4"), None).unwrap(), HandoverOutcome::Accepted { .. }));

    // Everything both phones did verifies at dispatch, including the proofs made with codes
    // issued before and after the reissue.
    upload(&server, &one, &one_id);
    upload(&server, &two, &two_id);
    let held: Vec<_> = [&one_id, &two_id].iter().flat_map(|id| server.dispatch.receipts(id).unwrap()).collect();
    assert_eq!(held.len(), 4, "lockout, P0, P2 on one; P4 on two");
    assert!(held.iter().all(|r| r.status == ReceiptStatus::Accepted), "{held:?}");
}

/// The code e-mail a customer received for a parcel: (code, customer token).
fn read_email(server: &Server, parcel: &str) -> (String, String) {
    let outbox = server.state.path().join("outbox");
    for entry in std::fs::read_dir(&outbox).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if text.contains(&format!("Parcel: {parcel}\r\n")) || text.contains(&format!("Parcel: {parcel}\n")) {
            assert!(text.contains("Never tell this code to anyone by phone"));
            assert!(text.contains("It is valid until\r\nthe end of the delivery day"), "{text}");
            let field =
                |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap();
            return (field("Delivery code: "), field("Customer app access: "));
        }
    }
    panic!("no e-mail for {parcel}");
}

#[test]
fn customers_see_their_code_name_and_revoke_delegates_and_get_qr_tokens() {
    let server = serve();
    let (device, _dir, device_id) = day(&server);
    let url = |p: &str| format!("{}{p}", server.base);
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];
    let (emailed, token) = read_email(&server, "P0");
    assert_eq!(emailed, code(&server, "P0"));
    let (_, other_token) = read_email(&server, "P2");

    // Only the parcel's own customer sees its code.
    let (status, body) = get_as(&url("/v1/customer/parcels/P0/code"), Some(&token));
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], emailed.as_str());
    assert_eq!(get_as(&url("/v1/customer/parcels/P0/code"), Some(&other_token)).0, 404);
    assert_eq!(get(&url("/v1/customer/parcels/P0/code")).0, 403);

    // A named delegate's code reaches the phone as a delta; once revoked it stops working.
    let bearer = format!("Bearer {token}");
    let (status, body) =
        post(&url("/v1/customer/parcels/P0/delegates"), &[("Authorization", &bearer)], br#"{"label":"Anna"}"#);
    assert_eq!(status, 201);
    let anna = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"].as_str().unwrap().to_owned();
    assert_eq!(sync(&server, &device, &device_id), 1);
    assert_eq!(device.parcel("P0").unwrap().holders, vec![Holder::Customer, Holder::Delegate("Anna".into())]);
    let revoke = agent().delete(url("/v1/customer/parcels/P0/delegates/Anna")).header("Authorization", &bearer).call();
    assert_eq!(revoke.unwrap().status().as_u16(), 204);
    assert_eq!(sync(&server, &device, &device_id), 1);
    assert!(matches!(device.verify_code(&scan(0), &anna, None).unwrap(), HandoverOutcome::WrongCode { .. }));

    // The customer app's QR token hands the parcel over.
    let (status, body) = get_as(&url("/v1/customer/parcels/P0/qr"), Some(&token));
    assert_eq!(status, 200);
    let qr = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    assert!(matches!(device.verify_qr_token(&scan(0), &qr, None).unwrap(), HandoverOutcome::Accepted { .. }));

    // The operator sees the parcel's history once the receipts are up.
    upload(&server, &device, &device_id);
    let (status, body) = get(&url("/v1/parcels/P0/history"));
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let events: Vec<&str> =
        history["receipts"].as_array().unwrap().iter().map(|r| r["receipt"]["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["delivered"]);
    assert_eq!(history["receipts"][0]["status"], "accepted");
}

#[test]
fn a_tampered_upload_is_rejected_and_the_genuine_receipts_still_land() {
    let server = serve();
    let (device, _dir, device_id) = day(&server);
    device.record_failure(&[ScannedParcel::scanned("BC3")], FailureReason::RecipientUnavailable, None, None).unwrap();
    let batch = device.next_batch(10, 64 * 1024).unwrap().unwrap();
    let mut parsed: serde_json::Value = serde_json::from_slice(&batch.bytes).unwrap();
    // Swap in a body the device never signed (another receipt's body under this signature).
    let forged = parsed["receipts"][0]["body"].as_str().unwrap().replace('A', "B");
    parsed["receipts"][0]["body"] = serde_json::Value::String(forged);
    let tampered = serde_json::to_vec(&parsed).unwrap();
    let (status, ack) = signed_post(&server, &device, &format!("/v1/devices/{device_id}/receipts"), &tampered);
    assert!(status == 200 || status == 400, "{status}");
    if status == 200 {
        let report = device.apply_ack(&ack).unwrap();
        assert_eq!((report.removed, report.rejected.len()), (0, 1));
    }
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty(), "nothing forged was stored");
    assert_eq!(device.status().unwrap().pending_receipts, 1);
    upload(&server, &device, &device_id);
    assert_eq!(server.dispatch.receipts(&device_id).unwrap().len(), 1);
}

#[test]
fn orders_import_as_csv_and_bad_lines_are_named() {
    let server = serve();
    let url = format!("{}/v1/parcels", server.base);
    let csv_type = [("Content-Type", "text/csv")];
    let header = "parcel_id,barcode,route_id,stop_id,stop_sequence,delivery_date,time_zone,declared_value_cents,category,customer_email,address_hint,recipient_hint";
    let good = format!(
        "{header}\nC1,CBC1,R1,S1,1,2026-11-26,Europe/Berlin,120000,books,a@example.test,1 Elm St,A. B.\n\
         C2,CBC2,R1,S2,2,2026-11-26,Europe/Berlin,900,jewellery,b@example.test,2 Elm St,C. D.\n\
         C3,CBC3,R1,S3,3,2026-11-26,Europe/Berlin,900,books,c@example.test,,\n"
    );
    let (status, body) = post(&url, &csv_type, good.as_bytes());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["imported"].as_u64(), v["need_code"].as_u64()), (Some(3), Some(2)));
    let bad = format!("{header}\nC4,CBC4,R1,S4,4,2026-11-26,Europe/Berlin,not-a-number,books,d@example.test,,\n");
    let (status, body) = post(&url, &csv_type, bad.as_bytes());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("CSV line 2"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(post(&format!("{}/v1/parcels/C4/departed", server.base), &[], b"").0, 404);
}

#[test]
fn the_terminal_device_works_a_day_against_dispatch() {
    use doorstep_dispatch::terminal::{Action, run};
    let server = serve();
    let (status, _) = post(&format!("{}/v1/parcels", server.base), &[], &serde_json::to_vec(&parcels(4)).unwrap());
    assert_eq!(status, 201);
    for i in 0..4 {
        post(&format!("{}/v1/parcels/P{i}/departed", server.base), &[], b"");
    }
    let token = server.dispatch.create_enrolment_token("R1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |action| run(dir.path(), &server.base, action).unwrap();
    assert_eq!(run(Action::Enrol { token })["enrolled"], true);
    let synced = run(Action::Sync { date: date() });
    assert_eq!(synced["applied"][0]["added"], 4);
    assert_eq!(run(Action::Parcels { stop: None }).as_array().unwrap().len(), 4);
    // The terminal device runs on the real clock: the code is accepted on the parcels' day, and
    // reported expired (or not yet valid) on any other.
    let outcome = run(Action::Verify { barcode: "BC0".into(), code: Some(code(&server, "P0")), qr: None });
    let (from, until) = doorstep_dispatch::delivery_window(date(), "Europe/Berlin").unwrap();
    let now = chrono::Utc::now();
    let expected = if now < from {
        "not_yet_valid"
    } else if now < until {
        "accepted"
    } else {
        "expired"
    };
    assert_eq!(outcome["outcome"], expected, "{outcome}");
    assert!(
        run(Action::Fail { barcode: "BC1".into(), reason: "refused_by_recipient".into(), note: None })["receipt_seq"]
            .is_u64()
    );
    let up = run(Action::Upload);
    assert_eq!((up["rejected"].as_u64(), up["flagged"].as_u64()), (Some(0), Some(0)));
    assert_eq!(run(Action::Status)["pending_receipts"], 0);
    assert!(
        doorstep_dispatch::terminal::run(
            dir.path(),
            &server.base,
            Action::Fail { barcode: "BC1".into(), reason: "bogus".into(), note: None }
        )
        .is_err()
    );
}

/// The insider attack over HTTP: with the device secret (unsealed from the phone's own file) and
/// 16-bit tags, a brute force finds a code that is not the customer's but shares its tag. The phone
/// accepts it; dispatch re-checks the code proof against the true code and flags the receipt.
#[test]
fn a_forged_handover_is_flagged_by_dispatch_over_http() {
    use doorstep_core::crypto::{Code, DeviceSecret, Tag};
    let server = serve_with(doorstep_core::policy::Policy { max_attempts: 5, tag_bits: 16, key_epoch: 0 });
    let (device, dir, device_id) = day(&server);
    let file = rusqlite::Connection::open(dir.path().join("d.db")).unwrap();
    let sealed: Vec<u8> = file.query_row("SELECT sealed_secret FROM device", [], |r| r.get(0)).unwrap();
    let secret = DeviceSecret::from_bytes(&Vault.unseal(&sealed).unwrap()).unwrap();
    let (salt, tag): (Vec<u8>, Vec<u8>) = file
        .query_row(
            "SELECT p.salt, t.tag FROM parcel p JOIN code_tag t USING (parcel_id) WHERE parcel_id = 'P0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let truth = code(&server, "P0");
    let key = secret.tag_key(0);
    let forged = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| *c != truth && Tag::matches(&key, "P0", &salt, &Code::parse(c).unwrap(), 16, &tag))
        .expect("16-bit tags leave about 15 other candidates");

    let out = device.verify_code(&[ScannedParcel::scanned("BC0")], &forged, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "the tag matches, so the phone accepts: {out:?}");
    let batch = device.next_batch(10, 64 * 1024).unwrap().unwrap();
    let (status, ack) = signed_post(&server, &device, &format!("/v1/devices/{device_id}/receipts"), &batch.bytes);
    assert_eq!(status, 200);
    let report = device.apply_ack(&ack).unwrap();
    assert_eq!(report.flagged.len(), 1);
    assert!(report.flagged[0].reason.as_deref().unwrap().contains("code proof"));
    let (_, history) = get(&format!("{}/v1/parcels/P0/history", server.base));
    let history: serde_json::Value = serde_json::from_slice(&history).unwrap();
    assert_eq!(history["receipts"][0]["status"], "flagged");
}
