//! Operator routes: the carrier's staff. Once an operator key exists, each request must carry
//! one (`Authorization: Bearer dso_...`), checked by [`require_operator`] before any handler runs;
//! the handler gets the [`Operator`], and the store records the action with it.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, MAX_BODY_BYTES, OPERATOR_BODY_DEADLINE, bearer, blocking, body_deadline, body_of, json_body};
use crate::error::DispatchError;
use crate::operators::Operator;
use crate::store::NewParcel;

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/enrolment-tokens", post(create_token))
        .route("/v1/parcels", post(import_parcels))
        .route("/v1/parcels/{id}/departed", post(departed))
        .route("/v1/parcels/{id}/reset", post(reset))
        .route("/v1/parcels/{id}/reissue", post(reissue))
        .route("/v1/parcels/{id}/reassign", post(reassign))
        .route("/v1/parcels/{id}/history", get(history))
        .route_layer(middleware::from_fn_with_state(state, require_operator))
        .layer(body_deadline(OPERATOR_BODY_DEADLINE))
}

/// Lets the request through with its [`Operator`], or answers 401.
async fn require_operator(State(d): State<AppState>, mut request: Request, next: Next) -> Response {
    let presented = bearer(request.headers());
    let peer_is_loopback =
        request.extensions().get::<ConnectInfo<SocketAddr>>().is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    let relayed = RELAY_HEADERS.iter().any(|h| request.headers().contains_key(*h));
    // An absolute-form request line (`GET http://host/...`) names its own host: a proxy's.
    let direct_local =
        peer_is_loopback && !relayed && request.uri().authority().is_none() && names_loopback(request.headers());
    match blocking(move || d.authenticate_operator(presented.as_deref(), direct_local)).await {
        Ok(operator) => {
            request.extensions_mut().insert(operator);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Headers a proxy, a tunnel's front end or a browser adds: a request carrying one came from
/// somewhere else than a program on this machine, whatever its peer address.
const RELAY_HEADERS: [&str; 25] = [
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-server",
    "x-original-forwarded-for",
    "x-original-host",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-ray",
    "fastly-client-ip",
    "x-envoy-external-address",
    "tailscale-user-login",
    "via",
    "origin",
    "referer",
    "sec-fetch-site",
    "sec-fetch-mode",
];

/// Whether the request names this machine (`Host: localhost`, `127.0.0.1` or `[::1]`, any port):
/// a web page that rebinds its own name to 127.0.0.1, or a proxy passing on the public name, does
/// not.
fn names_loopback(headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next().and_then(|v| v.to_str().ok()), hosts.next()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    matches!(name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1")
}

#[derive(Deserialize)]
struct TokenRequest {
    route_id: String,
}

async fn create_token(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let req: TokenRequest = json_body(body, MAX_BODY_BYTES)?;
    let token = blocking(move || d.create_enrolment_token(&req.route_id, &by)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response())
}

/// Order lines as JSON (a list) or CSV (`Content-Type: text/csv`, a header row naming the fields).
async fn import_parcels(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body, MAX_BODY_BYTES)?;
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
    let coded = blocking(move || d.import_parcels(&parcels, &by)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "imported": count, "need_code": coded }))).into_response())
}

async fn departed(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let code = blocking(move || d.parcel_departed(&id, &by)).await?;
    // The code goes to the customer by e-mail, never back to the caller.
    Ok(Json(json!({ "departed": true, "code_issued": code.is_some() })).into_response())
}

async fn reset(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let devices = blocking(move || d.reset_lockout(&id, &by)).await?;
    Ok(Json(json!({ "devices_notified": devices })).into_response())
}

async fn reissue(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    blocking(move || d.reissue_code(&id, &by)).await?;
    // The new code goes to the customer by e-mail, never back to the operator.
    Ok(Json(json!({ "reissued": true })).into_response())
}

#[derive(Deserialize)]
struct ReassignRequest {
    route_id: String,
}

async fn reassign(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let req: ReassignRequest = json_body(body, MAX_BODY_BYTES)?;
    blocking(move || d.reassign(&id, &req.route_id, &by)).await?;
    Ok(Json(json!({ "reassigned": true })).into_response())
}

/// The receipts about a parcel with their verdicts, and the operator actions on it with who did them.
async fn history(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let (receipts, actions) = blocking(move || Ok((d.parcel_history(&id)?, d.parcel_actions(&id)?))).await?;
    let entries: Vec<_> =
        receipts.into_iter().map(|r| json!({ "receipt": r.body, "status": r.status, "reason": r.reason })).collect();
    Ok(Json(json!({ "receipts": entries, "actions": actions })).into_response())
}
