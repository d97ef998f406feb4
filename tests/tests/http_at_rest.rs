//! Nothing secret at rest in the clear (issue 9): a full day runs over real HTTP, with customer
//! e-mail going to an SMTP sink (so no `.eml` by design). Then every file under dispatch's state
//! folder is searched for every secret of the day. That includes the database, its WAL and
//! shared-memory files, and the keys folder. The secrets are every code (customer, delegate,
//! reissued), every device secret (raw, hex, base64url), every enrolment token, every customer
//! link and the operator key; none is found. The folder is the owner's only: 0700 for folders,
//! 0600 for files.

use std::path::{Path, PathBuf};

use doorstep_core::device::{HandoverOutcome, ScannedParcel};
use doorstep_core::protocol::Base64Bytes;
use doorstep_core::protocol::Holder;
use doorstep_dispatch::MailConfig;
use doorstep_tests::http::{Scene, Server, get_as, post};
use doorstep_tests::insider::Insider;
use doorstep_tests::smtp::SmtpSink;
use std::sync::{Arc, OnceLock};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if path.is_file() {
            found.push(path);
        }
    }
    found
}

/// `field: value` lines of every e-mail the sink got.
fn mailed(sink: &SmtpSink, field: &str) -> Vec<String> {
    sink.messages()
        .iter()
        .flat_map(|m| m.lines().filter_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned())).collect::<Vec<_>>())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn no_code_device_secret_or_token_of_a_full_day_is_in_any_file_of_the_state_folder() {
    let sink = SmtpSink::start();
    let mail = MailConfig::Smtp { host: "127.0.0.1".into(), port: sink.port };
    let server = Server::start_with(Scene::default_day(), |d| d.with_mail(mail));
    let (phone, dir, device_id) = server.day();

    // The day: hand-overs with the customer's and a delegate's code, a reissue, a QR token, an
    // enrolment token left unused, uploads.
    let links = mailed(&sink, "Customer app access:");
    let auth = format!("Bearer {}", links[0]);
    let (status, body) =
        post(&server.url("/v1/customer/parcels/P0/delegates"), &[("Authorization", &auth)], br#"{"label":"Anna"}"#);
    assert_eq!(status, 201);
    let anna = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"].as_str().unwrap().to_owned();
    server.sync(&phone, &device_id);
    let out = phone.verify_code(&[ScannedParcel::scanned("BC0")], &anna, None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }), "{out:?}");
    assert_eq!(server.op_post("/v1/parcels/P2/reissue", b"").0, 200);
    server.sync(&phone, &device_id);
    let codes = mailed(&sink, "Delivery code:");
    let p2 = codes.last().unwrap().clone();
    assert!(matches!(
        phone.verify_code(&[ScannedParcel::scanned("BC2")], &p2, None).unwrap(),
        HandoverOutcome::Accepted { .. }
    ));
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/qr"), &links[0]).0, 200);
    let (status, token) = server.op_post("/v1/enrolment-tokens", br#"{"route_id":"R2"}"#);
    assert_eq!(status, 201);
    let unused_token =
        serde_json::from_slice::<serde_json::Value>(&token).unwrap()["token"].as_str().unwrap().to_owned();
    let (second, _) = server.synced_phone("R1", &dir.path().join("second.db"));
    server.upload(&phone, &device_id);
    drop(second);

    // Every secret of the day, in each form it could take.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for code in codes.iter().chain([&anna]) {
        secrets.push((format!("code {code}"), code.as_bytes().to_vec()));
    }
    for db in ["d.db", "second.db"] {
        let secret = Insider::of(&dir.path().join(db)).secret.expose().to_vec();
        let b64 = serde_json::to_string(&Base64Bytes(secret.clone())).unwrap().trim_matches('"').to_owned();
        secrets.push((format!("device secret of {db}"), secret.clone()));
        secrets.push((format!("device secret of {db}, hex"), hex(&secret).into_bytes()));
        secrets.push((format!("device secret of {db}, base64url"), b64.into_bytes()));
    }
    let links = mailed(&sink, "Customer app access:");
    for link in &links {
        secrets.push(("customer link".into(), link.as_bytes().to_vec()));
    }
    secrets.push(("enrolment token".into(), unused_token.into_bytes()));
    secrets.push(("operator key".into(), server.operator_key.as_bytes().to_vec()));
    let operator_secret = server.operator_key.rsplit('_').next().unwrap().as_bytes().to_vec();
    secrets.push(("operator key's secret".into(), operator_secret));
    assert!(codes.len() >= 6 && links.len() >= 6, "the day mailed codes and links: {codes:?}");

    let files = files_under(server.state.path());
    // On PostgreSQL the database's files are its server's: every file of its directory (tables,
    // write-ahead log, server log), once a checkpoint has written every page.
    let mut searched = files.clone();
    match &server.database {
        None => assert!(files.iter().any(|f| f.ends_with("dispatch.db-wal")), "the WAL is searched too: {files:?}"),
        Some(_) => {
            let data = std::env::var("DOORSTEP_TEST_POSTGRES_DATA").expect("scripts/postgres.sh names its directory");
            server.checkpoint_postgres();
            let server_files = files_under(Path::new(&data).parent().unwrap());
            assert!(server_files.iter().any(|f| f.to_string_lossy().contains("pg_wal/")), "{server_files:?}");
            searched.extend(server_files);
        }
    }
    assert!(!files.iter().any(|f| f.extension().is_some_and(|e| e == "eml")), "mail went to SMTP");
    for file in &searched {
        // The database server removes temporary files while we search.
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !files.contains(file) => continue,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        for (what, secret) in &secrets {
            assert!(memchr::memmem::find(&bytes, secret).is_none(), "{what} found in {}", file.display());
        }
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(server.state.path()), 0o700);
        assert_eq!(mode(&server.state.path().join("keys")), 0o700);
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    }
}

/// A customer link opens its own parcel only, and only until the end of its delivery day; the
/// QR tokens it can fetch are capped.
#[test]
fn a_customer_link_opens_one_parcel_until_its_day_ends_and_qr_tokens_are_capped() {
    let server = Server::start();
    let (phone, _dir, _) = server.day();
    let mut same_customer = server.parcels(9)[8].clone();
    same_customer.customer_email = "customer0@example.test".into();
    same_customer.declared_value_cents = 500_000;
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&[same_customer]).unwrap()).0, 201);
    assert_eq!(server.op_post("/v1/parcels/P8/departed", b"").0, 200);
    let (_, p0_link) = server.read_email("P0");
    let (_, p8_link) = server.read_email("P8");
    assert_ne!(p0_link, p8_link, "one link per parcel");
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/code"), &p0_link).0, 200);
    assert_eq!(
        get_as(&server.url("/v1/customer/parcels/P8/code"), &p0_link).0,
        404,
        "the same customer's other parcel"
    );
    for _ in 0..doorstep_dispatch::store::MAX_QR_TOKENS_PER_HOLDER {
        assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/qr"), &p0_link).0, 200);
    }
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/qr"), &p0_link).0, 409);
    // A reissue answers a leaked e-mail: the earlier link stops opening the parcel.
    assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/code"), &p0_link).0, 404, "the leaked link");
    let newest = server.latest_email("P0").1;
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/code"), &newest).0, 200);
    let p0_link = newest;
    // The delivery day (Berlin) ends; so does the link.
    server.clock.set(phone.parcel("P0").unwrap().not_after);
    assert_eq!(get_as(&server.url("/v1/customer/parcels/P0/code"), &p0_link).0, 404);
}

/// A day played while the mail relay is down: its 5 coded parcels' e-mail waits in the outbox.
fn day_with_the_relay_down() -> Server {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = MailConfig::Smtp { host: "127.0.0.1".into(), port: dead_port };
    let server = Server::start_with(Scene::default_day(), |d| d.with_mail(down));
    server.day();
    server
}

/// A sender whose batch takes longer than a claim lasts (a slow relay: here each message takes two
/// minutes of dispatch's clock) never has a message sent again by another sender meanwhile: each
/// message is claimed just before it travels. Before, a sender claimed its whole
/// batch at once, the claims ran out while it worked through it, and a second sender sent the
/// rest again.
#[test]
fn a_slow_relay_never_gets_a_message_twice_from_two_senders() {
    let server = day_with_the_relay_down();
    assert_eq!(server.dispatch.pending_mail().unwrap(), 5);
    server.clock.advance(chrono::TimeDelta::minutes(1)); // past the first failure's backoff
    let other: Arc<OnceLock<doorstep_dispatch::Dispatch>> = Arc::new(OnceLock::new());
    let (clock, second) = (server.clock.clone(), other.clone());
    let sink = SmtpSink::start_with(move |kept| {
        // The first sender's first three messages take two minutes each; the second sender's,
        // sent while the first waits on its third, none.
        if kept <= 3 {
            clock.advance(chrono::TimeDelta::minutes(2));
        }
        if kept == 3 {
            // The first sender is on its third message, ten minutes into its batch's claim of five.
            second.get().unwrap().send_pending_mail().unwrap();
        }
    });
    let relay = || MailConfig::Smtp { host: "127.0.0.1".into(), port: sink.port };
    let first = server.reopen().with_clock(server.clock.clone()).with_mail(relay());
    let _ = other.set(server.reopen().with_clock(server.clock.clone()).with_mail(relay()));
    first.send_pending_mail().unwrap();
    assert_eq!(first.pending_mail().unwrap(), 0);
    // A message sent twice arrives twice byte for byte (it was composed once, when queued).
    let mut sent = sink.messages();
    sent.sort();
    let n = sent.len();
    sent.dedup();
    assert_eq!((n, sent.len()), (5, 5), "each of the five messages sent once");
}

/// A relay that is down does not stop the day: codes are issued, their e-mail waits sealed in the
/// database's outbox, and goes out once the relay answers. Before, a departure failed with a 500
/// while the relay was down.
#[test]
fn a_code_is_issued_while_the_relay_is_down_and_its_mail_goes_out_later() {
    let server = day_with_the_relay_down();
    assert_eq!(server.dispatch.pending_mail().unwrap(), 5, "the 5 coded parcels' e-mail waits");
    // The key-encryption key is rotated meanwhile: queued e-mail is re-sealed with the codes.
    // 5 codes, 1 device secret and 5 queued messages.
    assert_eq!(doorstep_dispatch::rotate_kek(server.state.path(), server.database.as_ref()).unwrap(), 11);
    let sink = SmtpSink::start();
    let up = server
        .reopen()
        .with_clock(server.clock.clone())
        .with_mail(MailConfig::Smtp { host: "127.0.0.1".into(), port: sink.port });
    assert_eq!(up.send_pending_mail().unwrap(), 0, "each waits its backoff after the failed try");
    server.clock.advance(chrono::TimeDelta::seconds(30));
    assert_eq!(up.send_pending_mail().unwrap(), 5);
    assert_eq!(up.pending_mail().unwrap(), 0);
    let codes = mailed(&sink, "Delivery code:");
    // `up` holds the new key (the running server, opened before the rotation, the old one).
    let p0 = up.codes("P0").unwrap().into_iter().find(|(h, _)| *h == Holder::Customer).unwrap().1;
    assert!(codes.contains(&p0), "{codes:?}");
}

/// The review queued 100 e-mails to mailboxes the relay refuses (550): the sender took the same
/// first 100 rows on every pass, and a good customer's code never went out. Refused-for-good
/// messages are kept and not tried again; the others go out.
#[test]
fn mail_a_relay_refuses_for_good_does_not_hold_up_the_rest() {
    let sink = SmtpSink::start();
    let relay = MailConfig::Smtp { host: "127.0.0.1".into(), port: sink.port };
    let server = Server::start_with(Scene::default_day(), |d| d.with_mail(relay));
    let mut parcels = server.parcels(30);
    for (i, p) in parcels.iter_mut().enumerate() {
        p.declared_value_cents = 200_000;
        p.customer_email = if i < 29 { format!("bad{i}@example.test") } else { "good@example.test".into() };
    }
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap()).0, 201);
    for i in 0..30 {
        assert_eq!(server.op_post(&format!("/v1/parcels/P{i}/departed"), b"").0, 200);
    }
    assert_eq!(sink.refusals(), 29, "each refused once, at its departure");
    assert_eq!(mailed(&sink, "Delivery code:"), [server.code("P29")]);
    for _ in 0..3 {
        server.clock.advance(chrono::TimeDelta::hours(2));
        assert_eq!(server.dispatch.send_pending_mail().unwrap(), 0);
    }
    assert_eq!(sink.refusals(), 29, "a mailbox refused for good is not tried again");
    assert_eq!(server.dispatch.pending_mail().unwrap(), 29, "kept, with the reason, for the operator");
    // ... who sees each, with the relay's answer, and never the message (it holds the code).
    let (status, body) = server.op_get("/v1/mail/undelivered");
    assert_eq!(status, 200);
    let kept: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(kept.as_array().map(Vec::len), Some(29), "{kept}");
    assert_eq!((kept[0]["parcel_id"].as_str(), kept[0]["given_up"].as_bool()), (Some("P0"), Some(true)));
    assert!(kept[0]["last_error"].as_str().unwrap().contains("550"), "{kept}");
    assert!(!String::from_utf8_lossy(&body).contains(&server.code("P0")), "no code in the listing");
}
