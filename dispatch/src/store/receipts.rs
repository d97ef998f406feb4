//! Uploads and the receipt ledger: a batch is verified by core's issuer against what dispatch
//! issued ([`SqlCodes`]) and stored ([`SqlLedger`]) in the upload's one transaction, so each
//! receipt is stored once and every device's chain keeps its order with no fork and no gap, also
//! when the same batch reaches two nodes at once (one of the two transactions runs again and
//! finds the receipts already stored: duplicates).

use super::*;

/// A stored receipt: body, signature, status and reason.
type ReceiptRow = (Vec<u8>, Vec<u8>, String, Option<String>);

/// A code as issued: holder, sealed code, issued, revoked and replaced (milliseconds).
type CodeRow = (String, Vec<u8>, i64, Option<i64>, Option<i64>);

impl Dispatch {
    /// Operator: every stored receipt about a parcel, with dispatch's verdict, oldest first.
    pub fn parcel_history(&self, parcel_id: &str) -> Result<Vec<StoredReceipt>> {
        self.run(|tx| {
            stored_receipts(
                tx,
                "SELECT r.body, r.signature, r.status, r.reason FROM receipt_parcel rp JOIN receipt r ON r.receipt_id = rp.receipt_id
             WHERE rp.parcel_id = ?1 ORDER BY r.device_id, r.seq",
                parcel_id,
            )
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
        self.run(|tx| {
            if let Some(request) = request {
                self.answer_once(tx, request)?;
            }
            let (device, _, _) = self.device(tx, device_id)?;
            // Any storage error fails the whole upload here (the transaction rolls back, nothing is
            // accepted) and the device sends the batch again.
            let verdict = self.issuer.verify_batch(
                &device,
                &mut SqlLedger { tx },
                &SqlCodes { tx, kek: &self.kek },
                batch,
                self.now()?,
            )?;
            Ok(verdict.signed_ack)
        })
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

/// Runs a query selecting `body, signature, status, reason` of stored receipts.
fn stored_receipts(tx: &Tx<'_>, sql: &str, key: &str) -> Result<Vec<StoredReceipt>> {
    let rows: Vec<ReceiptRow> = tx.all(sql, params![key])?;
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

/// The receipt ledger in dispatch's database, inside the upload's transaction.
struct SqlLedger<'a> {
    tx: &'a Tx<'a>,
}

impl ReceiptLedger for SqlLedger<'_> {
    fn head(&self, device_id: &str) -> CoreResult<Option<ChainHead>> {
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = self.tx.opt(
            "SELECT seq, hash, body FROM receipt WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1",
            params![device_id],
        )?;
        let Some((seq, hash, body)) = row else {
            return Ok(None);
        };
        let integrity = |what: &str| CoreError::Integrity(format!("stored receipt {what}"));
        let body: ReceiptBody = serde_json::from_slice(&body).map_err(|_| integrity("body"))?;
        Ok(Some(ChainHead {
            seq: u64::try_from(seq).map_err(|_| integrity("sequence"))?,
            hash: hash.try_into().map_err(|_| integrity("hash"))?,
            trusted_time: body.trusted_time,
        }))
    }

    fn holder_of(&self, receipt_id: &Uuid) -> CoreResult<Option<(String, u64)>> {
        let row: Option<(String, i64)> =
            self.tx.opt("SELECT device_id, seq FROM receipt WHERE receipt_id = ?1", params![receipt_id.to_string()])?;
        row.map(|(device, seq)| {
            Ok((device, u64::try_from(seq).map_err(|_| CoreError::Integrity("stored receipt sequence".into()))?))
        })
        .transpose()
    }

    /// Every write here is queued ([`Tx::execute_later`]): on PostgreSQL a batch's receipts go
    /// out pipelined with the next read instead of one round trip each.
    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, verdict: Verdict<'_>) -> CoreResult<()> {
        let Verdict { status, reason, binding } = verdict;
        let status_name = match status {
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Duplicate => "duplicate",
            ReceiptStatus::Flagged => "flagged",
            ReceiptStatus::Rejected => "rejected",
        };
        self.tx.execute_later(
            "INSERT INTO receipt (device_id, seq, receipt_id, body, signature, hash, status, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                body.device_id,
                body.seq as i64,
                body.receipt_id.to_string(),
                receipt.body.0,
                receipt.signature.0,
                receipt.hash().to_vec(),
                status_name,
                reason
            ],
        )?;
        if body.event == ReceiptEvent::Reversed
            && let Some(reversed) = body.reverses
        {
            self.tx.execute_later(
                "UPDATE handover SET reversed = 1 WHERE receipt_id = ?1 AND device_id = ?2",
                params![reversed.to_string(), body.device_id],
            )?;
        }
        let t = body.trusted_time.timestamp_millis();
        for p in &body.parcels {
            self.tx.execute_later(
                "INSERT INTO receipt_parcel (receipt_id, parcel_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![body.receipt_id.to_string(), p.parcel_id],
            )?;
            if !binding {
                continue;
            }
            if body.event == ReceiptEvent::Delivered {
                self.tx.execute_later(
                    "INSERT INTO handover (parcel_id, receipt_id, device_id, flagged) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                    params![p.parcel_id, body.receipt_id.to_string(), body.device_id, status == ReceiptStatus::Flagged],
                )?;
            }
            // An accepted wrong-code or lock-out receipt counts in the epoch it names, never in
            // one dispatch has not reached yet. A phone the parcel was withdrawn from (reassigned)
            // may have guessed on before it synced, so its receipts count too, unless the epoch
            // began after the withdrawal: a reset then also shuts out the old route's phones. A 1.0
            // receipt names no epoch: it counts in the current one if made after the last reset.
            let counts = matches!(body.event, ReceiptEvent::WrongCode | ReceiptEvent::LockedOut)
                && status == ReceiptStatus::Accepted;
            if counts {
                let legacy = body.version == "1.0";
                self.tx.execute_later(
                        "INSERT INTO wrong_attempt (parcel_id, receipt_id, attempt_epoch, attempts_used)
                         SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CASE WHEN ?7 = 1 THEN e.attempt_epoch ELSE CAST(?3 AS BIGINT) END,
                                CAST(?4 AS BIGINT)
                         FROM (SELECT coalesce(max(attempt_epoch), 0) AS attempt_epoch,
                                      coalesce(max(reset_at_ms), -9223372036854775808) AS reset_at_ms
                               FROM parcel_epoch WHERE parcel_id = ?1) e
                         WHERE (CASE WHEN ?7 = 1 THEN ?6 >= e.reset_at_ms ELSE ?3 <= e.attempt_epoch END)
                           AND EXISTS (SELECT 1 FROM parcel_sent s WHERE s.device_id = ?5 AND s.parcel_id = ?1
                                       AND (s.withdrawn_at_ms IS NULL OR e.reset_at_ms < s.withdrawn_at_ms))
                         ON CONFLICT DO NOTHING",
                    params![
                        p.parcel_id,
                        body.receipt_id.to_string(),
                        p.attempt_epoch,
                        p.attempts_used,
                        body.device_id,
                        t,
                        legacy
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn handovers(&self, parcel_id: &str) -> CoreResult<Vec<PriorHandover>> {
        let rows: Vec<(String, bool, bool)> = self
            .tx
            .all("SELECT receipt_id, flagged, reversed FROM handover WHERE parcel_id = ?1", params![parcel_id])?;
        rows.into_iter()
            .map(|(id, flagged, reversed)| {
                let receipt_id = Uuid::parse_str(&id).map_err(|_| CoreError::Integrity("stored receipt id".into()))?;
                Ok(PriorHandover { receipt_id, flagged, reversed })
            })
            .collect()
    }

    fn claim_qr_nonce(&mut self, nonce: &[u8], receipt_id: &Uuid) -> CoreResult<bool> {
        let inserted = self.tx.execute(
            "INSERT INTO qr_nonce (nonce, receipt_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![nonce, receipt_id.to_string()],
        )?;
        Ok(inserted == 1)
    }
}

/// What dispatch issued, read from its database inside the upload's transaction.
struct SqlCodes<'a> {
    tx: &'a Tx<'a>,
    /// Opens the sealed codes.
    kek: &'a SealingKey,
}

impl CodeBook for SqlCodes<'_> {
    fn sent_to(&self, parcel_id: &str, device_id: &str) -> CoreResult<bool> {
        let sent: Option<i64> = self
            .tx
            .opt("SELECT 1 FROM parcel_sent WHERE device_id = ?1 AND parcel_id = ?2", params![device_id, parcel_id])?;
        Ok(sent.is_some())
    }

    fn parcel(&self, parcel_id: &str) -> CoreResult<Option<ParcelRecord>> {
        let row: Option<(bool, String, String, bool)> = self.tx.opt(
            "SELECT needs_code, delivery_date, time_zone, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
            params![parcel_id],
        )?;
        let Some((needs_code, date, zone, departed)) = row else {
            return Ok(None);
        };
        let (not_before, not_after) = stored_window(&date, &zone)
            .map_err(|e| CoreError::Integrity(format!("stored window of parcel {parcel_id}: {e}")))?;
        // Each code ends when it is revoked or when a later code for the same holder replaces it.
        let rows: Vec<CodeRow> = self.tx.all(
            "SELECT holder, code, issued_at_ms, revoked_at_ms,
                        (SELECT min(n.issued_at_ms) FROM code n
                         WHERE n.parcel_id = c.parcel_id AND n.holder = c.holder AND n.id > c.id)
                 FROM code c WHERE parcel_id = ?1 ORDER BY id",
            params![parcel_id],
        )?;
        let instant = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| CoreError::Integrity("stored instant out of range".into()))
        };
        let mut codes = Vec::new();
        for (holder, code, issued, revoked, replaced) in rows {
            let ended = match (revoked, replaced) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            codes.push(IssuedCode {
                holder: Holder::from_key(&holder).ok_or_else(|| CoreError::Integrity("stored holder".into()))?,
                code: open_code(self.kek, parcel_id, &holder, issued, &code)
                    .map_err(|e| CoreError::Integrity(format!("code of parcel {parcel_id}: {e}")))?,
                issued_at: instant(issued)?,
                ended_at: ended.map(instant).transpose()?,
            });
        }
        Ok(Some(ParcelRecord { needs_code, departed, not_before, not_after, codes }))
    }
}

/// A storage failure inside core's ledger or code book, in core's terms (the transaction keeps
/// the failure itself, and the upload answers with it: see `db::Tx`).
impl From<db::StorageError> for CoreError {
    fn from(e: db::StorageError) -> CoreError {
        CoreError::Integrity(format!("storage: {e}"))
    }
}
