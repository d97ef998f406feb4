//! dispatch over real HTTP on loopback, with phones from the core: enrolment with a one-time
//! token, import, departure (codes issued), manifest, hand-overs, upload and ack; the same upload
//! twice is harmless; malformed and oversized requests are refused and change nothing. Every test
//! plays its day on the harness's clock, and the day reconciles at awkward instants too.

use chrono::{NaiveDate, TimeDelta};
use doorstep_core::device::{HandoverOutcome, KeyVault, ScannedParcel};
use doorstep_core::protocol::{FailureReason, Holder, MAX_BATCH_BYTES, ReceiptEvent, ReceiptStatus};
use doorstep_dispatch::api;
use doorstep_tests::http::{Scene, Server, Vault, agent, get, get_as, post};

fn serve() -> Server {
    Server::start()
}

fn serve_with(code_policy: doorstep_core::policy::Policy) -> Server {
    Server::start_with(Scene::default_day(), |d| d.with_code_policy(code_policy).unwrap())
}

/// Hands over, fails, uploads twice: everything dispatch holds is accepted, nothing twice.
fn reconcile_a_day(server: &Server) {
    let (device, _dir, device_id) = server.day();
    // P0, P2, P4, P6 are high-value; P1 and P6 are jewellery.
    let needs: Vec<bool> = device.parcels().unwrap().iter().map(|p| p.needs_code).collect();
    assert_eq!(needs, vec![true, true, true, false, true, false, true, false]);
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];
    let outcome = device.verify_code(&scan(0), &server.code("P0"), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "at {}: {outcome:?}", server.clock.now());
    assert!(matches!(
        device.verify_code(&scan(1), &server.code("P1"), None).unwrap(),
        HandoverOutcome::Accepted { .. }
    ));
    let qr = server.dispatch.qr_token("P4", Holder::Customer).unwrap();
    assert!(matches!(device.verify_qr_token(&scan(4), &qr, None).unwrap(), HandoverOutcome::Accepted { .. }));
    assert!(matches!(device.deliver_without_code(&scan(3), None).unwrap(), HandoverOutcome::Accepted { .. }));
    device.record_failure(&scan(2), FailureReason::RecipientUnavailable, None, None).unwrap();
    let bodies = server.upload(&device, &device_id);
    assert_eq!(device.status().unwrap().pending_receipts, 0);

    // The same batches again: duplicates, nothing stored twice.
    for body in &bodies {
        let (status, _) = server.signed_post(&device, &format!("/v1/devices/{device_id}/receipts"), body);
        assert_eq!(status, 200);
    }
    let held = server.dispatch.receipts(&device_id).unwrap();
    assert_eq!(held.len(), 5);
    assert!(held.iter().all(|r| r.status == ReceiptStatus::Accepted), "at {}: {held:?}", server.clock.now());
    assert_eq!(held.iter().map(|r| r.body.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_day_over_http_reconciles_and_a_repeated_upload_is_harmless() {
    reconcile_a_day(&serve());
}

/// Dispatch and the phones on one clock, placed at instants where a day's edges bite: both DST
/// changes in Berlin, a minute before and after local midnight, and New Year's Eve in a UTC−10
/// zone (whose local date is a day behind UTC's).
#[test]
fn the_day_reconciles_at_any_instant_dispatch_runs() {
    let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
    let scenes = [
        Scene::at_local(d(2027, 3, 28), "Europe/Berlin", 3, 30), // spring forward: a 23-hour day
        Scene::at_local(d(2027, 10, 31), "Europe/Berlin", 2, 30), // fall back: a 25-hour day
        Scene::at_local(d(2026, 12, 3), "Europe/Berlin", 23, 59),
        Scene::at_local(d(2026, 12, 3), "Europe/Berlin", 0, 1),
        Scene::at_local(d(2026, 12, 31), "Pacific/Honolulu", 23, 59),
        Scene::at_local(d(2031, 7, 1), "America/Sao_Paulo", 0, 1),
    ];
    for scene in scenes {
        reconcile_a_day(&Server::start_with(scene, |d| d));
    }
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_change_nothing() {
    let server = serve();
    let (device, _dir, device_id) = server.day();
    let url = |p: &str| format!("{}{p}", server.base);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", b"{}").0, 400);
    assert_eq!(server.op_post("/v1/parcels/P3/reissue", b"").0, 409, "P3 needs no code");
    assert_eq!(get(&url(&format!("/v1/devices/{device_id}/manifest?date={}&since=x", server.scene.date))).0, 400);
    assert_eq!(server.op_post("/v1/parcels", b"{not json").0, 400);
    assert_eq!(server.op_post("/v1/enrolment-tokens", b"{}").0, 400);
    assert_eq!(post(&url("/v1/enrol"), &[], b"{}").0, 401, "no credential at all");
    assert_eq!(post(&url("/v1/enrol"), &[("Enrolment-Token", "nope")], b"{}").0, 403);
    assert_eq!(server.op_post("/v1/parcels/NOPE/departed", b"").0, 404);
    assert_eq!(get(&url(&format!("/v1/devices/nobody/manifest?date={}", server.scene.date))).0, 401);
    assert_eq!(get(&url(&format!("/v1/devices/{device_id}/manifest?date=yesterday"))).0, 400);
    assert_eq!(post(&url(&format!("/v1/devices/{device_id}/receipts")), &[], b"[]").0, 401, "unsigned");
    assert_eq!(server.signed_post(&device, &format!("/v1/devices/{device_id}/receipts"), b"[]").0, 400);
    // A duplicate import is refused as a whole (the first line is new, the second exists).
    let mut again = server.parcels(9);
    again.swap(0, 8);
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&again[..2]).unwrap()).0, 409);
    assert_eq!(server.op_post("/v1/parcels/P8/departed", b"").0, 404, "the refused import left nothing behind");
    // Oversized bodies are refused once the limit is passed, with nothing stored.
    let huge = vec![b' '; MAX_BATCH_BYTES + 1];
    let path = format!("/v1/devices/{device_id}/receipts");
    let signature = device.sign_request("POST", &path, &huge).unwrap();
    let (status, body) = post(&url(&path), &[("Device-Signature", &signature)], &huge);
    assert_eq!(status, 413);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "too_large");
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty());
    drop(device);
}

/// Each group of routes takes bodies of its own size: a customer's or an enrolment request is a
/// few hundred bytes, an upload at most what a phone builds. The review held 600 MB of server
/// memory with 40 uploads of 15 MiB to an unknown device.
#[test]
fn each_route_refuses_a_body_over_its_own_limit_before_reading_it() {
    let server = serve();
    let (phone, _dir, device_id) = server.day();
    let upload = format!("/v1/devices/{device_id}/receipts");
    let (name, key) = server.operator_auth();
    for (path, limit) in [
        ("/v1/customer/parcels/P0/delegates", 4 * 1024),
        ("/v1/enrol", 8 * 1024),
        (upload.as_str(), MAX_BATCH_BYTES),
        ("/v1/parcels", api::MAX_BODY_BYTES),
    ] {
        let body = vec![b' '; limit + 1];
        // An upload is signed by its phone (a stranger's is refused before its body is read).
        let signature = phone.sign_request("POST", path, &body).unwrap();
        let headers = [(name, key.as_str()), ("Device-Signature", signature.as_str())];
        let (status, body) = post(&server.url(path), &headers, &body);
        assert_eq!(status, 413, "{path}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"], "too_large", "{path}");
    }
}

#[test]
fn the_demo_day_reconciles() {
    // A date far from today: the demo moves dispatch's clock and the phones' together.
    let server = serve();
    let date = NaiveDate::from_ymd_opt(2029, 3, 25).unwrap(); // spring-forward Sunday in Berlin
    let report =
        doorstep_dispatch::demo::run(&server.base, &server.dispatch, &server.clock, date, 90, 2, true).unwrap();
    assert!(report.reconciled, "{report:?}");
    assert_eq!(report.at_the_door.values().sum::<usize>(), 90);
    assert_eq!(report.pending_on_phones, 0);
    assert_eq!(report.lost_acks_recovered, 1);
    assert!(report.verdicts.keys().all(|k| k.ends_with(" accepted")), "{:?}", report.verdicts);
    // The evidence of a parcel handed over after a wrong code was checked with public keys alone.
    let (_, events) = report.evidence_checked.as_ref().unwrap();
    assert_eq!(events.last().map(String::as_str), Some("delivered"), "{events:?}");
    assert!(events.iter().any(|e| e == "wrong_code"), "{events:?}");
}

#[test]
fn operator_actions_reach_the_devices_as_deltas() {
    let server = serve();
    let (one, dir, one_id) = server.day();
    let (two, two_id) = server.synced_phone("R2", &dir.path().join("two.db"));
    // One phone cannot fetch another's manifest, nor can anyone unsigned.
    let path = format!("/v1/devices/{two_id}/manifest?date={}", server.scene.date);
    assert_eq!(server.signed_get(&one, &path).0, 401);
    assert_eq!(get(&format!("{}{path}", server.base)).0, 401);
    assert_eq!(server.sync(&one, &one_id), 0, "up to date: 204");
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];

    // A lockout reset.
    for _ in 0..5 {
        let _ = one.verify_code(&scan(0), "000000", None).unwrap();
    }
    assert!(matches!(one.verify_code(&scan(0), &server.code("P0"), None).unwrap(), HandoverOutcome::Locked { .. }));
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    assert_eq!(server.sync(&one, &one_id), 1);
    assert!(matches!(one.verify_code(&scan(0), &server.code("P0"), None).unwrap(), HandoverOutcome::Accepted { .. }));

    // A reissued code: the old one stops working, the new one works.
    let old = server.code("P2");
    assert_eq!(server.op_post("/v1/parcels/P2/reissue", b"").0, 200);
    let new = server.code("P2");
    assert_eq!(server.sync(&one, &one_id), 1);
    if old != new {
        assert!(matches!(one.verify_code(&scan(2), &old, None).unwrap(), HandoverOutcome::WrongCode { .. }));
    }
    assert!(matches!(one.verify_code(&scan(2), &new, None).unwrap(), HandoverOutcome::Accepted { .. }));

    // A parcel reassigned to route R2 leaves phone one and reaches phone two.
    assert_eq!(server.op_post("/v1/parcels/P4/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.sync(&one, &one_id), 1);
    assert!(matches!(
        one.verify_code(&scan(4), &server.code("P4"), None).unwrap(),
        HandoverOutcome::UnknownParcel { .. }
    ));
    assert_eq!(server.sync(&two, &two_id), 1);
    assert!(matches!(two.verify_code(&scan(4), &server.code("P4"), None).unwrap(), HandoverOutcome::Accepted { .. }));

    // Everything both phones did verifies at dispatch, including the proofs made with codes
    // issued before and after the reissue.
    server.upload(&one, &one_id);
    server.upload(&two, &two_id);
    let held: Vec<_> = [&one_id, &two_id].iter().flat_map(|id| server.dispatch.receipts(id).unwrap()).collect();
    let events = |event| held.iter().filter(|r| r.body.event == event).count();
    assert_eq!(events(ReceiptEvent::Delivered), 3, "P0, P2 on one; P4 on two");
    assert_eq!(events(ReceiptEvent::LockedOut), 1);
    assert!(events(ReceiptEvent::WrongCode) >= 4, "the guesses before the lockout travel too");
    assert!(held.iter().all(|r| r.status == ReceiptStatus::Accepted), "{held:?}");
}

#[test]
fn customers_see_their_code_name_and_revoke_delegates_and_get_qr_tokens() {
    let server = serve();
    let (device, _dir, device_id) = server.day();
    let url = |p: &str| format!("{}{p}", server.base);
    let scan = |i: usize| [ScannedParcel::scanned(format!("BC{i}"))];
    let (emailed, token) = server.read_email("P0");
    assert_eq!(emailed, server.code("P0"));
    let (_, other_token) = server.read_email("P2");

    // Only the parcel's own customer sees its code.
    let (status, body) = get_as(&url("/v1/customer/parcels/P0/code"), &token);
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], emailed.as_str());
    assert_eq!(get_as(&url("/v1/customer/parcels/P0/code"), &other_token).0, 404);
    assert_eq!(get(&url("/v1/customer/parcels/P0/code")).0, 401, "no credential at all");

    // A named delegate's code reaches the phone as a delta; once revoked it stops working.
    let bearer = format!("Bearer {token}");
    let (status, body) =
        post(&url("/v1/customer/parcels/P0/delegates"), &[("Authorization", &bearer)], br#"{"label":"Anna"}"#);
    assert_eq!(status, 201);
    let anna = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"].as_str().unwrap().to_owned();
    assert_eq!(server.sync(&device, &device_id), 1);
    assert_eq!(device.parcel("P0").unwrap().holders, vec![Holder::Customer, Holder::Delegate("Anna".into())]);
    let revoke = agent().delete(url("/v1/customer/parcels/P0/delegates/Anna")).header("Authorization", &bearer).call();
    assert_eq!(revoke.unwrap().status().as_u16(), 204);
    assert_eq!(server.sync(&device, &device_id), 1);
    assert!(matches!(device.verify_code(&scan(0), &anna, None).unwrap(), HandoverOutcome::WrongCode { .. }));

    // The customer app's QR token hands the parcel over.
    let (status, body) = get_as(&url("/v1/customer/parcels/P0/qr"), &token);
    assert_eq!(status, 200);
    let qr = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    assert!(matches!(device.verify_qr_token(&scan(0), &qr, None).unwrap(), HandoverOutcome::Accepted { .. }));

    // The operator sees the parcel's history once the receipts are up.
    server.upload(&device, &device_id);
    let (status, body) = server.op_get("/v1/parcels/P0/history");
    assert_eq!(status, 200);
    let history: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let events: Vec<&str> =
        history["receipts"].as_array().unwrap().iter().map(|r| r["receipt"]["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["wrong_code", "delivered"], "Anna's revoked code, then the QR token");
    assert!(history["receipts"].as_array().unwrap().iter().all(|r| r["status"] == "accepted"));
}

#[test]
fn a_tampered_upload_is_rejected_and_the_genuine_receipts_still_land() {
    let server = serve();
    let (device, _dir, device_id) = server.day();
    device.record_failure(&[ScannedParcel::scanned("BC3")], FailureReason::RecipientUnavailable, None, None).unwrap();
    let batch = device.next_batch(10, 64 * 1024).unwrap().unwrap();
    let mut parsed: serde_json::Value = serde_json::from_slice(&batch.bytes).unwrap();
    // Swap in a body the device never signed (another receipt's body under this signature).
    let forged = parsed["receipts"][0]["body"].as_str().unwrap().replace('A', "B");
    parsed["receipts"][0]["body"] = serde_json::Value::String(forged);
    let tampered = serde_json::to_vec(&parsed).unwrap();
    let (status, ack) = server.signed_post(&device, &format!("/v1/devices/{device_id}/receipts"), &tampered);
    assert!(status == 200 || status == 400, "{status}");
    if status == 200 {
        let report = device.apply_ack(&ack).unwrap();
        assert_eq!((report.removed, report.rejected.len()), (0, 1));
    }
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty(), "nothing forged was stored");
    assert_eq!(device.status().unwrap().pending_receipts, 1);
    server.upload(&device, &device_id);
    assert_eq!(server.dispatch.receipts(&device_id).unwrap().len(), 1);
}

#[test]
fn orders_import_as_csv_and_bad_lines_are_named() {
    let server = serve();
    let csv_type = [("Content-Type", "text/csv")];
    let header = "parcel_id,barcode,route_id,stop_id,stop_sequence,delivery_date,time_zone,declared_value_cents,category,customer_email,address_hint,recipient_hint";
    let good = format!(
        "{header}\nC1,CBC1,R1,S1,1,2026-11-26,Europe/Berlin,120000,books,a@example.test,1 Elm St,A. B.\n\
         C2,CBC2,R1,S2,2,2026-11-26,Europe/Berlin,900,jewellery,b@example.test,2 Elm St,C. D.\n\
         C3,CBC3,R1,S3,3,2026-11-26,Europe/Berlin,900,books,c@example.test,,\n"
    );
    let (status, body) = server.op_post_with("/v1/parcels", &csv_type, good.as_bytes());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["imported"].as_u64(), v["need_code"].as_u64()), (Some(3), Some(2)));
    let bad = format!("{header}\nC4,CBC4,R1,S4,4,2026-11-26,Europe/Berlin,not-a-number,books,d@example.test,,\n");
    let (status, body) = server.op_post_with("/v1/parcels", &csv_type, bad.as_bytes());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("CSV line 2"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.op_post("/v1/parcels/C4/departed", b"").0, 404);
}

#[test]
fn the_terminal_device_works_a_day_against_dispatch() {
    use doorstep_dispatch::terminal::{Action, run_with_clock};
    let server = serve();
    let (status, _) = server.op_post("/v1/parcels", &serde_json::to_vec(&server.parcels(4)).unwrap());
    assert_eq!(status, 201);
    for i in 0..4 {
        server.op_post(&format!("/v1/parcels/P{i}/departed"), b"");
    }
    let token = server.dispatch.create_enrolment_token("R1", &server.operator).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |action| run_with_clock(dir.path(), &server.base.as_str().into(), action, server.clock.clone()).unwrap();
    assert_eq!(run(Action::Enrol { token })["enrolled"], true);
    let synced = run(Action::Sync { date: Some(server.scene.date), full: false });
    assert_eq!(synced["applied"][0]["added"], 4);
    assert_eq!(run(Action::Parcels { stop: None }).as_array().unwrap().len(), 4);
    let outcome = run(Action::Verify {
        barcode: "BC0".into(),
        code: Some(server.code("P0")),
        qr: None,
        door: Default::default(),
    });
    assert_eq!(outcome["outcome"], "accepted", "{outcome}");
    assert!(
        run(Action::Fail { barcode: "BC1".into(), reason: "refused_by_recipient".into(), note: None })["receipt_seq"]
            .is_u64()
    );
    let up = run(Action::Upload);
    assert_eq!((up["rejected"].as_u64(), up["flagged"].as_u64()), (Some(0), Some(0)));
    assert_eq!(run(Action::Status)["pending_receipts"], 0);
    let bogus = Action::Fail { barcode: "BC1".into(), reason: "bogus".into(), note: None };
    assert!(run_with_clock(dir.path(), &server.base.as_str().into(), bogus, server.clock.clone()).is_err());

    // The next morning the code has expired, on the phone's clock as on dispatch's.
    server.clock.advance(TimeDelta::hours(24));
    let outcome = run(Action::Verify {
        barcode: "BC2".into(),
        code: Some(server.code("P2")),
        qr: None,
        door: Default::default(),
    });
    assert_eq!(outcome["outcome"], "expired", "{outcome}");
}

/// The insider attack over HTTP: with the device secret (unsealed from the phone's own file) and
/// 16-bit tags, a brute force finds a code that is not the customer's but shares its tag. The phone
/// accepts it; dispatch re-checks the code proof against the true code and flags the receipt.
#[test]
fn a_forged_handover_is_flagged_by_dispatch_over_http() {
    use doorstep_core::crypto::{Code, DeviceSecret, Tag};
    let server = serve_with(doorstep_core::policy::Policy { tag_bits: 16, ..Default::default() });
    let (device, dir, device_id) = server.day();
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
    let truth = server.code("P0");
    let key = secret.tag_key(0);
    let forged = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| *c != truth && Tag::matches(&key, "P0", &salt, &Code::parse(c).unwrap(), 16, &tag))
        .expect("16-bit tags leave about 15 other candidates");

    let out = device.verify_code(&[ScannedParcel::scanned("BC0")], &forged, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "the tag matches, so the phone accepts: {out:?}");
    let batch = device.next_batch(10, 64 * 1024).unwrap().unwrap();
    let (status, ack) = server.signed_post(&device, &format!("/v1/devices/{device_id}/receipts"), &batch.bytes);
    assert_eq!(status, 200);
    let report = device.apply_ack(&ack).unwrap();
    assert_eq!(report.flagged.len(), 1);
    assert_eq!(report.flagged[0].reason.as_deref(), Some(doorstep_core::issuer::FLAGGED_FOR_PHONE));
    let stored = server.dispatch.receipts(&device_id).unwrap();
    assert!(stored[0].reason.as_deref().unwrap().contains("code proof"), "dispatch keeps why: {stored:?}");
    let (_, history) = server.op_get("/v1/parcels/P0/history");
    let history: serde_json::Value = serde_json::from_slice(&history).unwrap();
    assert_eq!(history["receipts"][0]["status"], "flagged");
}
