//! How dispatch listens (`dispatch/src/listen.rs`). TLS served by itself (`doorstep serve
//! --tls-cert --tls-key`): a phone works a day over it, nothing is answered in the clear on its
//! port, a client that does not trust the certificate gets nothing, a renewed certificate is
//! picked up without a restart (and a broken one is not), and a key file open to every user is
//! refused. And a client that trickles its headers is cut off.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use doorstep_dispatch::listen::{self, TlsFiles};
use doorstep_dispatch::terminal::{Action, Remote, run_with_clock};
use doorstep_tests::http::Server;

/// A self-signed certificate for 127.0.0.1 and localhost, written as `NAME.pem` (0644) and
/// `NAME.key` (0600) into `dir`.
fn certificate(dir: &Path, name: &str) -> TlsFiles {
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let files = TlsFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    write_pair(&files, &issued.cert.pem(), &issued.signing_key.serialize_pem());
    files
}

fn write_pair(files: &TlsFiles, cert: &str, key: &str) {
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A client that trusts only the certificate in `ca`.
fn client_trusting(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
    ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build().into()
}

/// GET `path` with `agent`: the status, or the transport error's words.
fn status(agent: &ureq::Agent, url: String) -> Result<u16, String> {
    agent.get(&url).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

#[test]
fn a_phone_enrols_syncs_hands_over_and_uploads_over_tls_served_by_dispatch() {
    let certs = tempfile::tempdir().unwrap();
    let files = certificate(certs.path(), "a");
    let server = Server::start_tls(&files);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    server.dispatch.import_parcels(&server.parcels(4), &server.operator).unwrap();
    for i in 0..4 {
        server.dispatch.parcel_departed(&format!("P{i}"), &server.operator).unwrap();
    }
    let token = server.dispatch.create_enrolment_token("R1", &server.operator).unwrap();

    let phone_dir = tempfile::tempdir().unwrap();
    let remote = Remote { url: server.base.clone(), ca: Some(files.cert.clone()) };
    let run = |action| run_with_clock(phone_dir.path(), &remote, action, server.clock.clone()).unwrap();
    assert_eq!(run(Action::Enrol { token })["enrolled"], true);
    assert_eq!(run(Action::Sync { date: Some(server.scene.date), full: false })["applied"][0]["added"], 4);
    let outcome = run(Action::Verify {
        barcode: "BC0".into(),
        code: Some(server.code("P0")),
        qr: None,
        door: Default::default(),
    });
    assert_eq!(outcome["outcome"], "accepted", "{outcome}");
    let up = run(Action::Upload);
    assert_eq!((up["acknowledged"].as_u64(), up["rejected"].as_u64()), (Some(1), Some(0)), "{up}");

    // The same phone, told to trust the public roots only, does not reach a self-signed dispatch.
    let untrusting = Remote { url: server.base.clone(), ca: None };
    let refused = run_with_clock(
        phone_dir.path(),
        &untrusting,
        Action::Sync { date: Some(server.scene.date), full: false },
        server.clock.clone(),
    );
    assert!(refused.unwrap_err().to_string().to_lowercase().contains("certificate"));
}

#[test]
fn nothing_is_answered_in_the_clear_or_to_a_client_that_does_not_trust_the_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let served = certificate(certs.path(), "served");
    let other = certificate(certs.path(), "other");
    let server = Server::start_tls(&served);
    let plain_url = server.url("/v1/parcels/P0/history").replacen("https://", "http://", 1);
    let plain = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    assert!(status(&plain, plain_url).is_err(), "plain HTTP on the TLS port gets no answer");
    assert!(status(&client_trusting(&other.cert), server.url("/v1/parcels/P0/history")).is_err());
    // The trusting client is answered (401: no operator key), so the refusals above were TLS's.
    assert_eq!(status(&client_trusting(&served.cert), server.url("/v1/parcels/P0/history")), Ok(401));
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload_and_a_broken_one_is_not() {
    let certs = tempfile::tempdir().unwrap();
    let live = certificate(certs.path(), "live");
    let old: PathBuf = certs.path().join("old.pem");
    std::fs::copy(&live.cert, &old).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tls = runtime.block_on(listen::load(&live)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/v1/parcels/P0/history", listener.local_addr().unwrap());
    let server = Server::start();
    let app = doorstep_dispatch::api::router(server.dispatch.clone());
    runtime.spawn(listen::serve(listener, app, Some(tls.clone()), std::future::pending()));
    assert_eq!(status(&client_trusting(&old), url.clone()), Ok(401));

    // Renewal: new files in place, then the reload `serve` does on SIGHUP.
    let renewed = certificate(certs.path(), "renewed");
    write_pair(
        &live,
        &std::fs::read_to_string(&renewed.cert).unwrap(),
        &std::fs::read_to_string(&renewed.key).unwrap(),
    );
    runtime.block_on(listen::reload(&tls, &live)).unwrap();
    assert_eq!(status(&client_trusting(&renewed.cert), url.clone()), Ok(401));
    assert!(status(&client_trusting(&old), url.clone()).is_err(), "the old certificate is no longer served");

    // A half-written renewal is refused and the served certificate stays.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    let refused = runtime.block_on(listen::reload(&tls, &live)).unwrap_err();
    assert!(refused.contains("live.pem"), "{refused}");
    assert_eq!(status(&client_trusting(&renewed.cert), url), Ok(401));
}

#[test]
fn tls_files_that_cannot_be_served_are_refused_with_the_file_named() {
    let certs = tempfile::tempdir().unwrap();
    let files = certificate(certs.path(), "a");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = runtime.block_on(listen::load(&files)).unwrap_err();
    assert!(open.contains("a.key") && open.contains("chmod 600"), "{open}");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(runtime.block_on(listen::load(&files)).is_ok(), "a group-readable key (ssl-cert) is fine");

    let missing = TlsFiles { cert: certs.path().join("nope.pem"), key: files.key.clone() };
    assert!(runtime.block_on(listen::load(&missing)).unwrap_err().contains("nope.pem"));

    let other = certificate(certs.path(), "b");
    std::fs::write(&files.cert, "not a certificate").unwrap();
    assert!(runtime.block_on(listen::load(&files)).unwrap_err().contains("a.pem"));

    let swapped = TlsFiles { cert: other.cert.clone(), key: files.key.clone() };
    let mismatch = runtime.block_on(listen::load(&swapped));
    assert!(mismatch.is_err(), "a key that is not the certificate's is refused at start, not at the first client");
}

/// The review held 600 connections open with half-sent headers and dispatch answered no one.
/// A connection must send its headers within `HEADER_TIMEOUT`.
#[test]
fn a_connection_that_does_not_finish_its_headers_is_closed() {
    use std::io::{Read, Write};
    let server = Server::start();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /v1/parcels/P0/history HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    stream.set_read_timeout(Some(listen::HEADER_TIMEOUT * 3)).unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(read.is_ok(), "closed by dispatch, not by our read timeout: {read:?}");
    let waited = started.elapsed();
    assert!(waited >= listen::HEADER_TIMEOUT - std::time::Duration::from_secs(1), "{waited:?}");
    assert!(waited < listen::HEADER_TIMEOUT * 2, "{waited:?}");
}

/// The second review held HTTP/2 connections open without limit (h2c, and h2 chosen through
/// ALPN): only HTTP/1.1 is served, so an HTTP/2 preface is refused at once.
#[test]
fn http2_is_not_served_in_the_clear_or_over_tls() {
    use std::io::{Read, Write};
    let server = Server::start();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    stream.set_read_timeout(Some(listen::HEADER_TIMEOUT * 3)).unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    assert!(stream.read_to_end(&mut answer).is_ok(), "closed by dispatch");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused at once, {:?}", started.elapsed());

    let certs = tempfile::tempdir().unwrap();
    let files = certificate(certs.path(), "a");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = runtime.block_on(listen::load(&files)).unwrap();
    assert_eq!(config.get_inner().alpn_protocols, vec![b"http/1.1".to_vec()], "h2 is never offered");
}

/// The reviews held a thousand connections from one address until dispatch ran out of file
/// descriptors. Connections are capped per client address and in all; one over the cap is closed
/// at once, and a place freed is taken again.
#[test]
fn connections_over_the_cap_are_closed_at_once_and_places_come_back() {
    use std::io::{Read, Write};
    let server = Server::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = doorstep_dispatch::api::router(server.dispatch.clone());
    let limits = listen::Connections { total: 100, per_client: Some(3) };
    runtime.spawn(listen::serve_with(listener, app, None, std::future::pending(), limits));
    let open = |_| {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        stream
    };
    let held: Vec<_> = (0..3).map(open).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut fourth = open(0);
    let _ = fourth.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let closed = match fourth.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed && answer.is_empty(), "closed unanswered, not left waiting: {answer:?}");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut again = open(0);
    again.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    again.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&answer));
}
