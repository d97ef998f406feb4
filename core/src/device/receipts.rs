//! Writing receipts: each new receipt takes the next sequence number, links to the previous one by
//! hash, is signed with the device key, and is inserted in the caller's transaction (the same one
//! that changes the parcels it speaks of).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::Session;
use crate::crypto::sha256;
use crate::protocol::{
    FailureReason, HandoverMethod, Holder, Location, PROTOCOL_VERSION, ReceiptBody, ReceiptEvent, ReceiptParcel, domain,
};
use crate::{CoreError, Result};

/// What the app learns about a receipt it caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptSummary {
    pub receipt_id: Uuid,
    pub seq: u64,
    pub event: ReceiptEvent,
    pub parcel_ids: Vec<String>,
}

/// The parts of a receipt that differ between events.
pub(crate) struct Draft {
    pub event: ReceiptEvent,
    pub method: Option<HandoverMethod>,
    pub holder: Option<Holder>,
    pub reason: Option<FailureReason>,
    pub note: Option<String>,
    pub reverses: Option<Uuid>,
    pub parcels: Vec<ReceiptParcel>,
    pub qr_token: Option<String>,
    pub location: Option<Location>,
}

impl Draft {
    pub fn new(event: ReceiptEvent, parcels: Vec<ReceiptParcel>) -> Draft {
        Draft {
            event,
            method: None,
            holder: None,
            reason: None,
            note: None,
            reverses: None,
            parcels,
            qr_token: None,
            location: None,
        }
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Signs and appends a receipt with the given id; links it to the chain head and to its parcels.
pub(crate) fn append(s: &Session<'_>, receipt_id: Uuid, draft: Draft) -> Result<ReceiptSummary> {
    let keys = s.keys()?;
    let (head_seq, head_hash): (i64, Vec<u8>) =
        s.tx.query_row("SELECT head_seq, head_hash FROM chain WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let prev_hash: [u8; 32] =
        head_hash.try_into().map_err(|_| CoreError::Integrity("chain head hash is not 32 bytes".into()))?;
    let manifest_id: Option<String> =
        s.tx.query_row("SELECT manifest_id FROM manifest_state WHERE id = 1", [], |r| r.get(0)).optional()?;
    let seq = u64::try_from(head_seq).map_err(|_| CoreError::Integrity("negative chain head".into()))? + 1;
    let body = ReceiptBody {
        version: PROTOCOL_VERSION.into(),
        receipt_id,
        device_id: keys.device_id.clone(),
        seq,
        prev_hash,
        manifest_id,
        event: draft.event,
        method: draft.method,
        holder: draft.holder,
        reason: draft.reason,
        note: draft.note,
        reverses: draft.reverses,
        parcels: draft.parcels,
        qr_token: draft.qr_token,
        device_time: ms_to_time(s.now.wall_ms),
        trusted_time: ms_to_time(s.now.trusted_ms),
        skew_ms: s.now.skew_ms(),
        location: draft.location,
    };
    let bytes = serde_json::to_vec(&body).map_err(|_| CoreError::Integrity("receipt did not serialise".into()))?;
    let signature = keys.signing.sign(domain::RECEIPT, &bytes);
    let hash = sha256(&bytes);
    s.tx.prepare_cached(
        "INSERT INTO receipt (seq, receipt_id, event, body, signature, hash, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        seq as i64,
        receipt_id.to_string(),
        event_name(body.event),
        bytes,
        signature,
        hash.to_vec(),
        s.now.trusted_ms
    ])?;
    s.tx.prepare_cached("UPDATE chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1")?
        .execute(params![seq as i64, hash.to_vec()])?;
    let mut link = s.tx.prepare_cached("UPDATE parcel SET last_receipt = ?1 WHERE parcel_id = ?2")?;
    for p in &body.parcels {
        link.execute(params![receipt_id.to_string(), p.parcel_id])?;
    }
    Ok(ReceiptSummary {
        receipt_id,
        seq,
        event: body.event,
        parcel_ids: body.parcels.into_iter().map(|p| p.parcel_id).collect(),
    })
}

pub(crate) fn event_name(event: ReceiptEvent) -> &'static str {
    match event {
        ReceiptEvent::Delivered => "delivered",
        ReceiptEvent::Failed => "failed",
        ReceiptEvent::LockedOut => "locked_out",
        ReceiptEvent::Expired => "expired",
        ReceiptEvent::Reversed => "reversed",
    }
}
