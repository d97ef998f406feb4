//! Customer routes: a customer's own parcels, opened with the token from their code e-mail.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::limits::{Limiter, limit};
use super::openapi::Errors;
use super::{AppState, SMALL_BODY_DEADLINE, answer_deadline, bearer, blocking, body_deadline, json_body};
use crate::error::DispatchError;

/// A customer's request body is one small JSON object (a delegate's label).
const CUSTOMER_BODY_BYTES: usize = 4 * 1024;

pub(super) fn routes(limiter: Limiter) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customer_code))
        .routes(routes!(name_delegate))
        .routes(routes!(revoke_delegate))
        .routes(routes!(customer_qr))
        .route_layer(middleware::from_fn_with_state(limiter, limit))
        .layer(DefaultBodyLimit::max(CUSTOMER_BODY_BYTES))
        .layer(body_deadline(SMALL_BODY_DEADLINE))
        .layer(answer_deadline())
}

/// The customer's bearer token (from their code e-mail).
fn customer_token(headers: &HeaderMap) -> Result<String, DispatchError> {
    bearer(headers).ok_or_else(|| DispatchError::Unauthorized("missing Authorization: Bearer <customer token>".into()))
}

/// The customer's 6-digit code, to give in person at the door (never over the phone); `null`
/// until the parcel has left the warehouse.
#[derive(Serialize, ToSchema)]
struct CodeAnswer {
    #[schema(example = "493817")]
    code: Option<String>,
}

/// A delegate's 6-digit code, for the customer to pass on to them.
#[derive(Serialize, ToSchema)]
struct DelegateAnswer {
    #[schema(example = "805214")]
    code: String,
}

/// The customer's code for their parcel.
#[utoipa::path(get, path = "/v1/customer/parcels/{id}/code", tag = "customer", security(("customer" = [])),
    params(("id" = String, Path, description = "The parcel id (from the e-mail).")),
    responses((status = 200, description = "The code.", body = CodeAnswer), Errors))]
async fn customer_code(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    let code = blocking(move || d.customer_code(&token, &id)).await?;
    Ok(Json(CodeAnswer { code }).into_response())
}

/// A trusted person the customer names to receive the parcel.
#[derive(Deserialize, ToSchema)]
struct DelegateRequest {
    /// 1 to 64 bytes with a letter or digit, no spaces around it (`serve --max-delegates` per parcel).
    #[schema(min_length = 1, max_length = 64, example = "Neighbour Jonas")]
    label: String,
}

/// Names a delegate: they get a code of their own, returned here for the customer to pass on.
#[utoipa::path(post, path = "/v1/customer/parcels/{id}/delegates", tag = "customer", security(("customer" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    request_body = DelegateRequest,
    responses((status = 201, description = "The delegate's code.", body = DelegateAnswer), Errors))]
async fn name_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    let req: DelegateRequest = json_body(body, CUSTOMER_BODY_BYTES)?;
    let code = blocking(move || d.customer_name_delegate(&token, &id, &req.label)).await?;
    Ok((StatusCode::CREATED, Json(DelegateAnswer { code })).into_response())
}

/// Revokes a delegate's code; the route's phones receive it in a delta.
#[utoipa::path(delete, path = "/v1/customer/parcels/{id}/delegates/{label}", tag = "customer",
    security(("customer" = [])),
    params(("id" = String, Path, description = "The parcel id."), ("label" = String, Path, description = "The delegate.")),
    responses((status = 204, description = "Revoked."), Errors))]
async fn revoke_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, label)): Path<(String, String)>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    blocking(move || d.customer_revoke_delegate(&token, &id, &label)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A QR token dispatch signed, for the driver's phone to scan instead of hearing a code.
#[derive(Serialize, ToSchema)]
struct QrAnswer {
    token: String,
}

/// A signed QR token for the customer's parcel (single use, valid for the delivery day).
#[utoipa::path(get, path = "/v1/customer/parcels/{id}/qr", tag = "customer", security(("customer" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "The token.", body = QrAnswer), Errors))]
async fn customer_qr(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let token = customer_token(&headers)?;
    let qr = blocking(move || d.customer_qr(&token, &id)).await?;
    Ok(Json(QrAnswer { token: qr }).into_response())
}
