//! `doorstep`: the reference dispatch service and the whole day in one command.
//!
//! - `doorstep demo`: dispatch on loopback with a temporary state folder, simulated phones working
//!   their routes over HTTP, and the verdict on every receipt.
//! - `doorstep serve`: dispatch for app developers (and, with operator keys and TLS, on a network).
//! - `doorstep operator add|revoke|list`: the keys that open the operator routes.
//!
//! - `doorstep device ...`: act as a phone from the terminal against a running dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use doorstep_dispatch::{
    Dispatch, HighValuePolicy, MailConfig, PostgresConfig, SetClock, api, demo, listen, say, terminal,
};

#[derive(Parser)]
#[command(name = "doorstep", version, about = "Secure delivery with a one-time code: reference dispatch and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole delivery day end to end against a dispatch on loopback, and print the outcome
    /// and dispatch's verdict on every receipt. Exits non-zero unless everything reconciles.
    Demo {
        /// Parcels in the day.
        #[arg(long, default_value_t = 300)]
        parcels: usize,
        /// Routes (one phone each).
        #[arg(long, default_value_t = 3)]
        routes: usize,
        /// Print the result as JSON (no progress bar).
        #[arg(long)]
        json: bool,
        /// Keep dispatch running after the day, and print a customer's page link and the operator
        /// console's address with a key, for a person to open in a browser.
        #[arg(long)]
        serve: bool,
        /// Also write the day's EPCIS 2.0 events (what GET /v1/epcis/events answered) here.
        #[arg(long, value_name = "FILE")]
        epcis_out: Option<PathBuf>,
    },
    /// Act as a phone from the terminal against a running dispatch (database and sealing key in
    /// --dir). Exit codes: 0 done (handed over, recorded, synced, uploaded), 1 failed
    /// unexpectedly (a damaged device folder), 2 bad input, 3 refused at the door (wrong code,
    /// locked, expired, already handed over, unknown parcel), 4 dispatch unreachable, 5 dispatch
    /// answered with an error. Receipts stay in the outbox whatever the ending.
    Device {
        /// The device's folder (database and sealing key).
        #[arg(long, global = true, default_value = "doorstep-device")]
        dir: PathBuf,
        /// The dispatch service.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        dispatch: String,
        /// Trust this CA certificate (PEM) for an https dispatch instead of the public roots.
        #[arg(long, global = true, value_name = "FILE")]
        dispatch_ca: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: DeviceCommand,
    },
    /// Manage operator keys. Once one exists, every operator route needs one
    /// (`Authorization: Bearer dso_...`); a running dispatch sees changes at once.
    Operator {
        #[command(subcommand)]
        step: OperatorStep,
    },
    /// Write a parcel's evidence file: its receipts with dispatch's signed statement, for anyone
    /// to check offline (`doorstep verify-evidence`).
    Evidence {
        #[command(flatten)]
        store: Store,
        /// The parcel.
        parcel_id: String,
        /// Where to write it (default: evidence-<PARCEL>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write dispatch's public keys here (what GET /v1/dispatch-keys answers).
        #[arg(long)]
        keys_out: Option<PathBuf>,
    },
    /// Write the stored hand-overs, collected returns and failed attempts as an EPCIS 2.0
    /// JSON-LD document (GS1): one ObjectEvent per receipt dispatch accepted (flagged ones only
    /// with --include-flagged; no expiries, no failed collections), reversals as
    /// errorDeclarations, each eventID the CBV 2.0 event hash (also GET /v1/epcis/events).
    Export {
        #[command(flatten)]
        store: Store,
        /// EPCIS 2.0 JSON-LD (the only format so far; say it, so a later default cannot surprise).
        #[arg(long, required = true)]
        epcis: bool,
        /// Only the receipts about this delivery day's parcels (YYYY-MM-DD); every day's if left out.
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// Where to write it (default: epcis-<DATE or all>.jsonld).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also the receipts dispatch holds for review, each marked `ds:verdict` `flagged`.
        #[arg(long)]
        include_flagged: bool,
    },
    /// Check an evidence file offline against dispatch's published public keys. Exit codes: 0
    /// valid, 2 unreadable input, 3 not valid (changed, or not signed by a trusted key).
    VerifyEvidence {
        /// The evidence file.
        file: PathBuf,
        /// The keys document (a JSON array of {"key_id", "public"}: GET /v1/dispatch-keys).
        #[arg(long)]
        keys: PathBuf,
    },
    /// Rotate dispatch's signing key in two steps (restart dispatch after each).
    Keys {
        #[command(subcommand)]
        step: KeyStep,
    },
    /// Run the dispatch service. On loopback it starts with nothing to set up; on any other address
    /// it needs operator keys (`doorstep operator add`), --smtp, and TLS: served (--tls-cert and
    /// --tls-key) or terminated by a proxy in front (--behind-tls-proxy).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// TLS is terminated by a reverse proxy in front of this address (required off loopback:
        /// enrolment answers carry device secrets).
        #[arg(long)]
        behind_tls_proxy: bool,
        /// Serve TLS with this certificate chain (PEM, leaf first); re-read on SIGHUP.
        #[arg(long, requires = "tls_key", value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM; not readable by other users).
        #[arg(long, requires = "tls_cert", value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// Hours an enrolment token stays valid.
        #[arg(long, default_value_t = doorstep_dispatch::store::DEFAULT_ENROLMENT_TOKEN_HOURS)]
        enrolment_token_hours: i64,
        #[command(flatten)]
        store: Store,
        /// Declared value (in cents) from which a parcel needs a code.
        #[arg(long, default_value_t = 50_000)]
        value_threshold_cents: i64,
        /// Categories that always need a code (repeatable).
        #[arg(long = "category", default_values_t = ["electronics".to_string(), "jewellery".to_string()])]
        categories: Vec<String>,
        /// Categories handed over to the addressee only, after an ID check (repeatable; an import
        /// may also set `addressee_only` per parcel).
        #[arg(long = "addressee-only-category", value_name = "CATEGORY")]
        addressee_only_categories: Vec<String>,
        /// Categories the customer opens and inspects before taking them (repeatable; an import may
        /// also set `open_box` per parcel).
        #[arg(long = "open-box-category", value_name = "CATEGORY")]
        open_box_categories: Vec<String>,
        /// Send customer e-mail to this SMTP relay (host:port) instead of STATE/outbox/*.eml.
        #[arg(long)]
        smtp: Option<String>,
        /// Where customers reach this service (https://dispatch.example, at most 200 bytes): code
        /// e-mails link each parcel's page under it. Default: the address served.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Wrong codes allowed per parcel before it locks (3..=10).
        #[arg(long, default_value_t = 5)]
        max_attempts: u8,
        /// Length of the code tags in bits (16..=32); see docs/security.md for the trade-off.
        #[arg(long, default_value_t = 20)]
        tag_bits: u8,
        /// Delegates a customer may name per parcel (0..=15): each is another valid code at the door.
        #[arg(long, default_value_t = doorstep_core::policy::DEFAULT_DELEGATES)]
        max_delegates: u8,
        /// Lockout resets an operator may make per parcel.
        #[arg(long, default_value_t = doorstep_dispatch::store::DEFAULT_RESETS_PER_PARCEL)]
        max_resets_per_parcel: u32,
        /// Customer-link requests per minute per client address (429 beyond).
        #[arg(long, default_value_t = api::Limits::default().customer_per_minute)]
        customer_requests_per_minute: u32,
        /// Enrolment requests per minute per client address.
        #[arg(long, default_value_t = api::Limits::default().enrol_per_minute)]
        enrol_requests_per_minute: u32,
        /// Device requests (manifests, uploads) per minute per client address.
        #[arg(long, default_value_t = api::Limits::default().device_per_minute)]
        device_requests_per_minute: u32,
        /// Requests per minute per device id (manifests, uploads), from any address.
        #[arg(long, default_value_t = api::Limits::default().each_device_per_minute)]
        requests_per_device_per_minute: u32,
        /// Connections held at once, in all (keep it below the process's open-files limit).
        #[arg(long, default_value_t = listen::Connections::default().total)]
        max_connections: usize,
        /// Connections held at once per client address (not applied with --behind-tls-proxy,
        /// where every peer is the proxy).
        #[arg(long, default_value_t = listen::Connections::default().per_client.unwrap_or(16))]
        max_connections_per_client: usize,
        /// Full manifests per minute per device id (deltas do not count).
        #[arg(long, default_value_t = api::Limits::default().full_manifests_per_device_per_minute)]
        full_manifests_per_device_per_minute: u32,
    },
}

/// Where dispatch's state is: the state folder, and the database when it is not the folder's.
#[derive(clap::Args)]
struct Store {
    /// State folder (created if absent): dispatch.db and keys/.
    #[arg(long)]
    state: PathBuf,
    /// Keep the state in this PostgreSQL database (postgres://user@host:port/db) instead of
    /// STATE/dispatch.db; STATE keeps keys/. Prefer the environment variable: a password in
    /// an argument is visible to other users.
    #[arg(long, env = "DOORSTEP_DATABASE", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
}

impl Store {
    fn database(&self) -> Option<PostgresConfig> {
        self.database.clone().map(PostgresConfig::new)
    }
}

#[derive(Subcommand)]
enum OperatorStep {
    /// Create a key for a named operator; prints it once (only its hash is stored).
    Add {
        #[command(flatten)]
        store: Store,
        #[arg(long)]
        name: String,
    },
    /// Revoke a key at once.
    Revoke {
        #[command(flatten)]
        store: Store,
        operator_id: String,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand)]
enum KeyStep {
    /// Add a new key: manifests announce it to devices, the current key still signs.
    Add {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
    },
    /// Let the key sign, once devices have synced a manifest announcing it.
    Promote {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
        key_id: String,
    },
    /// Re-seal every code and device secret under a new key-encryption key (`keys/kek`); stop
    /// dispatch first.
    RotateKek {
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Enrol with a one-time token from dispatch (POST /v1/enrolment-tokens).
    Enrol {
        #[arg(long)]
        token: String,
    },
    /// Fetch and apply the manifests due for a delivery date (YYYY-MM-DD; today in the route's
    /// zone when left out). A device holds up to three days: tomorrow's route loads beside today's,
    /// which stays deliverable. A date more than 7 days away, before every held day, or a fourth
    /// day is refused before dispatch is asked.
    Sync {
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// After the changes, fetch a new full manifest of the day too (restores a parcel the
        /// device reports as damaged on disk).
        #[arg(long)]
        full: bool,
    },
    /// List the parcels (of one stop).
    Parcels {
        #[arg(long)]
        stop: Option<String>,
    },
    /// Hand over a parcel: with the code the recipient gives, a QR token, or neither (no code needed).
    Verify {
        barcode: String,
        code: Option<String>,
        #[arg(long)]
        qr: Option<String>,
        /// An addressee-only parcel: the kind of ID you checked (passport, national_id_card,
        /// driving_licence, residence_permit, other_photo_id); never its number.
        #[arg(long, value_name = "KIND")]
        id_checked: Option<String>,
        /// An open-box parcel: the customer opened it and takes it as it is.
        #[arg(long)]
        inspected: bool,
        /// An open-box parcel: the customer takes it with this reservation (their words).
        #[arg(long, value_name = "TEXT")]
        reservation: Option<String>,
    },
    /// Record a failed hand-over (reason e.g. recipient_unavailable, refused_by_recipient, other).
    Fail {
        barcode: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Upload the receipts waiting in the outbox.
    Upload,
    /// Counts by state, outbox, clock.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Device { dir, dispatch, dispatch_ca, json, action } => {
            let action = match action {
                DeviceCommand::Enrol { token } => terminal::Action::Enrol { token },
                DeviceCommand::Sync { date, full } => terminal::Action::Sync { date, full },
                DeviceCommand::Parcels { stop } => terminal::Action::Parcels { stop },
                DeviceCommand::Verify { barcode, code, qr, id_checked, inspected, reservation } => {
                    let door = terminal::DoorConfirmations { id_checked, inspected, reservation };
                    terminal::Action::Verify { barcode, code, qr, door }
                }
                DeviceCommand::Fail { barcode, reason, note } => terminal::Action::Fail { barcode, reason, note },
                DeviceCommand::Upload => terminal::Action::Upload,
                DeviceCommand::Status => terminal::Action::Status,
            };
            match terminal::run(&dir, &terminal::Remote { url: dispatch, ca: dispatch_ca }, action) {
                Ok(value) => {
                    if json {
                        say!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                    } else {
                        let mut out = Vec::new();
                        terminal::print_plain(&mut out, &value).ok();
                        say!("{}", String::from_utf8_lossy(&out).trim_end());
                    }
                    ExitCode::from(terminal::Ending::of(&value).code())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.ending.code())
                }
            }
        }
        Command::Keys { step } => {
            let result = match step {
                KeyStep::Add { state } => doorstep_dispatch::add_key(&state).map(|id| {
                    format!("added {id}: restart dispatch; it signs after `doorstep keys promote --state DIR {id}`")
                }),
                KeyStep::Promote { state, key_id } => doorstep_dispatch::promote_key(&state, &key_id)
                    .map(|()| format!("{key_id} signs from dispatch's next start")),
                KeyStep::RotateKek { store } => {
                    { doorstep_dispatch::rotate_kek(&store.state, store.database().as_ref()) }
                        .map(|n| format!("{n} sealed values re-sealed under a new keys/kek; the old key is deleted"))
                }
            };
            match result {
                Ok(message) => {
                    say!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("error: {e}")),
            }
        }
        Command::Demo { parcels, routes, json, serve, epcis_out } => {
            run_demo(&runtime, parcels, routes, json, serve, epcis_out.as_deref())
        }
        Command::Evidence { store, parcel_id, out, keys_out } => {
            let dispatch =
                match Dispatch::open_with(&store.state, store.database().as_ref(), HighValuePolicy::default()) {
                    Ok(d) => d,
                    Err(e) => return fail(format!("cannot open dispatch state {}: {e}", store.state.display())),
                };
            let out = out.unwrap_or_else(|| PathBuf::from(format!("evidence-{parcel_id}.json")));
            match doorstep_dispatch::proof::write(&dispatch, &parcel_id, &out, keys_out.as_deref()) {
                Ok(line) => {
                    say!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("error: {e}")),
            }
        }
        Command::Export { store, epcis: _, date, out, include_flagged } => {
            let dispatch =
                match Dispatch::open_with(&store.state, store.database().as_ref(), HighValuePolicy::default()) {
                    Ok(d) => d,
                    Err(e) => return fail(format!("cannot open dispatch state {}: {e}", store.state.display())),
                };
            let out = out.unwrap_or_else(|| {
                PathBuf::from(format!("epcis-{}.jsonld", date.map_or_else(|| "all".to_owned(), |d| d.to_string())))
            });
            let flagged = if include_flagged {
                doorstep_dispatch::epcis::Flagged::Included
            } else {
                doorstep_dispatch::epcis::Flagged::Left
            };
            let written = dispatch.epcis_events(date, flagged).and_then(|(document, n)| {
                use std::io::Write;
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                // Readable by its owner only, as the state folder's files are (an existing file
                // too: the mode given at open applies only to a new one).
                let mut file =
                    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&out)?;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                file.write_all(&document)?;
                Ok((n, document.len()))
            });
            match written {
                Ok((n, bytes)) => {
                    say!("wrote {n} EPCIS 2.0 events to {} ({bytes} bytes)", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("error: {e}")),
            }
        }
        Command::VerifyEvidence { file, keys } => {
            let checked = doorstep_dispatch::proof::read_keys(&keys)
                .and_then(|keys| doorstep_dispatch::proof::check(&file, &keys));
            match checked {
                Ok(Ok(report)) => {
                    for line in doorstep_dispatch::proof::describe(&report) {
                        say!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Ok(Err(why)) => {
                    eprintln!("NOT valid: {why}");
                    ExitCode::from(3)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Operator { step } => operator_command(step),
        Command::Serve {
            addr,
            behind_tls_proxy,
            tls_cert,
            tls_key,
            enrolment_token_hours,
            store,
            value_threshold_cents,
            categories,
            addressee_only_categories,
            open_box_categories,
            smtp,
            max_attempts,
            tag_bits,
            max_delegates,
            max_resets_per_parcel,
            customer_requests_per_minute,
            enrol_requests_per_minute,
            device_requests_per_minute,
            requests_per_device_per_minute,
            full_manifests_per_device_per_minute,
            max_connections,
            max_connections_per_client,
            public_url,
        } => {
            let public_url = match public_url_for(public_url, addr, tls_cert.is_some()) {
                Ok(url) => url,
                Err(e) => return fail(e),
            };
            let mail = match smtp.as_deref().map(parse_smtp).transpose() {
                Ok(mail) => mail,
                Err(e) => return fail(e),
            };
            let code_policy =
                doorstep_core::policy::Policy { max_attempts, tag_bits, max_delegates, ..Default::default() };
            let options = ServeOptions {
                policy: HighValuePolicy {
                    value_threshold_cents,
                    categories,
                    addressee_only_categories,
                    open_box_categories,
                },
                code_policy,
                mail,
                behind_tls_proxy,
                tls: tls_cert.zip(tls_key).map(|(cert, key)| listen::TlsFiles { cert, key }),
                connections: listen::Connections {
                    total: max_connections,
                    per_client: (!behind_tls_proxy).then_some(max_connections_per_client),
                },
                enrolment_token_ttl: chrono::TimeDelta::try_hours(enrolment_token_hours)
                    .unwrap_or(chrono::TimeDelta::MAX),
                max_resets_per_parcel,
                limits: api::Limits {
                    customer_per_minute: customer_requests_per_minute,
                    enrol_per_minute: enrol_requests_per_minute,
                    device_per_minute: device_requests_per_minute,
                    each_device_per_minute: requests_per_device_per_minute,
                    full_manifests_per_device_per_minute,
                    trust_forwarded_for: behind_tls_proxy,
                },
                database: store.database(),
                public_url,
            };
            runtime.block_on(serve(addr, store.state, options))
        }
    }
}

/// The address customers reach dispatch at, for the links in code e-mails: `--public-url`, which
/// must be https (a link carries the customer's token) unless it names this machine, and is
/// required when serving anywhere but loopback; on loopback the served address by default.
fn public_url_for(given: Option<String>, addr: SocketAddr, tls: bool) -> Result<String, String> {
    let url = match given {
        Some(url) => url,
        None if addr.ip().is_loopback() => format!("{}://{addr}", if tls { "https" } else { "http" }),
        None => return Err("--public-url is required off loopback (the address customers reach, https://…)".into()),
    };
    let host = url.split("://").nth(1).unwrap_or_default();
    let local = ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| host.starts_with(h));
    let ok = url.len() <= 200
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && (url.starts_with("https://") || (url.starts_with("http://") && local));
    if ok {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "--public-url {url:?} must be an https URL of at most 200 bytes with no spaces (http only for this machine)"
        ))
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

fn run_demo(
    runtime: &tokio::runtime::Runtime,
    parcels: usize,
    routes: usize,
    json: bool,
    serve: bool,
    epcis_out: Option<&std::path::Path>,
) -> ExitCode {
    if parcels == 0 {
        return fail("--parcels must be at least 1".into());
    }
    let state = match tempfile::tempdir() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot create a temporary state folder: {e}")),
    };
    // Dispatch and the simulated phones share one clock, which the demo moves through the day.
    let date = match demo::default_date() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot pick the demo's date: {e}")),
    };
    let clock = Arc::new(SetClock::at(chrono::Utc::now()));
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on loopback: {e}")),
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let dispatch = match Dispatch::open(state.path(), HighValuePolicy::default()) {
        Ok(d) => Arc::new(d.with_clock(clock.clone()).with_public_url(&format!("http://{addr}"))),
        Err(e) => return fail(format!("cannot open dispatch: {e}")),
    };
    let app = api::router_with_limits(dispatch.clone(), api::Limits::unlimited());
    runtime.spawn(listen::serve(listener, app, None, std::future::pending()));
    if !json {
        say!("dispatch listening on http://{addr} (state in {})", state.path().display());
    }
    match demo::run(&format!("http://{addr}"), &dispatch, &clock, date, parcels, routes, json) {
        Ok(report) => {
            if json {
                say!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                demo::print_table(&report);
            }
            if let Some(path) = epcis_out
                && let Err(e) = std::fs::write(path, &report.epcis_document)
            {
                return fail(format!("cannot write {}: {e}", path.display()));
            }
            if !report.reconciled {
                return ExitCode::FAILURE;
            }
            if serve {
                return keep_serving(runtime, &dispatch, &clock, &addr, state.path(), date, &report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("demo failed: {e}")),
    }
}

/// `demo --serve`: dispatch on the real time again, one more parcel on its way, and what to open.
fn keep_serving(
    runtime: &tokio::runtime::Runtime,
    dispatch: &Dispatch,
    clock: &SetClock,
    addr: &str,
    state: &std::path::Path,
    date: chrono::NaiveDate,
    report: &demo::DemoReport,
) -> ExitCode {
    clock.set(chrono::Utc::now());
    let handed = report.evidence_checked.as_ref().map_or("PCL-00000", |(p, _)| p.as_str());
    let links = match demo::serve_links(dispatch, &state.join("outbox"), date, handed) {
        Ok(links) => links,
        Err(e) => return fail(format!("cannot prepare the pages: {e}")),
    };
    let key = match dispatch.add_operator("demo") {
        Ok((_, key)) => key,
        Err(e) => return fail(format!("cannot create an operator key: {e}")),
    };
    say!("\ndispatch keeps running at http://{addr} (Ctrl-C ends it; the state folder goes with it)");
    for (link, what) in
        links.iter().zip(["a parcel on its way (code, QR code, people you trust)", "a parcel handed over"])
    {
        say!("customer's page, {what}:\n  {link}");
    }
    say!("operator console: http://{addr}/console?date={date}\n  operator key: {key}");
    match runtime.block_on(tokio::signal::ctrl_c()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot wait for Ctrl-C: {e}")),
    }
}

fn parse_smtp(relay: &str) -> Result<MailConfig, String> {
    let (host, port) = relay.rsplit_once(':').ok_or("--smtp must be host:port")?;
    let port = port.parse().map_err(|_| "--smtp port must be a number".to_string())?;
    Ok(MailConfig::Smtp { host: host.to_owned(), port })
}

struct ServeOptions {
    policy: HighValuePolicy,
    code_policy: doorstep_core::policy::Policy,
    mail: Option<MailConfig>,
    behind_tls_proxy: bool,
    tls: Option<listen::TlsFiles>,
    connections: listen::Connections,
    enrolment_token_ttl: chrono::TimeDelta,
    max_resets_per_parcel: u32,
    limits: api::Limits,
    database: Option<PostgresConfig>,
    public_url: String,
}

fn operator_command(step: OperatorStep) -> ExitCode {
    let (OperatorStep::Add { store, .. } | OperatorStep::Revoke { store, .. } | OperatorStep::List { store }) = &step;
    let state = &store.state;
    let dispatch = match Dispatch::open_with(state, store.database().as_ref(), HighValuePolicy::default()) {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot open dispatch state {}: {e}", state.display())),
    };
    let result = match step {
        OperatorStep::Add { name, .. } => dispatch.add_operator(&name).map(|(op, key)| {
            format!("operator {} ({}) added. Its key, shown only now:\n{key}", op.operator_id, op.name)
        }),
        OperatorStep::Revoke { operator_id, .. } => {
            dispatch.revoke_operator(&operator_id).map(|()| format!("operator {operator_id} revoked"))
        }
        OperatorStep::List { .. } => dispatch.operators().map(|ops| {
            ops.iter()
                .map(|o| {
                    let state = if o.revoked_at_ms.is_some() { "revoked" } else { "active" };
                    format!("{}  {state:8} {}", o.operator_id, o.name)
                })
                .collect::<Vec<_>>()
                .join("\n")
        }),
    };
    match result {
        Ok(message) => {
            say!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("error: {e}")),
    }
}

async fn serve(addr: SocketAddr, state: PathBuf, options: ServeOptions) -> ExitCode {
    let smtp = matches!(options.mail, Some(MailConfig::Smtp { .. }));
    // Opening may wait on PostgreSQL: off the async threads.
    let open = {
        let (state, database, policy, code_policy) =
            (state.clone(), options.database.clone(), options.policy.clone(), options.code_policy);
        let (ttl, resets, mail) = (options.enrolment_token_ttl, options.max_resets_per_parcel, options.mail.clone());
        let public_url = options.public_url.clone();
        move || -> Result<(Dispatch, bool), doorstep_dispatch::DispatchError> {
            let d = Dispatch::open_with(&state, database.as_ref(), policy)?
                .with_code_policy(code_policy)?
                .with_enrolment_token_ttl(ttl)?
                .with_max_resets_per_parcel(resets)
                .with_public_url(&public_url);
            let d = match mail {
                Some(mail) => d.with_mail(mail),
                None => d,
            };
            let auth_on = d.operator_auth_on()?;
            Ok((d, auth_on))
        }
    };
    let (dispatch, auth_on) = match tokio::task::spawn_blocking(open).await {
        Ok(Ok((d, auth_on))) => (Arc::new(d), auth_on),
        Ok(Err(e)) => return fail(format!("cannot start dispatch with {}: {e}", state.display())),
        Err(e) => return fail(format!("cannot start dispatch: {e}")),
    };
    let wire = match (&options.tls, options.behind_tls_proxy) {
        (Some(_), _) => listen::Wire::Tls,
        (None, true) => listen::Wire::Proxy,
        (None, false) => listen::Wire::Plain,
    };
    if let Some(refusal) = listen::refusal(addr, auth_on, wire, smtp) {
        return fail(refusal);
    }
    let tls = match &options.tls {
        Some(files) => match listen::load(files).await {
            Ok(config) => Some(config),
            Err(e) => return fail(e),
        },
        None => None,
    };
    on_hangup(tls.clone().zip(options.tls.clone()));
    if !auth_on {
        eprintln!("operator routes are open on loopback: add a key with `doorstep operator add` to close them");
    }
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    say!("dispatch listening on {scheme}://{}", listener.local_addr().map_or(addr, |a| a));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Customer e-mail that could not go out when its code was issued is retried every 30 s.
    let mailer = dispatch.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            let d = mailer.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.send_pending_mail()).await {
                eprintln!("mail outbox: {e}");
            }
        }
    });
    let app = api::router_with_limits(dispatch, options.limits);
    match listen::serve_with(listener, app, tls, shutdown, options.connections).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("server error: {e}")),
    }
}

/// On every SIGHUP, re-reads the certificate and key when TLS is served (a renewed certificate,
/// no restart); otherwise says there is nothing to reload. Either way SIGHUP no longer ends the
/// process, as its default action would (a logrotate or certbot hook sends it).
fn on_hangup(tls: Option<(axum_server::tls_rustls::RustlsConfig, listen::TlsFiles)>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        eprintln!("SIGHUP cannot be watched: restart dispatch to load a renewed certificate");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &tls {
                Some((config, files)) => match listen::reload(config, files).await {
                    Ok(()) => eprintln!("TLS certificate re-read from {}", files.cert.display()),
                    Err(e) => eprintln!("{e}; still serving the previous certificate"),
                },
                None => eprintln!("SIGHUP: nothing to reload (no --tls-cert)"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::public_url_for;

    #[test]
    fn the_public_url_is_https_off_this_machine_and_required_off_loopback() {
        let loopback = "127.0.0.1:8080".parse().unwrap();
        let anywhere = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(public_url_for(None, loopback, false).unwrap(), "http://127.0.0.1:8080");
        assert!(public_url_for(None, anywhere, false).unwrap_err().contains("required off loopback"));
        assert_eq!(public_url_for(Some("https://d.example/".into()), anywhere, false).unwrap(), "https://d.example");
        for bad in ["http://d.example", "ftp://d.example", "https://d.example/\r\nBcc: x", "https://d .example"] {
            assert!(public_url_for(Some(bad.into()), anywhere, false).is_err(), "{bad}");
        }
    }
}
