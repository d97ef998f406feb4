//! The pages `doorstep serve` renders for people, server-side and without script: the customer's
//! page of one parcel (opened from the link in the code e-mail) and the operator's console. Every
//! answer carries `Cache-Control: no-store`, a Content-Security-Policy that allows no script, no
//! frame and no outside resource, and a Referrer-Policy (`no-referrer` on the customer's page,
//! `same-origin` on the console); forms post back to the same origin. Nothing secret goes into a URL but the customer link itself.
//!
//! - [`customer`]: status, code (announced digit by digit), QR code (SVG), the rules, delegates.
//! - [`console`]: routes and phones, parcels by state, flagged receipts first, a parcel's history,
//!   reset / reissue / reassign after a confirmation.
//! - [`text`]: the words, in English and German.

mod console;
mod customer;
mod text;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;

/// The largest form a page accepts (a delegate's name, an operator key, a route id).
pub const MAX_FORM_BYTES: usize = 4 * 1024;

/// The pages' routes (merged into the service's router by `api`, behind the customer routes' rate
/// limit, body size and deadlines).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/parcel/{id}/{token}", get(customer::page))
        .route("/parcel/{id}/{token}/delegates", axum::routing::post(customer::name_delegate))
        .route("/parcel/{id}/{token}/delegates/revoke", axum::routing::post(customer::revoke_delegate))
        .merge(console::router())
        .layer(middleware::from_fn(page_headers))
}

/// The pages' static files (no rate limit: a page load fetches them too).
pub fn assets() -> Router<AppState> {
    Router::new().route("/assets/doorstep.css", get(stylesheet)).layer(middleware::from_fn(page_headers))
}

/// What every page answer carries.
async fn page_headers(request: Request, next: Next) -> Response {
    // The customer link holds its token: no referrer ever leaves its page. The console's forms
    // need their origin (a browser says `Origin: null` under no-referrer, which the console must
    // refuse, since a sandboxed page elsewhere says the same).
    let referrer = if request.uri().path().starts_with("/console") { "same-origin" } else { "no-referrer" };
    let mut response = next.run(request).await;
    response.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

const STYLESHEET: &str = include_str!("doorstep.css");

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

/// `text` as one URL path segment (`/`, `#`, `?`, `%` and the like percent-encoded).
pub(crate) fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// `text` with the five characters that mean something in HTML escaped.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `body` is HTML already escaped where it holds data.
fn page(status: StatusCode, lang: &str, title: &str, body: &str) -> Response {
    page_in(status, lang, title, body, "")
}

/// [`page`] with a class on `<main>` (`wide` for the console's tables).
fn page_in(status: StatusCode, lang: &str, title: &str, body: &str, class: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/doorstep.css\"></head>\
         <body><main class=\"{class}\">{body}</main></body></html>\n",
        title = esc(title),
    );
    (status, Html(html)).into_response()
}

/// After a form: back to `to` (the page shows the result).
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}
