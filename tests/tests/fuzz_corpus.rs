//! The fuzz targets' seed corpus (real messages of a day, `tests/fuzz/corpus/<target>/`) and every
//! past finding (`tests/fuzz/findings/<target>/`) run through the targets on every test run:
//! a finding fixed once stays fixed, and a target that no longer accepts its own seeds is noticed
//! before anyone fuzzes for hours. `write_seed_corpus` (ignored) writes the seeds again.

use std::path::{Path, PathBuf};

use doorstep_core::device::ScannedParcel;
use doorstep_core::protocol::FailureReason;
use doorstep_core::protocol::{SignedEnvelope, domain};
use doorstep_tests::fuzz::TARGETS;
use doorstep_tests::http::{Server, post};

fn folder(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target)
}

#[test]
fn every_seed_and_every_past_finding_runs_through_its_target_without_a_panic() {
    let mut ran = 0;
    for (name, target) in TARGETS {
        let seeds = std::fs::read_dir(folder("corpus", name)).map(Iterator::count).unwrap_or(0);
        assert!(seeds > 0, "target {name} has no seed corpus");
        for kind in ["corpus", "findings"] {
            let Ok(files) = std::fs::read_dir(folder(kind, name)) else { continue };
            for file in files {
                let path = file.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
                ran += 1;
            }
        }
    }
    assert!(ran >= TARGETS.len());
}

/// Writes real messages of a day as the seed corpus (run with `--ignored` after a protocol change).
#[test]
#[ignore]
fn write_seed_corpus() {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    let keys = server.dispatch.verifying_keys();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    // Enrolment: a request and the bundle it is answered with.
    let other = server.phone(&dir.path().join("other.db"));
    let request = other.enrolment_request().unwrap();
    seeds.push(("enrolment_request", request.clone()));
    let body = serde_json::to_vec(&serde_json::json!({ "route_id": "R1" })).unwrap();
    let token: serde_json::Value = serde_json::from_slice(&server.op_post("/v1/enrolment-tokens", &body).1).unwrap();
    let (status, bundle) =
        post(&server.url("/v1/enrol"), &[("Enrolment-Token", token["token"].as_str().unwrap())], &request);
    assert_eq!(status, 200);
    seeds.push(("device_enrolment_bundle", bundle));
    // A manifest, its payload.
    let manifest = server.dispatch.full_manifest(&device_id, server.scene.date).unwrap();
    let payload = SignedEnvelope::open(&manifest, domain::MANIFEST, &keys).unwrap();
    seeds.push(("manifest_envelope", manifest));
    seeds.push(("manifest_payload", payload.clone()));
    seeds.push(("device_manifest", payload));
    // Receipts: a hand-over, a wrong code, a failure; the batch, its request header, the ack.
    let code = server.code("P0");
    phone.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
    phone.verify_code(&[ScannedParcel::scanned("BC0")], &code, None).unwrap();
    phone.record_failure(&[ScannedParcel::scanned("BC1")], FailureReason::RecipientUnavailable, None, None).unwrap();
    let batch = phone.next_batch(10, 1 << 20).unwrap().unwrap().bytes;
    let path = format!("/v1/devices/{device_id}/receipts");
    let header = phone.sign_request("POST", &path, &batch).unwrap();
    seeds.push(("request_header", [header.as_bytes(), b"\n", &batch].concat()));
    seeds.push(("batch", batch.clone()));
    let (status, ack) = post(&server.url(&path), &[(doorstep_core::protocol::REQUEST_HEADER, &header)], &batch);
    assert_eq!(status, 200);
    seeds.push(("device_ack", SignedEnvelope::open(&ack, domain::ACK, &keys).unwrap()));
    seeds.push(("ack", ack));
    // A QR token, codes as typed, imports as the docs show them.
    let qr = server.dispatch.qr_token("P2", doorstep_core::protocol::Holder::Customer).unwrap();
    seeds.push(("qr_token", qr.into_bytes()));
    for typed in ["123456", "123 456", "12-34-56", " 987654 "] {
        seeds.push(("code", typed.as_bytes().to_vec()));
    }
    let (_, doc) = doorstep_tests::http::get(&server.url("/openapi.json"));
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    let example = &doc["components"]["schemas"]["NewParcel"]["example"];
    seeds.push(("json_import", serde_json::to_vec(&[example]).unwrap()));
    let csv = doc["paths"]["/v1/parcels"]["post"]["requestBody"]["content"]["text/csv"]["example"].as_str().unwrap();
    seeds.push(("csv_import", csv.as_bytes().to_vec()));
    for (target, data) in seeds {
        let dir = folder("corpus", target);
        std::fs::create_dir_all(&dir).unwrap();
        let n = std::fs::read_dir(&dir).unwrap().count();
        std::fs::write(dir.join(format!("seed-{n}")), data).unwrap();
    }
}
