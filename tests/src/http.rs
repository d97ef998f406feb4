//! A dispatch on an ephemeral loopback port and phones from the core that talk to it over real
//! HTTP, the way the apps do (signed device requests, manifests, uploads).
//!
//! Dispatch and every phone read one [`SetClock`], placed by a [`Scene`]: a delivery date, the
//! delivery's time zone and the instant "now". A test therefore plays the same day whatever the
//! date and hour it runs on; [`Scene::at_local`] picks awkward instants (23:59, 00:01, DST days).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use doorstep_core::device::{Device, HostError, KeyVault};
use doorstep_core::protocol::{Holder, REQUEST_HEADER};
use doorstep_dispatch::{Dispatch, HighValuePolicy, NewParcel, Operator, PostgresConfig, SetClock, api, listen};

/// The database the HTTP tests run dispatch on: PostgreSQL when `DOORSTEP_TEST_POSTGRES` names
/// one (`scripts/postgres.sh` starts a private server; each server of a test gets a schema of
/// its own), the state folder's SQLite file otherwise. The same tests run on both.
pub fn test_database() -> Option<PostgresConfig> {
    let url = std::env::var("DOORSTEP_TEST_POSTGRES").ok().filter(|u| !u.is_empty())?;
    let mut config = PostgresConfig::new(url).in_schema(format!("t_{}", uuid::Uuid::new_v4().simple()));
    config.pool_size = 8;
    Some(config)
}

/// Seals by XOR (a stand-in for the Android Keystore / iOS Keychain).
pub struct Vault;

impl KeyVault for Vault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(plaintext.iter().map(|b| b ^ 0x3C).collect())
    }
    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        self.seal(sealed)
    }
}

/// Where and when a test's day is played.
#[derive(Clone, Copy, Debug)]
pub struct Scene {
    pub date: NaiveDate,
    pub zone: &'static str,
    pub now: DateTime<Utc>,
}

impl Scene {
    /// `date` in `zone`, at local `hh:mm` (the earliest instant of that reading on a DST day).
    pub fn at_local(date: NaiveDate, zone: &'static str, hour: u32, minute: u32) -> Scene {
        let tz: Tz = zone.parse().expect("a known zone");
        let local = date.and_hms_opt(hour, minute, 0).expect("a valid time");
        let now = tz.from_local_datetime(&local).earliest().expect("a local time that exists").to_utc();
        Scene { date, zone, now }
    }

    /// The day most tests play: 2026-11-26 in Berlin, at noon.
    pub fn default_day() -> Scene {
        Scene::at_local(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), "Europe/Berlin", 12, 0)
    }
}

/// Serves `dispatch` on an ephemeral loopback port; returns its base URL and the runtime serving it.
fn serve(
    dispatch: Arc<Dispatch>,
    limits: api::Limits,
    tls: Option<&listen::TlsFiles>,
) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = api::router_with_limits(dispatch, limits);
    let tls = tls.map(|files| runtime.block_on(listen::load(files)).unwrap());
    let scheme = if tls.is_some() { "https" } else { "http" };
    runtime.spawn(listen::serve(listener, app, tls, std::future::pending()));
    (format!("{scheme}://{addr}"), runtime)
}

/// Copies `from/keys/` into `to/keys/` (what deploying a node's keys by configuration does).
fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("keys").join(entry.file_name())).unwrap();
    }
}

/// A dispatch served on loopback for the life of the test, on the scene's clock.
pub struct Server {
    pub base: String,
    pub dispatch: Arc<Dispatch>,
    pub clock: Arc<SetClock>,
    pub scene: Scene,
    pub state: tempfile::TempDir,
    /// The PostgreSQL database the state is kept in (`None`: `state`'s SQLite file).
    pub database: Option<PostgresConfig>,
    /// Whether this server made its PostgreSQL schema (and drops it when it ends).
    owns_schema: bool,
    /// The operator the tests act as, and its key (operator routes need it: one key exists).
    pub operator: Operator,
    pub operator_key: String,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for Server {
    /// A PostgreSQL test's schema goes with its server, so the shared test database stays small.
    fn drop(&mut self) {
        if let (true, Some(config)) = (self.owns_schema, &self.database)
            && let Some(schema) = &config.schema
        {
            let _ = std::process::Command::new("psql")
                .args([config.url.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
                .output();
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Scene::default_day(), |d| d)
    }

    /// Serves a dispatch opened on a fresh state folder, configured by `configure`, on the scene's
    /// clock.
    pub fn start_with(scene: Scene, configure: impl FnOnce(Dispatch) -> Dispatch) -> Server {
        Server::start_with_limits(scene, configure, api::Limits::default())
    }

    /// A server with no operator key yet: its operator routes are open to a direct local caller
    /// only (`operator_key` is empty).
    pub fn start_without_operator_keys() -> Server {
        Server::start_inner(Scene::default_day(), |d| d, api::Limits::default(), false, None)
    }

    /// As [`Server::start`], serving TLS from `tls` (`base` is `https://127.0.0.1:PORT`).
    pub fn start_tls(tls: &listen::TlsFiles) -> Server {
        Server::start_inner(Scene::default_day(), |d| d, api::Limits::default(), true, Some(tls))
    }

    /// As [`Server::start_with`], with these rate limits.
    pub fn start_with_limits(
        scene: Scene,
        configure: impl FnOnce(Dispatch) -> Dispatch,
        limits: api::Limits,
    ) -> Server {
        Server::start_inner(scene, configure, limits, true, None)
    }

    fn start_inner(
        scene: Scene,
        configure: impl FnOnce(Dispatch) -> Dispatch,
        limits: api::Limits,
        operator_key: bool,
        tls: Option<&listen::TlsFiles>,
    ) -> Server {
        let state = tempfile::tempdir().unwrap();
        let database = test_database();
        let clock = Arc::new(SetClock::at(scene.now));
        let opened = Dispatch::open_with(state.path(), database.as_ref(), HighValuePolicy::default())
            .unwrap()
            .with_clock(clock.clone());
        let dispatch = Arc::new(configure(opened));
        let (operator, operator_key) = if operator_key {
            dispatch.add_operator("test operator").unwrap()
        } else {
            (Operator::loopback(), String::new())
        };
        let (base, runtime) = serve(dispatch.clone(), limits, tls);
        let owns_schema = database.is_some();
        Server { base, dispatch, clock, scene, state, database, owns_schema, operator, operator_key, _runtime: runtime }
    }

    /// A second dispatch node on this server's database: a state folder of its own holding a copy
    /// of this one's `keys/` (nodes share keys by configuration, not by a disk), served on its own
    /// port, on the same clock, acting as the same operator.
    pub fn another_node(&self) -> Server {
        let state = tempfile::tempdir().unwrap();
        copy_keys(self.state.path(), state.path());
        let dispatch = Arc::new(self.open_node(state.path()).unwrap().with_clock(self.clock.clone()));
        let (base, runtime) = serve(dispatch.clone(), api::Limits::default(), None);
        Server {
            base,
            dispatch,
            clock: self.clock.clone(),
            scene: self.scene,
            state,
            database: self.database.clone(),
            owns_schema: false,
            operator: self.operator.clone(),
            operator_key: self.operator_key.clone(),
            _runtime: runtime,
        }
    }

    /// Dispatch opened on `state` (a node's own folder) and this server's database.
    pub fn open_node(&self, state: &Path) -> Result<Dispatch, doorstep_dispatch::DispatchError> {
        Dispatch::open_with(state, self.database.as_ref(), HighValuePolicy::default())
    }

    /// Another dispatch on this server's state (as a second node, or after a restart).
    pub fn reopen(&self) -> Dispatch {
        Dispatch::open_with(self.state.path(), self.database.as_ref(), HighValuePolicy::default()).unwrap()
    }

    /// Runs SQL on this server's database behind dispatch's back (a fault, a look at a table):
    /// the state folder's SQLite file, or its PostgreSQL schema through `psql`. Returns the first
    /// column of the first row as text (empty for none).
    pub fn sql(&self, sql: &str) -> String {
        match &self.database {
            None => {
                let db = rusqlite::Connection::open(self.state.path().join("dispatch.db")).unwrap();
                let mut stmt = db.prepare(sql).unwrap();
                let mut rows = stmt.query([]).unwrap();
                match rows.next().unwrap() {
                    Some(row) => match row.get_ref(0) {
                        Ok(rusqlite::types::ValueRef::Integer(i)) => i.to_string(),
                        Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                        Ok(other) => format!("{other:?}"),
                        Err(_) => String::new(),
                    },
                    None => String::new(),
                }
            }
            Some(config) => {
                let schema = config.schema.as_deref().unwrap_or("public");
                let out = std::process::Command::new("psql")
                    .args([config.url.as_str(), "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
                    .env("PGOPTIONS", format!("-c search_path={schema}"))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned()
            }
        }
    }

    /// Has the PostgreSQL server write every page to its files (`CHECKPOINT`), so a search of
    /// its directory sees what a stolen disk would.
    pub fn checkpoint_postgres(&self) {
        let url = std::env::var("DOORSTEP_TEST_POSTGRES").expect("a PostgreSQL test");
        let done = std::process::Command::new("psql").args([url.as_str(), "-qc", "CHECKPOINT"]).status().unwrap();
        assert!(done.success(), "psql CHECKPOINT");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `Authorization` header of this server's operator.
    pub fn operator_auth(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.operator_key))
    }

    /// An operator request: POST `path` with the operator's key.
    pub fn op_post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.op_post_with(path, &[], body)
    }

    pub fn op_post_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        let (name, value) = self.operator_auth();
        let mut all = vec![(name, value.as_str())];
        all.extend_from_slice(headers);
        post(&self.url(path), &all, body)
    }

    /// An operator request: GET `path` with the operator's key.
    pub fn op_get(&self, path: &str) -> (u16, Vec<u8>) {
        let (name, value) = self.operator_auth();
        get_with(&self.url(path), &[(name, &value)])
    }

    /// A phone on this server's clock, not enrolled yet.
    pub fn phone(&self, db: &Path) -> Device {
        Device::open(db, Arc::new(Vault), self.clock.clone(), None).unwrap()
    }

    /// `n` order lines for route R1 on the scene's date: even ones high-value, `i % 5 == 1`
    /// jewellery (so P0, P1, P2, P4, P6 need a code).
    pub fn parcels(&self, n: usize) -> Vec<NewParcel> {
        (0..n)
            .map(|i| NewParcel {
                parcel_id: format!("P{i}"),
                barcode: format!("BC{i}"),
                route_id: "R1".into(),
                stop_id: format!("S{}", i / 2),
                stop_sequence: (i / 2 + 1) as u32,
                delivery_date: self.scene.date,
                time_zone: self.scene.zone.into(),
                declared_value_cents: if i % 2 == 0 { 120_000 } else { 2_500 },
                category: if i % 5 == 1 { "jewellery".into() } else { "books".into() },
                customer_email: format!("customer{i}@example.test"),
                address_hint: format!("{i} Elm St"),
                recipient_hint: "A. B.".into(),
                sscc: None,
                addressee_only: false,
                open_box: false,
                task: Default::default(),
            })
            .collect()
    }

    /// A phone enrolled on `route` with a one-time token (checked to be single-use).
    pub fn enrol_device(&self, route: &str, db: &Path) -> (Device, String) {
        let body = serde_json::to_vec(&serde_json::json!({ "route_id": route })).unwrap();
        let (status, token) = self.op_post("/v1/enrolment-tokens", &body);
        assert_eq!(status, 201);
        let token = serde_json::from_slice::<serde_json::Value>(&token).unwrap()["token"].as_str().unwrap().to_owned();
        let device = self.phone(db);
        let (status, bundle) =
            post(&self.url("/v1/enrol"), &[("Enrolment-Token", &token)], &device.enrolment_request().unwrap());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
        device.complete_enrolment(&bundle).unwrap();
        let again = self.phone(&db.with_extension("other"));
        let (status, _) =
            post(&self.url("/v1/enrol"), &[("Enrolment-Token", &token)], &again.enrolment_request().unwrap());
        assert_eq!(status, 403, "an enrolment token is single-use");
        let device_id = device.status().unwrap().device_id.unwrap();
        (device, device_id)
    }

    /// A phone enrolled on `route` that applied its first full manifest.
    pub fn synced_phone(&self, route: &str, db: &Path) -> (Device, String) {
        let (phone, id) = self.enrol_device(route, db);
        phone.apply_manifest(&self.manifest(&phone, &id, None).unwrap()).unwrap();
        (phone, id)
    }

    /// 8 parcels imported and departed (codes e-mailed), and an enrolled phone on R1 that synced.
    pub fn day(&self) -> (Device, tempfile::TempDir, String) {
        let (status, body) = self.op_post("/v1/parcels", &serde_json::to_vec(&self.parcels(8)).unwrap());
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        for i in 0..8 {
            let (status, body) = self.op_post(&format!("/v1/parcels/P{i}/departed"), b"");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            // The code goes to the customer, never back to the warehouse's caller.
            assert!(String::from_utf8_lossy(&body).chars().filter(char::is_ascii_digit).count() < 6);
        }
        let dir = tempfile::tempdir().unwrap();
        let (device, device_id) = self.enrol_device("R1", &dir.path().join("d.db"));
        let report = device.apply_manifest(&self.manifest(&device, &device_id, None).unwrap()).unwrap();
        assert_eq!(report.added, 8);
        (device, dir, device_id)
    }

    /// A device request, signed by `device` as the apps do.
    pub fn signed_get(&self, device: &Device, path: &str) -> (u16, Vec<u8>) {
        let signature = device.sign_request("GET", path, b"").unwrap();
        get_with(&self.url(path), &[(REQUEST_HEADER, &signature)])
    }

    pub fn signed_post(&self, device: &Device, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let signature = device.sign_request("POST", path, body).unwrap();
        post(&self.url(path), &[(REQUEST_HEADER, &signature)], body)
    }

    /// The device's next manifest for the scene's date (`since`: its current sequence), or None
    /// when it is up to date.
    pub fn manifest(&self, device: &Device, device_id: &str, since: Option<u64>) -> Option<Vec<u8>> {
        let since = since.map_or(String::new(), |s| format!("&since={s}"));
        let path = format!("/v1/devices/{device_id}/manifest?date={}{since}", self.scene.date);
        let (status, body) = self.signed_get(device, &path);
        match status {
            200 => Some(body),
            204 => None,
            other => panic!("manifest: HTTP {other}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Applies every manifest the device is due; returns how many.
    pub fn sync(&self, device: &Device, device_id: &str) -> usize {
        let mut applied = 0;
        while let Some(envelope) = self.manifest(device, device_id, device.status().unwrap().manifest_sequence) {
            device.apply_manifest(&envelope).unwrap();
            applied += 1;
        }
        applied
    }

    /// The customer's current code for a parcel (what their e-mail says).
    pub fn code(&self, parcel: &str) -> String {
        self.dispatch.codes(parcel).unwrap().into_iter().find(|(h, _)| *h == Holder::Customer).unwrap().1
    }

    /// Uploads everything the phone holds, applying each ack; returns the batches sent.
    pub fn upload(&self, device: &Device, device_id: &str) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while let Some(batch) = device.next_batch(3, 64 * 1024).unwrap() {
            let (status, ack) = self.signed_post(device, &format!("/v1/devices/{device_id}/receipts"), &batch.bytes);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ack));
            device.apply_ack(&ack).unwrap();
            sent.push(batch.bytes);
        }
        sent
    }

    /// The code e-mail a customer received for a parcel: (code, customer token).
    pub fn read_email(&self, parcel: &str) -> (String, String) {
        self.emails(parcel).into_iter().next().unwrap_or_else(|| panic!("no e-mail for {parcel}"))
    }

    /// The e-mail that carries the parcel's current code (after a reissue, the newest one).
    pub fn latest_email(&self, parcel: &str) -> (String, String) {
        let current = self.code(parcel);
        self.emails(parcel).into_iter().find(|(code, _)| *code == current).expect("an e-mail with the current code")
    }

    /// Every code e-mail for a parcel: (code, customer link).
    fn emails(&self, parcel: &str) -> Vec<(String, String)> {
        let outbox = self.state.path().join("outbox");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&outbox).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            if text.contains(&format!("Parcel: {parcel}\r\n")) || text.contains(&format!("Parcel: {parcel}\n")) {
                assert!(text.contains("Never tell this code to anyone by phone"));
                assert!(text.contains("It is valid until\r\nthe end of the delivery day"), "{text}");
                let field = |names: &[&str]| {
                    text.lines().find_map(|l| names.iter().find_map(|n| l.strip_prefix(n))).map(|v| v.trim().to_owned())
                };
                let code = field(&["Delivery code: ", "Pickup code: "]).unwrap();
                found.push((code, field(&["Customer app access: "]).unwrap()));
            }
        }
        found
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    (resp.status().as_u16(), resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

pub fn get(url: &str) -> (u16, Vec<u8>) {
    get_with(url, &[])
}

pub fn get_as(url: &str, bearer: &str) -> (u16, Vec<u8>) {
    get_with(url, &[("Authorization", &format!("Bearer {bearer}"))])
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    (resp.status().as_u16(), resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}
