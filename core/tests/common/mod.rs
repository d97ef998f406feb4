//! Shared fixtures for the core's integration tests: a sealing test vault, a settable clock, and a
//! "world" with an issuer (dispatch) and one enrolled device on a temporary database.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use doorstep_core::crypto::{Code, SigningKey};
use doorstep_core::device::{Clock, Device, HostError, KeyVault, LogLevel, Logger, ScannedParcel};
use doorstep_core::issuer::{EnrolledDevice, IssuedParcel, Issuer, ManifestSpec, MemoryCodeBook, MemoryLedger};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{DoorRules, Holder, ManifestKind, Stop};

/// Seals by XOR with a keystream and a tag, so sealed bytes never equal the secret.
pub struct TestVault {
    pub fail: AtomicBool,
}

impl TestVault {
    pub fn new() -> Arc<TestVault> {
        Arc::new(TestVault { fail: AtomicBool::new(false) })
    }
}

const SEAL_TAG: &[u8] = b"sealed:";

fn keystream(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(0xA5)
}

impl KeyVault for TestVault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(HostError("vault locked".into()));
        }
        let mut out = SEAL_TAG.to_vec();
        out.extend(plaintext.iter().enumerate().map(|(i, b)| b ^ keystream(i)));
        Ok(out)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(HostError("vault locked".into()));
        }
        let body = sealed.strip_prefix(SEAL_TAG).ok_or_else(|| HostError("not sealed by this vault".into()))?;
        Ok(body.iter().enumerate().map(|(i, b)| b ^ keystream(i)).collect())
    }
}

/// A clock the test sets. `advance` moves wall and monotonic time together; `set_wall` moves only
/// the wall clock (as a user changing the phone's time would).
pub struct TestClock {
    pub wall: AtomicI64,
    pub mono: AtomicI64,
}

impl TestClock {
    pub fn at(t: DateTime<Utc>) -> Arc<TestClock> {
        Arc::new(TestClock { wall: AtomicI64::new(t.timestamp_millis()), mono: AtomicI64::new(1_000) })
    }
    pub fn advance(&self, d: TimeDelta) {
        self.wall.fetch_add(d.num_milliseconds(), Ordering::SeqCst);
        self.mono.fetch_add(d.num_milliseconds(), Ordering::SeqCst);
    }
    pub fn set_wall(&self, t: DateTime<Utc>) {
        self.wall.store(t.timestamp_millis(), Ordering::SeqCst);
    }
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.wall.load(Ordering::SeqCst)).unwrap()
    }
}

impl Clock for TestClock {
    fn wall_time_ms(&self) -> Result<i64, HostError> {
        Ok(self.wall.load(Ordering::SeqCst))
    }
    fn monotonic_ms(&self) -> Result<i64, HostError> {
        Ok(self.mono.load(Ordering::SeqCst))
    }
}

/// Collects log lines so tests can check that no code reaches them.
#[derive(Default)]
pub struct TestLogger {
    pub lines: Mutex<Vec<String>>,
}

impl Logger for TestLogger {
    fn log(&self, level: LogLevel, message: &str) {
        self.lines.lock().unwrap().push(format!("{level:?} {message}"));
    }
}

pub fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

/// 08:00 UTC on the delivery date.
pub fn morning() -> DateTime<Utc> {
    date().and_hms_opt(8, 0, 0).unwrap().and_utc()
}

/// End of the delivery day (the codes' `not_after`).
pub fn end_of_day() -> DateTime<Utc> {
    date().and_hms_opt(23, 0, 0).unwrap().and_utc()
}

pub struct World {
    pub issuer: Issuer,
    pub record: EnrolledDevice,
    pub device: Device,
    pub vault: Arc<TestVault>,
    pub clock: Arc<TestClock>,
    pub logger: Arc<TestLogger>,
    pub codes: MemoryCodeBook,
    pub parcels: Vec<IssuedParcel>,
    pub ledger: MemoryLedger,
    pub sequence: u64,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl World {
    /// An issuer and an enrolled device, no manifest yet.
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        let vault = TestVault::new();
        let clock = TestClock::at(morning());
        let logger = Arc::new(TestLogger::default());
        let device = Device::open(&path, vault.clone(), clock.clone(), Some(logger.clone())).unwrap();
        let issuer = Issuer::new(SigningKey::generate("dispatch-1").unwrap());
        let request = device.enrolment_request().unwrap();
        let (record, bundle) = issuer.enrol(&request, "dev-1", clock.now()).unwrap();
        device.complete_enrolment(&bundle).unwrap();
        World {
            issuer,
            record,
            device,
            vault,
            clock,
            logger,
            codes: MemoryCodeBook::default(),
            parcels: Vec::new(),
            ledger: MemoryLedger::default(),
            sequence: 0,
            dir,
            path,
        }
    }

    /// A world whose device holds a full manifest with `n` parcels; every third parcel needs no code,
    /// parcel 1 also has a delegate "Neighbour Anna".
    pub fn with_parcels(n: usize) -> World {
        let mut w = World::new();
        for i in 0..n {
            let needs_code = i % 3 != 2;
            let mut holders = Vec::new();
            if needs_code {
                holders.push(Holder::Customer);
                if i == 1 {
                    holders.push(Holder::Delegate("Neighbour Anna".into()));
                }
            }
            w.add_parcel(i, &holders);
        }
        w.push_full();
        w
    }

    pub fn add_parcel(&mut self, i: usize, holders: &[Holder]) {
        let id = format!("P{i:05}");
        let codes: Vec<(Holder, Code)> = holders.iter().map(|h| (h.clone(), Code::generate().unwrap())).collect();
        let parcel = IssuedParcel {
            parcel_id: id,
            barcode: format!("BC{i:08}"),
            stop: Stop { id: format!("S{}", i / 2), sequence: (i / 2 + 1) as u32 },
            address_hint: format!("{} Elm St", i + 1),
            recipient_hint: "J. S.".into(),
            codes,
            not_before: date().and_hms_opt(0, 0, 0).unwrap().and_utc(),
            not_after: end_of_day(),
            attempts_used: 0,
            attempt_epoch: 0,
            qr_minted_after: Vec::new(),
            rules: DoorRules::default(),
            task: Default::default(),
        };
        self.codes.issue(&parcel, parcel.not_before);
        self.parcels.push(parcel);
    }

    pub fn spec(&mut self, kind: ManifestKind) -> ManifestSpec {
        self.sequence += 1;
        ManifestSpec {
            manifest_id: format!("M{}", self.sequence),
            route_id: "R1".into(),
            delivery_date: date(),
            time_zone: "Europe/Berlin".into(),
            issued_at: self.clock.now(),
            sequence: self.sequence,
            kind,
            policy: Policy::default(),
            parcels: if kind == ManifestKind::Full { self.parcels.clone() } else { Vec::new() },
            removals: Vec::new(),
            resets: Vec::new(),
            dispatch_keys: Vec::new(),
        }
    }

    pub fn push_full(&mut self) {
        let spec = self.spec(ManifestKind::Full);
        let bytes = self.sign(&spec);
        self.device.apply_manifest(&bytes).unwrap();
    }

    /// Signs a manifest for this world's device, and records (as dispatch does) that its parcels
    /// were sent to it.
    pub fn sign(&mut self, spec: &ManifestSpec) -> Vec<u8> {
        self.codes.send(&self.record.device_id, spec.parcels.iter().map(|p| p.parcel_id.as_str()));
        self.issuer.build_manifest(&self.record, spec).unwrap()
    }

    pub fn code(&self, i: usize) -> String {
        self.codes.current(&format!("P{i:05}"), &Holder::Customer).unwrap().reveal().to_owned()
    }

    pub fn delegate_code(&self, i: usize, label: &str) -> String {
        self.codes.current(&format!("P{i:05}"), &Holder::Delegate(label.into())).unwrap().reveal().to_owned()
    }

    /// A six-digit code that is not parcel i's customer code (with 20-bit tags it collides with the
    /// tag with probability 2^-20).
    pub fn wrong_code(&self, i: usize) -> String {
        let right: u32 = self.code(i).parse().unwrap();
        format!("{:06}", (right + 500_001) % 1_000_000)
    }

    pub fn scan(&self, i: usize) -> Vec<ScannedParcel> {
        vec![ScannedParcel::scanned(format!("BC{i:08}"))]
    }

    /// Reopens the device database with a fresh object, as after a process restart.
    pub fn reopen(&mut self) {
        let device =
            Device::open(&self.path, self.vault.clone(), self.clock.clone(), Some(self.logger.clone())).unwrap();
        self.device = device;
    }

    /// Uploads every pending receipt to the issuer and applies its acks; returns the verdicts.
    pub fn upload_all(&mut self) -> Vec<doorstep_core::issuer::BatchVerdict> {
        let mut verdicts = Vec::new();
        while let Some(batch) = self.device.next_batch(100, 256 * 1024).unwrap() {
            let verdict = self
                .issuer
                .verify_batch(&self.record, &mut self.ledger, &self.codes, &batch.bytes, self.clock.now())
                .unwrap();
            let report = self.device.apply_ack(&verdict.signed_ack).unwrap();
            let stuck = report.removed == 0;
            verdicts.push(verdict);
            if stuck {
                break;
            }
        }
        verdicts
    }
}

/// A parcel's attempt count as committed to the file (read through a connection of its own, not
/// the Device).
pub fn attempts_on_disk(w: &World, parcel_id: &str) -> i64 {
    let conn = rusqlite::Connection::open(&w.path).unwrap();
    conn.query_row("SELECT attempts_used FROM parcel WHERE parcel_id = ?1", [parcel_id], |r| r.get(0)).unwrap()
}

/// How many receipts are committed to the file.
pub fn receipts_on_disk(w: &World) -> i64 {
    let conn = rusqlite::Connection::open(&w.path).unwrap();
    conn.query_row("SELECT count(*) FROM receipt", [], |r| r.get(0)).unwrap()
}
