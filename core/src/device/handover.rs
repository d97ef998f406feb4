//! At the door: checking a code or a QR token for the parcels the driver scanned, recording failures,
//! hand-overs of parcels that need no code, and reversals.
//!
//! The attempt counter works like a bank card's PIN-try counter: the attempt is counted in the same
//! `BEGIN IMMEDIATE` transaction *before* the comparison runs, and no part of the comparison's result
//! leaves this module until that transaction (attempt, new parcel state and receipt together) is
//! committed with `synchronous=FULL`. A process killed at any point either shows nothing (and the
//! transaction never happened) or has the attempt on disk.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::parcels::{self, ParcelRow, ParcelState, Validity};
use super::receipts::{self, Draft, ReceiptSummary};
use super::{Device, LogLevel, Session};
use crate::crypto::{Code, Tag, code_proof};
use crate::error::QrRejection;
use crate::protocol::{
    Base64Bytes, FailureReason, HandoverMethod, Holder, IdDocument, Identification, Inspection, Location, QrToken,
    ReceiptEvent, ReceiptParcel, Task,
};
use crate::{CoreError, Result};

/// Most parcels one hand-over may cover.
pub const MAX_PARCELS_PER_HANDOVER: usize = crate::protocol::MAX_PARCELS_PER_RECEIPT;
const MAX_NOTE_CHARS: usize = 500;

/// A parcel the driver presented for this hand-over, with what the driver confirms for it when
/// its rules ask (`ParcelView::rules`): the kind of ID checked, the customer's inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedParcel {
    pub barcode: String,
    pub identified: Identification,
    /// An addressee-only parcel: the kind of ID the driver checked (never its number).
    pub id_checked: Option<IdDocument>,
    /// An open-box parcel: what the customer found on opening it, when they take it.
    pub inspection: Option<Inspection>,
}

impl ScannedParcel {
    pub fn scanned(barcode: impl Into<String>) -> ScannedParcel {
        ScannedParcel {
            barcode: barcode.into(),
            identified: Identification::Scanned,
            id_checked: None,
            inspection: None,
        }
    }

    /// The same parcel, with the kind of ID the driver checked.
    pub fn with_id(self, id: IdDocument) -> ScannedParcel {
        ScannedParcel { id_checked: Some(id), ..self }
    }

    /// The same parcel, with what the customer found on opening it.
    pub fn with_inspection(self, inspection: Inspection) -> ScannedParcel {
        ScannedParcel { inspection: Some(inspection), ..self }
    }
}

/// The answer at the door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// Hand the parcels over. The receipt is already on disk.
    Accepted {
        holder: Holder,
        method: HandoverMethod,
        receipt: ReceiptSummary,
    },
    /// Not the code; `attempts_left` before the parcel locks.
    WrongCode {
        attempts_left: u32,
    },
    /// Too many wrong codes; `receipt` is the lock-out receipt when this attempt caused the lock.
    Locked {
        barcode: String,
        receipt: Option<ReceiptSummary>,
    },
    /// The code's validity has ended.
    Expired {
        barcode: String,
    },
    /// The code is not valid yet.
    NotYetValid {
        barcode: String,
        valid_from: chrono::DateTime<chrono::Utc>,
    },
    AlreadyDelivered {
        barcode: String,
    },
    /// The barcode is not on this device's manifest.
    UnknownParcel {
        barcode: String,
    },
    /// None of the scanned parcels needs a code: use `deliver_without_code`.
    NoCodeNeeded,
}

fn check_scan(scanned: &[ScannedParcel]) -> Result<()> {
    let bad = |why: &str| Err(CoreError::InvalidInput { what: "scanned parcels", why: why.into() });
    if scanned.is_empty() {
        return bad("scan at least one parcel");
    }
    if scanned.len() > MAX_PARCELS_PER_HANDOVER {
        return bad("too many parcels for one hand-over");
    }
    let mut seen = std::collections::HashSet::new();
    for s in scanned {
        let b = s.barcode.trim();
        if b.is_empty() || b.len() > 128 {
            return bad("empty or overlong barcode");
        }
        if !seen.insert(b) {
            return bad("the same parcel was scanned twice");
        }
        if let Some(Inspection::AcceptedWithReservation { note }) = &s.inspection {
            check_note(FailureReason::Other, &Some(note.clone())).map_err(|_| CoreError::InvalidInput {
                what: "inspection",
                why: "a reservation needs its words: 1 to 500 characters, no control characters".into(),
            })?;
        }
    }
    Ok(())
}

/// The event of a hand-over of `rows`: `delivered`, or `collected` for pickups; one hand-over is
/// all deliveries or all pickups.
fn handover_event(rows: &[(ParcelRow, ScannedParcel)]) -> Result<ReceiptEvent> {
    let pickups = rows.iter().filter(|(r, _)| r.view.task == Task::Pickup).count();
    match pickups {
        0 => Ok(ReceiptEvent::Delivered),
        n if n == rows.len() => Ok(ReceiptEvent::Collected),
        _ => Err(CoreError::InvalidInput {
            what: "scanned parcels",
            why: "deliveries and pickups cannot change hands in one hand-over: scan them apart".into(),
        }),
    }
}

/// Every confirmation the parcels' rules ask for is there (checked before any attempt is
/// counted): an ID check for an addressee-only parcel, the inspection of an open-box one.
fn check_door_rules(rows: &[(ParcelRow, ScannedParcel)]) -> Result<()> {
    for (row, scanned) in rows {
        if row.view.rules.addressee_only && rows.len() > 1 {
            // On its own: no other parcel's holder (a delegate, another customer) can take it along.
            return Err(CoreError::InvalidInput {
                what: "scanned parcels",
                why: format!("parcel {} is for the addressee only: hand it over on its own", row.view.parcel_id),
            });
        }
        let missing = |needs| Err(CoreError::DoorCheckMissing { parcel: row.view.parcel_id.clone(), needs });
        if row.view.rules.addressee_only && scanned.id_checked.is_none() {
            return missing("is for the addressee only: check their ID and name its kind");
        }
        if row.view.rules.open_box && scanned.inspection.is_none() {
            return missing("is an open-box parcel: open it with the customer and name what they found");
        }
    }
    Ok(())
}

fn check_location(location: &Option<Location>) -> Result<()> {
    if let Some(l) = location {
        let ok = l.latitude.is_finite()
            && l.longitude.is_finite()
            && l.accuracy_m.is_finite()
            && (-90.0..=90.0).contains(&l.latitude)
            && (-180.0..=180.0).contains(&l.longitude)
            && l.accuracy_m >= 0.0;
        if !ok {
            return Err(CoreError::InvalidInput {
                what: "location",
                why: "latitude, longitude or accuracy out of range".into(),
            });
        }
    }
    Ok(())
}

fn check_note(reason: FailureReason, note: &Option<String>) -> Result<()> {
    let bad = |why: &str| Err(CoreError::InvalidInput { what: "note", why: why.into() });
    match note {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => bad("at most 500 characters"),
        Some(n) if n.chars().any(|c| c.is_control() && c != '\n') => bad("no control characters"),
        Some(n) if reason == FailureReason::Other && n.trim().is_empty() => bad("reason `other` needs a note"),
        None if reason == FailureReason::Other => bad("reason `other` needs a note"),
        _ => Ok(()),
    }
}

/// The scanned parcels resolved, or the first reason the hand-over cannot go ahead.
enum Resolved {
    Ready(Vec<(ParcelRow, ScannedParcel)>),
    Stop(HandoverOutcome),
}

fn resolve(s: &Session<'_>, scanned: &[ScannedParcel], allow_locked: bool) -> Result<Resolved> {
    let mut rows = Vec::with_capacity(scanned.len());
    for sp in scanned {
        let barcode = sp.barcode.trim().to_owned();
        let Some(row) = parcels::by_barcode(&s.tx, &s.now, &barcode)? else {
            return Ok(Resolved::Stop(HandoverOutcome::UnknownParcel { barcode }));
        };
        let v = &row.view;
        let locked = v.state == ParcelState::Locked || (v.needs_code && v.attempts_used >= v.max_attempts);
        let stop = match (v.state, v.validity) {
            (ParcelState::Delivered | ParcelState::Collected, _) => Some(HandoverOutcome::AlreadyDelivered { barcode }),
            (ParcelState::Expired, _) | (_, Validity::Expired) => Some(HandoverOutcome::Expired { barcode }),
            _ if locked && !allow_locked => Some(HandoverOutcome::Locked { barcode, receipt: None }),
            (_, Validity::NotYetValid) => Some(HandoverOutcome::NotYetValid { barcode, valid_from: v.not_before }),
            _ => None,
        };
        if let Some(outcome) = stop {
            return Ok(Resolved::Stop(outcome));
        }
        rows.push((row, sp.clone()));
    }
    Ok(Resolved::Ready(rows))
}

/// Which holder's tag the code matches, checking every tag so the time taken does not depend on
/// which one (if any) matched.
fn matching_holder(s: &Session<'_>, row: &ParcelRow, code: &Code) -> Result<Option<Holder>> {
    let salt = row.salt.as_deref().unwrap_or_default();
    let key = s.keys()?.secret.tag_key(row.key_epoch);
    let mut found = None;
    for (holder, tag) in &row.tags {
        // An addressee-only parcel opens with the customer's own code alone.
        if row.view.rules.addressee_only && *holder != Holder::Customer {
            continue;
        }
        let hit = Tag::matches(&key, &row.view.parcel_id, salt, code, row.tag_bits, tag);
        if hit && found.is_none() {
            found = Some(holder.clone());
        }
    }
    Ok(found)
}

/// Sets a parcel's state; a delivered parcel is linked to the receipt that delivered it.
fn set_state(s: &Session<'_>, parcel_id: &str, state: ParcelState, receipt: &Uuid) -> Result<()> {
    let delivered_by = (state == ParcelState::Delivered).then(|| receipt.to_string());
    s.tx.prepare_cached(
        "UPDATE parcel SET state = ?1, updated_at_ms = ?2, delivery_receipt = coalesce(?4, delivery_receipt)
         WHERE parcel_id = ?3",
    )?
    .execute(params![state.as_str(), s.now.trusted_ms, parcel_id, delivered_by])?;
    Ok(())
}

fn receipt_parcel(row: &ParcelRow, identified: Identification, proof: Option<Vec<u8>>) -> ReceiptParcel {
    ReceiptParcel {
        parcel_id: row.view.parcel_id.clone(),
        barcode: row.view.barcode.clone(),
        identified,
        attempts_used: row.view.attempts_used,
        attempt_epoch: row.attempt_epoch,
        code_proof: proof.map(Base64Bytes),
        id_checked: None,
        inspection: None,
    }
}

/// A handed-over parcel as its receipt names it, with what the driver confirmed.
fn handed_over(row: &ParcelRow, scanned: &ScannedParcel, proof: Option<Vec<u8>>) -> ReceiptParcel {
    ReceiptParcel {
        id_checked: scanned.id_checked,
        inspection: scanned.inspection.clone(),
        ..receipt_parcel(row, scanned.identified, proof)
    }
}

impl Device {
    /// Checks the code the recipient gave for the scanned parcels and, if right, records the
    /// hand-over. Malformed input (not six digits) is an error and spends no attempt.
    pub fn verify_code(
        &self,
        scanned: &[ScannedParcel],
        code: &str,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        let code = Code::parse(code)?;
        check_scan(scanned)?;
        check_location(&location)?;
        let outcome = self.write(|s| {
            s.keys()?;
            let mut rows = match resolve(s, scanned, false)? {
                Resolved::Stop(outcome) => return Ok(outcome),
                Resolved::Ready(rows) => rows,
            };
            if !rows.iter().any(|(r, _)| r.view.needs_code) {
                return Ok(HandoverOutcome::NoCodeNeeded);
            }
            check_door_rules(&rows)?;
            let event = handover_event(&rows)?;
            // 1. Count the attempt on every parcel that needs a code.
            let mut count = s.tx.prepare_cached(
                "UPDATE parcel SET attempts_used = attempts_used + 1, updated_at_ms = ?1 WHERE parcel_id = ?2",
            )?;
            for (row, _) in rows.iter_mut().filter(|(r, _)| r.view.needs_code) {
                count.execute(params![s.now.trusted_ms, row.view.parcel_id])?;
                row.view.attempts_used += 1;
            }
            // 2. Compare, in constant time per tag.
            let mut holder = None;
            let mut all_match = true;
            for (row, _) in rows.iter().filter(|(r, _)| r.view.needs_code) {
                match matching_holder(s, row, &code)? {
                    Some(h) => holder = holder.or(Some(h)),
                    None => all_match = false,
                }
            }
            // 3. Record the outcome in the same transaction.
            match holder {
                Some(holder) if all_match => self.accept(s, &rows, event, holder, &code, location),
                _ => self.refuse(s, &rows, location),
            }
        })?;
        self.log(LogLevel::Info, &describe(&outcome));
        Ok(outcome)
    }

    fn accept(
        &self,
        s: &Session<'_>,
        rows: &[(ParcelRow, ScannedParcel)],
        event: ReceiptEvent,
        holder: Holder,
        code: &Code,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        let receipt_id = Uuid::now_v7();
        let proof_key = &s.keys()?.proof;
        let mut parcels = Vec::with_capacity(rows.len());
        for (row, scanned) in rows {
            let proof = row
                .view
                .needs_code
                .then(|| code_proof(proof_key, receipt_id.as_bytes(), &row.view.parcel_id, code).to_vec());
            parcels.push(handed_over(row, scanned, proof));
            set_state(s, &row.view.parcel_id, ParcelState::Delivered, &receipt_id)?;
        }
        let method = match holder {
            Holder::Customer => HandoverMethod::Code,
            Holder::Delegate(_) => HandoverMethod::DelegateCode,
        };
        let mut draft = Draft::new(event, parcels);
        draft.method = Some(method);
        draft.holder = Some(holder.clone());
        draft.location = location;
        let receipt = receipts::append(s, receipt_id, draft)?;
        Ok(HandoverOutcome::Accepted { holder, method, receipt })
    }

    fn refuse(
        &self,
        s: &Session<'_>,
        rows: &[(ParcelRow, ScannedParcel)],
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        let code_rows = rows.iter().filter(|(r, _)| r.view.needs_code);
        let newly_locked: Vec<_> =
            code_rows.clone().filter(|(r, _)| r.view.attempts_used >= r.view.max_attempts).collect();
        if newly_locked.is_empty() {
            // The wrong attempt leaves the phone as a receipt (durable in the outbox like any
            // other), so dispatch carries the count to wherever the parcel goes next.
            let attempts_left = code_rows
                .clone()
                .map(|(r, _)| r.view.max_attempts.saturating_sub(r.view.attempts_used))
                .min()
                .unwrap_or(0);
            let parcels = code_rows.map(|(row, scanned)| receipt_parcel(row, scanned.identified, None)).collect();
            let mut draft = Draft::new(ReceiptEvent::WrongCode, parcels);
            draft.location = location;
            receipts::append(s, Uuid::now_v7(), draft)?;
            return Ok(HandoverOutcome::WrongCode { attempts_left });
        }
        // Every counted attempt leaves as a receipt: the parcels this attempt did not lock yet
        // get a wrong-code receipt beside the lock-out receipt.
        let still_open: Vec<_> = code_rows
            .filter(|(r, _)| r.view.attempts_used < r.view.max_attempts)
            .map(|(row, scanned)| receipt_parcel(row, scanned.identified, None))
            .collect();
        if !still_open.is_empty() {
            let mut draft = Draft::new(ReceiptEvent::WrongCode, still_open);
            draft.location = location;
            receipts::append(s, Uuid::now_v7(), draft)?;
        }
        let receipt_id = Uuid::now_v7();
        let mut parcels = Vec::with_capacity(newly_locked.len());
        for (row, scanned) in &newly_locked {
            set_state(s, &row.view.parcel_id, ParcelState::Locked, &receipt_id)?;
            parcels.push(receipt_parcel(row, scanned.identified, None));
        }
        let mut draft = Draft::new(ReceiptEvent::LockedOut, parcels);
        draft.reason = Some(FailureReason::CodeLockedOut);
        draft.location = location;
        let receipt = receipts::append(s, receipt_id, draft)?;
        Ok(HandoverOutcome::Locked { barcode: newly_locked[0].0.view.barcode.clone(), receipt: Some(receipt) })
    }

    /// Checks a QR token from the customer app (dispatch-signed, one parcel, used once) and records
    /// the hand-over. A token is not guessable, so it also opens a parcel locked by wrong codes.
    pub fn verify_qr_token(
        &self,
        scanned: &[ScannedParcel],
        token: &str,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        check_scan(scanned)?;
        check_location(&location)?;
        let outcome = self.write(|s| {
            let keys = s.keys()?;
            let parsed = QrToken::verify(token, &keys.dispatch)?;
            let rows = match resolve(s, scanned, true)? {
                Resolved::Stop(outcome) => return Ok(outcome),
                Resolved::Ready(rows) => rows,
            };
            let Some((target, _)) = rows.iter().find(|(r, _)| r.view.parcel_id == parsed.parcel_id) else {
                return Err(QrRejection::WrongParcel.into());
            };
            if rows.iter().any(|(r, _)| r.view.needs_code && r.view.parcel_id != parsed.parcel_id) {
                return Err(QrRejection::WrongParcel.into());
            }
            if target.view.needs_code && !target.view.holders.contains(&parsed.holder) {
                return Err(QrRejection::HolderNotAuthorised.into());
            }
            if target.view.rules.addressee_only && parsed.holder != Holder::Customer {
                return Err(QrRejection::HolderNotAuthorised.into());
            }
            check_door_rules(&rows)?;
            let event = handover_event(&rows)?;
            let minted_after: Option<i64> =
                s.tx.query_row(
                    "SELECT qr_minted_after_ms FROM code_tag WHERE parcel_id = ?1 AND holder = ?2",
                    params![parsed.parcel_id, parsed.holder.to_key()],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            if let Some(reissued) = minted_after
                && parsed.issued_at.is_none_or(|minted| minted.timestamp_millis() <= reissued)
            {
                return Err(QrRejection::Superseded.into());
            }
            if s.now.trusted_ms < parsed.not_before.timestamp_millis() {
                return Err(QrRejection::NotYetValid.into());
            }
            if s.now.trusted_ms >= parsed.not_after.timestamp_millis() {
                return Err(QrRejection::Expired.into());
            }
            let fresh = s.tx.execute(
                "INSERT OR IGNORE INTO used_qr (nonce, parcel_id, used_at_ms) VALUES (?1, ?2, ?3)",
                params![parsed.nonce.0, parsed.parcel_id, s.now.trusted_ms],
            )?;
            if fresh == 0 {
                return Err(QrRejection::AlreadyUsed.into());
            }
            let receipt_id = Uuid::now_v7();
            let mut parcels = Vec::with_capacity(rows.len());
            for (row, scanned) in &rows {
                parcels.push(handed_over(row, scanned, None));
                set_state(s, &row.view.parcel_id, ParcelState::Delivered, &receipt_id)?;
            }
            let mut draft = Draft::new(event, parcels);
            draft.method = Some(HandoverMethod::QrToken);
            draft.holder = Some(parsed.holder.clone());
            draft.qr_token = Some(token.trim().to_owned());
            draft.location = location;
            let receipt = receipts::append(s, receipt_id, draft)?;
            Ok(HandoverOutcome::Accepted { holder: parsed.holder, method: HandoverMethod::QrToken, receipt })
        })?;
        self.log(LogLevel::Info, &describe(&outcome));
        Ok(outcome)
    }

    /// Hands over parcels that need no code (the receipt says so).
    pub fn deliver_without_code(
        &self,
        scanned: &[ScannedParcel],
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        check_scan(scanned)?;
        check_location(&location)?;
        self.write(|s| {
            s.keys()?;
            let rows = match resolve(s, scanned, false)? {
                Resolved::Stop(outcome) => return Ok(outcome),
                Resolved::Ready(rows) => rows,
            };
            if let Some((row, _)) = rows.iter().find(|(r, _)| r.view.needs_code) {
                return Err(CoreError::InvalidState {
                    parcel: row.view.parcel_id.clone(),
                    state: "needs a code".into(),
                });
            }
            check_door_rules(&rows)?;
            let event = handover_event(&rows)?;
            let receipt_id = Uuid::now_v7();
            let mut parcels = Vec::with_capacity(rows.len());
            for (row, scanned) in &rows {
                parcels.push(handed_over(row, scanned, None));
                set_state(s, &row.view.parcel_id, ParcelState::Delivered, &receipt_id)?;
            }
            let mut draft = Draft::new(event, parcels);
            draft.method = Some(HandoverMethod::NoCode);
            draft.location = location;
            let receipt = receipts::append(s, receipt_id, draft)?;
            Ok(HandoverOutcome::Accepted { holder: Holder::Customer, method: HandoverMethod::NoCode, receipt })
        })
    }

    /// Records that the scanned parcels could not be handed over; they go back to the station. A
    /// pending parcel becomes `failed` (it may still be handed over later); locked and expired
    /// parcels keep their state.
    pub fn record_failure(
        &self,
        scanned: &[ScannedParcel],
        reason: FailureReason,
        note: Option<String>,
        location: Option<Location>,
    ) -> Result<ReceiptSummary> {
        check_scan(scanned)?;
        check_note(reason, &note)?;
        check_location(&location)?;
        let summary = self.write(|s| {
            s.keys()?;
            let receipt_id = Uuid::now_v7();
            let mut parcels = Vec::with_capacity(scanned.len());
            for sp in scanned {
                let barcode = sp.barcode.trim();
                // A failure uses no code data: a parcel damaged on disk can still be recorded.
                let row = parcels::by_barcode_unchecked(&s.tx, &s.now, barcode)?
                    .ok_or_else(|| CoreError::UnknownParcel(barcode.to_owned()))?;
                match row.view.state {
                    ParcelState::Delivered | ParcelState::Collected => {
                        return Err(CoreError::InvalidState {
                            parcel: row.view.parcel_id.clone(),
                            state: format!("{} (record a reversal instead)", row.view.state.as_str()),
                        });
                    }
                    ParcelState::Pending => set_state(s, &row.view.parcel_id, ParcelState::Failed, &receipt_id)?,
                    _ => {}
                }
                parcels.push(receipt_parcel(&row, sp.identified, None));
            }
            let mut draft = Draft::new(ReceiptEvent::Failed, parcels);
            draft.reason = Some(reason);
            draft.note = note;
            draft.location = location;
            receipts::append(s, receipt_id, draft)
        })?;
        self.log(LogLevel::Info, &format!("failure recorded: receipt {} ({reason:?})", summary.seq));
        Ok(summary)
    }

    /// Corrects a hand-over recorded by mistake: a new receipt that reverses the delivered one; the
    /// parcel becomes `failed`. Nothing is deleted.
    pub fn reverse_delivery(
        &self,
        parcel_id: &str,
        reason: FailureReason,
        note: Option<String>,
        location: Option<Location>,
    ) -> Result<ReceiptSummary> {
        check_note(reason, &note)?;
        check_location(&location)?;
        self.write(|s| {
            s.keys()?;
            let row = parcels::by_id(&s.tx, &s.now, parcel_id)?
                .ok_or_else(|| CoreError::UnknownParcel(parcel_id.to_owned()))?;
            if !row.view.state.is_handed_over() {
                return Err(CoreError::InvalidState {
                    parcel: parcel_id.into(),
                    state: row.view.state.as_str().into(),
                });
            }
            let reverses = row
                .delivery_receipt
                .as_deref()
                .and_then(|r| Uuid::parse_str(r).ok())
                .ok_or_else(|| CoreError::Integrity("delivered parcel has no receipt".into()))?;
            let receipt_id = Uuid::now_v7();
            set_state(s, parcel_id, ParcelState::Failed, &receipt_id)?;
            let mut draft = Draft::new(ReceiptEvent::Reversed, vec![receipt_parcel(&row, Identification::Typed, None)]);
            draft.reason = Some(reason);
            draft.note = note;
            draft.reverses = Some(reverses);
            draft.location = location;
            receipts::append(s, receipt_id, draft)
        })
    }
}

/// A log line about an outcome: identifiers and counts only, never the code.
fn describe(outcome: &HandoverOutcome) -> String {
    match outcome {
        HandoverOutcome::Accepted { method, receipt, .. } => {
            format!("hand-over accepted ({method:?}), receipt {}", receipt.seq)
        }
        HandoverOutcome::WrongCode { attempts_left } => format!("wrong code, {attempts_left} attempts left"),
        HandoverOutcome::Locked { barcode, .. } => format!("parcel {barcode} locked"),
        other => format!("hand-over refused: {other:?}"),
    }
}
