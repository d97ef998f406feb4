//! Verifying an uploaded batch: device signature, chain continuity, code proofs against the true
//! codes, duplicates. Every receipt gets a verdict; a failed proof is *flagged* (kept, for a person to
//! look at), never silently accepted.

use chrono::{DateTime, Utc};

use super::{CodeBook, EnrolledDevice, Issuer, ReceiptLedger};
use crate::crypto::verify_code_proof;
use crate::protocol::{
    Ack, Checkpoint, HandoverMethod, QrToken, ReceiptBody, ReceiptEvent, ReceiptResult, ReceiptStatus, SignedReceipt,
    UploadBatch, check_version, domain,
};
use crate::{CoreError, Result};

/// Largest batch dispatch takes in one request.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

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
    pub fn verify_batch(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        batch: &[u8],
        now: DateTime<Utc>,
    ) -> Result<BatchVerdict> {
        if batch.len() > MAX_BATCH_BYTES {
            return Err(CoreError::BatchRejected(format!("over {MAX_BATCH_BYTES} bytes")));
        }
        let batch: UploadBatch = serde_json::from_slice(batch).map_err(|e| CoreError::BatchRejected(e.to_string()))?;
        if batch.format != domain::BATCH || !check_version(&batch.version) {
            return Err(CoreError::BatchRejected("unknown format or version".into()));
        }
        if batch.device_id != device.device_id {
            return Err(CoreError::BatchRejected("batch is from another device".into()));
        }
        let mut results = Vec::with_capacity(batch.receipts.len());
        for receipt in &batch.receipts {
            results.push(self.judge(device, ledger, codes, receipt));
        }
        let (seq, head_hash) = ledger.head(&device.device_id);
        let ack = Ack {
            device_id: device.device_id.clone(),
            batch_id: batch.batch_id,
            server_time: now,
            checkpoint: Checkpoint { seq, head_hash },
            results,
        };
        let signed_ack = self.sign_ack(&ack);
        Ok(BatchVerdict { ack, signed_ack })
    }

    fn judge(
        &self,
        device: &EnrolledDevice,
        ledger: &mut dyn ReceiptLedger,
        codes: &dyn CodeBook,
        receipt: &SignedReceipt,
    ) -> ReceiptResult {
        let reject = |id, seq, why: &str| ReceiptResult {
            receipt_id: id,
            seq,
            status: ReceiptStatus::Rejected,
            reason: Some(why.to_owned()),
        };
        let Ok(body) = receipt.parse_body() else {
            return reject(uuid::Uuid::nil(), 0, "body is not a receipt");
        };
        let (id, seq) = (body.receipt_id, body.seq);
        if !device.public_key.verify(domain::RECEIPT, &receipt.body.0, &receipt.signature.0) {
            return reject(id, seq, "device signature does not verify");
        }
        if body.device_id != device.device_id {
            return reject(id, seq, "receipt names another device");
        }
        if let Some(held) = ledger.seq_of(&device.device_id, &id) {
            if held == seq {
                return ReceiptResult { receipt_id: id, seq, status: ReceiptStatus::Duplicate, reason: None };
            }
            return reject(id, seq, "receipt id already held at another sequence");
        }
        let (head_seq, head_hash) = ledger.head(&device.device_id);
        if seq <= head_seq {
            return reject(id, seq, "another receipt is already held at this sequence (forked chain)");
        }
        if seq != head_seq + 1 {
            return reject(id, seq, "gap in the chain: earlier receipts are missing");
        }
        if body.prev_hash != head_hash {
            return reject(id, seq, "prev_hash does not match the previous receipt");
        }
        let problem = self.content_problem(device, codes, &body);
        let status = if problem.is_some() { ReceiptStatus::Flagged } else { ReceiptStatus::Accepted };
        ledger.append(receipt, &body, status, problem.as_deref());
        ReceiptResult { receipt_id: id, seq, status, reason: problem }
    }

    /// Checks what the receipt claims: the code proof against the true codes, or the QR token.
    fn content_problem(&self, device: &EnrolledDevice, codes: &dyn CodeBook, body: &ReceiptBody) -> Option<String> {
        if body.event != ReceiptEvent::Delivered {
            return None;
        }
        match body.method {
            Some(HandoverMethod::Code | HandoverMethod::DelegateCode) => {
                let Some(holder) = &body.holder else {
                    return Some("delivered with a code but no holder named".into());
                };
                let key = device.secret.proof_key();
                let rid = body.receipt_id.as_bytes();
                for p in &body.parcels {
                    let issued = codes.codes(&p.parcel_id, holder);
                    if issued.is_empty() {
                        continue; // a parcel of the hand-over that needed no code
                    }
                    let Some(proof) = &p.code_proof else {
                        return Some(format!("parcel {} has no code proof", p.parcel_id));
                    };
                    if !issued.iter().any(|code| verify_code_proof(&key, rid, &p.parcel_id, code, &proof.0)) {
                        return Some(format!("code proof for parcel {} does not match the issued code", p.parcel_id));
                    }
                }
                None
            }
            Some(HandoverMethod::QrToken) => {
                let Some(text) = &body.qr_token else {
                    return Some("delivered by QR token but no token attached".into());
                };
                match QrToken::verify(text, &self.verifying_keys()) {
                    Ok(token) if body.parcels.iter().any(|p| p.parcel_id == token.parcel_id) => None,
                    Ok(_) => Some("QR token is for another parcel".into()),
                    Err(e) => Some(format!("QR token invalid: {e}")),
                }
            }
            Some(HandoverMethod::NoCode) => {
                let needing: Vec<_> = body
                    .parcels
                    .iter()
                    .filter(|p| !codes.codes(&p.parcel_id, &crate::protocol::Holder::Customer).is_empty())
                    .collect();
                needing.first().map(|p| format!("parcel {} needs a code but was handed over without one", p.parcel_id))
            }
            None => Some("delivered without a method".into()),
        }
    }
}
