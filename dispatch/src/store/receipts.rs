//! Uploads and the receipt ledger: a batch is verified by core's issuer against what dispatch
//! issued ([`SqlCodes`]) and stored ([`SqlLedger`]) in the upload's one transaction, so each
//! receipt is stored once and every device's chain keeps its order with no fork and no gap, also
//! when the same batch reaches two nodes at once (one of the two transactions runs again and
//! finds the receipts already stored: duplicates).

use super::ledger::{self, SqlCodes, SqlLedger};
use super::*;

/// A stored receipt: body, signature, status and reason.
pub(super) type ReceiptRow = (Vec<u8>, Vec<u8>, String, Option<String>);

impl Dispatch {
    /// Operator: every stored receipt about a parcel, with dispatch's verdict, oldest first. Not
    /// found for an id that is neither a parcel nor named by any receipt (a forged receipt may
    /// name a parcel never issued: its history shows it).
    pub fn parcel_history(&self, parcel_id: &str) -> Result<Vec<StoredReceipt>> {
        self.run(|tx| {
            let receipts = stored_receipts(
                tx,
                "SELECT r.body, r.signature, r.status, r.reason FROM receipt_parcel rp JOIN receipt r ON r.receipt_id = rp.receipt_id
             WHERE rp.parcel_id = ?1 ORDER BY r.device_id, r.seq",
                parcel_id,
            )?;
            let known: bool = tx.one("SELECT EXISTS (SELECT 1 FROM parcel WHERE parcel_id = ?1)", params![parcel_id])?;
            if receipts.is_empty() && !known {
                return Err(DispatchError::NotFound(format!("parcel {parcel_id}")));
            }
            Ok(receipts)
        })
    }

    /// Verifies an uploaded batch, stores what verifies (accepted or flagged), and returns the
    /// signed acknowledgement. Sending the same batch again changes nothing (duplicates).
    pub fn upload(&self, device_id: &str, batch: &[u8]) -> Result<Vec<u8>> {
        self.upload_once(device_id, None, batch)
    }

    /// [`Dispatch::upload`] for a verified device request, answered once: the request is recorded
    /// in the upload's transaction.
    pub fn upload_verified(&self, request: &VerifiedRequest, batch: &[u8]) -> Result<Vec<u8>> {
        self.upload_once(request.device_id(), Some(request), batch)
    }

    fn upload_once(&self, device_id: &str, request: Option<&VerifiedRequest>, batch: &[u8]) -> Result<Vec<u8>> {
        // The signatures are checked before the transaction, on whichever core is free: against
        // the key the request was verified with, or the device's key as stored. Judging refuses
        // the batch if the device's key in the transaction is another.
        let key = match request {
            Some(request) => request.key().clone(),
            None => self
                .run(|tx| Self::device_key(tx, device_id))?
                .ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?,
        };
        let checked = CheckedBatch::check(device_id, &key, batch)?;
        // Many phones upload at once at the end of a shift: each upload locks what its verdicts
        // depend on instead of having PostgreSQL abort uploads that merely touched the same pages.
        // First the contested parcels' rows, sorted (one hand-over per parcel, across devices;
        // only this device's own parcels, so a phone can hold up no other route), then the
        // device's row (its uploads judged one after the other, each seeing what the one before
        // stored), the order operator actions take them in. Claimed QR nonces and stored
        // receipts are unique keys (a second claim waits, then finds the first).
        let (ack, alerts) = self.db.run_locking(|tx| {
            if let Some(request) = request {
                self.answer_once(tx, request)?;
            }
            let codes = SqlCodes::for_batch(tx, &self.kek, device_id, &checked)?;
            let contested = codes.contested(&checked);
            ledger::lock_parcels(tx, &contested)?;
            tx.lock("SELECT 1 FROM device WHERE device_id = ?1 FOR UPDATE", params![device_id])?;
            let (device, _, _) = self.device(tx, device_id)?;
            // Any storage error fails the whole upload here (the transaction rolls back, nothing is
            // accepted) and the device sends the batch again.
            let mut ledger = SqlLedger::for_batch(tx, &checked, &contested)?;
            let verdict = self.issuer.judge_batch(&device, &mut ledger, &codes, &checked, self.now()?)?;
            ledger.flush()?;
            let alerts = self.notice(tx, &checked, &verdict.ack.results)?;
            Ok((verdict.signed_ack, alerts))
        })?;
        for alert in alerts {
            eprintln!("{alert}");
        }
        Ok(ack)
    }

    /// Receipts held for a device with their verdicts, in chain order.
    pub fn receipts(&self, device_id: &str) -> Result<Vec<StoredReceipt>> {
        self.run(|tx| {
            stored_receipts(
                tx,
                "SELECT body, signature, status, reason FROM receipt WHERE device_id = ?1 ORDER BY seq",
                device_id,
            )
        })
    }
}

/// A device's stored receipts from sequence `from` on, in chain order.
pub(super) fn stored_receipts_of(tx: &Tx<'_>, device_id: &str, from: i64) -> Result<Vec<StoredReceipt>> {
    let rows: Vec<ReceiptRow> = tx.all(
        "SELECT body, signature, status, reason FROM receipt WHERE device_id = ?1 AND seq >= ?2 ORDER BY seq",
        params![device_id, from],
    )?;
    parse_rows(rows)
}

/// Runs a query selecting `body, signature, status, reason` of stored receipts.
fn stored_receipts(tx: &Tx<'_>, sql: &str, key: &str) -> Result<Vec<StoredReceipt>> {
    parse_rows(tx.all(sql, params![key])?)
}

pub(super) fn parse_rows(rows: Vec<ReceiptRow>) -> Result<Vec<StoredReceipt>> {
    rows.into_iter()
        .map(|(body, signature, status, reason)| {
            let receipt = SignedReceipt {
                body: doorstep_core::protocol::Base64Bytes(body),
                signature: doorstep_core::protocol::Base64Bytes(signature),
            };
            let body = receipt.parse_body().map_err(|e| bad(e.to_string()))?;
            let status = serde_json::from_value(serde_json::Value::String(status)).map_err(|e| bad(e.to_string()))?;
            Ok(StoredReceipt { receipt, body, status, reason })
        })
        .collect()
}

/// A storage failure inside core's ledger or code book, in core's terms (the transaction keeps
/// the failure itself, and the upload answers with it: see `db::Tx`).
impl From<db::StorageError> for CoreError {
    fn from(e: db::StorageError) -> CoreError {
        CoreError::Integrity(format!("storage: {e}"))
    }
}
