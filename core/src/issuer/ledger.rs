//! What batch verification needs from dispatch's storage: what was issued for each parcel (its
//! window and every code with its lifetime) and the receipts held. Both are fallible: a storage
//! error fails the whole upload (the device keeps its receipts and sends them again); it never
//! reads as "nothing issued" and so never accepts a receipt.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::IssuedParcel;
use crate::Result;
use crate::crypto::Code;
use crate::protocol::{DoorRules, Holder, ReceiptBody, ReceiptStatus, SignedReceipt, Task, genesis_hash};

/// One code dispatch issued, with its lifetime.
#[derive(Clone, Debug)]
pub struct IssuedCode {
    pub holder: Holder,
    pub code: Code,
    pub issued_at: DateTime<Utc>,
    /// When it stopped opening the parcel: the holder was revoked or the code replaced.
    pub ended_at: Option<DateTime<Utc>>,
}

impl IssuedCode {
    /// Whether the code opened the parcel at `t`.
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.issued_at <= t && self.ended_at.is_none_or(|end| t < end)
    }
}

/// What dispatch issued for one parcel: enough to judge any hand-over a receipt claims.
#[derive(Clone, Debug)]
pub struct ParcelRecord {
    pub needs_code: bool,
    /// Whether the parcel left the warehouse (no phone was ever sent one that did not).
    pub departed: bool,
    /// The delivery day's window; no hand-over counts outside it.
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Every code ever issued for the parcel, revoked and replaced ones included.
    pub codes: Vec<IssuedCode>,
    /// What a hand-over must confirm beyond the code.
    pub rules: DoorRules,
    /// A delivery (its hand-over is `delivered`) or a pickup (`collected`).
    pub task: Task,
}

/// The parcels dispatch issued, as batch verification reads them.
pub trait CodeBook {
    /// The parcel's record; `None` when dispatch never issued a parcel with this id.
    fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelRecord>>;
    /// Whether dispatch ever put the parcel on a manifest signed for this device (a phone only
    /// makes receipts for parcels it holds).
    fn sent_to(&self, parcel_id: &str, device_id: &str) -> Result<bool>;
}

/// An in-memory code book for tests, fixtures and tools.
#[derive(Default, Debug)]
pub struct MemoryCodeBook {
    pub parcels: HashMap<String, ParcelRecord>,
    /// (device, parcel) pairs dispatch sent in a manifest.
    pub sent: HashSet<(String, String)>,
}

impl MemoryCodeBook {
    /// Records what `parcel` carries as issued at `at`: its window, and its codes. A holder's
    /// earlier code that differs from the new one ends at `at` (replaced); holders no longer
    /// listed end at `at` too (revoked).
    pub fn issue(&mut self, parcel: &IssuedParcel, at: DateTime<Utc>) {
        let record = self.parcels.entry(parcel.parcel_id.clone()).or_insert_with(|| ParcelRecord {
            needs_code: false,
            departed: true,
            not_before: parcel.not_before,
            not_after: parcel.not_after,
            codes: Vec::new(),
            rules: parcel.rules,
            task: parcel.task,
        });
        record.needs_code = !parcel.codes.is_empty();
        record.rules = parcel.rules;
        record.task = parcel.task;
        (record.not_before, record.not_after) = (parcel.not_before, parcel.not_after);
        for old in record.codes.iter_mut().filter(|c| c.ended_at.is_none()) {
            if !parcel.codes.iter().any(|(h, code)| *h == old.holder && *code == old.code) {
                old.ended_at = Some(at);
            }
        }
        for (holder, code) in &parcel.codes {
            if !record.codes.iter().any(|c| c.ended_at.is_none() && c.holder == *holder && c.code == *code) {
                record.codes.push(IssuedCode {
                    holder: holder.clone(),
                    code: code.clone(),
                    issued_at: at,
                    ended_at: None,
                });
            }
        }
    }

    /// Records that a manifest signed for `device_id` carries these parcels.
    pub fn send<'a>(&mut self, device_id: &str, parcel_ids: impl IntoIterator<Item = &'a str>) {
        self.sent.extend(parcel_ids.into_iter().map(|p| (device_id.to_owned(), p.to_owned())));
    }

    /// The holder's current code for a parcel.
    pub fn current(&self, parcel_id: &str, holder: &Holder) -> Option<&Code> {
        self.parcels
            .get(parcel_id)?
            .codes
            .iter()
            .rev()
            .find(|c| c.ended_at.is_none() && c.holder == *holder)
            .map(|c| &c.code)
    }

    /// Every code ever issued, in no order (tests search files and logs for them).
    pub fn all_codes(&self) -> impl Iterator<Item = &Code> {
        self.parcels.values().flat_map(|r| r.codes.iter().map(|c| &c.code))
    }
}

impl CodeBook for MemoryCodeBook {
    fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelRecord>> {
        Ok(self.parcels.get(parcel_id).cloned())
    }

    fn sent_to(&self, parcel_id: &str, device_id: &str) -> Result<bool> {
        Ok(self.sent.contains(&(device_id.to_owned(), parcel_id.to_owned())))
    }
}

/// Dispatch's record of one device's receipt chain, and of QR tokens already used.
pub trait ReceiptLedger {
    /// The last receipt held for the device (its chain is unbroken by construction); `None`
    /// before the first.
    fn head(&self, device_id: &str) -> Result<Option<ChainHead>>;
    /// The device and sequence of a receipt already held, by id, from any device.
    fn holder_of(&self, receipt_id: &Uuid) -> Result<Option<(String, u64)>>;
    /// Stores a verified receipt (accepted or flagged) as the new head. With `binding` false the
    /// receipt is kept as evidence only: its claims about its parcels (a hand-over that holds later
    /// ones, wrong attempts) never count, because its shape already failed (a parcel never sent to
    /// the phone, a trusted time out of order).
    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, verdict: Verdict<'_>) -> Result<()>;
    /// Marks a QR token's nonce used by `receipt_id`; `false` when an earlier receipt used it.
    fn claim_qr_nonce(&mut self, nonce: &[u8], receipt_id: &Uuid) -> Result<bool>;
    /// The "delivered" receipts held for a parcel, from any device, with their verdicts and
    /// whether the device that made one later reversed it.
    fn handovers(&self, parcel_id: &str) -> Result<Vec<PriorHandover>>;
}

/// The last receipt of a device's chain that dispatch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
    /// Its trusted time: the device's trusted time never goes backwards along its chain.
    pub trusted_time: DateTime<Utc>,
}

impl ChainHead {
    /// Sequence and hash the next receipt links to (0 and the genesis hash before the first).
    pub fn link(head: Option<ChainHead>, device_id: &str) -> (u64, [u8; 32]) {
        head.map_or_else(|| (0, genesis_hash(device_id)), |h| (h.seq, h.hash))
    }
}

/// What batch verification decided about a receipt it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub status: ReceiptStatus,
    /// Why it was flagged (kept at dispatch, never sent to the phone).
    pub reason: Option<&'a str>,
    /// Whether its claims about its parcels count (see [`ReceiptLedger::append`]).
    pub binding: bool,
}

/// A hand-over of a parcel that dispatch already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorHandover {
    pub receipt_id: Uuid,
    pub flagged: bool,
    pub reversed: bool,
}

/// A receipt as the ledger keeps it.
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    pub receipt: SignedReceipt,
    pub body: ReceiptBody,
    pub status: ReceiptStatus,
    pub reason: Option<String>,
}

/// An in-memory ledger for tests and tools.
#[derive(Default, Debug)]
pub struct MemoryLedger {
    pub chains: HashMap<String, Vec<StoredReceipt>>,
    pub used_qr_nonces: HashMap<Vec<u8>, Uuid>,
    /// Receipts kept as evidence only (not binding).
    pub evidence_only: HashSet<Uuid>,
}

impl ReceiptLedger for MemoryLedger {
    fn head(&self, device_id: &str) -> Result<Option<ChainHead>> {
        Ok(self.chains.get(device_id).and_then(|c| c.last()).map(|last| ChainHead {
            seq: last.body.seq,
            hash: last.receipt.hash(),
            trusted_time: last.body.trusted_time,
        }))
    }

    fn holder_of(&self, receipt_id: &Uuid) -> Result<Option<(String, u64)>> {
        Ok(self.chains.iter().find_map(|(device, c)| {
            c.iter().find(|r| &r.body.receipt_id == receipt_id).map(|r| (device.clone(), r.body.seq))
        }))
    }

    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, verdict: Verdict<'_>) -> Result<()> {
        if !verdict.binding {
            self.evidence_only.insert(body.receipt_id);
        }
        self.chains.entry(body.device_id.clone()).or_default().push(StoredReceipt {
            receipt: receipt.clone(),
            body: body.clone(),
            status: verdict.status,
            reason: verdict.reason.map(str::to_owned),
        });
        Ok(())
    }

    fn claim_qr_nonce(&mut self, nonce: &[u8], receipt_id: &Uuid) -> Result<bool> {
        if self.used_qr_nonces.contains_key(nonce) {
            return Ok(false);
        }
        self.used_qr_nonces.insert(nonce.to_vec(), *receipt_id);
        Ok(true)
    }

    fn handovers(&self, parcel_id: &str) -> Result<Vec<PriorHandover>> {
        let mut found = Vec::new();
        for chain in self.chains.values() {
            let binding = |r: &&StoredReceipt| !self.evidence_only.contains(&r.body.receipt_id);
            for r in chain.iter().filter(|r| r.body.event.is_handover()).filter(binding) {
                if r.body.parcels.iter().any(|p| p.parcel_id == parcel_id) {
                    let reversed = chain.iter().filter(binding).any(|c| {
                        c.body.reverses == Some(r.body.receipt_id)
                            && c.body.parcels.iter().any(|p| p.parcel_id == parcel_id)
                    });
                    let flagged = r.status == ReceiptStatus::Flagged;
                    found.push(PriorHandover { receipt_id: r.body.receipt_id, flagged, reversed });
                }
            }
        }
        Ok(found)
    }
}
