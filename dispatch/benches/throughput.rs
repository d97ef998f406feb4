//! Dispatch throughput on loopback, beside floors measured in the same run.
//!
//! `cargo bench -p doorstep-dispatch --bench throughput`
//!
//! - manifests: a signed full manifest for a 300-parcel route, fetched over HTTP; floor: the core's
//!   issuer building and signing the same manifest in memory.
//! - receipts: 50 devices uploading at once (50 threads, 40 receipts each, batches of 20); floor:
//!   the core's issuer verifying the same batches in memory, one thread.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use criterion::Criterion;
use doorstep_core::crypto::{Code, SigningKey};
use doorstep_core::device::{Device, HostError, KeyVault, ScannedParcel};
use doorstep_core::issuer::{IssuedParcel, Issuer, ManifestSpec};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{FailureReason, Holder, ManifestKind, REQUEST_HEADER, Stop};
use doorstep_dispatch::{Dispatch, HighValuePolicy, NewParcel, Operator, SetClock, api, delivery_window};

const ROUTE_PARCELS: usize = 300;
const DEVICES: usize = 50;
const RECEIPTS_PER_DEVICE: usize = 40;

struct Vault;
impl KeyVault for Vault {
    fn seal(&self, p: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(p.iter().map(|b| b ^ 0x6B).collect())
    }
    fn unseal(&self, s: &[u8]) -> Result<Vec<u8>, HostError> {
        self.seal(s)
    }
}

struct Served {
    base: String,
    dispatch: Arc<Dispatch>,
    clock: Arc<SetClock>,
    _state: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

/// Dispatch on loopback; it and the phones read one clock, set to 10:00 UTC on the delivery date,
/// so the benchmark runs the same on any day.
fn serve() -> Served {
    let state = tempfile::tempdir().unwrap();
    let clock = Arc::new(SetClock::at(date().and_hms_opt(10, 0, 0).unwrap().and_utc()));
    let dispatch =
        Arc::new(Dispatch::open(state.path(), HighValuePolicy::default()).unwrap().with_clock(clock.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = api::router_with_limits(dispatch.clone(), api::Limits::unlimited());
    runtime.spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
    Served { base: format!("http://{addr}"), dispatch, clock, _state: state, _runtime: runtime }
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2031, 5, 6).unwrap()
}

fn parcels(route: &str, n: usize, offset: usize) -> Vec<NewParcel> {
    (0..n)
        .map(|i| NewParcel {
            parcel_id: format!("{route}-P{}", i + offset),
            barcode: format!("{route}-BC{}", i + offset),
            route_id: route.into(),
            stop_id: format!("S{i}"),
            stop_sequence: i as u32 + 1,
            delivery_date: date(),
            time_zone: "Europe/Berlin".into(),
            declared_value_cents: if i % 5 < 2 { 90_000 } else { 2_000 },
            category: "household".into(),
            customer_email: format!("c{i}@example.test"),
            address_hint: format!("{i} Elm St"),
            recipient_hint: "A. B.".into(),
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(true).build().into()
}

/// Enrols a device on `route` through the service; returns it and its id.
fn enrol(s: &Served, route: &str, dir: &std::path::Path) -> (Device, String) {
    let token = s.dispatch.create_enrolment_token(route, &Operator::loopback()).unwrap();
    let device = Device::open(dir.join(format!("{route}.db")), Arc::new(Vault), s.clock.clone(), None).unwrap();
    let bundle = s.dispatch.enrol(&token, &device.enrolment_request().unwrap()).unwrap();
    device.complete_enrolment(&bundle).unwrap();
    let id = device.status().unwrap().device_id.unwrap();
    (device, id)
}

fn bench_manifests(c: &mut Criterion) {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    s.dispatch.import_parcels(&parcels("R1", ROUTE_PARCELS, 0), &Operator::loopback()).unwrap();
    for p in parcels("R1", ROUTE_PARCELS, 0) {
        s.dispatch.parcel_departed(&p.parcel_id, &Operator::loopback()).unwrap();
    }
    let (device, id) = enrol(&s, "R1", dir.path());
    let path = format!("/v1/devices/{id}/manifest?date={}", date());
    let url = format!("{}{path}", s.base);
    let agent = agent();

    // Floor: the same manifest built and signed by the core's issuer in memory.
    let issuer = Issuer::new(SigningKey::generate("k").unwrap());
    let request = Device::open(dir.path().join("floor.db"), Arc::new(Vault), s.clock.clone(), None)
        .unwrap()
        .enrolment_request()
        .unwrap();
    let (record, _) = issuer.enrol(&request, "floor", s.clock.now()).unwrap();
    let (not_before, not_after) = delivery_window(date(), "Europe/Berlin").unwrap();
    let issued: Vec<IssuedParcel> = (0..ROUTE_PARCELS)
        .map(|i| IssuedParcel {
            parcel_id: format!("P{i}"),
            barcode: format!("BC{i}"),
            stop: Stop { id: format!("S{i}"), sequence: i as u32 + 1 },
            address_hint: format!("{i} Elm St"),
            recipient_hint: "A. B.".into(),
            codes: if i % 5 < 2 { vec![(Holder::Customer, Code::generate().unwrap())] } else { vec![] },
            not_before,
            not_after,
            attempts_used: 0,
            attempt_epoch: 0,
            qr_minted_after: Vec::new(),
        })
        .collect();
    let mut seq = 0;

    let mut g = c.benchmark_group("dispatch_manifest_300");
    g.sample_size(30);
    g.bench_function("floor", |b| {
        b.iter(|| {
            seq += 1;
            let spec = ManifestSpec {
                manifest_id: format!("m{seq}"),
                route_id: "R1".into(),
                delivery_date: date(),
                time_zone: "Europe/Berlin".into(),
                issued_at: s.clock.now(),
                sequence: seq,
                kind: ManifestKind::Full,
                policy: Policy::default(),
                parcels: issued.clone(),
                removals: vec![],
                resets: vec![],
                dispatch_keys: vec![],
            };
            black_box(issuer.build_manifest(&record, &spec).unwrap())
        })
    });
    g.bench_function("http", |b| {
        b.iter(|| {
            let signature = device.sign_request("GET", &path, b"").unwrap();
            let mut resp = agent.get(&url).header(REQUEST_HEADER, &signature).call().unwrap();
            black_box(resp.body_mut().read_to_vec().unwrap())
        })
    });
    g.finish();
}

fn bench_uploads(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch_ingest_50x40");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    // Floor: one Ed25519 verification per receipt (of a receipt-sized message), one thread.
    let key = SigningKey::generate("k").unwrap();
    let vk = key.verifying_key();
    let message = vec![b'r'; 700];
    let signature = key.sign("doorstep.receipt", &message);
    g.bench_function("floor", |b| {
        b.iter(|| {
            for _ in 0..DEVICES * RECEIPTS_PER_DEVICE {
                assert!(black_box(vk.verify("doorstep.receipt", &message, &signature)));
            }
        })
    });
    // 50 devices with 40 receipts each; all upload their batch at once (a thread each).
    g.bench_function("http", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let s = serve();
                let dir = tempfile::tempdir().unwrap();
                let mut uploads = Vec::with_capacity(DEVICES);
                for d in 0..DEVICES {
                    let route = format!("R{d}");
                    s.dispatch.import_parcels(&parcels(&route, RECEIPTS_PER_DEVICE, 0), &Operator::loopback()).unwrap();
                    for p in parcels(&route, RECEIPTS_PER_DEVICE, 0) {
                        s.dispatch.parcel_departed(&p.parcel_id, &Operator::loopback()).unwrap();
                    }
                    let (device, id) = enrol(&s, &route, dir.path());
                    device.apply_manifest(&s.dispatch.full_manifest(&id, date()).unwrap()).unwrap();
                    for p in parcels(&route, RECEIPTS_PER_DEVICE, 0) {
                        let scan = [ScannedParcel::scanned(p.barcode)];
                        device.record_failure(&scan, FailureReason::NoAccess, None, None).unwrap();
                    }
                    let batch = device.next_batch(RECEIPTS_PER_DEVICE as u32, 1 << 20).unwrap().unwrap();
                    assert_eq!(batch.receipt_count as usize, RECEIPTS_PER_DEVICE);
                    let path = format!("/v1/devices/{id}/receipts");
                    let signature = device.sign_request("POST", &path, &batch.bytes).unwrap();
                    uploads.push((format!("{}{path}", s.base), signature, batch.bytes));
                }
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for (url, signature, body) in &uploads {
                        scope.spawn(move || {
                            let req = agent().post(url).header(REQUEST_HEADER, signature);
                            let ack = req.send(&body[..]).unwrap().body_mut().read_to_vec().unwrap();
                            black_box(ack);
                        });
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Median of a benchmark from criterion's saved estimates, in nanoseconds.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = dir.join("criterion").join(group).join(name).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report() {
    if let (Some(http), Some(floor)) =
        (median_ns("dispatch_manifest_300", "http"), median_ns("dispatch_manifest_300", "floor"))
    {
        println!(
            "\nmanifests (300-parcel route): {:.0}/s over HTTP, {:.1} ms each; floor (issuer in memory) {:.1} ms: {:.2}x",
            1e9 / http,
            http / 1e6,
            floor / 1e6,
            http / floor
        );
    }
    if let (Some(http), Some(floor)) =
        (median_ns("dispatch_ingest_50x40", "http"), median_ns("dispatch_ingest_50x40", "floor"))
    {
        let n = (DEVICES * RECEIPTS_PER_DEVICE) as f64;
        println!(
            "receipts (50 devices at once): {:.0}/s over HTTP; floor (Ed25519 verifications, one thread) {:.0}/s: {:.2}x",
            n * 1e9 / http,
            n * 1e9 / floor,
            http / floor
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_manifests(&mut c);
    bench_uploads(&mut c);
    c.final_summary();
    report();
}
