//! Evidence anyone can check: one self-contained file about one parcel, checked offline with
//! nothing but dispatch's public keys.
//!
//! The file holds every receipt that names the parcel (each signed by the phone that made it) and
//! dispatch's signed statement. The statement names, per phone, its enrolled public key, the chain
//! hashes from the link before the parcel's first receipt to its last (so none in between can be
//! left out), and dispatch's verdict on each of the parcel's receipts (a flag only as "held for
//! review": why dispatch flagged it stays at dispatch). Other parcels' receipts in between appear
//! only as hashes; a receipt that also names another customer's parcel is the writer's to refuse
//! (dispatch does), since its signed body cannot be shown without theirs.
//!
//! [`verify`] accepts a file only if dispatch's signature holds under a trusted key, every receipt
//! is signed by the key dispatch enrolled for its phone, sits at its place in that phone's chain
//! (its hash at its sequence, its `prev_hash` the hash before it), and receipts and verdicts match
//! one to one. The file must also be exactly as [`seal`] wrote it (compact JSON, canonical
//! base64), so changing any byte of it is detected, not only bytes under a signature.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::crypto::{SigningKey, VerifyingKey};
use crate::issuer::StoredReceipt;
use crate::protocol::{
    Base64Bytes, FailureReason, HandoverMethod, Holder, ReceiptEvent, ReceiptResult, ReceiptStatus, SignedEnvelope,
    SignedReceipt, genesis_hash,
};

/// The file's `format` and the statement's signature domain.
pub const FORMAT: &str = "doorstep.evidence";
/// The largest evidence file [`verify`] reads.
pub const MAX_EVIDENCE_BYTES: usize = 16 * 1024 * 1024;

/// One phone's part of the evidence, as dispatch states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainExtract {
    pub device_id: String,
    /// The phone's enrolled receipt-signing key.
    pub device: VerifyingKey,
    /// The sequence of `hashes[0]`: the receipt before the parcel's first (0: the chain's genesis).
    pub from_seq: u64,
    /// The chain hash of every receipt from `from_seq` to the parcel's last receipt, in order.
    pub hashes: Vec<Base64Bytes>,
    /// Dispatch's verdict on each of this phone's receipts that name the parcel.
    pub verdicts: Vec<ReceiptResult>,
}

/// What dispatch signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub parcel_id: String,
    pub issued_at: DateTime<Utc>,
    pub chains: Vec<ChainExtract>,
}

/// The file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceFile {
    format: String,
    parcel_id: String,
    /// [`Statement`] signed by dispatch (envelope format [`FORMAT`]).
    statement: SignedEnvelope,
    receipts: Vec<SignedReceipt>,
}

/// One receipt about the parcel, as checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceEvent {
    pub device_id: String,
    pub seq: u64,
    pub receipt_id: Uuid,
    pub event: ReceiptEvent,
    pub holder: Option<Holder>,
    pub method: Option<HandoverMethod>,
    pub reason: Option<FailureReason>,
    /// The phone's trusted time when it made the receipt.
    pub trusted_time: DateTime<Utc>,
    /// Dispatch's verdict, and why when it is not plain acceptance.
    pub status: ReceiptStatus,
    pub status_reason: Option<String>,
}

/// What a verified evidence file shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceReport {
    pub parcel_id: String,
    /// The dispatch key that signed the statement.
    pub signed_by: String,
    pub issued_at: DateTime<Utc>,
    /// The parcel's receipts, oldest first (by trusted time, then phone and sequence).
    pub events: Vec<EvidenceEvent>,
}

/// Why an evidence file was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EvidenceRejection {
    #[error("the file is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not an evidence file: {0}")]
    Malformed(String),
    #[error("the file was changed after dispatch wrote it (it is not in the exact form dispatch writes)")]
    NotAsWritten,
    #[error("the statement is signed by key {0}, which is not among the trusted dispatch keys")]
    UntrustedKey(String),
    #[error("dispatch's signature on the statement does not verify")]
    BadStatementSignature,
    #[error("receipt {seq} of device {device} does not verify under the key dispatch enrolled for it")]
    BadReceiptSignature { device: String, seq: u64 },
    #[error("receipt {seq} of device {device} does not sit in the chain dispatch stated: {why}")]
    BrokenChain { device: String, seq: u64, why: String },
    #[error("receipts and dispatch's verdicts do not match: {0}")]
    Mismatch(String),
}

/// One phone's part of the evidence about `parcel_id`, from `chain`: a run of that phone's stored
/// receipts in sequence order, reaching at least the parcel's last receipt and starting no later
/// than the receipt before the parcel's first one (or at the chain's start). `None` when no
/// receipt in it names the parcel. Returns the extract and the parcel's receipts.
pub fn extract(
    device_id: &str,
    device: &VerifyingKey,
    chain: &[StoredReceipt],
    parcel_id: &str,
) -> crate::Result<Option<(ChainExtract, Vec<SignedReceipt>)>> {
    let names = |r: &StoredReceipt| r.body.parcels.iter().any(|p| p.parcel_id == parcel_id);
    let (Some(first), Some(last)) = (chain.iter().position(names), chain.iter().rposition(names)) else {
        return Ok(None);
    };
    let start = first.saturating_sub(1);
    let chain = &chain[..=last];
    for pair in chain[start..].windows(2) {
        if pair[1].body.seq != pair[0].body.seq + 1 || pair[1].body.prev_hash != pair[0].receipt.hash() {
            return Err(crate::CoreError::Integrity(format!(
                "device {device_id}'s stored chain is broken at {}",
                pair[1].body.seq
            )));
        }
    }
    let from_seq =
        chain[first].body.seq.checked_sub(1).ok_or_else(|| {
            crate::CoreError::Integrity(format!("device {device_id} stored a receipt with sequence 0"))
        })?;
    let mut hashes = Vec::with_capacity(chain.len() - start + 1);
    if first == 0 {
        if chain[0].body.prev_hash != genesis_hash(device_id) || from_seq != 0 {
            return Err(crate::CoreError::Integrity(format!(
                "device {device_id}'s stored chain does not start at its genesis"
            )));
        }
        hashes.push(Base64Bytes(genesis_hash(device_id).to_vec()));
    }
    hashes.extend(chain[start..].iter().map(|r| Base64Bytes(r.receipt.hash().to_vec())));
    let mut receipts = Vec::new();
    let mut verdicts = Vec::new();
    for r in chain[first..].iter().filter(|r| names(r)) {
        receipts.push(r.receipt.clone());
        verdicts.push(ReceiptResult {
            receipt_id: r.body.receipt_id,
            seq: r.body.seq,
            status: r.status,
            // Why dispatch flagged a receipt stays at dispatch (it would tell an insider which of
            // its guesses came close): the evidence says what the phone is told.
            reason: (r.status == crate::protocol::ReceiptStatus::Flagged)
                .then(|| crate::issuer::FLAGGED_FOR_PHONE.to_owned()),
        });
    }
    Ok(Some((
        ChainExtract { device_id: device_id.into(), device: device.clone(), from_seq, hashes, verdicts },
        receipts,
    )))
}

/// Writes an evidence file: `statement` signed with `key`, and the parcel's `receipts`.
pub fn seal(statement: &Statement, receipts: Vec<SignedReceipt>, key: &SigningKey) -> crate::Result<Vec<u8>> {
    let payload = serde_json::to_vec(statement)
        .map_err(|_| crate::CoreError::Integrity("evidence statement did not serialise".into()))?;
    let file = EvidenceFile {
        format: FORMAT.into(),
        parcel_id: statement.parcel_id.clone(),
        statement: SignedEnvelope::sign(FORMAT, payload, key),
        receipts,
    };
    serde_json::to_vec(&file).map_err(|_| crate::CoreError::Integrity("evidence did not serialise".into()))
}

/// Checks an evidence file against the dispatch keys the reader trusts (published by the carrier);
/// returns what it shows. Needs no network and no secret.
pub fn verify(bytes: &[u8], trusted: &[VerifyingKey]) -> Result<EvidenceReport, EvidenceRejection> {
    if bytes.len() > MAX_EVIDENCE_BYTES {
        return Err(EvidenceRejection::TooLarge { size: bytes.len(), limit: MAX_EVIDENCE_BYTES });
    }
    let file: EvidenceFile = serde_json::from_slice(bytes).map_err(|e| EvidenceRejection::Malformed(e.to_string()))?;
    if serde_json::to_vec(&file).ok().as_deref() != Some(bytes) {
        return Err(EvidenceRejection::NotAsWritten);
    }
    if file.format != FORMAT {
        return Err(EvidenceRejection::Malformed(format!("format is {:?}", file.format)));
    }
    let signer = file.statement.key_id.clone();
    if !trusted.iter().any(|k| k.key_id == signer) {
        return Err(EvidenceRejection::UntrustedKey(signer));
    }
    let payload = SignedEnvelope::open(&file.statement.to_bytes(), FORMAT, trusted).map_err(|e| match e {
        crate::protocol::EnvelopeError::BadSignature => EvidenceRejection::BadStatementSignature,
        other => EvidenceRejection::Malformed(format!("{other:?}")),
    })?;
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| EvidenceRejection::Malformed(e.to_string()))?;
    if statement.parcel_id != file.parcel_id {
        return Err(EvidenceRejection::Mismatch("the statement is about another parcel".into()));
    }
    let mut events = Vec::with_capacity(file.receipts.len());
    let mut matched = std::collections::HashSet::new();
    for receipt in &file.receipts {
        let body = receipt.parse_body().map_err(|e| EvidenceRejection::Malformed(e.to_string()))?;
        let (device, seq) = (body.device_id.clone(), body.seq);
        let broken = |why: &str| EvidenceRejection::BrokenChain { device: device.clone(), seq, why: why.into() };
        let chain = statement
            .chains
            .iter()
            .find(|c| c.device_id == device)
            .ok_or_else(|| EvidenceRejection::Mismatch(format!("no chain stated for device {device}")))?;
        if !receipt.verify(&chain.device, &body) {
            return Err(EvidenceRejection::BadReceiptSignature { device, seq });
        }
        if !body.parcels.iter().any(|p| p.parcel_id == statement.parcel_id) {
            return Err(EvidenceRejection::Mismatch(format!(
                "receipt {seq} of device {device} is about other parcels"
            )));
        }
        let at = |s: u64| {
            s.checked_sub(chain.from_seq).and_then(|i| chain.hashes.get(usize::try_from(i).ok()?)).map(|h| &h.0[..])
        };
        if seq <= chain.from_seq || at(seq) != Some(&receipt.hash()[..]) {
            return Err(broken("its hash is not the stated one at its sequence"));
        }
        if at(seq - 1) != Some(&body.prev_hash[..]) {
            return Err(broken("its previous hash is not the stated one before it"));
        }
        if chain.from_seq == 0 && at(0) != Some(&genesis_hash(&device)[..]) {
            return Err(broken("the chain does not start at the device's genesis"));
        }
        let verdict =
            chain.verdicts.iter().find(|v| v.seq == seq && v.receipt_id == body.receipt_id).ok_or_else(|| {
                EvidenceRejection::Mismatch(format!("no verdict for receipt {seq} of device {device}"))
            })?;
        if !matched.insert((device.clone(), seq)) {
            return Err(EvidenceRejection::Mismatch(format!("receipt {seq} of device {device} appears twice")));
        }
        events.push(EvidenceEvent {
            device_id: device.clone(),
            seq,
            receipt_id: body.receipt_id,
            event: body.event,
            holder: body.holder,
            method: body.method,
            reason: body.reason,
            trusted_time: body.trusted_time,
            status: verdict.status,
            status_reason: verdict.reason.clone(),
        });
    }
    let verdicts: usize = statement.chains.iter().map(|c| c.verdicts.len()).sum();
    if verdicts != matched.len() {
        return Err(EvidenceRejection::Mismatch(format!(
            "dispatch states {verdicts} receipts about the parcel, the file holds {}",
            matched.len()
        )));
    }
    events.sort_by(|a, b| (a.trusted_time, &a.device_id, a.seq).cmp(&(b.trusted_time, &b.device_id, b.seq)));
    Ok(EvidenceReport { parcel_id: statement.parcel_id, signed_by: signer, issued_at: statement.issued_at, events })
}
