//! Operator routes: the carrier's staff. Once an operator key exists, each request must carry
//! one (`Authorization: Bearer dso_...`), checked by [`require_operator`] before any handler runs;
//! the handler gets the [`Operator`], and the store records the action with it.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::Errors;
use super::{
    AppState, MAX_BODY_BYTES, OPERATOR_BODY_DEADLINE, bearer, blocking, body_deadline, body_of, json_body, query_param,
};
use crate::epcis::Flagged;
use crate::error::DispatchError;
use crate::operators::Operator;
use crate::store::NewParcel;
use crate::validate;

pub(super) fn routes(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token))
        .routes(routes!(import_parcels))
        .routes(routes!(departed))
        .routes(routes!(reset))
        .routes(routes!(reissue))
        .routes(routes!(reassign))
        .routes(routes!(history))
        .routes(routes!(evidence))
        .routes(routes!(epcis_events))
        .routes(routes!(alerts))
        .routes(routes!(undelivered_mail))
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

/// A new enrolment token's route.
#[derive(Deserialize, ToSchema)]
struct TokenRequest {
    /// The route the enrolled phone will serve.
    #[schema(example = "R1")]
    route_id: String,
}

/// A one-time enrolment token, valid for `serve --enrolment-token-hours`.
#[derive(Serialize, ToSchema)]
struct TokenAnswer {
    token: String,
}

/// Creates a one-time token a phone enrols with (`Enrolment-Token` on `POST /v1/enrol`).
#[utoipa::path(post, path = "/v1/enrolment-tokens", tag = "operator", security(("operator" = [])),
    request_body = TokenRequest,
    responses((status = 201, description = "The token (shown once).", body = TokenAnswer), Errors))]
async fn create_token(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let req: TokenRequest = json_body(body, MAX_BODY_BYTES)?;
    let token = blocking(move || d.create_enrolment_token(&req.route_id, &by)).await?;
    Ok((StatusCode::CREATED, Json(TokenAnswer { token })).into_response())
}

/// How an import went.
#[derive(Serialize, ToSchema)]
struct ImportAnswer {
    /// Order lines imported (a parcel id or barcode that exists already refuses the import: 409).
    imported: usize,
    /// How many of them need a code at the door.
    need_code: usize,
}

/// Imports order lines as JSON (a list of parcels) or CSV (`Content-Type: text/csv`, the first
/// line naming the fields). All or nothing: one bad line refuses the import, naming it.
#[utoipa::path(post, path = "/v1/parcels", tag = "operator", security(("operator" = [])),
    request_body(
        description = "Up to 16 MiB of order lines.",
        content(
            (Vec<NewParcel> = "application/json"),
            (String = "text/csv", example = "parcel_id,barcode,route_id,stop_id,stop_sequence,delivery_date,time_zone,declared_value_cents,category,customer_email,address_hint,recipient_hint\nP2,BC2,R1,S2,2,2026-11-28,Europe/Berlin,2500,books,ben@example.com,,\n")
        )
    ),
    responses((status = 201, description = "Imported.", body = ImportAnswer), Errors))]
async fn import_parcels(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body, MAX_BODY_BYTES)?;
    let is_csv =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/csv"));
    let parcels = if is_csv { validate::csv_import(&body)? } else { validate::json_import(&body)? };
    let count = parcels.len();
    let coded = blocking(move || d.import_parcels(&parcels, &by)).await?;
    Ok((StatusCode::CREATED, Json(ImportAnswer { imported: count, need_code: coded })).into_response())
}

/// What a departure did.
#[derive(Serialize, ToSchema)]
struct DepartedAnswer {
    departed: bool,
    /// Whether a code was issued (and e-mailed to the customer, never returned here).
    code_issued: bool,
}

/// Marks a parcel as having left the warehouse: its code is issued and e-mailed to the customer,
/// and the phones of its route receive it in a delta.
#[utoipa::path(post, path = "/v1/parcels/{id}/departed", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "Departed.", body = DepartedAnswer), Errors))]
async fn departed(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let code = blocking(move || d.parcel_departed(&id, &by)).await?;
    // The code goes to the customer by e-mail, never back to the caller.
    Ok(Json(DepartedAnswer { departed: true, code_issued: code.is_some() }).into_response())
}

/// What a reset did.
#[derive(Serialize, ToSchema)]
struct ResetAnswer {
    /// Phones holding the parcel that receive the reset in a delta.
    devices_notified: usize,
}

/// Gives a locked parcel its attempts back (up to `serve --max-resets-per-parcel` times).
#[utoipa::path(post, path = "/v1/parcels/{id}/reset", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "Reset.", body = ResetAnswer), Errors))]
async fn reset(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    let devices_notified = blocking(move || d.reset_lockout(&id, &by)).await?;
    Ok(Json(ResetAnswer { devices_notified }).into_response())
}

/// What a reissue did.
#[derive(Serialize, ToSchema)]
struct ReissueAnswer {
    reissued: bool,
}

/// Replaces the customer's code with a new one, e-mailed to them (never returned here).
#[utoipa::path(post, path = "/v1/parcels/{id}/reissue", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "Reissued.", body = ReissueAnswer), Errors))]
async fn reissue(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, DispatchError> {
    blocking(move || d.reissue_code(&id, &by)).await?;
    // The new code goes to the customer by e-mail, never back to the operator.
    Ok(Json(ReissueAnswer { reissued: true }).into_response())
}

/// The route a parcel moves to.
#[derive(Deserialize, ToSchema)]
struct ReassignRequest {
    #[schema(example = "R2")]
    route_id: String,
}

/// What a reassignment did.
#[derive(Serialize, ToSchema)]
struct ReassignAnswer {
    reassigned: bool,
}

/// Moves a parcel to another route: the old route's phones drop it, the new route's receive it.
#[utoipa::path(post, path = "/v1/parcels/{id}/reassign", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    request_body = ReassignRequest,
    responses((status = 200, description = "Reassigned.", body = ReassignAnswer), Errors))]
async fn reassign(
    State(d): State<AppState>,
    Extension(by): Extension<Operator>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let req: ReassignRequest = json_body(body, MAX_BODY_BYTES)?;
    blocking(move || d.reassign(&id, &req.route_id, &by)).await?;
    Ok(Json(ReassignAnswer { reassigned: true }).into_response())
}

/// A receipt about the parcel with dispatch's verdict.
#[derive(Serialize, ToSchema)]
struct HistoryEntry {
    /// The receipt's body as the phone signed it (protocol `ReceiptBody`).
    #[schema(value_type = Object)]
    receipt: doorstep_core::protocol::ReceiptBody,
    /// `accepted`, `flagged` (held for review) or `duplicate`.
    #[schema(value_type = String, example = "accepted")]
    status: doorstep_core::protocol::ReceiptStatus,
    /// Why it was flagged (kept at dispatch, never told to the phone).
    reason: Option<String>,
}

/// A parcel's history.
#[derive(Serialize, ToSchema)]
struct History {
    receipts: Vec<HistoryEntry>,
    actions: Vec<crate::operators::Action>,
}

/// The receipts about a parcel with their verdicts, and the operator actions on it with who did
/// them. 404 for an id that is neither a parcel nor named by a receipt.
#[utoipa::path(get, path = "/v1/parcels/{id}/history", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "The history.", body = History), Errors))]
async fn history(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let (receipts, actions) = blocking(move || Ok((d.parcel_history(&id)?, d.parcel_actions(&id)?))).await?;
    let receipts =
        receipts.into_iter().map(|r| HistoryEntry { receipt: r.body, status: r.status, reason: r.reason }).collect();
    Ok(Json(History { receipts, actions }).into_response())
}

/// A self-contained evidence file about a parcel, for anyone to check offline with dispatch's
/// public keys (`GET /v1/dispatch-keys`, `doorstep verify-evidence`): every receipt that names the
/// parcel, signed by its phone, and dispatch's signed statement of each phone's key, the chain
/// links to its checkpoint and the verdicts. Other parcels' receipts appear only as hashes.
#[utoipa::path(get, path = "/v1/parcels/{id}/evidence", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "The parcel id.")),
    responses((status = 200, description = "The evidence file (JSON, byte for byte as signed: store it unchanged).",
               content_type = "application/json", body = Object), Errors))]
async fn evidence(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response, DispatchError> {
    let file = blocking(move || d.evidence(&id)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], file).into_response())
}

/// The stored hand-overs, collected returns and failed attempts as an EPCIS 2.0 JSON-LD document
/// (GS1): one `ObjectEvent` per receipt dispatch accepted (bizStep `accepting` for a hand-over,
/// `collecting` with disposition `returned` for a collected return, `arriving` with disposition
/// `in_transit` for a failed delivery attempt; none for an expiry or a failed collection; flagged
/// receipts only with `include_flagged`), a reversal as an `errorDeclaration`, parcels named by
/// their SSCC where the import gave one, doorstep's fields in the `ds:` extension, and each
/// `eventID` the CBV 2.0 event hash.
#[utoipa::path(get, path = "/v1/epcis/events", tag = "operator", security(("operator" = [])),
    params(("date" = Option<String>, Query, description = "Only the receipts about this delivery day's parcels (YYYY-MM-DD); every day's when left out."),
           ("include_flagged" = Option<bool>, Query, description = "Also the receipts dispatch holds for review, each marked `ds:verdict` `flagged` (default false: only what dispatch accepted).")),
    responses((status = 200, description = "The EPCIS document.", content_type = "application/ld+json", body = Object), Errors))]
async fn epcis_events(State(d): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, DispatchError> {
    let date: Option<chrono::NaiveDate> = query_param(query.as_deref(), "date", "YYYY-MM-DD")?;
    let include: Option<bool> = query_param(query.as_deref(), "include_flagged", "true or false")?;
    let flagged = if include == Some(true) { Flagged::Included } else { Flagged::Left };
    let (document, _) = blocking(move || d.epcis_events(date, flagged)).await?;
    Ok(([(header::CONTENT_TYPE, "application/ld+json")], document).into_response())
}

/// The receipts dispatch flagged for review, newest first (at most 500): each also went to the log
/// when it was flagged.
#[utoipa::path(get, path = "/v1/alerts", tag = "operator", security(("operator" = [])),
    responses((status = 200, description = "The alerts.", body = Vec<crate::store::Alert>), Errors))]
async fn alerts(State(d): State<AppState>) -> Result<Response, DispatchError> {
    let alerts = blocking(move || d.alerts()).await?;
    Ok(Json(alerts).into_response())
}

/// Customer e-mail that failed at least once and is kept (oldest first, at most 500): why, and
/// whether it will be tried again. Never the message itself, which holds the code.
#[utoipa::path(get, path = "/v1/mail/undelivered", tag = "operator", security(("operator" = [])),
    responses((status = 200, description = "The undelivered e-mail.", body = Vec<crate::store::Undelivered>), Errors))]
async fn undelivered_mail(State(d): State<AppState>) -> Result<Response, DispatchError> {
    let mail = blocking(move || d.undelivered_mail()).await?;
    Ok(Json(mail).into_response())
}
