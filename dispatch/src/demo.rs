//! `doorstep demo`: the whole system in one command. Dispatch runs on loopback with a temporary
//! state folder; one simulated phone per route enrols, syncs and works its route over real HTTP
//! (right codes, typos, delegates, QR tokens, guessing until lockout, absent and refusing
//! recipients), goes offline for the middle of the route, reconnects and uploads; at the end of
//! the day the rest expires. The verdict on every receipt comes from dispatch.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Days, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use doorstep_core::device::{Device, HandoverOutcome, HostError, KeyVault, PURGE_GRACE_MS, ScannedParcel};
use doorstep_core::protocol::{
    FailureReason, Holder, IdDocument, Inspection, REQUEST_HEADER, ReceiptEvent, ReceiptStatus, Task,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::clock::SetClock;
use crate::say;
use crate::store::{Dispatch, NewParcel, delivery_window};

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

const ZONE: &str = "Europe/Berlin";

/// For the demo only: the phones' key vault XORs with a fixed key stream (apps use the Android
/// Keystore or the iOS Keychain).
struct DemoVault;

impl KeyVault for DemoVault {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError> {
        Ok(plaintext.iter().enumerate().map(|(i, b)| b ^ (i as u8).wrapping_mul(73).wrapping_add(19)).collect())
    }
    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError> {
        self.seal(sealed)
    }
}

/// The delivery date the command-line demo plays: tomorrow in the demo's zone, so a day played
/// from its morning is always whole. Tests pick their own date.
pub fn default_date() -> DemoResult<NaiveDate> {
    let tz: Tz = ZONE.parse().map_err(|_| "time zone")?;
    Ok(Utc::now().with_timezone(&tz).date_naive().checked_add_days(Days::new(1)).ok_or("date")?)
}

/// A tiny HTTP client for the phones' calls (what OkHttp or URLSession do in the apps).
struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn new(base: String) -> Http {
        Http { base, agent: ureq::Agent::config_builder().http_status_as_error(false).build().into() }
    }

    fn check(path: &str, mut resp: ureq::http::Response<ureq::Body>) -> DemoResult<Vec<u8>> {
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        if !(200..300).contains(&status) {
            return Err(format!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body)
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> DemoResult<Vec<u8>> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::check(path, req.send(body)?)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> DemoResult<Vec<u8>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::check(path, req.call()?)
    }
}

/// The demo's result, printed as a table or as JSON.
#[derive(Debug, Default, Serialize)]
pub struct DemoReport {
    pub parcels: usize,
    pub routes: usize,
    pub need_code: usize,
    /// What happened at the door, by kind.
    pub at_the_door: BTreeMap<String, usize>,
    /// Dispatch's verdict on every receipt, by "event status".
    pub verdicts: BTreeMap<String, usize>,
    pub receipts_held_by_dispatch: usize,
    pub pending_on_phones: u32,
    pub lost_acks_recovered: usize,
    /// Customers' e-mails sent at the end of the day (codes, and notices of each hand-over and
    /// failed attempt).
    pub customer_emails_sent: usize,
    /// Receipts dispatch flagged for an operator (none on an honest day).
    pub operator_alerts: usize,
    /// The evidence file of one parcel handed over after a wrong code (or any handed-over parcel),
    /// checked offline with only dispatch's public keys: the parcel and its receipts' events.
    pub evidence_checked: Option<(String, Vec<String>)>,
    /// The day as EPCIS 2.0 events (`GET /v1/epcis/events`), by bizStep; `error declarations`
    /// counts the reversals that re-state a hand-over as wrong.
    pub epcis_events: BTreeMap<String, usize>,
    /// The EPCIS document itself (`demo --epcis-out`).
    #[serde(skip)]
    pub epcis_document: Vec<u8>,
    pub reconciled: bool,
}

struct Phone {
    device: Device,
    device_id: String,
}

/// Plays the delivery day `date` against the dispatch at `base` (which must serve `dispatch`,
/// and take its time from `clock`: the demo moves that clock through the day, for dispatch and the
/// phones alike).
pub fn run(
    base: &str,
    dispatch: &Dispatch,
    clock: &Arc<SetClock>,
    date: NaiveDate,
    parcels: usize,
    routes: usize,
    quiet: bool,
) -> DemoResult<DemoReport> {
    let routes = routes.clamp(1, 20);
    let http = Http::new(base.to_owned());
    // The depot acts with an operator key, as on a real network (`doorstep operator add`).
    let (_, operator_key) = dispatch.add_operator("demo depot")?;
    let auth = format!("Bearer {operator_key}");
    let operator = [("Authorization", auth.as_str())];
    let phones_dir = tempfile::tempdir()?;
    let tz: Tz = ZONE.parse().map_err(|_| "time zone")?;
    let (_, end_of_day) = delivery_window(date, ZONE)?;
    let morning = tz.from_local_datetime(&date.and_hms_opt(8, 0, 0).ok_or("time")?).earliest().ok_or("time")?;
    clock.set(morning.to_utc());

    // The warehouse imports the day and the parcels leave it; customers get their codes.
    let orders: Vec<NewParcel> = (0..parcels)
        .map(|i| NewParcel {
            parcel_id: format!("PCL-{i:05}"),
            barcode: format!("1Z{i:010}"),
            route_id: format!("route-{}", i % routes + 1),
            stop_id: format!("stop-{}", i / 2),
            stop_sequence: (i / routes + 1) as u32,
            delivery_date: date,
            time_zone: ZONE.into(),
            declared_value_cents: if i % 5 < 2 || i % 20 == 19 { 95_000 } else { 3_500 },
            category: if i % 17 == 3 { "jewellery".into() } else { "household".into() },
            customer_email: format!("customer{i}@example.test"),
            address_hint: format!("{} Market St", 10 + i),
            recipient_hint: "K. M.".into(),
            // Some parcels carry an SSCC (as printed, or as its URN): EPCIS events name them by it.
            sscc: match i % 3 {
                0 => Some(sscc_digits(i)),
                1 => Some(format!("urn:epc:id:sscc:4012345.3{i:09}")),
                _ => None,
            },
            // Some go to the addressee only (an ID check at the door), some are opened and
            // inspected by the customer before they take them.
            addressee_only: i % 20 == 16,
            open_box: i % 20 == 2 && i % 17 != 3,
            // Some stops hand a return to the driver: a pickup, collected with its pickup code.
            task: if i % 20 == 19 { Task::Pickup } else { Task::Delivery },
        })
        .collect();
    let imported: serde_json::Value =
        serde_json::from_slice(&http.post("/v1/parcels", &operator, &serde_json::to_vec(&orders)?)?)?;
    let mut report = DemoReport { parcels, routes, ..Default::default() };
    report.need_code = imported["need_code"].as_u64().unwrap_or(0) as usize;
    for p in &orders {
        http.post(&format!("/v1/parcels/{}/departed", p.parcel_id), &operator, b"")?;
        if kind(p) == 1 && dispatch.codes(&p.parcel_id)?.len() == 1 {
            dispatch.name_delegate(&p.parcel_id, "neighbour")?; // the customer names a neighbour
        }
    }

    // Each route's phone enrols with a one-time token and syncs the day's manifest.
    let mut phones = Vec::with_capacity(routes);
    for r in 1..=routes {
        let body = serde_json::to_vec(&serde_json::json!({ "route_id": format!("route-{r}") }))?;
        let token: serde_json::Value = serde_json::from_slice(&http.post("/v1/enrolment-tokens", &operator, &body)?)?;
        let token = token["token"].as_str().ok_or("no token")?.to_owned();
        let device =
            Device::open(phones_dir.path().join(format!("route-{r}.db")), Arc::new(DemoVault), clock.clone(), None)?;
        let bundle = http.post("/v1/enrol", &[("Enrolment-Token", &token)], &device.enrolment_request()?)?;
        device.complete_enrolment(&bundle)?;
        let device_id = device.status()?.device_id.ok_or("not enrolled")?;
        let path = format!("/v1/devices/{device_id}/manifest?date={date}");
        let signature = device.sign_request("GET", &path, b"")?;
        device.apply_manifest(&http.get(&path, &[(REQUEST_HEADER, &signature)])?)?;
        phones.push(Phone { device, device_id });
    }

    let progress = if quiet { ProgressBar::hidden() } else { ProgressBar::new(parcels as u64) };
    progress.set_style(ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}").map_err(|e| e.to_string())?);
    progress.set_message("on the road");
    let mut lost = 0usize;
    for (i, p) in orders.iter().enumerate() {
        clock.advance(TimeDelta::seconds(60));
        let phone = &phones[i % routes];
        let label = at_the_door(dispatch, &phone.device, p)?;
        *report.at_the_door.entry(label.to_owned()).or_default() += 1;
        let position = i / routes;
        let per_route = parcels.div_ceil(routes);
        let offline = position >= per_route / 3 && position < 2 * per_route / 3;
        if !offline && position % 10 == 9 {
            lost += upload(&http, phone, lost == 0)?;
        }
        progress.inc(1);
    }
    progress.finish_with_message("day done");

    // End of the day: what was not handed over expires; everything goes up.
    clock.set(end_of_day + TimeDelta::milliseconds(PURGE_GRACE_MS + 60_000));
    for phone in &phones {
        phone.device.purge_expired()?;
        lost += upload(&http, phone, false)?;
    }
    report.lost_acks_recovered = lost;

    // Dispatch's verdict on every receipt, and the check that everything reconciles.
    let mut all_accepted = true;
    let mut shown: Option<(bool, String)> = None;
    for phone in &phones {
        let held = dispatch.receipts(&phone.device_id)?;
        for (n, r) in held.iter().enumerate() {
            // A parcel to show the evidence of: one handed over after a wrong code, if any.
            if r.body.event == ReceiptEvent::Delivered
                && let Some(p) = r.body.parcels.first()
            {
                let after_wrong = held[..n].iter().any(|earlier| {
                    earlier.body.event == ReceiptEvent::WrongCode
                        && earlier.body.parcels.iter().any(|q| q.parcel_id == p.parcel_id)
                });
                if shown.as_ref().is_none_or(|(wrong, _)| after_wrong && !wrong) {
                    shown = Some((after_wrong, p.parcel_id.clone()));
                }
            }
            let (body, status) = (&r.body, &r.status);
            all_accepted &= *status == ReceiptStatus::Accepted && body.seq == n as u64 + 1;
            let key = format!("{} {}", json_name(&body.event)?, json_name(status)?);
            *report.verdicts.entry(key).or_default() += 1;
        }
        report.receipts_held_by_dispatch += held.len();
        report.pending_on_phones += phone.device.status()?.pending_receipts;
    }
    // The customers hear of their door (the background sender's round, run here once).
    loop {
        let sent = dispatch.send_pending_mail()?;
        report.customer_emails_sent += sent;
        if sent == 0 {
            break;
        }
    }
    report.operator_alerts = dispatch.alerts()?.len();
    // Evidence anyone can check: written by dispatch, verified with its public keys alone.
    if let Some((_, parcel)) = shown {
        let file = dispatch.evidence(&parcel)?;
        let checked = doorstep_core::evidence::verify(&file, &dispatch.public_keys())
            .map_err(|e| format!("the evidence of {parcel} did not verify: {e}"))?;
        let events = checked.events.iter().map(|e| json_name(&e.event)).collect::<DemoResult<Vec<_>>>()?;
        report.evidence_checked = Some((parcel, events));
    }
    // The day for supply-chain partners: EPCIS 2.0 events, each eventID its CBV 2.0 event hash.
    report.epcis_document = http.get(&format!("/v1/epcis/events?date={date}"), &operator)?;
    let document: serde_json::Value = serde_json::from_slice(&report.epcis_document)?;
    for event in document["epcisBody"]["eventList"].as_array().ok_or("no EPCIS events")? {
        let kind = match event.get("errorDeclaration") {
            Some(_) => "error declarations".to_owned(),
            None => event["bizStep"].as_str().unwrap_or("?").to_owned(),
        };
        *report.epcis_events.entry(kind).or_default() += 1;
    }
    report.reconciled = report.evidence_checked.is_some()
        && all_accepted
        && report.pending_on_phones == 0
        && report.receipts_held_by_dispatch > 0
        && report.operator_alerts == 0
        && dispatch.pending_mail()? == 0;
    Ok(report)
}

fn json_name<T: Serialize>(value: &T) -> DemoResult<String> {
    Ok(serde_json::to_value(value)?.as_str().unwrap_or("?").to_owned())
}

/// Which door scenario a parcel plays (by its number).
fn kind(p: &NewParcel) -> usize {
    p.parcel_id.trim_start_matches("PCL-").parse::<usize>().unwrap_or(0) % 20
}

fn at_the_door(dispatch: &Dispatch, device: &Device, p: &NewParcel) -> DemoResult<&'static str> {
    let scan = [ScannedParcel::scanned(p.barcode.clone())];
    let codes = dispatch.codes(&p.parcel_id)?; // what the customer read in their e-mail
    let code_of = |h: &Holder| codes.iter().find(|(holder, _)| holder == h).map(|(_, c)| c.clone());
    let accepted = |o: HandoverOutcome| -> DemoResult<()> {
        match o {
            HandoverOutcome::Accepted { .. } => Ok(()),
            other => Err(format!("parcel {}: expected a hand-over, got {other:?}", p.parcel_id).into()),
        }
    };
    Ok(match (code_of(&Holder::Customer), kind(p)) {
        (None, 7) => {
            device.record_failure(&scan, FailureReason::RecipientUnavailable, None, None)?;
            "recipient absent"
        }
        (None, 2) => {
            // Open-box: the customer opens it in front of the driver first.
            let inspected = match p.parcel_id.trim_start_matches("PCL-").parse::<usize>().unwrap_or(0) % 60 {
                2 => Inspection::Accepted,
                22 => Inspection::AcceptedWithReservation { note: "corner of the box dented".into() },
                _ => {
                    device.record_failure(&scan, FailureReason::RefusedOnInspection, None, None)?;
                    return Ok("open box, refused on inspection");
                }
            };
            let with = [scan[0].clone().with_inspection(inspected)];
            accepted(device.deliver_without_code(&with, None)?)?;
            "open box, inspected and taken"
        }
        (None, 12) => {
            // Handed to the wrong door, noticed at once: a reversal corrects it (nothing is deleted).
            accepted(device.deliver_without_code(&scan, None)?)?;
            device.reverse_delivery(&p.parcel_id, FailureReason::AddressIncorrect, None, None)?;
            "handed over by mistake, reversed"
        }
        (None, _) => {
            accepted(device.deliver_without_code(&scan, None)?)?;
            "delivered, no code needed"
        }
        (Some(_), 0) => {
            accepted(device.verify_qr_token(&scan, &dispatch.qr_token(&p.parcel_id, Holder::Customer)?, None)?)?;
            "delivered, QR token"
        }
        (Some(_), 1) => {
            let code = code_of(&Holder::Delegate("neighbour".into())).ok_or("no delegate code")?;
            accepted(device.verify_code(&scan, &code, None)?)?;
            "delivered, delegate's code"
        }
        (Some(right), 5) => {
            match device.verify_code(&scan, &wrong(&right), None)? {
                HandoverOutcome::WrongCode { attempts_left: 4 } => {}
                other => return Err(format!("a typo gave {other:?}").into()),
            }
            accepted(device.verify_code(&scan, &right, None)?)?;
            "delivered after a typo"
        }
        (Some(right), 6) => {
            for _ in 0..5 {
                let _ = device.verify_code(&scan, &wrong(&right), None)?;
            }
            device.record_failure(&scan, FailureReason::CodeLockedOut, None, None)?;
            "locked out (5 wrong codes)"
        }
        (Some(_), 10) => {
            device.record_failure(&scan, FailureReason::RefusedByRecipient, None, None)?;
            "refused by recipient"
        }
        (Some(_), 11) => {
            device.record_failure(&scan, FailureReason::RecipientUnavailable, None, None)?;
            "recipient absent"
        }
        (Some(_), 15) => "not reached today",
        (Some(right), 19) => {
            // A return: the customer gives the pickup code they were e-mailed.
            match device.verify_code(&scan, &right, None)? {
                HandoverOutcome::Accepted { receipt, .. } if receipt.event == ReceiptEvent::Collected => {}
                other => return Err(format!("parcel {}: expected a collection, got {other:?}", p.parcel_id).into()),
            }
            "return collected, pickup code"
        }
        (Some(right), 16) => {
            // Addressee only: the driver checks an ID (its kind goes on the receipt, never a number).
            if p.parcel_id.trim_start_matches("PCL-").parse::<usize>().unwrap_or(0) % 40 == 36 {
                device.record_failure(&scan, FailureReason::NoIdShown, None, None)?;
                return Ok("addressee only, no ID shown");
            }
            let with = [scan[0].clone().with_id(IdDocument::Passport)];
            accepted(device.verify_code(&with, &right, None)?)?;
            "addressee only, ID checked"
        }
        (Some(right), _) => {
            accepted(device.verify_code(&scan, &right, None)?)?;
            "delivered, code"
        }
    })
}

/// An 18-digit SSCC for demo parcel `i`: extension digit 3, company prefix 4012345, serial, and
/// its check digit.
fn sscc_digits(i: usize) -> String {
    let raw = format!("34012345{i:09}");
    let check = crate::epcis::hash::check_digit(&raw).unwrap_or(0);
    format!("{raw}{check}")
}

/// A 6-digit code that differs from `right` in every digit.
fn wrong(right: &str) -> String {
    right.bytes().map(|b| char::from(b'0' + (b - b'0' + 5) % 10)).collect()
}

/// Uploads what the phone holds. With `lose_first_ack`, dispatch's first answer is "lost" on the
/// way and the same batch is sent again (dispatch answers duplicates). Returns acks lost.
fn upload(http: &Http, phone: &Phone, lose_first_ack: bool) -> DemoResult<usize> {
    let path = format!("/v1/devices/{}/receipts", phone.device_id);
    let mut lost = 0;
    while let Some(batch) = phone.device.next_batch(50, 256 * 1024)? {
        let signature = phone.device.sign_request("POST", &path, &batch.bytes)?;
        let ack = http.post(&path, &[(REQUEST_HEADER, &signature)], &batch.bytes)?;
        if lose_first_ack && lost == 0 {
            lost = 1;
            phone.device.record_upload_failure("demo: connection reset before the answer arrived")?;
            continue;
        }
        phone.device.apply_ack(&ack)?;
    }
    Ok(lost)
}

/// The report as the table the demo prints.
pub fn print_table(r: &DemoReport) {
    say!("\n{} parcels on {} routes, {} need a code\n", r.parcels, r.routes, r.need_code);
    say!("{:<34} {:>8}", "at the door", "parcels");
    for (label, n) in &r.at_the_door {
        say!("{label:<34} {n:>8}");
    }
    say!("\n{:<34} {:>8}", "dispatch's verdict", "receipts");
    for (label, n) in &r.verdicts {
        say!("{label:<34} {n:>8}");
    }
    say!(
        "\nreceipts held by dispatch: {}; pending on the phones: {}; lost answers recovered: {}",
        r.receipts_held_by_dispatch,
        r.pending_on_phones,
        r.lost_acks_recovered
    );
    say!(
        "customer e-mails sent at the end of the day (notices of each door): {}; operator alerts: {}",
        r.customer_emails_sent,
        r.operator_alerts
    );
    if let Some((parcel, events)) = &r.evidence_checked {
        say!(
            "evidence of parcel {parcel} ({}) written by dispatch and verified offline with its public keys alone",
            events.join(", ")
        );
    }
    if !r.epcis_events.is_empty() {
        let kinds: Vec<String> = r.epcis_events.iter().map(|(k, n)| format!("{n} {k}")).collect();
        say!("EPCIS 2.0 events of the day (GET /v1/epcis/events): {}", kinds.join(", "));
    }
    say!("{}", if r.reconciled { "RECONCILED" } else { "NOT RECONCILED" });
}

/// After the day, for a person to look (`doorstep demo --serve`): one more parcel of the demo's
/// day leaves the warehouse (its code e-mailed), and the links to two customers' pages come back,
/// that parcel's (code, QR code, people you trust) and `handed`'s (handed over), read from the
/// e-mails in `outbox`.
pub fn serve_links(
    dispatch: &Dispatch,
    outbox: &std::path::Path,
    date: NaiveDate,
    handed: &str,
) -> DemoResult<Vec<String>> {
    let fresh = NewParcel {
        parcel_id: "PCL-SERVE".into(),
        barcode: "1Z-SERVE".into(),
        route_id: "route-1".into(),
        stop_id: "stop-serve".into(),
        stop_sequence: 999,
        delivery_date: date,
        time_zone: ZONE.into(),
        declared_value_cents: 95_000,
        category: "jewellery".into(),
        customer_email: "you@example.test".into(),
        address_hint: "1 Demo Square".into(),
        recipient_hint: "Y. O.".into(),
        sscc: None,
        addressee_only: false,
        open_box: false,
        task: Task::Delivery,
    };
    let by = crate::operators::Operator::dispatch();
    dispatch.import_parcels(&[fresh], &by)?;
    dispatch.parcel_departed("PCL-SERVE", &by)?;
    while dispatch.send_pending_mail()? > 0 {}
    let mut links = Vec::new();
    for parcel in ["PCL-SERVE", handed] {
        for entry in std::fs::read_dir(outbox)? {
            let text = std::fs::read_to_string(entry?.path())?;
            if text.contains(&format!("Parcel: {parcel}\r\n"))
                && let Some(link) = text.lines().find(|l| l.contains("/parcel/"))
            {
                links.push(link.trim().to_owned());
            }
        }
    }
    Ok(links)
}
