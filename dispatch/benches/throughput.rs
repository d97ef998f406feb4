//! Dispatch throughput on loopback, beside floors measured in the same run.
//!
//! `cargo bench -p doorstep-dispatch --bench throughput`
//!
//! - manifests: a signed full manifest for a 300-parcel route, fetched over HTTP; floor: the core's
//!   issuer building and signing the same manifest in memory.
//! - manifests at once: 8 phones, each on its own 300-parcel route, fetching their full manifests at
//!   once (the start of a shift); floor: the same 8 manifests built and signed in memory on both
//!   cores.
//! - receipts: 50 devices uploading at once (50 threads, 40 receipts each, one batch each);
//!   floor: the Ed25519 verifications of those receipts on both cores.
//!
//! Each runs with dispatch on SQLite, and, when `DOORSTEP_TEST_POSTGRES` names a database
//! (`eval "$(bash scripts/postgres.sh start)"`), on PostgreSQL with one node and with two nodes
//! (uploads alternate between them).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use criterion::Criterion;
use doorstep_core::crypto::{Code, SigningKey};
use doorstep_core::device::{Device, HostError, KeyVault, ScannedParcel};
use doorstep_core::issuer::{EnrolledDevice, IssuedParcel, Issuer, ManifestSpec};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{FailureReason, Holder, ManifestKind, REQUEST_HEADER, Stop};
use doorstep_dispatch::{
    Dispatch, HighValuePolicy, NewParcel, Operator, PostgresConfig, SetClock, api, delivery_window,
};

const ROUTE_PARCELS: usize = 300;
const DEVICES: usize = 50;
const RECEIPTS_PER_DEVICE: usize = 40;
const PHONES_AT_ONCE: usize = 8;

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
    state: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

/// Where the benchmark keeps dispatch's state.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    /// PostgreSQL, served by this many nodes.
    Postgres(usize),
}

impl Backend {
    /// The backends this run measures: PostgreSQL only when a database is named.
    fn all() -> Vec<Backend> {
        let mut all = vec![Backend::Sqlite];
        if postgres_url().is_some() {
            all.extend([Backend::Postgres(1), Backend::Postgres(2)]);
        } else {
            eprintln!("PostgreSQL not measured: set DOORSTEP_TEST_POSTGRES (scripts/postgres.sh start)");
        }
        all
    }

    fn name(self) -> String {
        match self {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres(n) => format!("postgres_{n}_node{}", if n > 1 { "s" } else { "" }),
        }
    }
}

fn postgres_url() -> Option<String> {
    std::env::var("DOORSTEP_TEST_POSTGRES").ok().filter(|u| !u.is_empty())
}

/// Dispatch on loopback (one node per entry); it and the phones read one clock, set to 10:00 UTC
/// on the delivery date, so the benchmark runs the same on any day. Every node of a PostgreSQL
/// backend shares one fresh schema and a copy of the first node's keys.
fn serve(backend: Backend) -> Vec<Served> {
    let clock = Arc::new(SetClock::at(date().and_hms_opt(10, 0, 0).unwrap().and_utc()));
    let (nodes, database) = match backend {
        Backend::Sqlite => (1, None),
        Backend::Postgres(n) => {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            (n, Some(PostgresConfig::new(postgres_url().unwrap()).in_schema(schema)))
        }
    };
    let mut served: Vec<Served> = Vec::new();
    for _ in 0..nodes {
        let state = tempfile::tempdir().unwrap();
        if let Some(first) = served.first() {
            std::fs::create_dir_all(state.path().join("keys")).unwrap();
            for f in std::fs::read_dir(first.state.path().join("keys")).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), state.path().join("keys").join(f.file_name())).unwrap();
            }
        }
        let opened = Dispatch::open_with(state.path(), database.as_ref(), HighValuePolicy::default()).unwrap();
        let dispatch = Arc::new(opened.with_clock(clock.clone()));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = api::router_with_limits(dispatch.clone(), api::Limits::unlimited());
        runtime.spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
        });
        served.push(Served {
            base: format!("http://{addr}"),
            dispatch,
            clock: clock.clone(),
            state,
            _runtime: runtime,
        });
    }
    served
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
            sscc: None,
            addressee_only: false,
            open_box: false,
            task: Default::default(),
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
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SetClock::at(date().and_hms_opt(10, 0, 0).unwrap().and_utc()));

    let (issuer, record, issued) = floor_inputs(dir.path(), &clock);
    let mut seq = 0;

    let mut g = c.benchmark_group("dispatch_manifest_300");
    g.sample_size(30);
    g.bench_function("floor", |b| {
        b.iter(|| {
            seq += 1;
            black_box(floor_build(&issuer, &record, &issued, seq, &clock))
        })
    });
    for backend in Backend::all() {
        let nodes = serve(backend);
        let s = &nodes[0];
        s.dispatch.import_parcels(&parcels("R1", ROUTE_PARCELS, 0), &Operator::loopback()).unwrap();
        for p in parcels("R1", ROUTE_PARCELS, 0) {
            s.dispatch.parcel_departed(&p.parcel_id, &Operator::loopback()).unwrap();
        }
        let phones = tempfile::tempdir().unwrap();
        let (device, id) = enrol(s, "R1", phones.path());
        let path = format!("/v1/devices/{id}/manifest?date={}", date());
        let urls: Vec<String> = nodes.iter().map(|n| format!("{}{path}", n.base)).collect();
        let agent = agent();
        let mut turn = 0;
        g.bench_function(format!("http_{}", backend.name()), |b| {
            b.iter(|| {
                // With two nodes, requests alternate between them.
                turn += 1;
                let signature = device.sign_request("GET", &path, b"").unwrap();
                let mut resp = agent.get(&urls[turn % urls.len()]).header(REQUEST_HEADER, &signature).call().unwrap();
                black_box(resp.body_mut().read_to_vec().unwrap())
            })
        });
    }
    g.finish();
}

/// What the floor builds from: the core's issuer, a device enrolled with it, and a 300-parcel
/// route with codes on two parcels in five (as the benchmark's imports have).
fn floor_inputs(dir: &std::path::Path, clock: &Arc<SetClock>) -> (Issuer, EnrolledDevice, Vec<IssuedParcel>) {
    // Floor: the same manifest built and signed by the core's issuer in memory.
    let issuer = Issuer::new(SigningKey::generate("k").unwrap());
    let request =
        Device::open(dir.join("floor.db"), Arc::new(Vault), clock.clone(), None).unwrap().enrolment_request().unwrap();
    let (record, _) = issuer.enrol(&request, "floor", clock.now()).unwrap();
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
            rules: Default::default(),
            task: Default::default(),
        })
        .collect();
    (issuer, record, issued)
}

/// The floor's work: one full manifest built and signed in memory.
fn floor_build(
    issuer: &Issuer,
    record: &EnrolledDevice,
    issued: &[IssuedParcel],
    seq: u64,
    clock: &SetClock,
) -> Vec<u8> {
    let spec = ManifestSpec {
        manifest_id: format!("m{seq}"),
        route_id: "R1".into(),
        delivery_date: date(),
        time_zone: "Europe/Berlin".into(),
        issued_at: clock.now(),
        sequence: seq,
        kind: ManifestKind::Full,
        policy: Policy::default(),
        parcels: issued.to_vec(),
        removals: vec![],
        resets: vec![],
        dispatch_keys: vec![],
    };
    issuer.build_manifest(record, &spec).unwrap()
}

fn bench_manifests_at_once(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SetClock::at(date().and_hms_opt(10, 0, 0).unwrap().and_utc()));
    let (issuer, record, issued) = floor_inputs(dir.path(), &clock);
    let mut g = c.benchmark_group("dispatch_manifests_at_once");
    g.sample_size(20);
    // Floor: the phones' manifests built and signed in memory, half on each core.
    g.bench_function("floor_2_cores", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for core in 0..2 {
                    let (issuer, record, issued, clock) = (&issuer, &record, &issued, &clock);
                    scope.spawn(move || {
                        for n in 0..PHONES_AT_ONCE / 2 {
                            black_box(floor_build(
                                issuer,
                                record,
                                issued,
                                (core * PHONES_AT_ONCE + n + 1) as u64,
                                clock,
                            ));
                        }
                    });
                }
            })
        })
    });
    for backend in Backend::all() {
        let nodes = serve(backend);
        let s = &nodes[0];
        let phones = tempfile::tempdir().unwrap();
        let mut fetches = Vec::new();
        for n in 0..PHONES_AT_ONCE {
            let route = format!("R{n}");
            s.dispatch.import_parcels(&parcels(&route, ROUTE_PARCELS, 0), &Operator::loopback()).unwrap();
            for p in parcels(&route, ROUTE_PARCELS, 0) {
                s.dispatch.parcel_departed(&p.parcel_id, &Operator::loopback()).unwrap();
            }
            let (device, id) = enrol(s, &route, phones.path());
            let path = format!("/v1/devices/{id}/manifest?date={}", date());
            // With two nodes, the phones are split between them.
            fetches.push((device, format!("{}{path}", nodes[n % nodes.len()].base), path));
        }
        g.bench_function(format!("http_{}", backend.name()), |b| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    for (device, url, path) in &fetches {
                        scope.spawn(move || {
                            let signature = device.sign_request("GET", path, b"").unwrap();
                            let mut resp = agent().get(url).header(REQUEST_HEADER, &signature).call().unwrap();
                            black_box(resp.body_mut().read_to_vec().unwrap())
                        });
                    }
                })
            })
        });
    }
    g.finish();
}

fn bench_uploads(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch_ingest_50x40");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    // Floor: one Ed25519 verification per receipt (of a receipt-sized message), on both cores.
    let key = SigningKey::generate("k").unwrap();
    let vk = key.verifying_key();
    let message = vec![b'r'; 700];
    let signature = key.sign("doorstep.receipt", &message);
    g.bench_function("floor_2_cores", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..DEVICES * RECEIPTS_PER_DEVICE / 2 {
                            assert!(black_box(vk.verify("doorstep.receipt", &message, &signature)));
                        }
                    });
                }
            })
        })
    });
    // 50 devices with 40 receipts each; all upload their batch at once (a thread each), to the
    // nodes in turn.
    for backend in Backend::all() {
        g.bench_function(format!("http_{}", backend.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let nodes = serve(backend);
                    let s = &nodes[0];
                    let dir = tempfile::tempdir().unwrap();
                    let mut uploads = Vec::with_capacity(DEVICES);
                    for d in 0..DEVICES {
                        let route = format!("R{d}");
                        let mine = parcels(&route, RECEIPTS_PER_DEVICE, 0);
                        s.dispatch.import_parcels(&mine, &Operator::loopback()).unwrap();
                        for p in &mine {
                            s.dispatch.parcel_departed(&p.parcel_id, &Operator::loopback()).unwrap();
                        }
                        let (device, id) = enrol(s, &route, dir.path());
                        device.apply_manifest(&s.dispatch.full_manifest(&id, date()).unwrap()).unwrap();
                        for p in mine {
                            let scan = [ScannedParcel::scanned(p.barcode)];
                            device.record_failure(&scan, FailureReason::NoAccess, None, None).unwrap();
                        }
                        let batch = device.next_batch(RECEIPTS_PER_DEVICE as u32, 1 << 20).unwrap().unwrap();
                        assert_eq!(batch.receipt_count as usize, RECEIPTS_PER_DEVICE);
                        let path = format!("/v1/devices/{id}/receipts");
                        let signature = device.sign_request("POST", &path, &batch.bytes).unwrap();
                        uploads.push((format!("{}{path}", nodes[d % nodes.len()].base), signature, batch.bytes));
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
    }
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
    let names = ["http_sqlite", "http_postgres_1_node", "http_postgres_2_nodes"];
    if let Some(floor) = median_ns("dispatch_manifest_300", "floor") {
        println!("\nmanifests (300-parcel route); floor (issuer in memory) {:.1} ms", floor / 1e6);
        for name in names {
            if let Some(http) = median_ns("dispatch_manifest_300", name) {
                println!("  {name}: {:.0}/s, {:.1} ms each: {:.2}x the floor", 1e9 / http, http / 1e6, http / floor);
            }
        }
    }
    if let Some(floor) = median_ns("dispatch_manifests_at_once", "floor_2_cores") {
        let n = PHONES_AT_ONCE as f64;
        println!(
            "manifests ({PHONES_AT_ONCE} phones at once); floor (issuer in memory, 2 cores) {:.0}/s",
            n * 1e9 / floor
        );
        for name in names {
            if let Some(http) = median_ns("dispatch_manifests_at_once", name) {
                println!("  {name}: {:.0}/s: {:.2}x the floor", n * 1e9 / http, http / floor);
            }
        }
    }
    if let Some(floor) = median_ns("dispatch_ingest_50x40", "floor_2_cores") {
        let n = (DEVICES * RECEIPTS_PER_DEVICE) as f64;
        println!("receipts (50 devices at once); floor (Ed25519 verifications, 2 cores) {:.0}/s", n * 1e9 / floor);
        for name in names {
            if let Some(http) = median_ns("dispatch_ingest_50x40", name) {
                println!("  {name}: {:.0}/s: {:.2}x the floor", n * 1e9 / http, http / floor);
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_manifests(&mut c);
    bench_manifests_at_once(&mut c);
    bench_uploads(&mut c);
    c.final_summary();
    report();
}
