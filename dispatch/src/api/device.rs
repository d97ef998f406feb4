//! Device routes: enrolment with a one-time token, then manifests and uploads, each signed by the
//! device's key (`Device-Signature`, checked by the store against the enrolled key and the clock)
//! before anything else is done for it. Bodies are capped per route: an enrolment request at
//! 8 KiB, an upload at `MAX_BATCH_BYTES` (the most a phone ever builds).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, middleware};
use doorstep_core::device::MAX_HELD_DAYS;
use std::convert::Infallible;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use chrono::NaiveDate;
use doorstep_core::protocol::{MAX_BATCH_BYTES, REQUEST_HEADER};

use super::limits::{Limiter, limit};
use super::openapi::Errors;
use super::{AppState, SMALL_BODY_DEADLINE, answer_deadline, blocking, body_deadline, body_of, octets, query_param};
use crate::error::DispatchError;
use crate::places::Places;
use crate::store::VerifiedRequest;

/// Uploads dispatch reads at once; more wait their turn (headers read, bodies not).
const UPLOADS_AT_ONCE: usize = 16;

/// An enrolment request is a few hundred bytes.
const ENROL_BODY_BYTES: usize = 8 * 1024;

/// Each device's own request budget, drawn only once its signature verified: a stranger who
/// knows a device id cannot spend that phone's budget, and made-up ids open no budgets.
#[derive(Clone)]
struct EachDevice {
    requests: Limiter,
    full_manifests: Limiter,
}

pub(super) fn routes(
    enrolment: Limiter,
    devices: Limiter,
    each_device: Limiter,
    full_manifests: Limiter,
) -> OpenApiRouter<AppState> {
    let enrolling = OpenApiRouter::new()
        .routes(routes!(enrol))
        .route_layer(middleware::from_fn_with_state(enrolment, limit))
        .layer(DefaultBodyLimit::max(ENROL_BODY_BYTES))
        .layer(body_deadline(SMALL_BODY_DEADLINE));
    let (schemas, paths, uploading) = routes!(upload);
    let uploading = uploading
        // Its body's clock starts once the upload has its turn (inside the limits below).
        .layer::<_, Infallible>(body_deadline(UPLOAD_BODY_DEADLINE))
        // Uploads read at once, in all: their bodies are held while verified (2 MiB at most).
        .layer::<_, Infallible>(tower::limit::ConcurrencyLimitLayer::new(UPLOADS_AT_ONCE))
        // ... and per device id: a stranger who knows one id holds at most its two places.
        .layer::<_, Infallible>(middleware::from_fn_with_state(
            Places::new(None, Some(UPLOADS_PER_DEVICE)),
            one_device_at_a_time,
        ));
    OpenApiRouter::new()
        .routes(routes!(manifest))
        .routes((schemas, paths, uploading))
        .route_layer(middleware::from_fn_with_state(devices, limit))
        .layer(Extension(EachDevice { requests: each_device, full_manifests }))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .layer(answer_deadline())
        .merge(enrolling)
}

/// How long an upload's body may take once it has its turn.
const UPLOAD_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Uploads in flight per device id (as the path spells it).
const UPLOADS_PER_DEVICE: usize = 2;

/// Lets an upload wait for a place among [`UPLOADS_AT_ONCE`] only while its device has fewer than
/// [`UPLOADS_PER_DEVICE`] in flight; 429 otherwise (a phone uploads one batch at a time). The
/// place is given back however the upload ends, a dropped connection or a deadline included.
async fn one_device_at_a_time(State(places): State<Arc<Places<String>>>, request: Request, next: Next) -> Response {
    let device = request.uri().path().split('/').nth(3).unwrap_or_default().to_owned();
    let Some(_place) = places.take(device) else {
        return DispatchError::TooManyRequests(5).into_response();
    };
    next.run(request).await
}

/// Verifies the request's `Device-Signature`, then draws on that device's own budget. The store
/// records the request in the transaction that answers it (each is answered once).
async fn verified(
    d: &AppState,
    each: &EachDevice,
    id: &str,
    headers: &HeaderMap,
    method: &'static str,
    path: String,
    body: Bytes,
) -> Result<VerifiedRequest, DispatchError> {
    let (d, id2, signature) = (d.clone(), id.to_owned(), device_signature(headers));
    let request = blocking(move || d.verify_device_request(&id2, signature.as_deref(), method, &path, &body)).await?;
    each.requests.check(id)?;
    Ok(request)
}

/// Enrols a phone: the body is the device's enrolment request (core's `enrolment_request`), the
/// answer its enrolment bundle, with the device secret (so only over TLS off loopback).
#[utoipa::path(post, path = "/v1/enrol", tag = "device", security(("enrolment" = [])),
    request_body(content = Object, content_type = "application/json", description = "The enrolment request, up to 8 KiB."),
    responses((status = 200, description = "The enrolment bundle.", content_type = "application/json", body = Object), Errors))]
async fn enrol(
    State(d): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DispatchError> {
    let body = body_of(body, ENROL_BODY_BYTES)?;
    let token = headers
        .get("enrolment-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DispatchError::Unauthorized("missing Enrolment-Token header".into()))?
        .to_owned();
    Ok(octets(blocking(move || d.enrol(&token, &body)).await?))
}

/// `?date=YYYY-MM-DD[&since=N][&held=D1,D2]`: the next manifest for the device (204 when it is up
/// to date). Signed by the device (`Device-Signature`).
#[utoipa::path(get, path = "/v1/devices/{id}/manifest", tag = "device", security(("device" = [])),
    params(
        ("id" = String, Path, description = "The device id."),
        ("date" = chrono::NaiveDate, Query, description = "The delivery day, YYYY-MM-DD."),
        ("since" = Option<u64>, Query, description = "The manifest sequence the phone holds: what the journal holds after it (a delta, or a full manifest it did not apply), or a new full manifest when nothing continues it."),
        ("held" = Option<String>, Query, description = "The delivery days the phone holds, comma-separated YYYY-MM-DD (at most 3): their changes reach it as deltas. Without it (earlier builds) only the day asked for.")
    ),
    responses(
        (status = 200, description = "A signed manifest envelope (full or delta).", content_type = "application/json", body = Object),
        (status = 204, description = "The phone is up to date."),
        Errors
    ))]
async fn manifest(
    State(d): State<AppState>,
    Extension(each): Extension<EachDevice>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, DispatchError> {
    let date: NaiveDate = query_param(query.as_deref(), "date", "YYYY-MM-DD")?
        .ok_or_else(|| DispatchError::BadRequest("missing ?date=YYYY-MM-DD".into()))?;
    let since: Option<u64> = query_param(query.as_deref(), "since", "a sequence number")?;
    let held = held_days(query.as_deref())?;
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let request = verified(&d, &each, &id, &headers, "GET", path, Bytes::new()).await?;
    // Drawn where dispatch is about to build a full manifest, whatever `since` says.
    let budget = each.full_manifests;
    let answer =
        blocking(move || d.manifest_or_refuse_full(&request, date, since, held.as_deref(), &|| budget.check(&id)));
    Ok(match answer.await? {
        Some(envelope) => octets(envelope),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `held=D1,D2,…`: the days a phone holds (at most [`MAX_HELD_DAYS`]).
fn held_days(query: Option<&str>) -> Result<Option<Vec<NaiveDate>>, DispatchError> {
    let Some(list) = query_param::<String>(query, "held", "a list of dates")? else {
        return Ok(None);
    };
    let days: Vec<NaiveDate> = list
        .split(',')
        .map(|d| {
            d.parse().map_err(|_| DispatchError::BadRequest("held must be dates YYYY-MM-DD, comma-separated".into()))
        })
        .collect::<Result<_, _>>()?;
    if days.len() > MAX_HELD_DAYS {
        return Err(DispatchError::BadRequest(format!(
            "held names {} days; a phone holds at most {MAX_HELD_DAYS}",
            days.len()
        )));
    }
    Ok(Some(days))
}

fn device_signature(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// An upload: the header is checked before the body is read (a stranger's upload is refused
/// without being held in memory), then the signature over the body.
#[utoipa::path(post, path = "/v1/devices/{id}/receipts", tag = "device", security(("device" = [])),
    params(("id" = String, Path, description = "The device id.")),
    request_body(content = Object, content_type = "application/json", description = "A batch of signed receipts (core's `next_batch`), up to 2 MiB."),
    responses((status = 200, description = "The signed acknowledgement (core's `apply_ack`).", content_type = "application/json", body = Object), Errors))]
async fn upload(
    State(d): State<AppState>,
    Extension(each): Extension<EachDevice>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    request: Request,
) -> Result<Response, DispatchError> {
    let (d2, id2, signature) = (d.clone(), id.clone(), device_signature(&headers));
    blocking(move || d2.check_device_request_header(&id2, signature.as_deref())).await?;
    let body = body_of(Bytes::from_request(request, &()).await, MAX_BATCH_BYTES)?;
    let request = verified(&d, &each, &id, &headers, "POST", uri.path().to_owned(), body.clone()).await?;
    Ok(octets(blocking(move || d.upload_verified(&request, &body)).await?))
}
