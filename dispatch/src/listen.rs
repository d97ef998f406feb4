//! Where dispatch listens, and over what. On loopback plain HTTP is fine (a developer's machine).
//! On any other address [`refusal`] stops `serve` unless the operator routes are closed, customer
//! mail leaves by SMTP and TLS guards the wire: enrolment answers carry device secrets. TLS is
//! either served here with rustls (ring provider) from PEM files, or terminated by a proxy the
//! operator names with `--behind-tls-proxy`.
//!
//! Connections are counted and capped ([`Connections`]: in all and per client address). Only
//! HTTP/1.1 is served (no h2c, and ALPN offers only `http/1.1`), and every connection must
//! send its request headers within [`HEADER_TIMEOUT`] (a TLS handshake within rustls's own 10 s),
//! so clients that trickle bytes cannot hold dispatch's file descriptors; the router bounds how
//! long a body may take (`api`).
//!
//! A served certificate is re-read by [`reload`] (`serve` calls it on SIGHUP), so a renewed one
//! takes effect for new connections without a restart. A reload that fails keeps the old one.
//! The private key file must not be readable by others, as ssh insists for its keys.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::places::{Places, Ticket};

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

/// How many connections dispatch holds at once: in all (below the usual 1,024 open files, so
/// dispatch never runs out of them), and per client address (none behind a proxy, where every
/// peer is the proxy). A connection over either is closed as soon as it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    pub total: usize,
    pub per_client: Option<usize>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections { total: 768, per_client: Some(16) }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets open
/// connections finish for a grace period. Handlers see the peer's address (`ConnectInfo`).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, tls, shutdown, Connections::default()).await
}

/// [`serve`] with these connection limits.
pub async fn serve_with(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    connections: Connections,
) -> std::io::Result<()> {
    let book = Places::new(Some(connections.total), connections.per_client);
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(GRACE));
    });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum_server::from_tcp(listener)?;
    match tls {
        Some(config) => {
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config);
            limited(server.acceptor(Admit { inner: tls, book }), handle).serve(service).await
        }
        None => {
            let plain = axum_server::accept::DefaultAcceptor::new();
            limited(server.acceptor(Admit { inner: plain, book }), handle).serve(service).await
        }
    }
}

/// HTTP/1.1 only, with the header time limits, whatever the acceptor (plain or TLS).
fn limited<A>(
    server: axum_server::Server<SocketAddr, A>,
    handle: Handle<SocketAddr>,
) -> axum_server::Server<SocketAddr, A> {
    let mut server = server.handle(handle).http1_only().first_request_timeout(HEADER_TIMEOUT);
    server.http_builder().http1().header_read_timeout(HEADER_TIMEOUT);
    server
}

/// Who a client address is, for connection shares and rate limits: an IPv4 address, or an IPv6
/// /64 (one subscriber gets a whole /64, so single IPv6 addresses would give one host unlimited
/// shares).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Admits a connection while its client and the server are within [`Connections`], then hands
/// it (with its ticket) to the inner acceptor (plain or TLS).
#[derive(Clone)]
struct Admit<A> {
    inner: A,
    book: Arc<Places<IpAddr>>,
}

impl<A, S> axum_server::accept::Accept<TcpStream, S> for Admit<A>
where
    A: axum_server::accept::Accept<Counted, S> + Clone + Send + 'static,
    A::Future: Send + 'static,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream.peer_addr().ok().and_then(|peer| self.book.take(client_of(peer.ip())));
        let inner = self.inner.clone();
        Box::pin(async move {
            let ticket = admitted.ok_or_else(|| std::io::Error::other("too many connections"))?;
            inner.accept(Counted { stream, _ticket: ticket, stalled: None }, service).await
        })
    }
}

/// How long an answer may wait for the client to read it: a client that stops reading is cut
/// off instead of keeping its place.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// A TCP stream that holds its connection's place until it is dropped, and fails a write that
/// has made no progress for [`WRITE_STALL`].
struct Counted {
    stream: TcpStream,
    _ticket: Ticket<IpAddr>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Counted {
    /// A write the client is not taking: start (or keep) the stall clock, fail once it ran out.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let clock = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_subscriber_takes_one_share_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(other));
        assert_eq!(client_of("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

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
