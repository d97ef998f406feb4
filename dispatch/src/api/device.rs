//! Device routes: enrolment with a one-time token, then manifests and uploads, each signed by the
//! device's key (`Device-Signature`, checked by the store against the enrolled key and the clock).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use chrono::NaiveDate;
use doorstep_core::protocol::REQUEST_HEADER;

use super::limits::{Limiter, limit, limit_each_device};
use super::{AppState, blocking, body_of, octets};
use crate::error::DispatchError;

pub(super) fn routes(enrolment: Limiter, devices: Limiter, each_device: Limiter) -> Router<AppState> {
    let enrolling =
        Router::new().route("/v1/enrol", post(enrol)).route_layer(middleware::from_fn_with_state(enrolment, limit));
    Router::new()
        .route("/v1/devices/{id}/manifest", get(manifest))
        .route("/v1/devices/{id}/receipts", post(upload))
        .route_layer(middleware::from_fn_with_state(each_device, limit_each_device))
        .route_layer(middleware::from_fn_with_state(devices, limit))
        .merge(enrolling)
}

async fn enrol(
    State(d): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let token = headers
        .get("enrolment-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DispatchError::Forbidden("missing Enrolment-Token header".into()))?
        .to_owned();
    Ok(octets(blocking(move || d.enrol(&token, &body)).await?))
}

/// One `key=value` of the query string (parsed here so a bad value gets the JSON error body too).
fn query_param<T: std::str::FromStr>(query: Option<&str>, key: &str, what: &str) -> Result<Option<T>, DispatchError> {
    let prefix = format!("{key}=");
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().map_err(|_| DispatchError::BadRequest(format!("{key} must be {what}"))))
        .transpose()
}

/// `?date=YYYY-MM-DD[&since=N]`: the next manifest for the device (204 when it is up to date).
/// Signed by the device (`Device-Signature`).
async fn manifest(
    State(d): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, DispatchError> {
    let date: NaiveDate = query_param(query.as_deref(), "date", "YYYY-MM-DD")?
        .ok_or_else(|| DispatchError::BadRequest("missing ?date=YYYY-MM-DD".into()))?;
    let since: Option<u64> = query_param(query.as_deref(), "since", "a sequence number")?;
    let signature = device_signature(&headers);
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    Ok(
        match blocking(move || {
            d.verify_device_request(&id, signature.as_deref(), "GET", &path, b"")?;
            d.manifest(&id, date, since)
        })
        .await?
        {
            Some(envelope) => octets(envelope),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

fn device_signature(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn upload(
    State(d): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let signature = device_signature(&headers);
    let path = uri.path().to_owned();
    Ok(octets(
        blocking(move || {
            d.verify_device_request(&id, signature.as_deref(), "POST", &path, &body)?;
            d.upload(&id, &body)
        })
        .await?,
    ))
}
