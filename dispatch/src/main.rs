//! `doorstep`: the reference dispatch service and tools. Today: `doorstep serve`. `demo` and
//! `device` come next (docs/dispatch.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use doorstep_dispatch::{Dispatch, HighValuePolicy, service};

#[derive(Parser)]
#[command(name = "doorstep", version, about = "Secure delivery with a one-time code: reference dispatch and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dispatch service for app developers (loopback by default; development only until
    /// device request signing lands, see docs/dispatch.md).
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
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { addr, state, value_threshold_cents, categories } => {
            let policy = HighValuePolicy { value_threshold_cents, categories };
            let dispatch = match Dispatch::open(&state, policy) {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    eprintln!("cannot open the state folder {}: {e}", state.display());
                    return ExitCode::FAILURE;
                }
            };
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("dispatch listening on http://{}", listener.local_addr().map_or(addr, |a| a));
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            if let Err(e) = axum::serve(listener, service::router(dispatch)).with_graceful_shutdown(shutdown).await {
                eprintln!("server error: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
