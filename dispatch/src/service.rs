//! The HTTP face of [`Dispatch`] (axum). Handlers run the blocking store work on tokio's blocking
//! pool; errors answer `{"error", "detail"}` with a 4xx for the caller's mistakes.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use doorstep_core::protocol::REQUEST_HEADER;
use serde::Deserialize;
use serde_json::json;

use crate::error::DispatchError;
use crate::store::{Dispatch, NewParcel};

/// Largest request body accepted (a 16 MiB upload is far above any real batch).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

type AppState = Arc<Dispatch>;

impl IntoResponse for DispatchError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "too_large",
            _ => "internal",
        };
        (status, Json(json!({ "error": kind, "detail": self.to_string() }))).into_response()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DispatchError> + Send + 'static,
) -> Result<T, DispatchError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DispatchError::Io(std::io::Error::other(e.to_string())))?
}

/// The request body, or the JSON error for one that is too large or unreadable.
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, DispatchError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DispatchError::TooLarge(MAX_BODY_BYTES)
        } else {
            DispatchError::BadRequest(e.body_text())
        }
    })
}

fn octets(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The service's routes.
pub fn router(dispatch: Arc<Dispatch>) -> Router {
    Router::new()
        .route("/v1/enrolment-tokens", post(create_token))
        .route("/v1/enrol", post(enrol))
        .route("/v1/parcels", post(import_parcels))
        .route("/v1/parcels/{id}/departed", post(departed))
        .route("/v1/parcels/{id}/reset", post(reset))
        .route("/v1/parcels/{id}/reissue", post(reissue))
        .route("/v1/parcels/{id}/reassign", post(reassign))
        .route("/v1/parcels/{id}/history", get(history))
        .route("/v1/customer/parcels/{id}/code", get(customer_code))
        .route("/v1/customer/parcels/{id}/delegates", post(name_delegate))
        .route("/v1/customer/parcels/{id}/delegates/{label}", axum::routing::delete(revoke_delegate))
        .route("/v1/customer/parcels/{id}/qr", get(customer_qr))
        .route("/v1/devices/{id}/manifest", get(manifest))
        .route("/v1/devices/{id}/receipts", post(upload))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(dispatch)
}

#[derive(Deserialize)]
struct TokenRequest {
    route_id: String,
}

async fn create_token(
    State(d): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| DispatchError::BadRequest(e.to_string()))?;
    let token = blocking(move || d.create_enrolment_token(&req.route_id)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response())
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

/// Order lines as JSON (a list) or CSV (`Content-Type: text/csv`, a header row naming the fields).
async fn import_parcels(
    State(d): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let is_csv =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/csv"));
    let parcels: Vec<NewParcel> = if is_csv {
        csv::Reader::from_reader(&body[..])
            .deserialize()
            .enumerate()
            .map(|(i, row)| row.map_err(|e| DispatchError::BadRequest(format!("CSV line {}: {e}", i + 2))))
            .collect::<Result<_, _>>()?
    } else {
        serde_json::from_slice(&body).map_err(|e| DispatchError::BadRequest(e.to_string()))?
    };
    let count = parcels.len();
    let coded = blocking(move || d.import_parcels(&parcels)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "imported": count, "need_code": coded }))).into_response())
}

async fn departed(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let code = blocking(move || d.parcel_departed(&id)).await?;
    // The code goes to the customer by e-mail, never back to the caller.
    Ok(Json(json!({ "departed": true, "code_issued": code.is_some() })).into_response())
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

async fn reset(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let devices = blocking(move || d.reset_lockout(&id)).await?;
    Ok(Json(json!({ "devices_notified": devices })).into_response())
}

async fn reissue(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    blocking(move || d.reissue_code(&id)).await?;
    // The new code goes to the customer by e-mail, never back to the operator.
    Ok(Json(json!({ "reissued": true })).into_response())
}

#[derive(Deserialize)]
struct ReassignRequest {
    route_id: String,
}

async fn reassign(
    State(d): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let req: ReassignRequest = serde_json::from_slice(&body).map_err(|e| DispatchError::BadRequest(e.to_string()))?;
    blocking(move || d.reassign(&id, &req.route_id)).await?;
    Ok(Json(json!({ "reassigned": true })).into_response())
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

async fn history(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let receipts = blocking(move || d.parcel_history(&id)).await?;
    let entries: Vec<_> =
        receipts.into_iter().map(|r| json!({ "receipt": r.body, "status": r.status, "reason": r.reason })).collect();
    Ok(Json(json!({ "receipts": entries })).into_response())
}

/// The customer's bearer token (from their code e-mail).
fn customer_token(headers: &HeaderMap) -> Result<String, DispatchError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or_else(|| DispatchError::Forbidden("missing Authorization: Bearer <customer token>".into()))
}

async fn customer_code(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    let code = blocking(move || d.customer_code(&token, &id)).await?;
    Ok(Json(json!({ "code": code })).into_response())
}

#[derive(Deserialize)]
struct DelegateRequest {
    label: String,
}

async fn name_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body)?;
    let token = customer_token(&headers)?;
    let req: DelegateRequest = serde_json::from_slice(&body).map_err(|e| DispatchError::BadRequest(e.to_string()))?;
    let code = blocking(move || d.customer_name_delegate(&token, &id, &req.label)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "code": code }))).into_response())
}

async fn revoke_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, label)): Path<(String, String)>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    blocking(move || d.customer_revoke_delegate(&token, &id, &label)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn customer_qr(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    let qr = blocking(move || d.customer_qr(&token, &id)).await?;
    Ok(Json(json!({ "token": qr })).into_response())
}
