//! Reading an uploaded batch and checking each receipt's device signature: pure work that needs
//! only the device's public key, so dispatch does it before its storage transaction and on any
//! core. Judging ([`super::Issuer::judge_batch`]) takes only a [`CheckedBatch`], and it refuses
//! one checked against a key other than the device's, so a receipt whose signature did not verify
//! never reaches the ledger, whichever way a caller splits the work.

use std::collections::HashSet;

use uuid::Uuid;

use crate::crypto::VerifyingKey;
use crate::protocol::{MAX_PARCELS_PER_RECEIPT, ReceiptBody, SignedReceipt, UploadBatch, check_version, domain};
use crate::{CoreError, Result};

/// Largest batch the issuer reads (dispatch's HTTP limit, `protocol::MAX_BATCH_BYTES`, is lower).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A batch whose format is known and whose receipts' signatures were checked against one key.
#[derive(Debug)]
pub struct CheckedBatch {
    pub(super) device_id: String,
    pub(super) batch_id: Uuid,
    /// The key every signature was checked against.
    pub(super) key: VerifyingKey,
    pub(super) receipts: Vec<CheckedReceipt>,
}

/// One receipt of a batch after the signature check, in upload order.
#[derive(Debug)]
pub(super) enum CheckedReceipt {
    /// Its body is not a receipt.
    Unreadable,
    /// Its body reads, but the device's signature over it does not verify.
    Forged { receipt_id: Uuid, seq: u64 },
    /// Signed by the device; still to be judged against the chain and what was issued.
    Signed { receipt: SignedReceipt, body: Box<ReceiptBody> },
}

impl CheckedBatch {
    /// Reads `batch` from `device_id` and checks every receipt's signature against `key`. Errors
    /// only for a batch as a whole (too large, not a batch, another device's); a receipt that
    /// fails is kept, to be rejected in the ack.
    pub fn check(device_id: &str, key: &VerifyingKey, batch: &[u8]) -> Result<CheckedBatch> {
        if batch.len() > MAX_BATCH_BYTES {
            return Err(CoreError::BatchRejected(format!("over {MAX_BATCH_BYTES} bytes")));
        }
        let batch: UploadBatch = serde_json::from_slice(batch).map_err(|e| CoreError::BatchRejected(e.to_string()))?;
        if batch.format != domain::BATCH || !check_version(&batch.version) {
            return Err(CoreError::BatchRejected("unknown format or version".into()));
        }
        if batch.device_id != device_id {
            return Err(CoreError::BatchRejected("batch is from another device".into()));
        }
        let receipts = batch
            .receipts
            .into_iter()
            .map(|receipt| match receipt.parse_body() {
                Err(_) => CheckedReceipt::Unreadable,
                Ok(body) if !receipt.verify(key, &body) => {
                    CheckedReceipt::Forged { receipt_id: body.receipt_id, seq: body.seq }
                }
                Ok(body) => CheckedReceipt::Signed { receipt, body: Box::new(body) },
            })
            .collect();
        Ok(CheckedBatch { device_id: device_id.to_owned(), batch_id: batch.batch_id, key: key.clone(), receipts })
    }

    /// The bodies whose signature verified, in upload order: what judging will ask storage about.
    pub fn signed(&self) -> impl Iterator<Item = &ReceiptBody> {
        self.receipts.iter().filter_map(|r| match r {
            CheckedReceipt::Signed { body, .. } => Some(&**body),
            _ => None,
        })
    }

    /// Each signed receipt with its verdict, from `results` (the ack's, in upload order: one per
    /// receipt of the batch): a receipt sent twice in one batch is paired with each of its own
    /// verdicts, never with the other copy's.
    pub fn judged<'a, R>(&'a self, results: &'a [R]) -> impl Iterator<Item = (&'a ReceiptBody, &'a R)> {
        self.receipts.iter().zip(results).filter_map(|(receipt, result)| match receipt {
            CheckedReceipt::Signed { body, .. } => Some((&**body, result)),
            _ => None,
        })
    }

    /// Every parcel the signed receipts name (each once), for a store to read in one go; judging
    /// reads no parcel other than these, and only for receipts within the per-receipt limit.
    pub fn parcel_ids(&self) -> Vec<&str> {
        distinct(self.signed().filter(|b| b.parcels.len() <= MAX_PARCELS_PER_RECEIPT).flat_map(parcels_of))
    }

    /// The parcels named by signed hand-overs: the only ones whose issued codes and earlier
    /// hand-overs judging reads.
    pub fn delivered_parcel_ids(&self) -> Vec<&str> {
        distinct(
            self.signed()
                .filter(|b| b.event.is_handover() && b.parcels.len() <= MAX_PARCELS_PER_RECEIPT)
                .flat_map(parcels_of),
        )
    }
}

fn parcels_of(body: &ReceiptBody) -> impl Iterator<Item = &str> {
    body.parcels.iter().map(|p| p.parcel_id.as_str())
}

fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}
