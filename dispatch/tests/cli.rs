//! The `doorstep` binary as a shell sees it: options accepted before or after the subcommand,
//! exit codes as documented in docs/dispatch.md (refusals at the door are tried in
//! `tests/tests/cli_device.rs`), and a reader that goes away (`| head`) ending the command
//! quietly instead of a panic.

use std::io::Read;
use std::process::{Command, Stdio};

fn doorstep(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doorstep")).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn device_options_are_accepted_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("phone");
    let folder = folder.to_str().unwrap();
    for args in [
        vec!["device", "--dir", folder, "status", "--json"],
        vec!["device", "status", "--dir", folder, "--dispatch", "http://127.0.0.1:9", "--json"],
    ] {
        let (code, out, err) = doorstep(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(status["enrolled"], false, "{out}");
    }
}

#[test]
fn exit_codes_tell_bad_input_a_refusal_at_the_door_and_an_unreachable_dispatch_apart() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("phone");
    let folder = folder.to_str().unwrap();
    // Usage errors (clap) and bad input: 2.
    assert_eq!(doorstep(&["device", "sync", "--date", "tomorrow", "--dir", folder]).0, 2);
    let (code, _, err) = doorstep(&["device", "fail", "BC1", "--reason", "asleep", "--dir", folder]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("recipient_unavailable"), "{err}");
    // A phone not enrolled yet: bad input, and what to do.
    let (code, out, err) = doorstep(&["device", "verify", "BC1", "123456", "--dir", folder]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("doorstep device enrol"), "{err}");
    // No dispatch at the address: 4.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = doorstep(&["device", "enrol", "--token", "t", "--dispatch", &url, "--dir", folder]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot reach dispatch"), "{err}");
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorstep"))
        .args(["demo", "--parcels", "6", "--routes", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the day's result is written, as `| head -c 0` does.
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn demo_serve_keeps_dispatch_running_and_prints_a_customer_page_and_the_console_with_a_key() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorstep"))
        .args(["demo", "--parcels", "20", "--routes", "1", "--serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let done = line.contains("operator key:");
        said.push(line);
        if done {
            break;
        }
    }
    let text = said.join("\n");
    let link = said.iter().find(|l| l.contains("/parcel/PCL-SERVE/")).map(|l| l.trim().to_owned()).expect(&text);
    let console = said.iter().find_map(|l| l.split_whitespace().find(|w| w.contains("/console?date="))).expect(&text);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    let mut page = agent.get(&link).call().unwrap();
    let body = page.body_mut().read_to_string().unwrap();
    assert_eq!(page.status().as_u16(), 200, "{body}");
    assert!(body.contains("Your delivery code") && body.contains("<svg"), "{body}");
    assert_eq!(agent.get(console).call().unwrap().status().as_u16(), 303, "the console asks for the key");
    assert!(text.contains("operator key: dso_"), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn export_names_its_format_and_writes_an_epcis_document() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let out = dir.path().join("day.jsonld");
    // No format named: bad input, nothing written.
    let (code, _, err) = doorstep(&["export", "--state", state, "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--epcis"), "{err}");
    assert!(!out.exists());
    assert_eq!(doorstep(&["export", "--epcis", "--state", state, "--date", "soon"]).0, 2);
    // Written readable by its owner only, over a file that was readable by others.
    std::fs::write(&out, b"old").unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, said, err) =
        doorstep(&["export", "--epcis", "--state", state, "--date", "2026-11-26", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("wrote 0 EPCIS 2.0 events"), "{said}");
    let document: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(document["type"], "EPCISDocument");
    assert_eq!(document["@context"][0], "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&out).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}
