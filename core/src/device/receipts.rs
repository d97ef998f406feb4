//! Writing receipts: each new receipt takes the next sequence number, links to the previous one by
//! hash, is signed with the device key, and is inserted in the caller's transaction (the same one
//! that changes the parcels it speaks of; callers link a delivered parcel to its receipt).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::Session;
use crate::protocol::{
    FailureReason, HandoverMethod, Holder, Location, PROTOCOL_VERSION, ReceiptBody, ReceiptEvent, ReceiptParcel,
    SignedReceipt,
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
    let (head_seq, prev_hash) = chain_head(&s.tx)?;
    // The manifest of the day the receipt's parcels belong to (the latest one applied when none is
    // held any more).
    let first = draft.parcels.first().map(|p| p.parcel_id.as_str()).unwrap_or_default();
    let manifest_id: Option<String> =
        s.tx.prepare_cached(
            "SELECT coalesce((SELECT h.manifest_id FROM parcel p JOIN held_day h ON h.delivery_date = p.delivery_date
                               WHERE p.parcel_id = ?1), manifest_id)
               FROM device_state WHERE id = 1",
        )?
        .query_row([first], |r| r.get(0))?;
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
    let signed = SignedReceipt::sign(&body, &keys.signing)
        .map_err(|_| CoreError::Integrity("receipt did not serialise".into()))?;
    let hash = signed.hash();
    let (bytes, signature) = (signed.body.0, signed.signature.0);
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
    // The new row is the chain's head, and its created_at_ms persists trusted time.
    s.persisted(s.now.trusted_ms);
    Ok(ReceiptSummary {
        receipt_id,
        seq,
        event: body.event,
        parcel_ids: body.parcels.into_iter().map(|p| p.parcel_id).collect(),
    })
}

/// The chain's head: the newest receipt still held, or the acknowledged checkpoint when the outbox
/// is empty (sequence 0 and the genesis hash before the first receipt).
pub(crate) fn chain_head(conn: &Connection) -> Result<(i64, [u8; 32])> {
    let (seq, hash): (i64, Option<Vec<u8>>) = conn
        .prepare_cached(
            "SELECT coalesce(r.seq, s.acked_seq), coalesce(r.hash, s.acked_hash)
             FROM device_state s LEFT JOIN (SELECT seq, hash FROM receipt ORDER BY seq DESC LIMIT 1) r
             WHERE s.id = 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let hash = hash
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| CoreError::Integrity("chain head hash is missing or not 32 bytes".into()))?;
    Ok((seq, hash))
}

/// What a stored receipt says of its place in the chain.
#[derive(serde::Deserialize)]
struct Link {
    seq: u64,
    #[serde(with = "crate::encoding::b64_32")]
    prev_hash: [u8; 32],
}

/// The chain hash the receipt at `seq` links to: the acknowledged checkpoint's when `seq` follows
/// it, otherwise the stored receipt's before it (`None` when neither is held).
pub(crate) fn hash_before(conn: &Connection, seq: i64) -> Result<Option<Vec<u8>>> {
    let (acked_seq, acked_hash): (i64, Option<Vec<u8>>) =
        conn.query_row("SELECT acked_seq, acked_hash FROM device_state WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if seq.checked_sub(1) == Some(acked_seq) {
        return Ok(acked_hash);
    }
    Ok(conn
        .prepare_cached("SELECT hash FROM receipt WHERE seq = ?1")?
        .query_row([seq.saturating_sub(1)], |r| r.get(0))
        .optional()?)
}

/// Checks that a stored receipt is as it was written, before it is sent: it stands where the
/// outbox should hold receipt `expected`, its body hashes to its stored `hash`, names its sequence
/// and links to `prev` (the hash before it). A receipt damaged on disk is named here (`Integrity`:
/// report it; the phone goes on handing over) instead of being refused by dispatch later with no
/// word of why. Signatures are dispatch's to check.
pub(crate) fn check_stored(seq: i64, expected: i64, body: &[u8], hash: &[u8], prev: Option<&[u8]>) -> Result<()> {
    let damaged =
        |why: &str| CoreError::Integrity(format!("receipt {seq} in the outbox is damaged on disk: {why}; report it"));
    if seq != expected {
        return Err(damaged(&format!("the outbox should hold receipt {expected} here")));
    }
    if crate::crypto::sha256(body)[..] != hash[..] {
        return Err(damaged("its body does not match its hash"));
    }
    let link: Link = serde_json::from_slice(body).map_err(|_| damaged("its body is not a receipt"))?;
    if i64::try_from(link.seq) != Ok(seq) || prev.is_some_and(|prev| link.prev_hash[..] != prev[..]) {
        return Err(damaged("it does not link to the receipt before it"));
    }
    Ok(())
}

/// The persisted trusted-time high-water mark: the larger of the stored mark and the newest
/// receipt's creation time (see the `device_state` schema comment).
pub(crate) fn persisted_high_water(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT max(high_water_ms, coalesce((SELECT max(created_at_ms) FROM receipt), 0)) FROM device_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

pub(crate) fn event_name(event: ReceiptEvent) -> &'static str {
    match event {
        ReceiptEvent::Delivered => "delivered",
        ReceiptEvent::Failed => "failed",
        ReceiptEvent::WrongCode => "wrong_code",
        ReceiptEvent::LockedOut => "locked_out",
        ReceiptEvent::Expired => "expired",
        ReceiptEvent::Reversed => "reversed",
        ReceiptEvent::Collected => "collected",
    }
}
