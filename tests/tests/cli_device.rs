//! `doorstep device` as a script sees it: each way a command ends has its own exit code
//! (`terminal::Ending`), and each error says what happened and what to do. Run in-process
//! against a real dispatch over HTTP; `dispatch/tests/cli.rs` runs the binary itself.

use doorstep_dispatch::terminal::{Action, Ending, Remote, TerminalError, run_with_clock};
use doorstep_tests::http::Server;

/// A day on a real dispatch, and an enrolled terminal phone that synced it, in a folder of its own.
struct TerminalDay {
    server: Server,
    dir: tempfile::TempDir,
    remote: Remote,
}

impl TerminalDay {
    fn start() -> TerminalDay {
        let server = Server::start();
        server.day();
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::from(server.base.as_str());
        let body = serde_json::to_vec(&serde_json::json!({ "route_id": "R1" })).unwrap();
        let (status, token) = server.op_post("/v1/enrolment-tokens", &body);
        assert_eq!(status, 201);
        let token = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["token"].as_str().unwrap().to_owned();
        let day = TerminalDay { server, dir, remote };
        day.run(Action::Enrol { token }).unwrap();
        day.run(Action::Sync { date: Some(day.server.scene.date), full: false }).unwrap();
        day
    }

    /// Runs `action` on the phone against this dispatch.
    fn run(&self, action: Action) -> Result<serde_json::Value, TerminalError> {
        self.on(&self.remote, action)
    }

    /// Runs `action` on the phone against `remote`.
    fn on(&self, remote: &Remote, action: Action) -> Result<serde_json::Value, TerminalError> {
        run_with_clock(self.dir.path(), remote, action, self.server.clock.clone())
    }
}

#[test]
fn each_way_a_device_command_ends_has_its_own_exit_code_and_says_what_to_do() {
    let day = TerminalDay::start();
    let server = &day.server;
    let run = |action| day.run(action);
    let ends_with = |action, ending: Ending, says: &str| {
        let error = run(action).expect_err(says);
        assert_eq!(error.ending, ending, "{error}");
        assert!(error.to_string().contains(says), "{error}");
    };
    let verify = |barcode: &str, code: Option<String>| Action::Verify {
        barcode: barcode.into(),
        code,
        qr: None,
        door: Default::default(),
    };

    // Refused at the door: a wrong code is an outcome, not an error, and ends with 3.
    let right = server.code("P0");
    let wrong: String = right.bytes().map(|b| char::from(b'0' + (b - b'0' + 1) % 10)).collect();
    let outcome = run(verify("BC0", Some(wrong))).unwrap();
    assert_eq!((outcome["outcome"].as_str(), Ending::of(&outcome).code()), (Some("wrong_code"), 3));
    let outcome = run(verify("BC99", Some(right.clone()))).unwrap();
    assert_eq!((outcome["outcome"].as_str(), Ending::of(&outcome).code()), (Some("unknown_parcel"), 3));
    // A failure recorded for an unknown parcel ends the same way.
    let fail =
        |barcode: &str, reason: &str| Action::Fail { barcode: barcode.into(), reason: reason.into(), note: None };
    ends_with(fail("BC99", "recipient_unavailable"), Ending::RefusedAtDoor, "no parcel BC99 on this device");
    // Bad input: 2, with what to type instead; nothing is recorded.
    ends_with(fail("BC1", "asleep"), Ending::BadInput, "e.g. recipient_unavailable");
    ends_with(verify("BC2", None), Ending::BadInput, "needs the recipient's code");
    ends_with(verify("BC0", Some("12".into())), Ending::BadInput, "6 digits");
    // Handed over: 0.
    let outcome = run(verify("BC0", Some(right))).unwrap();
    assert_eq!((outcome["outcome"].as_str(), Ending::of(&outcome).code()), (Some("accepted"), 0));
    assert_eq!(run(Action::Status).unwrap()["pending_receipts"], 2, "a wrong code and a hand-over, nothing else");

    // Dispatch unreachable: 4, and the receipts stay in the outbox.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gone = Remote::from(format!("http://127.0.0.1:{port}").as_str());
    let error = day.on(&gone, Action::Upload).unwrap_err();
    assert_eq!(error.ending, Ending::Unreachable, "{error}");
    assert!(error.to_string().contains("nothing was lost"), "{error}");
    assert_eq!(run(Action::Status).unwrap()["pending_receipts"], 2);
    // Dispatch refusing: 5, with dispatch's own words and what to do.
    let elsewhere = Server::start();
    let other = Remote::from(elsewhere.base.as_str());
    let error = day.on(&other, Action::Upload).unwrap_err();
    assert_eq!(error.ending, Ending::DispatchRefused, "{error}");
    assert!(error.to_string().contains("HTTP 401") && error.to_string().contains("enrolled"), "{error}");
    // And the right dispatch takes them.
    assert_eq!(run(Action::Upload).unwrap()["acknowledged"], 2);
}

#[test]
fn a_device_folder_that_lost_its_key_or_its_database_is_named_and_nothing_is_created() {
    let day = TerminalDay::start();
    let dir = day.dir.path();
    let run = |action| day.run(action);
    // The key gone: its own error, and no new key made.
    let key = dir.join("vault.key");
    let kept = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let error = run(Action::Status).unwrap_err();
    assert_eq!(error.ending, Ending::Failed, "{error}");
    assert!(error.to_string().contains("vault.key is missing"), "{error}");
    assert!(!key.exists(), "no new key");
    std::fs::write(&key, kept).unwrap();
    assert_eq!(run(Action::Status).unwrap()["enrolled"], true);
    // The database emptied (a failing disk): refused as damaged, never a fresh unenrolled device.
    let db = dir.join("device.db");
    for side in ["device.db-wal", "device.db-shm"] {
        let _ = std::fs::remove_file(dir.join(side));
    }
    std::fs::File::create(&db).unwrap();
    let error = run(Action::Status).unwrap_err();
    assert_eq!(error.ending, Ending::Failed, "{error}");
    assert!(error.to_string().contains("empty"), "{error}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was found");
}

#[test]
fn tomorrows_route_syncs_beside_todays_and_each_day_gets_its_own_changes() {
    let day = TerminalDay::start();
    let server = &day.server;
    let run = |action| day.run(action);
    let (today, tomorrow) = (server.scene.date, server.scene.date.succ_opt().unwrap());
    // Dispatch plans tomorrow's route R1: four parcels, three of them loaded on the van already.
    let mut planned = server.parcels(4);
    for p in &mut planned {
        p.parcel_id = p.parcel_id.replace('P', "T");
        p.barcode = p.barcode.replace("BC", "TBC");
        p.delivery_date = tomorrow;
    }
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&planned).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let depart = |id: &str| assert_eq!(server.op_post(&format!("/v1/parcels/{id}/departed"), b"").0, 200);
    for id in ["T0", "T1", "T2"] {
        depart(id);
    }

    // The evening before: tomorrow loads beside today, and the command says so.
    let synced = run(Action::Sync { date: Some(tomorrow), full: false }).unwrap();
    assert_eq!(synced["applied"][0]["added"], 3, "{synced}");
    let note = synced["note"].as_str().unwrap();
    assert!(
        note.contains("2026-11-27 is tomorrow in Europe/Berlin") && note.contains("2026-11-26 (8 to hand over)"),
        "{note}"
    );
    let status = run(Action::Status).unwrap();
    let held: Vec<&str> = status["days"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(held, ["2026-11-26", "2026-11-27"]);

    // Today's parcels are still deliverable; tomorrow's wait for their day.
    let verify = |barcode: &str, code: String| Action::Verify {
        barcode: barcode.into(),
        code: Some(code),
        qr: None,
        door: Default::default(),
    };
    assert_eq!(run(verify("BC0", server.code("P0"))).unwrap()["outcome"], "accepted");
    assert_eq!(run(verify("TBC0", server.code("T0"))).unwrap()["outcome"], "not_yet_valid");

    // A change to each day reaches the phone, whichever day it syncs.
    depart("T3");
    let mut extra = server.parcels(9).pop().unwrap();
    extra.parcel_id = "P8".into();
    extra.barcode = "BC8".into();
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&[extra]).unwrap()).0, 201);
    depart("P8");
    let synced = run(Action::Sync { date: None, full: false }).unwrap();
    assert_eq!(synced["date"], today.to_string());
    assert!(synced.get("note").is_none(), "today needs no word: {synced}");
    assert_eq!(synced["applied"].as_array().unwrap().len(), 2, "{synced}");
    let parcels = run(Action::Parcels { stop: None }).unwrap();
    let date_of = |id: &str| {
        parcels
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["parcel_id"] == id)
            .map(|p| p["date"].as_str().unwrap().to_owned())
    };
    assert_eq!((date_of("P8").as_deref(), date_of("T3").as_deref()), (Some("2026-11-26"), Some("2026-11-27")));

    // Mistakes are refused before dispatch is asked, and change nothing.
    let before =
        (run(Action::Status).unwrap()["manifest_sequence"].clone(), run(Action::Parcels { stop: None }).unwrap());
    for (date, says) in
        [(today.pred_opt().unwrap(), "before them"), (today + chrono::TimeDelta::days(30), "more than 7 days")]
    {
        let error = run(Action::Sync { date: Some(date), full: false }).unwrap_err();
        assert_eq!(error.ending, Ending::BadInput, "{error}");
        assert!(error.to_string().contains(says) && error.to_string().contains("Nothing was changed"), "{error}");
    }
    let after =
        (run(Action::Status).unwrap()["manifest_sequence"].clone(), run(Action::Parcels { stop: None }).unwrap());
    assert_eq!(after, before);
}

#[test]
fn a_parcel_damaged_on_the_phone_is_named_at_the_door_and_sync_full_restores_it() {
    let day = TerminalDay::start();
    let db = day.dir.path().join("device.db");
    let raw = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(raw.execute("UPDATE code_tag SET tag = X'000000' WHERE parcel_id = 'P0'", []).unwrap(), 1);
    drop(raw);
    let verify = || Action::Verify {
        barcode: "BC0".into(),
        code: Some(day.server.code("P0")),
        qr: None,
        door: Default::default(),
    };
    let error = day.run(verify()).unwrap_err();
    assert!(error.to_string().contains("P0") && error.to_string().contains("damaged"), "{error}");
    let synced = day.run(Action::Sync { date: None, full: true }).unwrap();
    assert_eq!(synced["applied"].as_array().unwrap().last().unwrap()["full"], true, "{synced}");
    assert_eq!(day.run(verify()).unwrap()["outcome"], "accepted");
}
