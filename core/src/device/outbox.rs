//! The durable outbox: receipts wait here until a verified server acknowledgement covers them.
//!
//! The host app does the HTTP: it asks for the next batch (bytes), posts it, and hands back the
//! server's signed answer, or reports the failure and gets a retry delay (exponential backoff with
//! full jitter, capped). The batch in flight is remembered on disk, so after a crash the same batch
//! (same id, same receipts) is offered again; dispatch de-duplicates.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::status::millis;
use super::{Device, LogLevel};
use crate::error::AckRejection;
use crate::protocol::{
    Ack, Base64Bytes, MAX_BATCH_BYTES, PROTOCOL_VERSION, ReceiptResult, ReceiptStatus, SignedEnvelope, SignedReceipt,
    UploadBatch, domain,
};
use crate::{CoreError, Result};

/// First retry window; doubles per consecutive failure.
pub const BACKOFF_BASE_MS: i64 = 5_000;
/// Largest retry window.
pub const BACKOFF_CAP_MS: i64 = 15 * 60 * 1000;
const MAX_ACK_BYTES: usize = 4 * 1024 * 1024;

/// A batch of receipts ready to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxBatch {
    pub batch_id: Uuid,
    /// The request body (JSON).
    pub bytes: Vec<u8>,
    pub receipt_count: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// True when this batch was handed out before (in flight when the app stopped or failed).
    pub resend: bool,
    /// How long to wait before sending, if an earlier failure set a backoff (zero: send now).
    pub retry_after: Duration,
}

/// What an accepted acknowledgement did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Every receipt up to this sequence is now held by dispatch.
    pub acked_through: u64,
    /// Receipts removed from the outbox.
    pub removed: u32,
    pub accepted: u32,
    pub duplicates: u32,
    /// Receipts dispatch stored but wants a person to look at (e.g. a code proof mismatch).
    pub flagged: Vec<ReceiptResult>,
    /// Receipts dispatch refused; they stay in the outbox.
    pub rejected: Vec<ReceiptResult>,
}

/// When to try the upload again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAdvice {
    pub consecutive_failures: u32,
    pub retry_after: Duration,
}

impl Device {
    /// The next batch to upload, bounded by `max_receipts` and about `max_bytes` (at least one receipt
    /// is always included; never more than half of [`MAX_BATCH_BYTES`], what dispatch accepts), or
    /// `None` when the outbox is empty.
    pub fn next_batch(&self, max_receipts: u32, max_bytes: u32) -> Result<Option<OutboxBatch>> {
        if max_receipts == 0 || max_bytes < 1024 {
            return Err(CoreError::InvalidInput {
                what: "batch limits",
                why: "at least 1 receipt and 1024 bytes".into(),
            });
        }
        let max_bytes = max_bytes.min((MAX_BATCH_BYTES / 2) as u32);
        self.write(|s| {
            let device_id = s.keys()?.device_id.clone();
            let acked: i64 = s.tx.query_row("SELECT acked_seq FROM device_state WHERE id = 1", [], |r| r.get(0))?;
            let in_flight: Option<(String, i64, i64)> =
                s.tx.query_row("SELECT batch_id, first_seq, last_seq FROM outbox_batch WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let (batch_id, resend, receipts) = match in_flight {
                Some((id, first, last)) if last > acked => {
                    let id = Uuid::parse_str(&id).map_err(|_| CoreError::Integrity("bad batch id".into()))?;
                    (id, true, load(&s.tx, first.max(acked + 1), last, u32::MAX, u32::MAX)?)
                }
                _ => (Uuid::now_v7(), false, load(&s.tx, acked + 1, i64::MAX, max_receipts, max_bytes)?),
            };
            let (Some(first), Some(last)) = (receipts.first(), receipts.last()) else {
                s.tx.execute("DELETE FROM outbox_batch", [])?;
                return Ok(None);
            };
            let (first_seq, last_seq) = (first.0, last.0);
            if !resend {
                s.tx.execute(
                    "INSERT OR REPLACE INTO outbox_batch (id, batch_id, first_seq, last_seq, created_at_ms)
                     VALUES (1, ?1, ?2, ?3, ?4)",
                    params![batch_id.to_string(), first_seq, last_seq, s.now.trusted_ms],
                )?;
            }
            let retry_at: Option<i64> =
                s.tx.query_row("SELECT retry_at_ms FROM upload_backoff WHERE id = 1", [], |r| r.get(0)).optional()?;
            let batch = UploadBatch {
                format: domain::BATCH.into(),
                version: PROTOCOL_VERSION.into(),
                batch_id,
                device_id,
                receipts: receipts.into_iter().map(|(_, r)| r).collect(),
            };
            Ok(Some(OutboxBatch {
                batch_id,
                receipt_count: batch.receipts.len() as u32,
                bytes: serde_json::to_vec(&batch)
                    .map_err(|_| CoreError::Integrity("batch did not serialise".into()))?,
                first_seq: first_seq as u64,
                last_seq: last_seq as u64,
                resend,
                retry_after: millis(retry_at.map_or(0, |at| at - s.now.trusted_ms)),
            }))
        })
    }

    /// Verifies dispatch's signed acknowledgement and forgets the receipts its checkpoint covers.
    /// Anything wrong with the ack (signature, device, a checkpoint that does not match this
    /// device's chain) is refused and deletes nothing.
    pub fn apply_ack(&self, signed_ack: &[u8]) -> Result<AckReport> {
        if signed_ack.len() > MAX_ACK_BYTES {
            return Err(AckRejection::Malformed("too large".into()).into());
        }
        let report = self.write(|s| {
            let keys = s.keys()?;
            let payload = SignedEnvelope::open(signed_ack, domain::ACK, &keys.dispatch).map_err(AckRejection::from)?;
            let ack: Ack = serde_json::from_slice(&payload).map_err(|e| AckRejection::Malformed(e.to_string()))?;
            if ack.device_id != keys.device_id {
                return Err(AckRejection::WrongDevice.into());
            }
            let (head_seq, _) = super::receipts::chain_head(&s.tx)?;
            let (acked_seq, acked_hash): (i64, Vec<u8>) =
                s.tx.query_row("SELECT acked_seq, acked_hash FROM device_state WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let cp = &ack.checkpoint;
            let cp_seq = i64::try_from(cp.seq).map_err(|_| AckRejection::CheckpointMismatch { seq: cp.seq })?;
            let mismatch = || CoreError::from(AckRejection::CheckpointMismatch { seq: cp.seq });
            if cp_seq > head_seq {
                return Err(mismatch());
            }
            let expected: Option<Vec<u8>> = if cp_seq > acked_seq {
                s.tx.query_row("SELECT hash FROM receipt WHERE seq = ?1", [cp_seq], |r| r.get(0)).optional()?
            } else if cp_seq == acked_seq {
                Some(acked_hash) // the genesis hash while nothing was acknowledged
            } else {
                None // an older ack, overtaken by a newer one: nothing left to delete
            };
            let mut report = AckReport { acked_through: acked_seq.max(cp_seq) as u64, ..Default::default() };
            if let Some(expected) = expected {
                if expected != cp.head_hash {
                    return Err(mismatch());
                }
                report.removed = s.tx.execute("DELETE FROM receipt WHERE seq <= ?1", [cp_seq])? as u32;
                s.tx.execute(
                    "UPDATE device_state SET acked_seq = ?1, acked_hash = ?2 WHERE id = 1",
                    params![cp_seq, cp.head_hash.to_vec()],
                )?;
            }
            let mut mark = s.tx.prepare_cached(
                "UPDATE receipt SET server_status = ?1, server_reason = ?2 WHERE seq = ?3 AND receipt_id = ?4",
            )?;
            for r in &ack.results {
                match r.status {
                    ReceiptStatus::Accepted => report.accepted += 1,
                    ReceiptStatus::Duplicate => report.duplicates += 1,
                    ReceiptStatus::Flagged => report.flagged.push(r.clone()),
                    ReceiptStatus::Rejected => {
                        mark.execute(params!["rejected", r.reason, r.seq as i64, r.receipt_id.to_string()])?;
                        report.rejected.push(r.clone());
                    }
                }
            }
            s.tx.execute(
                "DELETE FROM outbox_batch WHERE batch_id = ?1 OR last_seq <= ?2",
                params![ack.batch_id.to_string(), cp_seq],
            )?;
            s.tx.execute("DELETE FROM upload_backoff", [])?;
            s.saw_server_time(ack.server_time.timestamp_millis())?;
            Ok(report)
        })?;
        let level =
            if report.rejected.is_empty() && report.flagged.is_empty() { LogLevel::Info } else { LogLevel::Warn };
        self.log(
            level,
            &format!(
                "ack: through seq {}, removed {}, flagged {}, rejected {}",
                report.acked_through,
                report.removed,
                report.flagged.len(),
                report.rejected.len()
            ),
        );
        Ok(report)
    }

    /// Records that an upload failed (network, server error); the batch stays in flight and will be
    /// offered again. Returns how long to wait: a uniformly random delay up to
    /// `min(cap, base · 2^(failures−1))` (full jitter).
    pub fn record_upload_failure(&self, error: &str) -> Result<RetryAdvice> {
        let error: String = error.chars().filter(|c| !c.is_control()).take(200).collect();
        let advice = self.write(|s| {
            let failures: i64 =
                s.tx.query_row("SELECT failures FROM upload_backoff WHERE id = 1", [], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0)
                    + 1;
            let delay = full_jitter(failures)?;
            s.tx.execute(
                "INSERT OR REPLACE INTO upload_backoff (id, failures, retry_at_ms, last_error) VALUES (1, ?1, ?2, ?3)",
                params![failures, s.now.trusted_ms + delay, error],
            )?;
            Ok(RetryAdvice { consecutive_failures: failures as u32, retry_after: millis(delay) })
        })?;
        self.log(
            LogLevel::Warn,
            &format!(
                "upload failed ({} in a row), retry in {} ms",
                advice.consecutive_failures,
                advice.retry_after.as_millis()
            ),
        );
        Ok(advice)
    }
}

/// The backoff window for the n-th consecutive failure, and a uniform draw from it.
pub(crate) fn backoff_window(failures: i64) -> i64 {
    let doublings = (failures - 1).clamp(0, 30) as u32;
    BACKOFF_BASE_MS.saturating_mul(1i64 << doublings).min(BACKOFF_CAP_MS)
}

fn full_jitter(failures: i64) -> Result<i64> {
    let window = backoff_window(failures) as u64;
    let draw = u64::from_be_bytes(crate::crypto::random_bytes::<8>()?);
    Ok((draw % (window + 1)) as i64)
}

/// Receipts with `from <= seq <= to` in order, stopping at `max_count` or about `max_bytes`.
fn load(
    conn: &rusqlite::Connection,
    from: i64,
    to: i64,
    max_count: u32,
    max_bytes: u32,
) -> Result<Vec<(i64, SignedReceipt)>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, body, signature, hash FROM receipt WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![from, to])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    // Each receipt sent is checked against damage on disk, linked to the one before it.
    let mut prev = super::receipts::hash_before(conn, from)?;
    while let Some(row) = rows.next()? {
        let (seq, body, hash): (i64, Vec<u8>, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(3)?);
        let size = body.len() * 4 / 3 + 128;
        if !out.is_empty() && (out.len() as u32 >= max_count || bytes + size > max_bytes as usize) {
            break;
        }
        super::receipts::check_stored(seq, from + out.len() as i64, &body, &hash, prev.as_deref())?;
        bytes += size;
        prev = Some(hash);
        out.push((seq, SignedReceipt { body: Base64Bytes(body), signature: Base64Bytes(row.get(2)?) }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff_window(1), 5_000);
        assert_eq!(backoff_window(2), 10_000);
        assert_eq!(backoff_window(5), 80_000);
        assert_eq!(backoff_window(9), BACKOFF_CAP_MS);
        assert_eq!(backoff_window(1_000), BACKOFF_CAP_MS);
    }

    #[test]
    fn jitter_stays_in_the_window_and_varies() {
        let draws: Vec<i64> = (0..200).map(|_| full_jitter(3).unwrap()).collect();
        assert!(draws.iter().all(|d| (0..=20_000).contains(d)));
        assert!(draws.iter().any(|&d| d < 10_000) && draws.iter().any(|&d| d > 10_000));
    }
}
