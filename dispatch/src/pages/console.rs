//! The operator's console (`/console`), behind an operator key: the key is entered once on
//! `/console/login`, which opens a session (`operators.rs`: 12 hours, ended by logging out or by
//! revoking the key) whose random token is kept in an `HttpOnly`, `SameSite=Strict` cookie scoped
//! to `/console` (never in a URL; the key never sits in the browser). It shows the flagged receipts with their reasons first, then each route's
//! phones and parcels by state for a day, and a parcel's history. Reset, reissue and reassign each
//! ask for a confirmation on a page of their own and are audited by the store like the API's.
//! A form posted from another origin is refused.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::{esc, page, see_other, segment};
use crate::api::{AppState, blocking};
use crate::error::DispatchError;
use crate::operators::Operator;
use crate::store::{ConsoleParcel, ParcelStatus};

const COOKIE: &str = "doorstep_operator";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", axum::routing::post(logout))
        .route("/console/parcels/{id}", get(parcel))
        .route("/console/parcels/{id}/{action}", get(confirm).post(act))
}

/// The operator whose session the console's cookie holds, or the login page.
async fn operator(d: &AppState, headers: &HeaderMap) -> Result<Operator, Response> {
    let session = cookie(headers);
    let d = d.clone();
    // A browser is never "this machine" to the API's loopback rule: the console always needs a key.
    blocking(move || d.console_operator(session.as_deref())).await.map_err(|_| see_other("/console/login"))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .map(str::to_owned)
}

/// A form posted from another origin (a page elsewhere driving the operator's browser) is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser's cross-site form (those carry Origin)
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

fn console_page(title: &str, body: &str) -> Response {
    let body = format!(
        "<nav><a href=\"/console\">Console</a> · <form class=\"inline\" method=\"post\" action=\"/console/logout\">\
         <button>Log out</button></form></nav>{body}"
    );
    super::page_in(StatusCode::OK, "en", title, &body, "wide")
}

/// An error as a page: what was wrong with the request, or (for a failure of dispatch's own, which
/// goes to the log) only that something failed.
fn error_page(e: &DispatchError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let said = if status.is_server_error() {
        eprintln!("console: {e}");
        "Something went wrong on dispatch's side; the log says what.".to_owned()
    } else {
        e.to_string()
    };
    page(
        status,
        "en",
        "Console",
        &format!("<section><p>{}</p><p><a href=\"/console\">Back</a></p></section>", esc(&said)),
    )
}

async fn login_form() -> Response {
    page(
        StatusCode::OK,
        "en",
        "Operator console",
        "<h1>Operator console</h1><section><form method=\"post\" action=\"/console/login\">\
         <p><label>Operator key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" required></label></p>\
         <p><button>Log in</button></p></form><p class=\"muted\">An operator key comes from \
         <code>doorstep operator add</code>.</p></section>",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(State(d): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    if !same_origin(&headers) {
        return error_page(&DispatchError::Forbidden("a form from another site".into()));
    }
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &()).await else {
        return error_page(&DispatchError::BadRequest("the form is incomplete".into()));
    };
    let key = form.key.trim().to_owned();
    let Ok(session) = blocking(move || d.open_console_session(&key)).await else {
        return page(
            StatusCode::UNAUTHORIZED,
            "en",
            "Operator console",
            "<section><p>That key is not valid.</p><p><a href=\"/console/login\">Try again</a></p></section>",
        );
    };
    // Secure unless served over plain HTTP on this machine (a browser keeps Secure cookies only
    // from https, and from http://localhost).
    let plain_local = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| h.starts_with("127.0.0.1") || h.starts_with("localhost") || h.starts_with("[::1]"));
    let secure = if plain_local { "" } else { "; Secure" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console".to_owned()),
            (header::SET_COOKIE, format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/console{secure}")),
        ],
    )
        .into_response()
}

async fn logout(State(d): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return error_page(&DispatchError::Forbidden("a form from another site".into()));
    }
    if let Some(session) = cookie(&headers) {
        let _ = blocking(move || d.close_console_session(&session)).await;
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_owned()),
            (header::SET_COOKIE, format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0")),
        ],
    )
        .into_response()
}

struct DayQuery {
    date: Option<NaiveDate>,
}

/// How a parcel stands, in a word or two.
fn state(status: &ParcelStatus) -> String {
    match status {
        ParcelStatus::Preparing => "at the warehouse".into(),
        ParcelStatus::OnItsWay => "on its way".into(),
        ParcelStatus::HandedOver { holder, .. } => match holder {
            Some(h) => format!("handed over ({})", h.to_key()),
            None => "handed over (no code)".into(),
        },
        ParcelStatus::Collected { holder, .. } => match holder {
            Some(h) => format!("return collected ({})", h.to_key()),
            None => "return collected (no code)".into(),
        },
        ParcelStatus::AttemptFailed { .. } => "attempt failed".into(),
        ParcelStatus::Locked => "locked".into(),
        ParcelStatus::Expired => "expired".into(),
    }
}

async fn overview(State(d): State<AppState>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    // `?date=YYYY-MM-DD`: another day than today (UTC); a date that is not one is said, not
    // silently replaced by today.
    let asked = uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("date=")));
    if let Err(login) = operator(&d, &headers).await {
        return login;
    }
    let q = match asked.map(str::parse::<NaiveDate>).transpose() {
        Ok(date) => DayQuery { date },
        Err(_) => return error_page(&DispatchError::BadRequest("the date must be YYYY-MM-DD".into())),
    };
    let loaded = blocking(move || {
        let date = match q.date {
            Some(date) => date,
            None => d.now()?.date_naive(),
        };
        let (phones, parcels) = d.console_day(date)?;
        Ok((date, d.alerts()?, phones, parcels))
    })
    .await;
    let (date, alerts, phones, parcels) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let mut html = format!("<h1>Operator console — {date}</h1>");
    html.push_str("<section class=\"flagged\"><h2>Flagged receipts</h2>");
    if alerts.is_empty() {
        html.push_str("<p class=\"muted\">None.</p>");
    } else {
        html.push_str("<table><tr><th>when (UTC)</th><th>phone</th><th>parcels</th><th>why</th></tr>");
        for a in &alerts {
            let at = chrono::DateTime::from_timestamp_millis(a.at_ms).map(|t| t.format("%Y-%m-%d %H:%M").to_string());
            let links: Vec<String> = a
                .parcels
                .iter()
                .map(|p| format!("<a href=\"/console/parcels/{}\">{}</a>", esc(&segment(p)), esc(p)))
                .collect();
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                at.unwrap_or_default(),
                esc(&a.device_id),
                links.join(", "),
                esc(&a.reason)
            ));
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
    let mut routes: Vec<&str> = parcels.iter().map(|p| p.route_id.as_str()).collect();
    routes.dedup();
    if routes.is_empty() {
        html.push_str("<section><p class=\"muted\">No parcels on this day.</p></section>");
    }
    for route in routes {
        let on_route: Vec<&ConsoleParcel> = parcels.iter().filter(|p| p.route_id == route).collect();
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for p in &on_route {
            *counts.entry(state(&p.status)).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        html.push_str(&format!("<section><h2>Route {}</h2><p>{}</p>", esc(route), esc(&counts.join(" · "))));
        let phones: Vec<String> = phones
            .iter()
            .filter(|p| p.route_id == route)
            .map(|p| format!("{} (manifest {}; holds {})", esc(&p.device_id), p.manifest_seq, esc(&p.days.join(", "))))
            .collect();
        html.push_str(&format!(
            "<p>Phones: {}</p>",
            if phones.is_empty() { "none enrolled".to_owned() } else { phones.join("; ") }
        ));
        html.push_str("<table><tr><th>parcel</th><th>stop</th><th>code</th><th>state</th></tr>");
        for p in on_route {
            html.push_str(&format!(
                "<tr><td><a href=\"/console/parcels/{4}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
                esc(&p.parcel_id),
                p.stop_seq,
                if p.needs_code { "yes" } else { "no" },
                esc(&state(&p.status)),
                esc(&segment(&p.parcel_id)),
            ));
        }
        html.push_str("</table></section>");
    }
    console_page("Operator console", &html)
}

async fn parcel(State(d): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(login) = operator(&d, &headers).await {
        return login;
    }
    let key = id.clone();
    let loaded = blocking(move || Ok((d.parcel_status(&key)?, d.parcel_history(&key)?, d.parcel_actions(&key)?))).await;
    let (status, receipts, actions) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let id_html = esc(&id);
    let id_url = esc(&segment(&id));
    let mut html = format!("<h1>Parcel {id_html}</h1><section><p class=\"status\">{}</p>", esc(&state(&status)));
    for (action, label) in [("reset", "Reset attempts…"), ("reissue", "Reissue the code…"), ("reassign", "Reassign…")]
    {
        html.push_str(&format!("<a href=\"/console/parcels/{id_url}/{action}\"><button>{label}</button></a> "));
    }
    html.push_str("</section><section><h2>Receipts</h2><table><tr><th>trusted time</th><th>phone</th><th>event</th><th>verdict</th></tr>");
    for r in &receipts {
        let event =
            serde_json::to_value(r.body.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let verdict =
            serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        html.push_str(&format!(
            "<tr{}><td>{}</td><td>{} #{}</td><td>{}{}</td><td>{}{}</td></tr>",
            if verdict == "flagged" { " class=\"flagged\"" } else { "" },
            r.body.trusted_time.format("%Y-%m-%d %H:%M:%S"),
            esc(&r.body.device_id),
            r.body.seq,
            esc(&event),
            r.body.holder.as_ref().map(|h| format!(" ({})", esc(&h.to_key()))).unwrap_or_default(),
            esc(&verdict),
            r.reason.as_ref().map(|w| format!(": {}", esc(w))).unwrap_or_default(),
        ));
    }
    html.push_str("</table></section><section><h2>Operator actions</h2><table><tr><th>when (UTC)</th><th>who</th><th>what</th></tr>");
    for a in &actions {
        let at = chrono::DateTime::from_timestamp_millis(a.at_ms).map(|t| t.format("%Y-%m-%d %H:%M").to_string());
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            at.unwrap_or_default(),
            esc(&a.operator_id),
            esc(&a.action),
            a.detail.as_ref().map(|w| format!(": {}", esc(w))).unwrap_or_default()
        ));
    }
    html.push_str("</table></section>");
    console_page(&format!("Parcel {id}"), &html)
}

/// What each action does, said on its confirmation page.
fn explain(action: &str) -> Option<&'static str> {
    match action {
        "reset" => Some("Give the parcel its attempts back (it is unlocked). The route's phones receive the reset."),
        "reissue" => Some(
            "Replace the customer's code with a new one, e-mailed to them. Codes of people they named stop working.",
        ),
        "reassign" => {
            Some("Move the parcel to another route: the old route's phones drop it, the new route's receive it.")
        }
        _ => None,
    }
}

async fn confirm(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Err(login) = operator(&d, &headers).await {
        return login;
    }
    let Some(what) = explain(&action) else {
        return error_page(&DispatchError::NotFound(format!("action {action}")));
    };
    let id_html = esc(&id);
    let id_url = esc(&segment(&id));
    let route = if action == "reassign" {
        "<p><label>New route <input type=\"text\" name=\"route_id\" required maxlength=\"128\"></label></p>"
    } else {
        ""
    };
    let html = format!(
        "<h1>Parcel {id_html}: {action}?</h1><section><p>{what}</p>\
         <form method=\"post\" action=\"/console/parcels/{id_url}/{action}\">{route}\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <p><button class=\"danger\" id=\"confirm\">Yes, {action} parcel {id_html}</button> \
         <a href=\"/console/parcels/{id_url}\">Cancel</a></p></form></section>",
        action = esc(&action)
    );
    console_page(&format!("Confirm {action}"), &html)
}

#[derive(Deserialize)]
struct ActForm {
    confirm: Option<String>,
    route_id: Option<String>,
}

async fn act(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    let by = match operator(&d, &headers).await {
        Ok(by) => by,
        Err(login) => return login,
    };
    if !same_origin(&headers) {
        return error_page(&DispatchError::Forbidden("a form from another site".into()));
    }
    if form.confirm.as_deref() != Some("yes") || explain(&action).is_none() {
        return error_page(&DispatchError::BadRequest("not confirmed".into()));
    }
    let key = id.clone();
    let done = blocking(move || match action.as_str() {
        "reset" => d.reset_lockout(&key, &by).map(|_| ()),
        "reissue" => d.reissue_code(&key, &by).map(|_| ()),
        _ => d.reassign(&key, form.route_id.as_deref().unwrap_or_default().trim(), &by),
    })
    .await;
    match done {
        Ok(()) => see_other(&format!("/console/parcels/{}", segment(&id))),
        Err(e) => error_page(&e),
    }
}
