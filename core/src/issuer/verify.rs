//! Verifying an uploaded batch: device signature, chain continuity, duplicates, and every claim a
//! hand-over makes re-checked with the phone's own rules (code proofs against the codes valid at
//! the time, QR tokens, windows). Every receipt gets a verdict; what cannot be verified is
//! *flagged* (kept, for a person to look at), never silently accepted. A storage error fails the
//! whole batch: nothing is stored and the device sends it again. Why a receipt was flagged stays
//! at dispatch: the ack tells the phone only "held for review", so a flag is no oracle for which
//! check a forged receipt failed.

use chrono::{DateTime, Utc};

use std::collections::HashSet;

use super::checked::{CheckedBatch, CheckedReceipt};
use super::{ChainHead, CodeBook, EnrolledDevice, Issuer, ParcelRecord, ReceiptLedger, Verdict};
use crate::crypto::verify_code_proof;
use crate::protocol::{
    Ack, Checkpoint, HandoverMethod, Holder, MAX_PARCELS_PER_RECEIPT, QrToken, REQUEST_SKEW_MS, ReceiptBody,
    ReceiptEvent, ReceiptParcel, ReceiptResult, ReceiptStatus, Task,
};
use crate::{CoreError, Result};

/// What the ack says of a flagged receipt; the reason is kept at dispatch.
pub const FLAGGED_FOR_PHONE: &str = "held for review at dispatch";

/// The outcome of one upload: the ack (to sign and send) and the bytes already signed.
#[derive(Debug, Clone)]
pub struct BatchVerdict {
    pub ack: Ack,
    pub signed_ack: Vec<u8>,
}

impl BatchVerdict {
    pub fn count(&self, status: ReceiptStatus) -> usize {
        self.ack.results.iter().filter(|r| r.status == status).count()
    }
}

impl Issuer {
    /// Checks and judges a batch in one go: [`CheckedBatch::check`] with the device's key, then
    /// [`Issuer::judge_batch`].
    pub fn verify_batch(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        batch: &[u8],
        now: DateTime<Utc>,
    ) -> Result<BatchVerdict> {
        let checked = CheckedBatch::check(&device.device_id, &device.public_key, batch)?;
        self.judge_batch(device, ledger, codes, &checked, now)
    }

    /// Judges a checked batch against the device's chain and what was issued, stores each
    /// receipt that verified (accepted or flagged) and signs the ack. Refused when the batch was
    /// checked for another device or against another key.
    pub fn judge_batch(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        checked: &CheckedBatch,
        now: DateTime<Utc>,
    ) -> Result<BatchVerdict> {
        if checked.device_id != device.device_id || checked.key != device.public_key {
            return Err(CoreError::BatchRejected("batch was checked against another device's key".into()));
        }
        // The chain head is read once; each receipt appended moves it.
        let mut head = ledger.head(&device.device_id)?;
        let mut results = Vec::with_capacity(checked.receipts.len());
        for receipt in &checked.receipts {
            results.push(self.judge(device, ledger, codes, receipt, &mut head, now)?);
        }
        let (seq, head_hash) = ChainHead::link(head, &device.device_id);
        let ack = Ack {
            device_id: device.device_id.clone(),
            batch_id: checked.batch_id,
            server_time: now,
            checkpoint: Checkpoint { seq, head_hash },
            results,
        };
        let signed_ack = self.sign_ack(&ack)?;
        Ok(BatchVerdict { ack, signed_ack })
    }

    fn judge(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        checked: &CheckedReceipt,
        head: &mut Option<ChainHead>,
        now: DateTime<Utc>,
    ) -> Result<ReceiptResult> {
        let reject = |id, seq, why: &str| ReceiptResult {
            receipt_id: id,
            seq,
            status: ReceiptStatus::Rejected,
            reason: Some(why.to_owned()),
        };
        let (receipt, body) = match checked {
            CheckedReceipt::Unreadable => return Ok(reject(uuid::Uuid::nil(), 0, "body is not a receipt")),
            CheckedReceipt::Forged { receipt_id, seq } => {
                return Ok(reject(*receipt_id, *seq, "device signature does not verify"));
            }
            CheckedReceipt::Signed { receipt, body } => (receipt, body),
        };
        let (id, seq) = (body.receipt_id, body.seq);
        if body.device_id != device.device_id {
            return Ok(reject(id, seq, "receipt names another device"));
        }
        // No phone makes such a receipt; it is not stored, so it costs dispatch nothing more.
        if body.parcels.len() > MAX_PARCELS_PER_RECEIPT {
            return Ok(reject(id, seq, &format!("names more than {MAX_PARCELS_PER_RECEIPT} parcels")));
        }
        let mut seen = HashSet::with_capacity(body.parcels.len());
        if body.parcels.iter().any(|p| !seen.insert(p.parcel_id.as_str())) {
            return Ok(reject(id, seq, "names a parcel twice"));
        }
        match ledger.holder_of(&id)? {
            Some((held_by, held)) if held_by == device.device_id && held == seq => {
                return Ok(ReceiptResult { receipt_id: id, seq, status: ReceiptStatus::Duplicate, reason: None });
            }
            Some((held_by, _)) if held_by == device.device_id => {
                return Ok(reject(id, seq, "receipt id already held at another sequence"));
            }
            Some(_) => return Ok(reject(id, seq, "receipt id already held from another device")),
            None => {}
        }
        let (head_seq, head_hash) = ChainHead::link(*head, &device.device_id);
        if seq <= head_seq {
            return Ok(reject(id, seq, "another receipt is already held at this sequence (forked chain)"));
        }
        if seq != head_seq + 1 {
            return Ok(reject(id, seq, "gap in the chain: earlier receipts are missing"));
        }
        if body.prev_hash != head_hash {
            return Ok(reject(id, seq, "prev_hash does not match the previous receipt"));
        }
        // A genuine QR token that reaches dispatch is spent whatever the verdict, so a token seen
        // in any stored receipt (flagged ones included) opens nothing again.
        let qr = match body.qr_token.as_deref().map(|text| QrToken::verify(text, &self.verifying_keys())) {
            Some(Ok(token)) => {
                let fresh = ledger.claim_qr_nonce(&token.nonce.0, &body.receipt_id)?;
                Some(Ok((token, fresh)))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let (problem, binding) = match shape_problem(device, codes, body, *head, now)? {
            Some(problem) => (Some(problem), false),
            None => (self.content_problem(device, ledger, codes, body, qr)?, true),
        };
        let status = if problem.is_some() { ReceiptStatus::Flagged } else { ReceiptStatus::Accepted };
        ledger.append(receipt, body, Verdict { status, reason: problem.as_deref(), binding })?;
        *head = Some(ChainHead { seq, hash: receipt.hash(), trusted_time: body.trusted_time });
        let reason = problem.map(|_| FLAGGED_FOR_PHONE.to_owned());
        Ok(ReceiptResult { receipt_id: id, seq, status, reason })
    }

    /// Re-checks every claim a "delivered" receipt makes, with the phone's own rules
    /// (`device::handover`): each parcel was issued and the hand-over falls inside its day; a code
    /// hand-over proves, for every parcel that needs one, a code issued to the holder it names and
    /// valid at the receipt's trusted time; a QR hand-over shows a dispatch-signed token for that
    /// holder and parcel, inside its window, never used before; a hand-over without a code covers
    /// only parcels that need none. `Some(why)` flags the receipt.
    fn content_problem(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        body: &ReceiptBody,
        qr: Option<std::result::Result<(QrToken, bool), crate::error::QrRejection>>,
    ) -> Result<Option<String>> {
        if body.event == ReceiptEvent::Reversed {
            return reversal_problem(ledger, body);
        }
        if !body.event.is_handover() {
            return Ok(None);
        }
        let t = body.trusted_time;
        let mut records = Vec::with_capacity(body.parcels.len());
        for p in &body.parcels {
            let Some(record) = codes.parcel(&p.parcel_id)? else {
                return Ok(Some(format!("parcel {} was never issued", p.parcel_id)));
            };
            if !record.departed {
                return Ok(Some(format!("parcel {} never left the warehouse", p.parcel_id)));
            }
            // One hand-over per parcel: a second is a forgery or a mistake for a person to look at,
            // and after a flagged one every later one is held too, so a flag is no oracle that
            // tells an insider which of two candidate codes to send next.
            let prior = ledger.handovers(&p.parcel_id)?;
            if prior.iter().any(|h| h.flagged) {
                return Ok(Some(format!(
                    "an earlier hand-over of parcel {} was flagged; later ones are held for review",
                    p.parcel_id
                )));
            }
            if let Some(h) = prior.iter().find(|h| !h.reversed) {
                return Ok(Some(format!("parcel {} was already handed over (receipt {})", p.parcel_id, h.receipt_id)));
            }
            if t < record.not_before || t >= record.not_after {
                return Ok(Some(format!(
                    "parcel {} handed over at {t}, outside its delivery window {} to {}",
                    p.parcel_id, record.not_before, record.not_after
                )));
            }
            // A delivery is delivered, a pickup collected: a phone that treats one as the other
            // (an earlier build that does not know pickups) is flagged.
            let expected = match record.task {
                Task::Delivery => ReceiptEvent::Delivered,
                Task::Pickup => ReceiptEvent::Collected,
            };
            if body.event != expected {
                return Ok(Some(format!(
                    "parcel {} is a {}, but the receipt says {:?}",
                    p.parcel_id,
                    record.task.as_str(),
                    body.event
                )));
            }
            records.push((p, record));
        }
        let holder = body.holder.as_ref();
        if let Some(why) = rules_problem(holder, &records) {
            return Ok(Some(why));
        }
        Ok(match body.method {
            None => Some("delivered without a method".into()),
            Some(HandoverMethod::NoCode) => records
                .iter()
                .find(|(_, r)| r.needs_code)
                .map(|(p, _)| format!("parcel {} needs a code but was handed over without one", p.parcel_id)),
            Some(method @ (HandoverMethod::Code | HandoverMethod::DelegateCode)) => {
                let Some(holder) = holder else {
                    return Ok(Some("delivered with a code but no holder named".into()));
                };
                if matches!(holder, Holder::Customer) != (method == HandoverMethod::Code) {
                    return Ok(Some(format!("method {method:?} does not fit holder {}", holder.to_key())));
                }
                code_problem(device, body, holder, &records)
            }
            Some(HandoverMethod::QrToken) => match qr {
                None => Some("delivered by QR token but no token attached".into()),
                Some(Err(e)) => Some(format!("QR token invalid: {e}")),
                Some(Ok((_, false))) => Some("QR token already used by an earlier hand-over".into()),
                Some(Ok((token, true))) => qr_problem(&token, holder, t, &records),
            },
        })
    }
}

/// What any receipt must be, whatever its event: about parcels dispatch sent to this device, with a
/// trusted time that never went backwards along the chain and is not ahead of dispatch's clock
/// (beyond the skew a signed request may have). A receipt that fails is kept as evidence only.
fn shape_problem(
    device: &EnrolledDevice,
    codes: &dyn CodeBook,
    body: &ReceiptBody,
    head: Option<ChainHead>,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let t = body.trusted_time;
    if let Some(head) = head
        && t < head.trusted_time
    {
        return Ok(Some(format!("trusted time {t} is before the previous receipt's {}", head.trusted_time)));
    }
    if (t - now).num_milliseconds() > REQUEST_SKEW_MS {
        return Ok(Some(format!("trusted time {t} is ahead of dispatch's clock ({now})")));
    }
    for p in &body.parcels {
        if !codes.sent_to(&p.parcel_id, &device.device_id)? {
            return Ok(Some(format!("parcel {} was never on a manifest sent to this device", p.parcel_id)));
        }
    }
    Ok(None)
}

/// The parcels' rules at the door, as the phone keeps them: an addressee-only parcel goes to the
/// customer (never a delegate) with the kind of ID checked named; an open-box parcel names what the
/// customer found on opening it.
fn rules_problem(holder: Option<&Holder>, records: &[(&ReceiptParcel, ParcelRecord)]) -> Option<String> {
    for (p, record) in records {
        if record.rules.addressee_only && records.len() > 1 {
            return Some(format!("parcel {} is for the addressee only but was handed over with others", p.parcel_id));
        }
        if record.rules.addressee_only {
            if matches!(holder, Some(Holder::Delegate(_))) {
                return Some(format!("parcel {} is for the addressee only but went to a delegate", p.parcel_id));
            }
            if p.id_checked.is_none() {
                return Some(format!("parcel {} is for the addressee only but no ID check is named", p.parcel_id));
            }
        }
        if record.rules.open_box && p.inspection.is_none() {
            return Some(format!("parcel {} is an open-box parcel but no inspection is named", p.parcel_id));
        }
    }
    None
}

/// A code hand-over: every parcel that needs a code carries a proof made with a code issued to
/// `holder` and valid at the receipt's trusted time.
fn code_problem(
    device: &EnrolledDevice,
    body: &ReceiptBody,
    holder: &Holder,
    records: &[(&ReceiptParcel, ParcelRecord)],
) -> Option<String> {
    let t = body.trusted_time;
    let key = device.secret.proof_key();
    let rid = body.receipt_id.as_bytes();
    let mut coded = 0;
    for (p, record) in records.iter().filter(|(_, r)| r.needs_code) {
        coded += 1;
        let Some(proof) = &p.code_proof else {
            return Some(format!("parcel {} has no code proof", p.parcel_id));
        };
        let mut held = record.codes.iter().filter(|c| &c.holder == holder).peekable();
        if held.peek().is_none() {
            return Some(format!("{} was never issued a code for parcel {}", holder.to_key(), p.parcel_id));
        }
        let Some(used) = held.find(|c| verify_code_proof(&key, rid, &p.parcel_id, &c.code, &proof.0)) else {
            return Some(format!(
                "code proof for parcel {} does not match any code issued to {}",
                p.parcel_id,
                holder.to_key()
            ));
        };
        if !used.valid_at(t) {
            return Some(match used.ended_at {
                Some(end) if t >= end => format!(
                    "parcel {}: the code of {} was revoked or replaced at {end}, before this hand-over at {t} \
                     (a phone that had not synced since is a legitimate cause)",
                    p.parcel_id,
                    holder.to_key()
                ),
                _ => format!("parcel {}: hand-over at {t} is before its code was issued", p.parcel_id),
            });
        }
    }
    (coded == 0).then(|| "delivered with a code, but none of its parcels needs one".into())
}

/// A QR hand-over: the token is for the receipt's holder and one of its parcels, the other parcels
/// need no code, the trusted time is inside the token's window, and the holder held a valid code
/// for the parcel then (the device's `HolderNotAuthorised`).
fn qr_problem(
    token: &QrToken,
    holder: Option<&Holder>,
    t: DateTime<Utc>,
    records: &[(&ReceiptParcel, ParcelRecord)],
) -> Option<String> {
    if holder != Some(&token.holder) {
        return Some(format!("QR token is for {}, the receipt names another holder", token.holder.to_key()));
    }
    let Some((_, target)) = records.iter().find(|(p, _)| p.parcel_id == token.parcel_id) else {
        return Some("QR token is for another parcel".into());
    };
    if let Some((p, _)) = records.iter().find(|(p, r)| r.needs_code && p.parcel_id != token.parcel_id) {
        return Some(format!(
            "parcel {} needs its own code; the QR token covers {} only",
            p.parcel_id, token.parcel_id
        ));
    }
    if t < token.not_before || t >= token.not_after {
        return Some(format!("QR token used at {t}, outside its window {} to {}", token.not_before, token.not_after));
    }
    if target.needs_code && !target.codes.iter().any(|c| c.holder == token.holder && c.valid_at(t)) {
        return Some(format!("{} held no valid code for parcel {} at {t}", token.holder.to_key(), token.parcel_id));
    }
    // The phone refuses such a token too once its manifest names the reissue (`qr_minted_after`);
    // a phone that had not synced it yet accepted it, and its receipt is flagged here.
    let held: Vec<_> = target.codes.iter().filter(|c| c.holder == token.holder).map(|c| c.issued_at).collect();
    if let (true, Some(reissued)) = (held.len() > 1, held.iter().max()) {
        match token.issued_at {
            // A token stamped in the reissue's own millisecond may be from just before it.
            Some(minted) if minted > *reissued => {}
            Some(minted) => {
                return Some(format!(
                    "QR token minted at {minted}, before the code of {} was reissued at {reissued} \
                     (a phone that had not synced the reissue is a legitimate cause)",
                    token.holder.to_key()
                ));
            }
            None => {
                return Some(format!(
                    "QR token with no mint time, for {} whose code was reissued at {reissued}",
                    token.holder.to_key()
                ));
            }
        }
    }
    None
}

/// A reversal must name the hand-over it undoes and only parcels that hand-over delivered (it
/// undoes theirs alone); one that names none, or another parcel, is flagged and undoes nothing.
fn reversal_problem(ledger: &mut dyn ReceiptLedger, body: &ReceiptBody) -> Result<Option<String>> {
    let Some(reversed) = body.reverses else {
        return Ok(Some("a reversal names no receipt".into()));
    };
    if body.parcels.is_empty() {
        return Ok(Some("a reversal names no parcel".into()));
    }
    for p in &body.parcels {
        if !ledger.handovers(&p.parcel_id)?.iter().any(|h| h.receipt_id == reversed) {
            return Ok(Some(format!(
                "the reversal of receipt {reversed} names parcel {}, which it did not hand over",
                p.parcel_id
            )));
        }
    }
    // Only the phone that made a hand-over corrects it (its own chain holds both).
    match ledger.holder_of(&reversed)? {
        Some((device, _)) if device == body.device_id => Ok(None),
        _ => Ok(Some(format!("the reversal of receipt {reversed} comes from another phone than the hand-over"))),
    }
}
