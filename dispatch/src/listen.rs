//! Where dispatch listens, and over what. On loopback plain HTTP is fine (a developer's machine).
//! On any other address [`refusal`] stops `serve` unless the operator routes are closed, customer
//! mail leaves by SMTP and TLS guards the wire: enrolment answers carry device secrets. TLS is
//! either served here with rustls (ring provider) from PEM files, or terminated by a proxy the
//! operator names with `--behind-tls-proxy`.
//!
//! Only HTTP/1.1 is served (no h2c, and ALPN offers only `http/1.1`), and every connection must
//! send its request headers within [`HEADER_TIMEOUT`] (a TLS handshake within rustls's own 10 s),
//! so clients that trickle bytes cannot hold dispatch's file descriptors; the router bounds how
//! long a body may take (`api`).
//!
//! A served certificate is re-read by [`reload`] (`serve` calls it on SIGHUP), so a renewed one
//! takes effect for new connections without a restart. A reload that fails keeps the old one.
//! The private key file must not be readable by others, as ssh insists for its keys.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

/// The PEM files TLS is served from: the certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the wire is protected in front of a non-loopback address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Plain HTTP: loopback only.
    Plain,
    /// TLS served by dispatch itself (`--tls-cert`, `--tls-key`).
    Tls,
    /// TLS terminated by a reverse proxy (`--behind-tls-proxy`).
    Proxy,
}

/// Connections still open at shutdown get this long to finish.
const GRACE: Duration = Duration::from_secs(10);

/// A client gets this long to send a request's headers (the first one included, and each next one
/// on a kept-alive connection): a connection that trickles a header, or sends nothing, is closed
/// instead of holding a file descriptor until dispatch runs out of them.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `serve` must not start on `addr`, if it must not.
pub fn refusal(addr: SocketAddr, operator_auth_on: bool, wire: Wire, smtp: bool) -> Option<String> {
    if !operator_auth_on && wire != Wire::Plain {
        // Behind a TLS proxy or serving TLS, requests come from elsewhere even on a loopback
        // address: a proxy or relay in front would turn the open operator routes into open ones.
        return Some(format!(
            "refusing to serve on {addr} with TLS or behind a proxy while operator routes are open. Add a key \
             first: doorstep operator add --state DIR --name NAME"
        ));
    }
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
    if wire == Wire::Plain {
        return Some(format!(
            "refusing to serve on {addr} without TLS: enrolment answers carry device secrets. Serve it \
             (--tls-cert FILE --tls-key FILE) or put a TLS proxy in front and pass --behind-tls-proxy"
        ));
    }
    None
}

/// The rustls configuration from `files`, or why it cannot be had (named file, plain words).
pub async fn load(files: &TlsFiles) -> Result<RustlsConfig, String> {
    check_key_file(&files.key)?;
    let config = RustlsConfig::from_pem_file(&files.cert, &files.key).await.map_err(|e| describe(files, &e))?;
    http1_only(&config);
    Ok(config)
}

/// Re-reads `files` into the running `config`; on failure the served certificate stays as it was.
pub async fn reload(config: &RustlsConfig, files: &TlsFiles) -> Result<(), String> {
    check_key_file(&files.key)?;
    config.reload_from_pem_file(&files.cert, &files.key).await.map_err(|e| describe(files, &e))?;
    http1_only(config);
    Ok(())
}

/// Offers only HTTP/1.1 in the TLS handshake (ALPN): dispatch serves HTTP/1.1 alone, whose
/// header and body time limits it sets, and no client needs more.
fn http1_only(config: &RustlsConfig) {
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.reload_from_config(std::sync::Arc::new(inner));
}

fn describe(files: &TlsFiles, e: &std::io::Error) -> String {
    format!("cannot serve TLS from {} and {}: {e}", files.cert.display(), files.key.display())
}

#[cfg(unix)]
fn check_key_file(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(key).map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?.mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "TLS key {} is open to every user (mode {:04o}): chmod 600 it (or 640 for a group such as ssl-cert)",
            key.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_file(_key: &Path) -> Result<(), String> {
    Ok(())
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets open
/// connections finish for a grace period. Handlers see the peer's address (`ConnectInfo`).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(GRACE));
    });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => {
            let mut server = axum_server::tls_rustls::from_tcp_rustls(listener, config)?
                .handle(handle)
                .http1_only()
                .first_request_timeout(HEADER_TIMEOUT);
            server.http_builder().http1().header_read_timeout(HEADER_TIMEOUT);
            server.serve(service).await
        }
        None => {
            let mut server =
                axum_server::from_tcp(listener)?.handle(handle).http1_only().first_request_timeout(HEADER_TIMEOUT);
            server.http_builder().http1().header_read_timeout(HEADER_TIMEOUT);
            server.serve(service).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_refuses_a_network_address_without_operator_keys_smtp_or_tls() {
        let lan: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(refusal(lan, false, Wire::Proxy, true).unwrap().contains("operator add"));
        assert!(refusal(any, true, Wire::Plain, true).unwrap().contains("--tls-cert"));
        assert!(refusal(lan, true, Wire::Tls, false).unwrap().contains("--smtp"));
        assert_eq!(refusal(lan, true, Wire::Proxy, true), None);
        assert_eq!(refusal(lan, true, Wire::Tls, true), None);
        assert_eq!(refusal(local, false, Wire::Plain, false), None);
        assert!(refusal(local, false, Wire::Proxy, false).unwrap().contains("operator add"), "a proxy in front");
        assert!(refusal(local, false, Wire::Tls, false).unwrap().contains("operator add"));
        assert_eq!(refusal(local, true, Wire::Proxy, false), None);
        assert_eq!(refusal(local6, false, Wire::Plain, false), None);
    }
}
