//! Customer routes: a customer's own parcels, opened with the token from their code e-mail.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::json;

use super::limits::{Limiter, limit};
use super::{AppState, SMALL_BODY_DEADLINE, answer_deadline, bearer, blocking, body_deadline, json_body};
use crate::error::DispatchError;

/// A customer's request body is one small JSON object (a delegate's label).
const CUSTOMER_BODY_BYTES: usize = 4 * 1024;

pub(super) fn routes(limiter: Limiter) -> Router<AppState> {
    Router::new()
        .route("/v1/customer/parcels/{id}/code", get(customer_code))
        .route("/v1/customer/parcels/{id}/delegates", post(name_delegate))
        .route("/v1/customer/parcels/{id}/delegates/{label}", delete(revoke_delegate))
        .route("/v1/customer/parcels/{id}/qr", get(customer_qr))
        .route_layer(middleware::from_fn_with_state(limiter, limit))
        .layer(DefaultBodyLimit::max(CUSTOMER_BODY_BYTES))
        .layer(body_deadline(SMALL_BODY_DEADLINE))
        .layer(answer_deadline())
}

/// The customer's bearer token (from their code e-mail).
fn customer_token(headers: &HeaderMap) -> Result<String, DispatchError> {
    bearer(headers).ok_or_else(|| DispatchError::Forbidden("missing Authorization: Bearer <customer token>".into()))
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
    let token = customer_token(&headers)?;
    let req: DelegateRequest = json_body(body, CUSTOMER_BODY_BYTES)?;
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
