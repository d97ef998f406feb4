//! The ledger as EPCIS 2.0 events (GS1's standard for supply-chain visibility), for
//! `doorstep export --epcis` and `GET /v1/epcis/events`: every stored hand-over is an
//! `ObjectEvent` with bizStep `accepting`; every failed attempt (failed, wrong code, locked out)
//! one with bizStep `arriving` and disposition `in_transit` (the parcel stays with the carrier);
//! a reversal re-states the hand-over it corrects with an `errorDeclaration` (`did_not_occur`,
//! or `incorrect_data` with a corrective event when it undid only some of its parcels). A parcel
//! is named by its SSCC where the import gave one (`https://id.gs1.org/00/…`, or the
//! `urn:epc:id:sscc:` it was given as), otherwise by `urn:doorstep:parcel:<id>`. doorstep's own
//! fields (receipt, device, sequence, chain hash, method, attempts, verdict) are in the
//! [`NAMESPACE`] extension, and each `eventID` is the CBV 2.0 event hash ([`hash`]). Receipts
//! dispatch rejected, and expiries (no one was at the door), are not events; nor, unless asked
//! for ([`Flagged::Included`], each then marked `ds:verdict` `flagged`), are those it holds for
//! review: by default partners see only what dispatch accepted, and a reversal only when it was
//! accepted from the phone that made the hand-over. No code, customer, note, delegate name, kind of ID
//! or location is written.

pub mod hash;

use std::collections::HashMap;

use chrono::{DateTime, Offset, TimeZone, Utc};
use doorstep_core::issuer::StoredReceipt;
use doorstep_core::protocol::{Holder, Inspection, ReceiptEvent, ReceiptStatus};
use serde_json::{Map, Value, json};

/// The JSON-LD namespace of doorstep's extension fields (a name, never fetched).
pub const NAMESPACE: &str = "https://doorstep.example/epcis/";
/// The EPCIS 2.0 JSON-LD context (the reference tools carry a copy; nothing is fetched).
pub const CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";

/// One ObjectEvent as this module writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time: DateTime<Utc>,
    /// The offset of the parcel's zone at `time`, `+01:00`.
    pub offset: String,
    pub epcs: Vec<String>,
    /// A CBV 2.0 bizStep name (`accepting`, `arriving`).
    pub biz_step: &'static str,
    /// A CBV 2.0 disposition name.
    pub disposition: Option<&'static str>,
    /// `ds:<name>` fields.
    pub extension: Vec<(&'static str, ExtValue)>,
    pub error: Option<ErrorDeclaration>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExtValue {
    Int(u64),
    Text(String),
}

/// A reversal's statement that an event was wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorDeclaration {
    pub declared_at: DateTime<Utc>,
    pub reversal_receipt: String,
    /// The event that replaces it, when the reversal undid only some of its parcels.
    pub corrective: Option<String>,
}

/// What the export needs to know about a parcel besides its receipts.
#[derive(Clone, Debug, Default)]
pub struct ParcelFacts {
    pub time_zone: String,
    /// As imported: 18 digits, or an `urn:epc:id:sscc:` URN.
    pub sscc: Option<String>,
    /// A return collected from the customer (a failed collection moves nothing: no event).
    pub pickup: bool,
}

/// Whether receipts dispatch holds for review become events (marked `ds:verdict` `flagged`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flagged {
    Left,
    Included,
}

/// The events of `receipts` (any order), ordered by when they were recorded (a declaration by
/// its declaration time).
pub fn events(receipts: &[StoredReceipt], parcels: &HashMap<String, ParcelFacts>, flagged: Flagged) -> Vec<Event> {
    let mut out: Vec<(DateTime<Utc>, Event)> = Vec::new();
    let mut by_receipt: HashMap<String, (&str, Event)> = HashMap::new();
    let shown = |r: &&StoredReceipt| match r.status {
        ReceiptStatus::Accepted => true,
        ReceiptStatus::Flagged => flagged == Flagged::Included,
        _ => false,
    };
    for stored in receipts.iter().filter(shown) {
        if let Some(event) = event_of(stored, parcels) {
            by_receipt.insert(stored.body.receipt_id.to_string(), (&stored.body.device_id, event.clone()));
            out.push((stored.body.trusted_time, event));
        }
    }
    // A reversal corrects only when dispatch accepted it (a flagged one undoes nothing).
    for stored in receipts.iter().filter(|r| r.status == ReceiptStatus::Accepted) {
        let body = &stored.body;
        let (ReceiptEvent::Reversed, Some(reversed)) = (body.event, body.reverses) else { continue };
        // Only the phone that made a hand-over undoes it (as dispatch's ledger does).
        let Some((_, original)) = by_receipt.get(&reversed.to_string()).filter(|(by, _)| *by == body.device_id) else {
            continue;
        };
        let undone: Vec<String> = body.parcels.iter().map(|p| epc(&p.parcel_id, parcels)).collect();
        let kept: Vec<String> = original.epcs.iter().filter(|e| !undone.contains(e)).cloned().collect();
        let corrective = (!kept.is_empty()).then(|| Event { epcs: kept, error: None, ..original.clone() });
        let mut declared = original.clone();
        declared.error = Some(ErrorDeclaration {
            declared_at: body.trusted_time,
            reversal_receipt: body.receipt_id.to_string(),
            corrective: corrective.as_ref().map(hash::event_hash),
        });
        out.push((body.trusted_time, declared));
        if let Some(corrective) = corrective {
            out.push((body.trusted_time, corrective));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out.into_iter().map(|(_, e)| e).collect()
}

/// The event of one stored receipt (`None` for kinds that are not events).
fn event_of(stored: &StoredReceipt, parcels: &HashMap<String, ParcelFacts>) -> Option<Event> {
    let body = &stored.body;
    let (biz_step, disposition) = match body.event {
        ReceiptEvent::Delivered => ("accepting", None),
        // A return collected from the customer: on its way back.
        ReceiptEvent::Collected => ("collecting", Some("returned")),
        // A failed collection leaves the return with its customer: nothing moved, no event.
        ReceiptEvent::Failed | ReceiptEvent::WrongCode | ReceiptEvent::LockedOut
            if body.parcels.iter().all(|p| parcels.get(&p.parcel_id).is_some_and(|f| f.pickup)) =>
        {
            return None;
        }
        ReceiptEvent::Failed | ReceiptEvent::WrongCode | ReceiptEvent::LockedOut => ("arriving", Some("in_transit")),
        ReceiptEvent::Expired | ReceiptEvent::Reversed => return None,
    };
    let zone = body.parcels.first().and_then(|p| parcels.get(&p.parcel_id)).map(|f| f.time_zone.as_str());
    let hash = crate::operators::hex(&stored.receipt.hash());
    let mut extension = vec![
        ("receiptId", ExtValue::Text(body.receipt_id.to_string())),
        ("device", ExtValue::Text(body.device_id.clone())),
        ("sequence", ExtValue::Int(body.seq)),
        ("receiptHash", ExtValue::Text(format!("sha256:{hash}"))),
        ("event", ExtValue::Text(name_of(&body.event))),
        ("attempts", ExtValue::Int(u64::from(body.parcels.iter().map(|p| p.attempts_used).max().unwrap_or(0)))),
        ("verdict", ExtValue::Text(name_of(&stored.status))),
    ];
    if let Some(method) = &body.method {
        extension.push(("method", ExtValue::Text(name_of(method))));
    }
    if let Some(holder) = &body.holder {
        // The kind of holder only: a delegate's name is the customer's business.
        let kind = match holder {
            Holder::Customer => "customer",
            Holder::Delegate(_) => "delegate",
        };
        extension.push(("holder", ExtValue::Text(kind.into())));
    }
    // What the driver confirmed at the door: that an ID was checked (an addressee-only parcel,
    // handed over on its own; its kind stays in the receipt), and what the customers found on
    // opening open-box parcels (their words stay in the receipt; `mixed` when they differ).
    if body.parcels.iter().any(|p| p.id_checked.is_some()) {
        extension.push(("idChecked", ExtValue::Text("yes".into())));
    }
    let found: std::collections::BTreeSet<&str> = body
        .parcels
        .iter()
        .filter_map(|p| p.inspection.as_ref())
        .map(|i| match i {
            Inspection::Accepted => "accepted",
            Inspection::AcceptedWithReservation { .. } => "accepted_with_reservation",
        })
        .collect();
    match found.len() {
        0 => {}
        1 => extension.push(("inspection", ExtValue::Text(found.into_iter().collect()))),
        _ => extension.push(("inspection", ExtValue::Text("mixed".into()))),
    }
    if let Some(reason) = &body.reason {
        extension.push(("reason", ExtValue::Text(name_of(reason))));
    }
    Some(Event {
        time: body.trusted_time,
        offset: offset_at(zone, body.trusted_time),
        epcs: body.parcels.iter().map(|p| epc(&p.parcel_id, parcels)).collect(),
        biz_step,
        disposition,
        extension,
        error: None,
    })
}

/// A serde enum's snake_case name (`wrong_code`).
fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// The identifier an event names a parcel by.
fn epc(parcel_id: &str, parcels: &HashMap<String, ParcelFacts>) -> String {
    match parcels.get(parcel_id).and_then(|f| f.sscc.as_deref()) {
        Some(urn) if urn.starts_with("urn:epc:id:sscc:") => urn.to_owned(),
        Some(digits) => format!("https://id.gs1.org/00/{digits}"),
        None => format!(
            "urn:doorstep:parcel:{}",
            percent_encoding::utf8_percent_encode(parcel_id, percent_encoding::NON_ALPHANUMERIC)
        ),
    }
}

/// `+01:00`: the zone's offset at `at` (UTC for a zone this build does not know).
fn offset_at(zone: Option<&str>, at: DateTime<Utc>) -> String {
    let tz: chrono_tz::Tz = zone.and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC);
    tz.offset_from_utc_datetime(&at.naive_utc()).fix().to_string()
}

/// The EPCIS 2.0 JSON-LD document holding `events`, created at `now`.
pub fn document(events: &[Event], now: DateTime<Utc>) -> Value {
    json!({
        "@context": [CONTEXT, {"ds": NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": stamp(now),
        "epcisBody": {"eventList": events.iter().map(to_json).collect::<Vec<_>>()},
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One event as JSON-LD, with its hash as `eventID`.
pub fn to_json(event: &Event) -> Value {
    let mut e = Map::new();
    e.insert("type".into(), json!("ObjectEvent"));
    e.insert("eventID".into(), json!(hash::event_hash(event)));
    e.insert("eventTime".into(), json!(stamp(event.time)));
    e.insert("eventTimeZoneOffset".into(), json!(event.offset));
    e.insert("epcList".into(), json!(event.epcs));
    e.insert("action".into(), json!("OBSERVE"));
    e.insert("bizStep".into(), json!(event.biz_step));
    if let Some(disposition) = event.disposition {
        e.insert("disposition".into(), json!(disposition));
    }
    if let Some(error) = &event.error {
        let mut d = Map::new();
        d.insert("declarationTime".into(), json!(stamp(error.declared_at)));
        let reason = if error.corrective.is_some() { "incorrect_data" } else { "did_not_occur" };
        d.insert("reason".into(), json!(reason));
        if let Some(corrective) = &error.corrective {
            d.insert("correctiveEventIDs".into(), json!([corrective]));
        }
        d.insert("ds:reversalReceiptId".into(), json!(error.reversal_receipt));
        e.insert("errorDeclaration".into(), Value::Object(d));
    }
    for (name, value) in &event.extension {
        let value = match value {
            ExtValue::Int(n) => json!(n),
            ExtValue::Text(t) => json!(t),
        };
        e.insert(format!("ds:{name}"), value);
    }
    Value::Object(e)
}

#[cfg(test)]
mod tests {
    use doorstep_core::crypto::SigningKey;
    use doorstep_core::protocol::{
        FailureReason, HandoverMethod, Identification, ReceiptBody, ReceiptParcel, SignedReceipt,
    };
    use uuid::Uuid;

    use super::*;

    fn stored(seq: u64, event: ReceiptEvent, parcels: &[&str], status: ReceiptStatus) -> StoredReceipt {
        let at = DateTime::from_timestamp(1_800_000_000 + seq as i64 * 60, 0).unwrap();
        let body = ReceiptBody {
            version: "1.1".into(),
            receipt_id: Uuid::now_v7(),
            device_id: "dev-1".into(),
            seq,
            prev_hash: [0; 32],
            manifest_id: None,
            event,
            method: (event == ReceiptEvent::Delivered).then_some(HandoverMethod::DelegateCode),
            holder: (event == ReceiptEvent::Delivered).then(|| Holder::Delegate("Anna Neighbour".into())),
            reason: (event != ReceiptEvent::Delivered).then_some(FailureReason::Other),
            note: Some("left with the porter at 3rd floor".into()),
            reverses: None,
            parcels: parcels
                .iter()
                .map(|p| ReceiptParcel {
                    parcel_id: (*p).into(),
                    barcode: format!("BC-{p}"),
                    identified: Identification::Scanned,
                    attempts_used: 1,
                    attempt_epoch: 0,
                    code_proof: None,
                    id_checked: None,
                    inspection: None,
                })
                .collect(),
            qr_token: None,
            device_time: at,
            trusted_time: at,
            skew_ms: 0,
            location: None,
        };
        let receipt = SignedReceipt::sign(&body, &SigningKey::generate("device:dev-1").unwrap()).unwrap();
        StoredReceipt { receipt, body, status, reason: None }
    }

    fn facts() -> HashMap<String, ParcelFacts> {
        let zone = |sscc: Option<&str>| ParcelFacts {
            time_zone: "Europe/Berlin".into(),
            sscc: sscc.map(Into::into),
            pickup: false,
        };
        HashMap::from([
            ("P1".to_owned(), zone(Some("340123450000000017"))),
            ("P2".to_owned(), zone(Some("urn:epc:id:sscc:4012345.0000000001"))),
            ("P 3".to_owned(), zone(None)),
        ])
    }

    #[test]
    fn a_reversal_of_some_parcels_declares_the_hand_over_wrong_and_names_the_corrective_event() {
        let handed = stored(1, ReceiptEvent::Delivered, &["P1", "P2"], ReceiptStatus::Accepted);
        let mut reversal = stored(2, ReceiptEvent::Reversed, &["P1"], ReceiptStatus::Accepted);
        reversal.body.reverses = Some(handed.body.receipt_id);
        let events = events(&[handed, reversal], &facts(), Flagged::Left);
        assert_eq!(events.len(), 3);
        let (original, declared, corrective) = (&events[0], &events[1], &events[2]);
        assert!(original.error.is_none());
        // The declaration re-states the event: same eventID, as EPCIS wants.
        assert_eq!(hash::event_hash(declared), hash::event_hash(original));
        let error = declared.error.as_ref().unwrap();
        assert_eq!(error.corrective.as_deref(), Some(hash::event_hash(corrective).as_str()));
        assert_eq!(corrective.epcs, vec!["urn:epc:id:sscc:4012345.0000000001".to_owned()]);
        let json = to_json(declared);
        assert_eq!(json["errorDeclaration"]["reason"], "incorrect_data");
        assert_eq!(json["errorDeclaration"]["correctiveEventIDs"][0], hash::event_hash(corrective));
    }

    #[test]
    fn a_reversal_from_another_phone_declares_nothing() {
        let handed = stored(1, ReceiptEvent::Delivered, &["P1"], ReceiptStatus::Accepted);
        let mut reversal = stored(2, ReceiptEvent::Reversed, &["P1"], ReceiptStatus::Accepted);
        reversal.body.reverses = Some(handed.body.receipt_id);
        reversal.body.device_id = "dev-2".into();
        let events = events(&[handed, reversal], &facts(), Flagged::Left);
        assert_eq!(events.len(), 1);
        assert!(events[0].error.is_none());
    }

    #[test]
    fn a_reversal_of_every_parcel_says_the_hand_over_did_not_occur() {
        let handed = stored(1, ReceiptEvent::Delivered, &["P1"], ReceiptStatus::Accepted);
        let mut reversal = stored(2, ReceiptEvent::Reversed, &["P1"], ReceiptStatus::Accepted);
        reversal.body.reverses = Some(handed.body.receipt_id);
        let events = events(&[handed, reversal], &facts(), Flagged::Left);
        assert_eq!(events.len(), 2);
        assert_eq!(to_json(&events[1])["errorDeclaration"]["reason"], "did_not_occur");
        assert!(to_json(&events[1])["errorDeclaration"].get("correctiveEventIDs").is_none());
    }

    #[test]
    fn rejected_receipts_and_expiries_are_no_events_and_failures_arrive_in_transit() {
        let receipts = [
            stored(1, ReceiptEvent::Delivered, &["P1"], ReceiptStatus::Rejected),
            stored(2, ReceiptEvent::Expired, &["P2"], ReceiptStatus::Accepted),
            stored(3, ReceiptEvent::Delivered, &["P2"], ReceiptStatus::Flagged),
            stored(4, ReceiptEvent::WrongCode, &["P 3"], ReceiptStatus::Accepted),
        ];
        let events = events(&receipts, &facts(), Flagged::Left);
        assert_eq!(events.len(), 1, "only what dispatch accepted");
        let json = to_json(&events[0]);
        assert_eq!((json["bizStep"].as_str(), json["disposition"].as_str()), (Some("arriving"), Some("in_transit")));
        assert_eq!(json["epcList"][0], "urn:doorstep:parcel:P%203");
        assert_eq!(json["ds:verdict"], "accepted");
        assert_eq!(json["ds:event"], "wrong_code");
        // The zone's offset at the event's instant (January: CET).
        assert_eq!(json["eventTimeZoneOffset"], "+01:00");
        // Asked for, the flagged hand-over comes too, marked.
        let all = super::events(&receipts, &facts(), Flagged::Included);
        assert_eq!(all.len(), 2);
        assert_eq!(to_json(&all[0])["ds:verdict"], "flagged");
    }

    #[test]
    fn no_note_delegate_name_or_barcode_is_written() {
        let events =
            events(&[stored(1, ReceiptEvent::Delivered, &["P1"], ReceiptStatus::Accepted)], &facts(), Flagged::Left);
        let text = document(&events, Utc::now()).to_string();
        for private in ["porter", "Anna", "BC-P1"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
        assert!(text.contains("\"ds:holder\":\"delegate\""));
    }
}
