//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` descriptions
//! and served at `GET /openapi.json`. Every route is registered through utoipa-axum's
//! `routes!`, which takes the path and method from the description itself: a route cannot be
//! served without being described, nor described without being served. What every operation
//! may answer besides its success ([`Errors`]) is described here once.

use std::collections::BTreeMap;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// The body of every 4xx and 5xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The kind of error, one per status: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `timeout`, `conflict`, `too_large`,
    /// `too_many_requests`, `internal`.
    #[schema(example = "bad_request")]
    pub error: String,
    /// What was wrong, in words; for a 5xx only that nothing was changed (the details are logged).
    #[schema(example = "parcel \"P1\": delivery_date: must be YYYY-MM-DD")]
    pub detail: String,
}

/// The error answers any operation may give, each with an [`ErrorBody`].
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        [
            ("400", "The request is malformed or a value is out of its limits; `detail` names it. Nothing changed."),
            ("401", "Missing or refused credentials (operator key, device signature)."),
            ("403", "Refused: a used or expired enrolment token."),
            ("404", "No such parcel, device, delegate or route."),
            ("408", "The body took too long to arrive, or the answer took too long."),
            ("409", "The request conflicts with the parcel's state (say, a reset of a parcel not locked)."),
            ("413", "The body is over the route's limit."),
            ("429", "Too many requests from this address or for this device: see `Retry-After`."),
            ("500", "Dispatch failed; nothing was changed. Try again."),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            let response = ResponseBuilder::new().description(description).content("application/json", body).build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// The document's title, description and security schemes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "doorstep dispatch",
        description = "Secure delivery with a one-time code: the reference dispatch service. \
            Operators import parcels and run the day; phones enrol, fetch signed manifests and upload \
            signed receipts; customers open their parcel with the link from their code e-mail. \
            See docs/dispatch.md.",
        license(name = "see the repository")
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operator", description = "The carrier's staff: behind an operator key once one exists."),
        (name = "device", description = "Phones: enrolment with a one-time token, then signed requests."),
        (name = "customer", description = "A customer's own parcel, with the link from the code e-mail."),
        (name = "public", description = "Anyone: the public keys dispatch signs with.")
    )
)]
pub struct Document;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build())
        };
        components.add_security_scheme(
            "operator",
            bearer("An operator key, `dso_…` (`doorstep operator add`). Without any key, loopback callers only."),
        );
        components
            .add_security_scheme("customer", bearer("The customer token from the link in the parcel's code e-mail."));
        components.add_security_scheme(
            "device",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Device-Signature",
                "The device's signature over method, path, time and body (core's `sign_request`).",
            ))),
        );
        components.add_security_scheme(
            "enrolment",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Enrolment-Token",
                "A one-time enrolment token (POST /v1/enrolment-tokens).",
            ))),
        );
    }
}

/// `GET /openapi.json`: this document.
pub async fn serve(document: std::sync::Arc<OpenApi>) -> Response {
    Json(&*document).into_response()
}
