//! Rate limits, per client address, for the routes a stranger can reach: customer links, enrolment
//! and device requests (governor's keyed GCRA limiter). A client over its limit gets 429 with
//! `Retry-After` and the JSON error body before any handler or database work. Operator routes are
//! behind operator keys and not limited here. The limits are `serve` options.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::DispatchError;

/// Requests per minute each client address may make, per group of routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `/v1/customer/...`: a customer's app.
    pub customer_per_minute: u32,
    /// `/v1/enrol`: a phone enrols once; more is someone trying tokens.
    pub enrol_per_minute: u32,
    /// `/v1/devices/...`: manifests and uploads (a depot's phones may share one address).
    pub device_per_minute: u32,
    /// `/v1/devices/{id}/...` per device id, wherever it comes from: one phone cannot keep dispatch
    /// rebuilding full manifests.
    pub each_device_per_minute: u32,
    /// Full manifests per device id (each is built and signed from the whole route-day, the
    /// costliest request a phone makes); deltas do not count.
    pub full_manifests_per_device_per_minute: u32,
    /// Behind a TLS proxy every peer is the proxy: take the client from the last
    /// `X-Forwarded-For` entry (the one the proxy added) instead. Only with `--behind-tls-proxy`.
    pub trust_forwarded_for: bool,
}

impl Limits {
    /// No practical limit: the demo's simulated phones and the benchmark share one address.
    pub fn unlimited() -> Limits {
        Limits {
            customer_per_minute: u32::MAX,
            enrol_per_minute: u32::MAX,
            device_per_minute: u32::MAX,
            each_device_per_minute: u32::MAX,
            full_manifests_per_device_per_minute: u32::MAX,
            trust_forwarded_for: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            customer_per_minute: 60,
            enrol_per_minute: 20,
            device_per_minute: 1200,
            each_device_per_minute: 120,
            full_manifests_per_device_per_minute: 6,
            trust_forwarded_for: false,
        }
    }
}

/// One group's limiter.
#[derive(Clone)]
pub(super) struct Limiter {
    buckets: Arc<DefaultKeyedRateLimiter<String>>,
    trust_forwarded_for: bool,
}

/// The client a request comes from: the last `X-Forwarded-For` entry when the proxy in front is
/// trusted, otherwise the peer address.
fn client_of(request: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .next_back()?
                .to_str()
                .ok()?
                .rsplit(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    forwarded.or_else(|| request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip()))
}

/// Clients tracked before idle ones are forgotten (a limiter must not grow without bound).
const PRUNE_AT: usize = 100_000;

/// Which budget a client address draws on: its IPv4 address or its IPv6 /64, as for connections
/// (`listen::client_of`).
fn client_key(ip: IpAddr) -> String {
    crate::listen::client_of(ip).to_string()
}

/// Lets a request through while its client is within the limit; 429 with `Retry-After` otherwise.
/// The client is the peer address (without one, as behind some proxies, all share one key).
pub(super) async fn limit(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    let client = client_of(&request, limiter.trust_forwarded_for).map_or_else(|| "unknown".to_owned(), client_key);
    match limiter.check(&client) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

impl Limiter {
    pub(super) fn per_minute(n: u32, trust_forwarded_for: bool) -> Limiter {
        let quota = Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Limiter { buckets: Arc::new(DefaultKeyedRateLimiter::keyed(quota)), trust_forwarded_for }
    }

    /// Draws one request from `key`'s budget, or says how long to wait (429).
    pub(super) fn check(&self, key: &str) -> Result<(), DispatchError> {
        if self.buckets.len() > PRUNE_AT {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            DispatchError::TooManyRequests(wait.as_secs().max(1))
        })
    }
}
