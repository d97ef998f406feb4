//! The customer's page of one parcel, opened with the link from the code e-mail
//! (`/parcel/{id}/{token}`; the link opens that parcel until the end of its delivery day): where
//! the parcel stands, the code with its validity (announced digit by digit to screen readers),
//! the rules in plain words, the QR code the driver's phone scans (SVG drawn on the server), and
//! the people the customer trusts with codes of their own. Works without script; naming and
//! revoking are plain forms posted to the same link.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use doorstep_core::protocol::{Holder, Task};
use serde::Deserialize;

use super::text::{self, Text};
use super::{esc, see_other};
use crate::api::{AppState, blocking};
use crate::error::DispatchError;
use crate::store::{CustomerPage, ParcelStatus};

pub(super) async fn page_of(d: AppState, headers: &HeaderMap, id: String, token: String) -> Response {
    let t = text::choose(headers);
    let link = esc(&format!("/parcel/{}/{}", super::segment(&id), super::segment(&token)));
    match blocking(move || d.customer_page(&token, &id)).await {
        Ok(p) => super::page(StatusCode::OK, t.lang, &format!("{} {}", t.parcel, p.parcel_id), &render(t, &p, &link)),
        Err(e) => failure(t, &e),
    }
}

pub(super) async fn page(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, token)): Path<(String, String)>,
) -> Response {
    page_of(d, &headers, id, token).await
}

#[derive(Deserialize)]
pub(super) struct DelegateForm {
    label: String,
}

pub(super) async fn name_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, token)): Path<(String, String)>,
    Form(form): Form<DelegateForm>,
) -> Response {
    delegate_form(d, &headers, id, token, move |d, token, id| {
        d.customer_name_delegate(token, id, form.label.trim()).map(|_| ())
    })
    .await
}

pub(super) async fn revoke_delegate(
    State(d): State<AppState>,
    headers: HeaderMap,
    Path((id, token)): Path<(String, String)>,
    Form(form): Form<DelegateForm>,
) -> Response {
    delegate_form(d, &headers, id, token, move |d, token, id| d.customer_revoke_delegate(token, id, &form.label)).await
}

/// A delegate form posted to the page: `act` with the link, then back to the page (or the error).
async fn delegate_form(
    d: AppState,
    headers: &HeaderMap,
    id: String,
    token: String,
    act: impl FnOnce(&crate::store::Dispatch, &str, &str) -> Result<(), DispatchError> + Send + 'static,
) -> Response {
    let back = format!("/parcel/{}/{}", super::segment(&id), super::segment(&token));
    match blocking(move || act(&d, &token, &id)).await {
        Ok(()) => see_other(&back),
        Err(e) => failure(text::choose(headers), &e),
    }
}

/// An error as a page: an unknown or expired link says only that (it never tells whether the
/// parcel exists); a refused form says why.
fn failure(t: &Text, e: &DispatchError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let said = match e {
        DispatchError::NotFound(_) | DispatchError::Unauthorized(_) => t.not_found.to_owned(),
        DispatchError::BadRequest(why) | DispatchError::Conflict(why) => why.clone(),
        _ => {
            eprintln!("customer page: {e}");
            "Something went wrong on our side; please try again later.".to_owned()
        }
    };
    super::page(status, t.lang, t.parcel, &format!("<section><p>{}</p></section>", esc(&said)))
}

/// `at` as `2026-11-26 14:03` in `zone`.
fn local(at: DateTime<Utc>, zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

fn status_line(t: &Text, p: &CustomerPage) -> String {
    match &p.status {
        ParcelStatus::Preparing => t.preparing.to_owned(),
        ParcelStatus::OnItsWay => t.on_its_way.to_owned(),
        ParcelStatus::HandedOver { holder, at, .. } => {
            let whom = match holder {
                Some(Holder::Customer) => t.handed_to_you.to_owned(),
                Some(Holder::Delegate(label)) => format!("{} {label}", t.handed_to),
                None => t.handed_no_code.to_owned(),
            };
            format!("{whom}, {} {} ({}).", t.at, local(*at, &p.time_zone), p.time_zone)
        }
        ParcelStatus::Collected { holder, at } => {
            let whom = match holder {
                Some(Holder::Customer) => t.collected_from_you.to_owned(),
                Some(Holder::Delegate(label)) => format!("{} {label}", t.collected_from),
                None => t.collected_no_code.to_owned(),
            };
            format!("{whom}, {} {} ({}).", t.at, local(*at, &p.time_zone), p.time_zone)
        }
        ParcelStatus::AttemptFailed { reason, at } => {
            let why = reason
                .and_then(|r| serde_json::to_value(r).ok())
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default();
            format!("{} {} {} ({why}).", t.attempt_failed, t.at, local(*at, &p.time_zone))
        }
        ParcelStatus::Locked => t.locked.to_owned(),
        ParcelStatus::Expired => t.expired.to_owned(),
    }
}

/// The code as people read it (`493 817`) and as a screen reader should say it (`4 9 3 8 1 7`).
fn code_block(t: &Text, code: &str) -> String {
    let shown = format!("{} {}", &code[..code.len().min(3)], &code[code.len().min(3)..]);
    let spoken: Vec<String> = code.chars().map(String::from).collect();
    format!(
        "<p class=\"code\" role=\"img\" aria-label=\"{}: {}\">{}</p>",
        esc(t.code_label),
        spoken.join(" "),
        esc(&shown)
    )
}

/// The QR code of `token` as inline SVG.
fn qr_svg(token: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(token.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build();
    // Inline: without the XML declaration, labelled for assistive technology.
    let svg = svg.split_once("<svg").map(|(_, rest)| format!("<svg role=\"img\" aria-label=\"QR\"{rest}"))?;
    Some(svg)
}

/// The page; `link` is the page's own path (escaped), where its forms post.
fn render(t: &Text, p: &CustomerPage, link: &str) -> String {
    let mut html = format!(
        "<h1>{} {}</h1><section><p class=\"status\" id=\"status\">{}</p></section>",
        t.parcel,
        esc(&p.parcel_id),
        esc(&status_line(t, p))
    );
    let open = p.open;
    if let (Some(code), true) = (&p.code, open) {
        let rules: String = t.rules.iter().map(|r| format!("<li>{}</li>", esc(r))).collect();
        html.push_str(&format!(
            "<section id=\"code\"><h2>{}</h2>{}<p>{} {} {} {}.</p><ul class=\"rules\">{rules}</ul></section>",
            if p.task == Task::Pickup { t.your_pickup_code } else { t.your_code },
            code_block(t, code),
            t.valid_until,
            p.delivery_date,
            t.in_zone,
            esc(&p.time_zone)
        ));
    }
    if let Some(svg) = p.qr_token.as_deref().and_then(qr_svg) {
        html.push_str(&format!(
            "<section><h2>{}</h2><figure class=\"qr\" id=\"qr\">{svg}</figure><p>{}</p></section>",
            t.qr_title, t.qr_hint
        ));
    }
    if open && p.rules.open_box {
        html.push_str(&format!("<section id=\"open-box\"><p>{}</p></section>", t.open_box));
    }
    if open && p.rules.addressee_only {
        // No one else may take it: no form to name a trusted person.
        html.push_str(&format!("<section id=\"trusted\"><p>{}</p></section>", t.addressee_only));
    } else if open {
        let mut list = String::new();
        for (label, code) in &p.delegates {
            list.push_str(&format!(
                "<li><strong>{}</strong>: {} <form class=\"inline\" method=\"post\" action=\"{link}/delegates/revoke\">\
                 <input type=\"hidden\" name=\"label\" value=\"{}\"><button>{}</button></form></li>",
                esc(label),
                code_block(t, code),
                esc(label),
                t.trusted_revoke,
            ));
        }
        if list.is_empty() {
            list = format!("<li class=\"muted\">{}</li>", t.trusted_none);
        }
        html.push_str(&format!(
            "<section id=\"trusted\"><h2>{}</h2><p>{}</p><ul>{list}</ul>\
             <form method=\"post\" action=\"{link}/delegates\"><label>{} \
             <input type=\"text\" name=\"label\" maxlength=\"64\" required></label> <button>{}</button></form></section>",
            t.trusted_title, t.trusted_hint, t.trusted_name, t.trusted_add
        ));
    }
    html
}
