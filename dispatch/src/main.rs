//! `doorstep`: the reference dispatch service and the whole day in one command.
//!
//! - `doorstep demo`: dispatch on loopback with a temporary state folder, simulated phones working
//!   their routes over HTTP, and the verdict on every receipt.
//! - `doorstep serve`: dispatch for app developers.
//!
//! - `doorstep device ...`: act as a phone from the terminal against a running dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use doorstep_dispatch::{Dispatch, HighValuePolicy, MailConfig, SetClock, demo, service, terminal};

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
    },
    /// Act as a phone from the terminal against a running dispatch (database and sealing key in
    /// --dir).
    Device {
        /// The device's folder (database and sealing key).
        #[arg(long, default_value = "doorstep-device")]
        dir: PathBuf,
        /// The dispatch service.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        dispatch: String,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: DeviceCommand,
    },
    /// Rotate dispatch's signing key in two steps (restart dispatch after each).
    Keys {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
        #[command(subcommand)]
        step: KeyStep,
    },
    /// Run the dispatch service for app developers (loopback by default: operator endpoints are not
    /// authenticated yet, see docs/dispatch.md).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// State folder (created if absent): dispatch.db and keys/.
        #[arg(long)]
        state: PathBuf,
        /// Declared value (in cents) from which a parcel needs a code.
        #[arg(long, default_value_t = 50_000)]
        value_threshold_cents: i64,
        /// Categories that always need a code (repeatable).
        #[arg(long = "category", default_values_t = ["electronics".to_string(), "jewellery".to_string()])]
        categories: Vec<String>,
        /// Send customer e-mail to this SMTP relay (host:port) instead of STATE/outbox/*.eml.
        #[arg(long)]
        smtp: Option<String>,
        /// Wrong codes allowed per parcel before it locks (3..=10).
        #[arg(long, default_value_t = 5)]
        max_attempts: u8,
        /// Length of the code tags in bits (16..=32); see docs/security.md for the trade-off.
        #[arg(long, default_value_t = 20)]
        tag_bits: u8,
    },
}

#[derive(Subcommand)]
enum KeyStep {
    /// Add a new key: manifests announce it to devices, the current key still signs.
    Add,
    /// Let the key sign, once devices have synced a manifest announcing it.
    Promote { key_id: String },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Enrol with a one-time token from dispatch (POST /v1/enrolment-tokens).
    Enrol {
        #[arg(long)]
        token: String,
    },
    /// Fetch and apply the manifests due for a delivery date.
    Sync {
        #[arg(long)]
        date: chrono::NaiveDate,
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
        Command::Device { dir, dispatch, json, action } => {
            let action = match action {
                DeviceCommand::Enrol { token } => terminal::Action::Enrol { token },
                DeviceCommand::Sync { date } => terminal::Action::Sync { date },
                DeviceCommand::Parcels { stop } => terminal::Action::Parcels { stop },
                DeviceCommand::Verify { barcode, code, qr } => terminal::Action::Verify { barcode, code, qr },
                DeviceCommand::Fail { barcode, reason, note } => terminal::Action::Fail { barcode, reason, note },
                DeviceCommand::Upload => terminal::Action::Upload,
                DeviceCommand::Status => terminal::Action::Status,
            };
            match terminal::run(&dir, &dispatch, action) {
                Ok(value) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                    } else {
                        terminal::print_plain(&value);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("error: {e}")),
            }
        }
        Command::Keys { state, step } => {
            let result = match step {
                KeyStep::Add => doorstep_dispatch::add_key(&state)
                    .map(|id| format!("added {id}: restart dispatch; it signs after `doorstep keys promote {id}`")),
                KeyStep::Promote { key_id } => doorstep_dispatch::promote_key(&state, &key_id)
                    .map(|()| format!("{key_id} signs from dispatch's next start")),
            };
            match result {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("error: {e}")),
            }
        }
        Command::Demo { parcels, routes, json } => run_demo(&runtime, parcels, routes, json),
        Command::Serve { addr, state, value_threshold_cents, categories, smtp, max_attempts, tag_bits } => {
            let mail = match smtp.as_deref().map(parse_smtp).transpose() {
                Ok(mail) => mail,
                Err(e) => return fail(e),
            };
            let code_policy = doorstep_core::policy::Policy { max_attempts, tag_bits, key_epoch: 0 };
            let options =
                ServeOptions { policy: HighValuePolicy { value_threshold_cents, categories }, code_policy, mail };
            runtime.block_on(serve(addr, state, options))
        }
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

fn run_demo(runtime: &tokio::runtime::Runtime, parcels: usize, routes: usize, json: bool) -> ExitCode {
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
    let dispatch = match Dispatch::open(state.path(), HighValuePolicy::default()) {
        Ok(d) => Arc::new(d.with_clock(clock.clone())),
        Err(e) => return fail(format!("cannot open dispatch: {e}")),
    };
    let listener = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on loopback: {e}")),
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let app = service::router(dispatch.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    if !json {
        println!("dispatch listening on http://{addr} (state in {})", state.path().display());
    }
    match demo::run(&format!("http://{addr}"), &dispatch, &clock, date, parcels, routes, json) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                demo::print_table(&report);
            }
            if report.reconciled { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => fail(format!("demo failed: {e}")),
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
}

async fn serve(addr: SocketAddr, state: PathBuf, options: ServeOptions) -> ExitCode {
    let opened = Dispatch::open(&state, options.policy).and_then(|d| d.with_code_policy(options.code_policy));
    let dispatch = match opened {
        Ok(d) => Arc::new(match options.mail {
            Some(mail) => d.with_mail(mail),
            None => d,
        }),
        Err(e) => return fail(format!("cannot start dispatch with {}: {e}", state.display())),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    println!("dispatch listening on http://{}", listener.local_addr().map_or(addr, |a| a));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match axum::serve(listener, service::router(dispatch)).with_graceful_shutdown(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("server error: {e}")),
    }
}
