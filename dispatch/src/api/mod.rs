//! The HTTP face of [`Dispatch`] (axum): one module per caller, merged into one router here.
//! Handlers run the blocking store work on tokio's blocking pool; every error, 404 and 405
//! included, answers `{"error", "detail"}` with the status [`DispatchError::status`] gives.
//!
//! - [`operator`]: the carrier's staff (import, departure, reset, reissue, reassign, history,
//!   enrolment tokens), behind an operator key once one exists (`crate::operators`).
//! - [`device`]: phones (enrol with a one-time token; manifests and uploads signed by the device).
//! - [`customer`]: the customer's own parcels, with the link from their code e-mail.
//! - [`public`]: anyone: the public keys dispatch signs with.
//! - [`limits`]: rate limits per client address on the customer, enrolment and device routes.

mod customer;
mod device;
mod limits;
pub mod openapi;
mod operator;
mod public;

pub use limits::Limits;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::DispatchError;
use crate::store::Dispatch;
use utoipa_axum::router::OpenApiRouter;

/// Largest request body accepted on operator routes (an import of a whole day as CSV or JSON).
/// Device and customer routes take far less (their modules say how much).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(crate) type AppState = Arc<Dispatch>;

impl IntoResponse for DispatchError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = match self {
            DispatchError::TooManyRequests(seconds) => Some(seconds.to_string()),
            _ => None,
        };
        // Our own failures are logged here and answered without their internals.
        let detail = if status.is_server_error() {
            eprintln!("dispatch: answered {status}: {self}");
            "dispatch could not complete the request; nothing was changed, try again".to_owned()
        } else {
            self.to_string()
        };
        let mut response = error_body(status, detail);
        if let Some(value) = retry_after.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The service's routes with the default rate limits.
pub fn router(dispatch: Arc<Dispatch>) -> Router {
    router_with_limits(dispatch, Limits::default())
}

/// The service's routes. Serve them with `into_make_service_with_connect_info::<SocketAddr>()`,
/// so the rate limits see each client's address.
pub fn router_with_limits(dispatch: Arc<Dispatch>, limits: Limits) -> Router {
    // The customer's JSON routes and the pages draw on one budget per client address.
    let customers = limits::Limiter::per_minute(limits.customer_per_minute, limits.trust_forwarded_for);
    let (routes, document) = routes(dispatch.clone(), limits, customers.clone()).split_for_parts();
    let document = Arc::new(document);
    routes
        .merge(pages(customers))
        .merge(crate::pages::assets())
        .route("/openapi.json", axum::routing::get(move || openapi::serve(document.clone())))
        .fallback(|| async { DispatchError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { DispatchError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(plain_paths))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(dispatch)
}

/// The pages for people, with the customer routes' rate limit, body size and deadlines (their
/// forms are one short field).
fn pages(limiter: limits::Limiter) -> Router<AppState> {
    crate::pages::router()
        .route_layer(axum::middleware::from_fn_with_state(limiter, limits::limit))
        .layer(DefaultBodyLimit::max(crate::pages::MAX_FORM_BYTES))
        .layer(body_deadline(SMALL_BODY_DEADLINE))
        .layer(answer_deadline())
}

/// Every route with its description, one module per caller.
fn routes(dispatch: Arc<Dispatch>, limits: Limits, customers: limits::Limiter) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<openapi::Document as utoipa::OpenApi>::openapi())
        .merge(operator::routes(dispatch))
        .merge(device::routes(
            limits::Limiter::per_minute(limits.enrol_per_minute, limits.trust_forwarded_for),
            limits::Limiter::per_minute(limits.device_per_minute, limits.trust_forwarded_for),
            limits::Limiter::per_minute(limits.each_device_per_minute, false),
            limits::Limiter::per_minute(limits.full_manifests_per_device_per_minute, false),
        ))
        .merge(customer::routes(customers))
        .merge(public::routes(limits::Limiter::per_minute(limits.customer_per_minute, limits.trust_forwarded_for)))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DispatchError> + Send + 'static,
) -> Result<T, DispatchError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DispatchError::Io(std::io::Error::other(e.to_string())))?
}

/// The request body, or the JSON error for one that is too large (over the route's `limit`) or
/// unreadable.
fn body_of(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, DispatchError> {
    body.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<tower_http::timeout::TimeoutError>() {
                return DispatchError::Timeout;
            }
            cause = c.source();
        }
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DispatchError::TooLarge(limit)
        } else {
            DispatchError::BadRequest(e.body_text())
        }
    })
}

/// A JSON request body, or a 400 naming what is wrong with it.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, DispatchError> {
    serde_json::from_slice(&body_of(body, limit)?).map_err(|e| DispatchError::BadRequest(e.to_string()))
}

/// The JSON error body every 4xx and 5xx carries: `{"error": <kind of status>, "detail"}`.
fn error_body(status: StatusCode, detail: String) -> Response {
    let kind = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "too_large",
        429 => "too_many_requests",
        _ => "internal",
    };
    (status, Json(json!({ "error": kind, "detail": detail }))).into_response()
}

/// Answers axum's own refusals (a path segment that is not UTF-8, say) with the JSON error body,
/// like every other error: they come as plain text from the extractors.
/// Refuses a path that decodes to a control character (`%00`, `%0A`, …): no id holds one, and
/// PostgreSQL refuses text with NUL outright, so such a request is a 400 here on both backends
/// instead of a storage error.
async fn plain_paths(request: Request, next: Next) -> Response {
    let decoded = percent_encoding::percent_decode(request.uri().path().as_bytes());
    if decoded.into_iter().any(|b| b < 0x20 || b == 0x7f) {
        return DispatchError::BadRequest("the path holds a control character".into()).into_response();
    }
    next.run(request).await
}

async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    // JSON errors stay as they are, and so do the pages' own (HTML) error pages.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html"));
    if !(response.status().is_client_error() || response.status().is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut detail = String::from_utf8_lossy(&text).into_owned();
    if detail.is_empty() {
        detail = parts.status.canonical_reason().unwrap_or("error").to_owned();
    }
    let mut answer = error_body(parts.status, detail);
    // Keep what the refusal said besides its body (405's Allow, say).
    for (name, value) in
        parts.headers.iter().filter(|(n, _)| *n != header::CONTENT_TYPE && *n != header::CONTENT_LENGTH)
    {
        answer.headers_mut().insert(name.clone(), value.clone());
    }
    answer
}

/// How long a body may take to arrive, per group of routes (a stalled one holds nothing longer):
/// a customer's or an enrolment request is a few hundred bytes; an upload's clock starts once it
/// has its turn (`device`); an operator's import of a whole day may be 16 MiB on a slow line.
const SMALL_BODY_DEADLINE: Duration = Duration::from_secs(30);
const OPERATOR_BODY_DEADLINE: Duration = Duration::from_secs(600);

/// Requests from phones and customers are answered within this long, or 408. Operator requests
/// are not cut short: an import that ran past a deadline would still commit.
const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

fn body_deadline(d: Duration) -> tower_http::timeout::RequestBodyDeadlineLayer {
    tower_http::timeout::RequestBodyDeadlineLayer::new(d)
}

fn answer_deadline() -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, ANSWER_DEADLINE)
}

/// The `Authorization: Bearer <value>` of a request (an operator key or a customer link).
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

fn octets(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// One `key=value` of the query string (parsed here so a bad value gets the JSON error body too).
pub(super) fn query_param<T: std::str::FromStr>(
    query: Option<&str>,
    key: &str,
    what: &str,
) -> Result<Option<T>, DispatchError> {
    let prefix = format!("{key}=");
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().map_err(|_| DispatchError::BadRequest(format!("{key} must be {what}"))))
        .transpose()
}
