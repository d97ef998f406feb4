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
use doorstep_dispatch::{Dispatch, HighValuePolicy, MailConfig, SetClock, api, demo, terminal};

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
    /// Manage operator keys. Once one exists, every operator route needs one
    /// (`Authorization: Bearer dso_...`); a running dispatch sees changes at once.
    Operator {
        #[command(subcommand)]
        step: OperatorStep,
    },
    /// Rotate dispatch's signing key in two steps (restart dispatch after each).
    Keys {
        #[command(subcommand)]
        step: KeyStep,
    },
    /// Run the dispatch service. On loopback it starts with nothing to set up; on any other address
    /// it needs operator keys (`doorstep operator add`) and TLS in front (--behind-tls-proxy).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// TLS is terminated by a reverse proxy in front of this address (required off loopback:
        /// enrolment answers carry device secrets).
        #[arg(long)]
        behind_tls_proxy: bool,
        /// Hours an enrolment token stays valid.
        #[arg(long, default_value_t = doorstep_dispatch::store::DEFAULT_ENROLMENT_TOKEN_HOURS)]
        enrolment_token_hours: i64,
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
    },
}

#[derive(Subcommand)]
enum OperatorStep {
    /// Create a key for a named operator; prints it once (only its hash is stored).
    Add {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Revoke a key at once.
    Revoke {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
        operator_id: String,
    },
    /// List keys (never their secrets).
    List {
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
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
        /// The state folder.
        #[arg(long)]
        state: PathBuf,
    },
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
        Command::Keys { step } => {
            let result = match step {
                KeyStep::Add { state } => doorstep_dispatch::add_key(&state).map(|id| {
                    format!("added {id}: restart dispatch; it signs after `doorstep keys promote --state DIR {id}`")
                }),
                KeyStep::Promote { state, key_id } => doorstep_dispatch::promote_key(&state, &key_id)
                    .map(|()| format!("{key_id} signs from dispatch's next start")),
                KeyStep::RotateKek { state } => doorstep_dispatch::rotate_kek(&state)
                    .map(|n| format!("{n} sealed values re-sealed under a new keys/kek; the old key is deleted")),
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
        Command::Operator { step } => operator_command(step),
        Command::Serve {
            addr,
            behind_tls_proxy,
            enrolment_token_hours,
            state,
            value_threshold_cents,
            categories,
            smtp,
            max_attempts,
            tag_bits,
            max_delegates,
            max_resets_per_parcel,
            customer_requests_per_minute,
            enrol_requests_per_minute,
            device_requests_per_minute,
            requests_per_device_per_minute,
        } => {
            let mail = match smtp.as_deref().map(parse_smtp).transpose() {
                Ok(mail) => mail,
                Err(e) => return fail(e),
            };
            let code_policy =
                doorstep_core::policy::Policy { max_attempts, tag_bits, max_delegates, ..Default::default() };
            let options = ServeOptions {
                policy: HighValuePolicy { value_threshold_cents, categories },
                code_policy,
                mail,
                behind_tls_proxy,
                enrolment_token_ttl: chrono::TimeDelta::try_hours(enrolment_token_hours)
                    .unwrap_or(chrono::TimeDelta::MAX),
                max_resets_per_parcel,
                limits: api::Limits {
                    customer_per_minute: customer_requests_per_minute,
                    enrol_per_minute: enrol_requests_per_minute,
                    device_per_minute: device_requests_per_minute,
                    each_device_per_minute: requests_per_device_per_minute,
                    trust_forwarded_for: behind_tls_proxy,
                },
            };
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
    let app = api::router_with_limits(dispatch.clone(), api::Limits::unlimited());
    runtime.spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
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
    behind_tls_proxy: bool,
    enrolment_token_ttl: chrono::TimeDelta,
    max_resets_per_parcel: u32,
    limits: api::Limits,
}

fn operator_command(step: OperatorStep) -> ExitCode {
    let (OperatorStep::Add { state, .. } | OperatorStep::Revoke { state, .. } | OperatorStep::List { state }) = &step;
    let dispatch = match Dispatch::open(state, HighValuePolicy::default()) {
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
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("error: {e}")),
    }
}

/// Why `serve` must not start on `addr`, if it must not: off loopback it needs operator keys and
/// TLS in front.
fn network_refusal(addr: SocketAddr, operator_auth_on: bool, behind_tls_proxy: bool, smtp: bool) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    if !smtp {
        return Some(format!(
            "refusing to serve on {addr} without --smtp: customer e-mail (codes and links) would be written \
             to STATE/outbox"
        ));
    }
    if !operator_auth_on {
        return Some(format!(
            "refusing to serve on {addr}: operator routes would be open. Add a key first: \
             doorstep operator add --state DIR --name NAME"
        ));
    }
    if !behind_tls_proxy {
        return Some(format!(
            "refusing to serve on {addr} without TLS: enrolment answers carry device secrets. Put a TLS \
             proxy in front and pass --behind-tls-proxy"
        ));
    }
    None
}

async fn serve(addr: SocketAddr, state: PathBuf, options: ServeOptions) -> ExitCode {
    let smtp = matches!(options.mail, Some(MailConfig::Smtp { .. }));
    let opened = Dispatch::open(&state, options.policy)
        .and_then(|d| d.with_code_policy(options.code_policy))
        .and_then(|d| d.with_enrolment_token_ttl(options.enrolment_token_ttl))
        .map(|d| d.with_max_resets_per_parcel(options.max_resets_per_parcel));
    let dispatch = match opened {
        Ok(d) => Arc::new(match options.mail {
            Some(mail) => d.with_mail(mail),
            None => d,
        }),
        Err(e) => return fail(format!("cannot start dispatch with {}: {e}", state.display())),
    };
    let auth_on = match dispatch.operator_auth_on() {
        Ok(on) => on,
        Err(e) => return fail(format!("cannot read operator keys: {e}")),
    };
    if let Some(refusal) = network_refusal(addr, auth_on, options.behind_tls_proxy, smtp) {
        return fail(refusal);
    }
    if !auth_on {
        eprintln!("operator routes are open on loopback: add a key with `doorstep operator add` to close them");
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
    };
    println!("dispatch listening on http://{}", listener.local_addr().map_or(addr, |a| a));
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
    let app = api::router_with_limits(dispatch, options.limits).into_make_service_with_connect_info::<SocketAddr>();
    match axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("server error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_refuses_a_network_address_without_operator_keys_or_tls() {
        let lan: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(network_refusal(lan, false, true, true).unwrap().contains("operator add"));
        assert!(network_refusal(any, true, false, true).unwrap().contains("--behind-tls-proxy"));
        assert!(network_refusal(lan, true, true, false).unwrap().contains("--smtp"));
        assert_eq!(network_refusal(lan, true, true, true), None);
        assert_eq!(network_refusal(local, false, false, false), None);
        assert_eq!(network_refusal(local6, false, false, false), None);
    }
}
