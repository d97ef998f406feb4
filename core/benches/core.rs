//! Benchmarks of the core's hot paths, each beside its physical floor measured in the same run.
//!
//! Run: `cargo bench -p doorstep-core --bench core`. At the end a table gives each operation's
//! median, its floor's median and the ratio (budgets: hand-over ≤ 1.3×, 10,000-parcel manifest
//! ≤ 1.5×), the peak heap used while applying the manifest, the outbox cost per receipt, and the
//! cost of opening a 10,000-parcel database with its integrity check.

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use criterion::Criterion;
use doorstep_core::crypto::SigningKey;
use doorstep_core::device::{Device, HandoverOutcome};
use doorstep_core::protocol::{FailureReason, Holder, ManifestKind, ManifestPayload, SignedEnvelope};
use rusqlite::{Connection, params};

/// Counts live heap bytes and their peak, to measure memory while applying a manifest.
struct CountingAlloc;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const MANIFEST_PARCELS: usize = 10_000;
const OUTBOX_RECEIPTS: usize = 1_000;

/// A world whose device holds `n` code-protected parcels, its WAL checkpointed so that timed work
/// does not pay for copying the setup's pages into the database file.
fn world_with(n: usize) -> World {
    let mut w = World::new();
    for i in 0..n {
        w.add_parcel(i, &[Holder::Customer]);
    }
    w.push_full();
    checkpoint(&w.path);
    w
}

/// A world whose outbox holds `n` receipts (one failure per parcel), WAL checkpointed.
fn world_with_receipts(n: usize) -> World {
    let w = world_with(n);
    for i in 0..n {
        w.device.record_failure(&w.scan(i), FailureReason::RecipientUnavailable, None, None).unwrap();
    }
    checkpoint(&w.path);
    w
}

fn checkpoint(path: &std::path::Path) {
    Connection::open(path).unwrap().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
}

/// A WAL, synchronous=FULL database with one table, as the device uses.
fn floor_db(dir: &std::path::Path) -> Connection {
    let conn = Connection::open(dir.join("floor.db")).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         CREATE TABLE k (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
    )
    .unwrap();
    for i in 0..MANIFEST_PARCELS {
        conn.execute("INSERT INTO k VALUES (?1, ?2)", params![format!("BC{i:08}"), vec![0u8; 100]]).unwrap();
    }
    conn
}

fn bench_handover(c: &mut Criterion) {
    let mut g = c.benchmark_group("handover");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    // Floor: one primary-key lookup + one Ed25519 signature + one fsync'd single-row commit.
    g.bench_function("floor", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = floor_db(dir.path());
        checkpoint(&dir.path().join("floor.db"));
        let key = SigningKey::generate("k").unwrap();
        let body = vec![b'x'; 700];
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let v: Vec<u8> =
                conn.query_row("SELECT v FROM k WHERE k = ?1", [format!("BC{:08}", i % 10_000)], |r| r.get(0)).unwrap();
            let sig = key.sign("doorstep.receipt", &body);
            let tx = conn.transaction().unwrap();
            tx.execute("INSERT INTO t (body) VALUES (?1)", params![[&body[..], &sig, &v].concat()]).unwrap();
            tx.commit().unwrap();
        })
    });
    // The real thing: lookup, tag check, attempt count, proof, receipt signing, one durable commit.
    g.bench_function("accepted", |b| {
        b.iter_custom(|iters| {
            let w = world_with(iters as usize);
            let codes: Vec<String> = (0..iters as usize).map(|i| w.code(i)).collect();
            let start = Instant::now();
            for (i, code) in codes.iter().enumerate() {
                let out = w.device.verify_code(&w.scan(i), code, None).unwrap();
                debug_assert!(matches!(out, HandoverOutcome::Accepted { .. }));
                black_box(out);
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// A new device enrolled as "dev-1" with the template's dispatch, so the template's manifest is for
/// it. (Its device secret is new: `apply_manifest` does not check tags, so timing is unaffected.)
fn enrolled_device(template: &World, dir: &std::path::Path) -> Device {
    let device = Device::open(dir.join("d.db"), TestVault::new(), template.clock.clone(), None).unwrap();
    let (_, bundle) =
        template.issuer.enrol(&device.enrolment_request().unwrap(), "dev-1", template.clock.now()).unwrap();
    device.complete_enrolment(&bundle).unwrap();
    device
}

fn manifest_envelope(w: &mut World) -> Vec<u8> {
    let spec = w.spec(ManifestKind::Full);
    w.issuer.build_manifest(&w.record, &spec).unwrap()
}

fn bench_manifest(c: &mut Criterion) {
    let mut g = c.benchmark_group("manifest_10k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut template = World::new();
    for i in 0..MANIFEST_PARCELS {
        template.add_parcel(i, &[Holder::Customer]);
    }
    let envelope = manifest_envelope(&mut template);
    let keys = template.issuer.verifying_keys();
    // Floor: verify the signature over the same bytes, parse them, and bulk-insert the same rows
    // (parcels and tags) into the same schema in one transaction.
    g.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                drop(Device::open(dir.path().join("f.db"), TestVault::new(), template.clock.clone(), None).unwrap());
                let mut conn = Connection::open(dir.path().join("f.db")).unwrap();
                conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").unwrap();
                let start = Instant::now();
                let payload =
                    SignedEnvelope::open(&envelope, doorstep_core::protocol::domain::MANIFEST, &keys).unwrap();
                let m: ManifestPayload = serde_json::from_slice(&payload).unwrap();
                let tx = conn.transaction().unwrap();
                {
                    let mut ins = tx.prepare("INSERT INTO parcel (parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code, salt, tag_bits, key_epoch, max_attempts, not_before_ms, not_after_ms, state, attempts_used, manifest_id, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', 0, ?14, ?15)").unwrap();
                    let mut tag = tx.prepare("INSERT INTO code_tag (parcel_id, holder, tag) VALUES (?1, ?2, ?3)").unwrap();
                    for p in &m.parcels {
                        ins.execute(params![p.parcel_id, p.barcode, p.stop.id, p.stop.sequence, p.address_hint, p.recipient_hint, true, p.salt.0, 20, 0, 5, p.not_before.timestamp_millis(), p.not_after.timestamp_millis(), m.manifest_id, 0]).unwrap();
                        for t in &p.tags {
                            tag.execute(params![p.parcel_id, "customer", t.tag.0]).unwrap();
                        }
                    }
                }
                tx.commit().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function("apply", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let device = enrolled_device(&template, dir.path());
                let start = Instant::now();
                device.apply_manifest(&envelope).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();

    // Peak heap while applying (the envelope itself is the caller's and not counted).
    let dir = tempfile::tempdir().unwrap();
    let device = enrolled_device(&template, dir.path());
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    device.apply_manifest(&envelope).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    let report = format!(
        "manifest_10k peak heap during apply: {:.2} MB for a {:.2} MB manifest = {:.2}x (budget < 4x)",
        peak as f64 / 1e6,
        envelope.len() as f64 / 1e6,
        peak as f64 / envelope.len() as f64
    );
    println!("{report}");
    std::fs::write(criterion_dir().join("manifest_peak_memory.txt"), report).ok();
}

/// Opening a device database of 10,000 parcels, with the integrity check (`PRAGMA quick_check`,
/// which reads every page) that notices damaged pages; floor: reading every byte of the same file.
fn bench_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_10k");
    g.sample_size(20);
    let w = world_with(MANIFEST_PARCELS);
    let bytes = std::fs::metadata(&w.path).unwrap().len();
    g.bench_function("floor", |b| b.iter(|| black_box(std::fs::read(&w.path).unwrap().len())));
    g.bench_function("open", |b| {
        b.iter(|| black_box(Device::open(&w.path, w.vault.clone(), w.clock.clone(), None).unwrap()))
    });
    g.finish();
    let report = format!("open_10k: a {:.1} MB database", bytes as f64 / 1e6);
    std::fs::write(criterion_dir().join("open_size.txt"), report).ok();
}

fn bench_outbox(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox_1000");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    // Floor: read the 1,000 rows, verify one Ed25519 signature, delete them in one fsync'd commit.
    g.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let key = SigningKey::generate("k").unwrap();
            let vk = key.verifying_key();
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut conn = floor_db(dir.path());
                for _ in 0..OUTBOX_RECEIPTS {
                    conn.execute("INSERT INTO t (body) VALUES (?1)", [vec![b'r'; 900]]).unwrap();
                }
                let ack = vec![b'a'; 200];
                let sig = key.sign("doorstep.ack", &ack);
                let start = Instant::now();
                let rows: Vec<Vec<u8>> = conn
                    .prepare("SELECT body FROM t ORDER BY id")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                black_box(rows);
                assert!(vk.verify("doorstep.ack", &ack, &sig));
                let tx = conn.transaction().unwrap();
                tx.execute("DELETE FROM t", []).unwrap();
                tx.commit().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    // Device side: hand out one batch of 1,000 receipts, then verify and apply dispatch's ack.
    g.bench_function("batch_and_ack", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = world_with_receipts(OUTBOX_RECEIPTS);
                let start = Instant::now();
                let batch = w.device.next_batch(OUTBOX_RECEIPTS as u32, 8 << 20).unwrap().unwrap();
                total += start.elapsed();
                let verdict =
                    w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &batch.bytes, w.clock.now()).unwrap();
                let start = Instant::now();
                let report = w.device.apply_ack(&verdict.signed_ack).unwrap();
                total += start.elapsed();
                assert_eq!(report.removed as usize, OUTBOX_RECEIPTS);
            }
            total
        })
    });
    // Dispatch side, for reference: verify 1,000 receipts (signature, chain) and sign the ack.
    g.bench_function("issuer_verify", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = world_with_receipts(OUTBOX_RECEIPTS);
                let batch = w.device.next_batch(OUTBOX_RECEIPTS as u32, 8 << 20).unwrap().unwrap();
                let start = Instant::now();
                let v = w.issuer.verify_batch(&w.record, &mut w.ledger, &w.codes, &batch.bytes, w.clock.now()).unwrap();
                total += start.elapsed();
                black_box(v);
            }
            total
        })
    });
    g.finish();
}

/// The hand-over and its floor measured alternately, one of each per round, so both see the same
/// disk: drifting fsync latency on a shared machine cannot favour either. Returns the medians.
fn interleaved_handover(rounds: usize) -> (f64, f64) {
    let w = world_with(rounds);
    let codes: Vec<String> = (0..rounds).map(|i| w.code(i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = floor_db(dir.path());
    checkpoint(&dir.path().join("floor.db"));
    let key = SigningKey::generate("k").unwrap();
    let body = vec![b'x'; 700];
    let (mut real, mut floor) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for (i, code) in codes.iter().enumerate() {
        let start = Instant::now();
        let v: Vec<u8> =
            conn.query_row("SELECT v FROM k WHERE k = ?1", [format!("BC{:08}", i % 10_000)], |r| r.get(0)).unwrap();
        let sig = key.sign("doorstep.receipt", &body);
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO t (body) VALUES (?1)", params![[&body[..], &sig, &v].concat()]).unwrap();
        tx.commit().unwrap();
        floor.push(start.elapsed().as_nanos() as f64);
        let start = Instant::now();
        black_box(w.device.verify_code(&w.scan(i), code, None).unwrap());
        real.push(start.elapsed().as_nanos() as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut real), median(&mut floor))
}

fn criterion_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Median of a benchmark from criterion's saved estimates, in nanoseconds.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let path = criterion_dir().join(group).join(name).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report() {
    let ms = |ns: f64| format!("{:.3} ms", ns / 1e6);
    println!("\n{:<28} {:>12} {:>12} {:>8} {:>8}", "operation", "median", "floor", "ratio", "budget");
    for (group, op, budget) in [
        ("handover", "accepted", "1.3x"),
        ("manifest_10k", "apply", "1.5x"),
        ("outbox_1000", "batch_and_ack", "-"),
        ("open_10k", "open", "-"),
    ] {
        if let (Some(t), Some(f)) = (median_ns(group, op), median_ns(group, "floor")) {
            println!("{:<28} {:>12} {:>12} {:>7.2}x {:>8}", format!("{group}/{op}"), ms(t), ms(f), t / f, budget);
        }
    }
    let (real, floor) = interleaved_handover(3_000);
    println!(
        "{:<28} {:>12} {:>12} {:>7.2}x {:>8}",
        "handover (interleaved)",
        ms(real),
        ms(floor),
        real / floor,
        "1.3x"
    );
    if let Some(t) = median_ns("outbox_1000", "batch_and_ack") {
        println!("outbox: {:.1} µs per receipt (batch + ack, device side)", t / 1e3 / OUTBOX_RECEIPTS as f64);
    }
    if let Some(t) = median_ns("outbox_1000", "issuer_verify") {
        println!("dispatch: {:.1} µs per receipt verified", t / 1e3 / OUTBOX_RECEIPTS as f64);
    }
    for note in ["manifest_peak_memory.txt", "open_size.txt"] {
        if let Ok(text) = std::fs::read_to_string(criterion_dir().join(note)) {
            println!("{text}");
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_handover(&mut c);
    bench_manifest(&mut c);
    bench_outbox(&mut c);
    bench_open(&mut c);
    c.final_summary();
    report();
}
