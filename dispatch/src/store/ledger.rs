//! Core's receipt ledger and code book over dispatch's database, inside an upload's transaction,
//! read set-wise: before judging, everything a checked batch can ask about (its receipt ids, the
//! parcels it names, their codes and earlier hand-overs) is read in a handful of queries, and the
//! batch's receipts are written in multi-row inserts at the end. The answers equal one query per
//! question: what the batch itself appends is applied to what was read, a question outside what
//! was read goes to the database (after the buffered writes), and the whole upload still runs in
//! one transaction, so a concurrent upload of the same receipts is settled there.

use std::collections::HashMap;

use super::*;

/// A code as issued: parcel, holder, sealed code, issued and revoked (milliseconds).
type CodeRow = (String, String, Vec<u8>, i64, Option<i64>);

/// A stored hand-over: parcel, receipt, device, flagged, reversed.
type HandoverRow = (String, String, String, bool, bool);

/// A receipt row waiting for the batch's multi-row insert.
type ReceiptInsert = (String, i64, String, Vec<u8>, Vec<u8>, Vec<u8>, &'static str, Option<String>);

use db::{placeholders, value_rows};

/// Locks the rows of `parcels` (sorted, so two uploads never wait on each other in a circle)
/// for the rest of the upload's transaction (see [`db::Db::run_locking`]).
pub(super) fn lock_parcels(tx: &Tx<'_>, parcels: &[&str]) -> std::result::Result<(), db::StorageError> {
    for chunk in db::shapes(parcels) {
        let params: Vec<&dyn db::ToParam> = chunk.iter().map(|p| p as &dyn db::ToParam).collect();
        tx.lock(
            &format!(
                "SELECT 1 FROM parcel WHERE parcel_id IN ({}) ORDER BY parcel_id FOR UPDATE",
                placeholders(1, chunk.len())
            ),
            &params,
        )?;
    }
    Ok(())
}

/// The receipt ledger in dispatch's database, inside the upload's transaction.
pub(super) struct SqlLedger<'a> {
    tx: &'a Tx<'a>,
    /// For each receipt id read or appended: who holds it (`None`: nobody).
    held: HashMap<Uuid, Option<(String, u64)>>,
    /// For each parcel read: its hand-overs with the device that made each.
    handovers: HashMap<String, Vec<(PriorHandover, String)>>,
    /// Receipts appended and not yet written, and their (receipt, parcel) rows.
    receipts: Vec<ReceiptInsert>,
    receipt_parcels: Vec<(String, String)>,
}

impl<'a> SqlLedger<'a> {
    /// Reads what judging `batch` asks the ledger: who holds each of its receipt ids, and the
    /// hand-overs of the `contested` parcels ([`SqlCodes::contested`]), locked before this.
    pub(super) fn for_batch(tx: &'a Tx<'a>, batch: &CheckedBatch, contested: &[&str]) -> Result<SqlLedger<'a>> {
        let ids: Vec<String> = batch.signed().map(|b| b.receipt_id.to_string()).collect();
        let mut held: HashMap<Uuid, Option<(String, u64)>> = batch.signed().map(|b| (b.receipt_id, None)).collect();
        for chunk in db::shapes(&ids) {
            let params: Vec<&dyn db::ToParam> = chunk.iter().map(|id| id as &dyn db::ToParam).collect();
            let rows: Vec<(String, String, i64)> = tx.all(
                &format!(
                    "SELECT receipt_id, device_id, seq FROM receipt WHERE receipt_id IN ({})",
                    placeholders(1, chunk.len())
                ),
                &params,
            )?;
            for (id, device, seq) in rows {
                let id = Uuid::parse_str(&id).map_err(|_| bad("stored receipt id"))?;
                held.insert(id, Some((device, u64::try_from(seq).map_err(|_| bad("stored receipt sequence"))?)));
            }
        }
        let mut handovers: HashMap<String, Vec<(PriorHandover, String)>> =
            contested.iter().map(|p| ((*p).to_owned(), Vec::new())).collect();
        for chunk in db::shapes(contested) {
            let params: Vec<&dyn db::ToParam> = chunk.iter().map(|p| p as &dyn db::ToParam).collect();
            let rows: Vec<HandoverRow> = tx.all(
                &format!(
                    "SELECT parcel_id, receipt_id, device_id, flagged, reversed FROM handover WHERE parcel_id IN ({})",
                    placeholders(1, chunk.len())
                ),
                &params,
            )?;
            for (parcel, receipt_id, device, flagged, reversed) in rows {
                let receipt_id = Uuid::parse_str(&receipt_id).map_err(|_| bad("stored receipt id"))?;
                handovers.entry(parcel).or_default().push((PriorHandover { receipt_id, flagged, reversed }, device));
            }
        }
        Ok(SqlLedger { tx, held, handovers, receipts: Vec::new(), receipt_parcels: Vec::new() })
    }

    /// Writes the receipts appended since the last flush, in multi-row inserts.
    pub(super) fn flush(&mut self) -> std::result::Result<(), db::StorageError> {
        for chunk in db::shapes(&std::mem::take(&mut self.receipts)) {
            let mut params: Vec<&dyn db::ToParam> = Vec::with_capacity(chunk.len() * 8);
            for (device, seq, id, body, signature, hash, status, reason) in chunk {
                params.extend([
                    device as &dyn db::ToParam,
                    seq,
                    id,
                    body as &dyn db::ToParam,
                    signature,
                    hash,
                    status,
                    reason,
                ]);
            }

            self.tx.execute_later(
                &format!(
                    "INSERT INTO receipt (device_id, seq, receipt_id, body, signature, hash, status, reason) VALUES {}",
                    value_rows(chunk.len(), 8)
                ),
                &params,
            )?;
        }
        for chunk in db::shapes(&std::mem::take(&mut self.receipt_parcels)) {
            let params: Vec<&dyn db::ToParam> =
                chunk.iter().flat_map(|(r, p)| [r as &dyn db::ToParam, p as &dyn db::ToParam]).collect();

            self.tx.execute_later(
                &format!(
                    "INSERT INTO receipt_parcel (receipt_id, parcel_id) VALUES {} ON CONFLICT DO NOTHING",
                    value_rows(chunk.len(), 2)
                ),
                &params,
            )?;
        }
        Ok(())
    }
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
        if let Some(known) = self.held.get(receipt_id) {
            return Ok(known.clone());
        }
        // Not a receipt of the batch (judging asks of no other), so none appended here.
        let row: Option<(String, i64)> =
            self.tx.opt("SELECT device_id, seq FROM receipt WHERE receipt_id = ?1", params![receipt_id.to_string()])?;
        row.map(|(device, seq)| {
            Ok((device, u64::try_from(seq).map_err(|_| CoreError::Integrity("stored receipt sequence".into()))?))
        })
        .transpose()
    }

    /// The receipt and its parcel rows are buffered for [`SqlLedger::flush`]; every other write is
    /// queued ([`Tx::execute_later`]) and on PostgreSQL goes out pipelined with the next read.
    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, verdict: Verdict<'_>) -> CoreResult<()> {
        let Verdict { status, reason, binding } = verdict;
        let status_name = match status {
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Duplicate => "duplicate",
            ReceiptStatus::Flagged => "flagged",
            ReceiptStatus::Rejected => "rejected",
        };
        let receipt_id = body.receipt_id.to_string();
        self.receipts.push((
            body.device_id.clone(),
            body.seq as i64,
            receipt_id.clone(),
            receipt.body.0.clone(),
            receipt.signature.0.clone(),
            receipt.hash().to_vec(),
            status_name,
            reason.map(str::to_owned),
        ));
        self.held.insert(body.receipt_id, Some((body.device_id.clone(), body.seq)));
        // A reversal undoes the hand-over of the parcels it names, by the phone that made it (a
        // flagged one undoes nothing).
        if body.event == ReceiptEvent::Reversed
            && binding
            && let Some(reversed) = body.reverses
        {
            for p in &body.parcels {
                self.tx.execute_later(
                    "UPDATE handover SET reversed = 1 WHERE receipt_id = ?1 AND device_id = ?2 AND parcel_id = ?3",
                    params![reversed.to_string(), body.device_id, p.parcel_id],
                )?;
                for (h, device) in self.handovers.get_mut(&p.parcel_id).into_iter().flatten() {
                    if h.receipt_id == reversed && *device == body.device_id {
                        h.reversed = true;
                    }
                }
            }
        }
        let t = body.trusted_time.timestamp_millis();
        for p in &body.parcels {
            self.receipt_parcels.push((receipt_id.clone(), p.parcel_id.clone()));
            if !binding {
                continue;
            }
            if body.event.is_handover() {
                let flagged = status == ReceiptStatus::Flagged;
                self.tx.execute_later(
                    "INSERT INTO handover (parcel_id, receipt_id, device_id, flagged) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                    params![p.parcel_id, receipt_id, body.device_id, flagged],
                )?;
                if let Some(known) = self.handovers.get_mut(&p.parcel_id)
                    && !known.iter().any(|(h, _)| h.receipt_id == body.receipt_id)
                {
                    let handover = PriorHandover { receipt_id: body.receipt_id, flagged, reversed: false };
                    known.push((handover, body.device_id.clone()));
                }
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
                        receipt_id,
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
        if let Some(known) = self.handovers.get(parcel_id) {
            return Ok(known.iter().map(|(h, _)| h.clone()).collect());
        }
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

/// A parcel's record as read for a batch, or why it could not be read (raised only if judging
/// asks for it, so one damaged parcel never fails uploads that do not depend on it).
type ReadRecord = std::result::Result<Option<ParcelRecord>, String>;

/// What dispatch issued, read from its database inside the upload's transaction.
pub(super) struct SqlCodes<'a> {
    tx: &'a Tx<'a>,
    /// Opens the sealed codes.
    kek: &'a SealingKey,
    device_id: String,
    /// The batch's parcels that were sent to the device.
    sent: HashMap<String, bool>,
    /// The records of the contested parcels (`None`: never issued).
    records: HashMap<String, ReadRecord>,
}

impl<'a> SqlCodes<'a> {
    /// Reads what judging `batch` asks the code book: which of its parcels were sent to the
    /// device, and the records of the [`SqlCodes::contested`] ones. Reads no row another upload
    /// writes, so it needs no lock.
    pub(super) fn for_batch(
        tx: &'a Tx<'a>,
        kek: &'a SealingKey,
        device_id: &str,
        batch: &CheckedBatch,
    ) -> Result<SqlCodes<'a>> {
        let parcels = batch.parcel_ids();
        let mut sent: HashMap<String, bool> = parcels.iter().map(|p| ((*p).to_owned(), false)).collect();
        for chunk in db::shapes(&parcels) {
            let mut params: Vec<&dyn db::ToParam> = vec![&device_id as &dyn db::ToParam];
            params.extend(chunk.iter().map(|p| p as &dyn db::ToParam));
            let rows: Vec<(String,)> = tx.all(
                &format!(
                    "SELECT parcel_id FROM parcel_sent WHERE device_id = ?1 AND parcel_id IN ({})",
                    placeholders(2, chunk.len())
                ),
                &params,
            )?;
            sent.extend(rows.into_iter().map(|(p,)| (p, true)));
        }
        let mut codes = SqlCodes { tx, kek, device_id: device_id.to_owned(), sent, records: HashMap::new() };
        let contested = codes.contested(batch);
        for chunk in db::shapes(&contested) {
            let read = codes.read_records(chunk)?;
            codes.records.extend(read);
        }
        Ok(codes)
    }

    /// The parcels whose verdicts depend on what other uploads store: those the batch's
    /// hand-overs name that were sent to this device (a hand-over of any other is flagged for
    /// that alone, whatever else is stored), sorted, the order every upload locks them in.
    pub(super) fn contested<'b>(&self, batch: &'b CheckedBatch) -> Vec<&'b str> {
        let mut contested: Vec<&str> =
            batch.delivered_parcel_ids().into_iter().filter(|p| self.sent.get(*p) == Some(&true)).collect();
        contested.sort_unstable();
        contested
    }

    /// The records of `parcels` in two queries: the parcels, then every code version of theirs.
    fn read_records(&self, parcels: &[&str]) -> Result<HashMap<String, ReadRecord>> {
        let params: Vec<&dyn db::ToParam> = parcels.iter().map(|p| p as &dyn db::ToParam).collect();
        let list = placeholders(1, parcels.len());
        let rows: Vec<(String, bool, String, String, bool, i64, bool)> = self.tx.all(
            &format!(
                "SELECT p.parcel_id, p.needs_code, p.delivery_date, p.time_zone, p.departed_at_ms IS NOT NULL,
                        coalesce(r.rules, 0), k.parcel_id IS NOT NULL
                   FROM parcel p LEFT JOIN parcel_rules r ON r.parcel_id = p.parcel_id
                                 LEFT JOIN pickup k ON k.parcel_id = p.parcel_id
                  WHERE p.parcel_id IN ({list})"
            ),
            &params,
        )?;
        let mut records: HashMap<String, ReadRecord> = parcels.iter().map(|p| ((*p).to_owned(), Ok(None))).collect();
        for (parcel_id, needs_code, date, zone, departed, rules, pickup) in rows {
            let rules = doorstep_core::protocol::DoorRules::from_bits(rules);
            let task = if pickup { Task::Pickup } else { Task::Delivery };
            let record = stored_window(&date, &zone)
                .map(|(not_before, not_after)| {
                    Some(ParcelRecord { needs_code, departed, not_before, not_after, codes: Vec::new(), rules, task })
                })
                .map_err(|e| format!("stored window of parcel {parcel_id}: {e}"));
            records.insert(parcel_id, record);
        }
        let rows: Vec<CodeRow> = self.tx.all(
            &format!(
                "SELECT parcel_id, holder, code, issued_at_ms, revoked_at_ms FROM code
                  WHERE parcel_id IN ({list}) ORDER BY parcel_id, id"
            ),
            &params,
        )?;
        // Each code ends when it is revoked or when a later code for the same holder replaces it
        // (the earliest issued of the later ones): read newest first, keeping that per holder.
        let mut later: HashMap<(&str, &str), i64> = HashMap::new();
        let mut ended = vec![None; rows.len()];
        for (i, (parcel_id, holder, _, issued, revoked)) in rows.iter().enumerate().rev() {
            let replaced = later.get(&(parcel_id.as_str(), holder.as_str())).copied();
            ended[i] = match (*revoked, replaced) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let earliest = replaced.map_or(*issued, |r| r.min(*issued));
            later.insert((parcel_id.as_str(), holder.as_str()), earliest);
        }
        let instant =
            |ms: i64| DateTime::from_timestamp_millis(ms).ok_or_else(|| "stored instant out of range".to_owned());
        for ((parcel_id, holder, sealed, issued, _), ended) in rows.iter().zip(ended) {
            let Some(Ok(Some(record))) = records.get_mut(parcel_id) else {
                continue;
            };
            let code = || -> std::result::Result<IssuedCode, String> {
                Ok(IssuedCode {
                    holder: Holder::from_key(holder).ok_or("stored holder")?,
                    code: open_code(self.kek, parcel_id, holder, *issued, sealed)
                        .map_err(|e| format!("code of parcel {parcel_id}: {e}"))?,
                    issued_at: instant(*issued)?,
                    ended_at: ended.map(instant).transpose()?,
                })
            };
            match code() {
                Ok(code) => record.codes.push(code),
                Err(why) => {
                    records.insert(parcel_id.clone(), Err(why));
                }
            }
        }
        Ok(records)
    }
}

impl CodeBook for SqlCodes<'_> {
    fn sent_to(&self, parcel_id: &str, device_id: &str) -> CoreResult<bool> {
        if device_id == self.device_id
            && let Some(sent) = self.sent.get(parcel_id)
        {
            return Ok(*sent);
        }
        let sent: Option<i64> = self
            .tx
            .opt("SELECT 1 FROM parcel_sent WHERE device_id = ?1 AND parcel_id = ?2", params![device_id, parcel_id])?;
        Ok(sent.is_some())
    }

    fn parcel(&self, parcel_id: &str) -> CoreResult<Option<ParcelRecord>> {
        let read = match self.records.get(parcel_id) {
            Some(known) => known.clone(),
            None => {
                let mut read = self.read_records(&[parcel_id]).map_err(|e| CoreError::Integrity(e.to_string()))?;
                read.remove(parcel_id).unwrap_or(Ok(None))
            }
        };
        read.map_err(CoreError::Integrity)
    }
}
