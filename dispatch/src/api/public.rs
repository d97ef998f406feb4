//! Routes anyone may call: the public keys dispatch signs with, which is all a reader of an
//! evidence file (or of any other signed message of dispatch's) needs to check it.

use axum::Json;
use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::limits::{Limiter, limit};
use super::openapi::Errors;
use super::{AppState, answer_deadline};
use crate::error::DispatchError;

pub(super) fn routes(limiter: Limiter) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dispatch_keys))
        .route_layer(middleware::from_fn_with_state(limiter, limit))
        .layer(answer_deadline())
}

/// A dispatch public key (Ed25519, 32 bytes as unpadded URL-safe base64).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape `VerifyingKey` serialises to
struct PublicKey {
    #[schema(example = "dispatch-1")]
    key_id: String,
    #[schema(example = "x3kYVtZ8QmZ3bq0sXoVQ4PqZ6u1nH7R2cE9yW5aT0Lk")]
    public: String,
}

/// The keys dispatch signs with (during a rotation, the next one too). Pass this document to
/// `doorstep verify-evidence --keys FILE`, or to `verifyEvidence` in the app libraries.
#[utoipa::path(get, path = "/v1/dispatch-keys", tag = "public",
    responses((status = 200, description = "The public keys.", body = Vec<PublicKey>), Errors))]
async fn dispatch_keys(State(d): State<AppState>) -> Result<Response, DispatchError> {
    Ok(Json(d.public_keys()).into_response())
}
