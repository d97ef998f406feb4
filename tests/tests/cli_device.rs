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
        day.run(Action::Sync { date: day.server.scene.date, replace_day: false }).unwrap();
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
    let verify = |barcode: &str, code: Option<String>| Action::Verify { barcode: barcode.into(), code, qr: None };

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
fn syncing_another_day_by_mistake_is_refused_while_the_held_day_has_work_left() {
    let day = TerminalDay::start();
    let server = &day.server;
    let run = |action| day.run(action);
    let tomorrow = server.scene.date.succ_opt().unwrap();
    let before = run(Action::Parcels { stop: None }).unwrap();
    let error = run(Action::Sync { date: tomorrow, replace_day: false }).unwrap_err();
    assert_eq!(error.ending, Ending::BadInput, "{error}");
    assert!(error.to_string().contains("--replace-day") && error.to_string().contains("8 parcels"), "{error}");
    assert_eq!(run(Action::Parcels { stop: None }).unwrap(), before, "today's parcels are all still there");
    assert_eq!(run(Action::Status).unwrap()["delivery_date"], server.scene.date.to_string());
    // Syncing today again is fine; replacing the day when asked to is too.
    run(Action::Sync { date: server.scene.date, replace_day: false }).unwrap();
    run(Action::Sync { date: tomorrow, replace_day: true }).unwrap();
    assert_eq!(run(Action::Status).unwrap()["delivery_date"], tomorrow.to_string());
}
