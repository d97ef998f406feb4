//! End of day: once a parcel's validity has ended (plus a small grace), its tags are deleted and,
//! if it was not handed over, it expires into a receipt. A held day that is over is let go.

use rusqlite::params;
use uuid::Uuid;

use super::parcels::ParcelState;
use super::receipts::{self, Draft};
use super::{Device, LogLevel, Session};
use crate::Result;
use crate::protocol::{FailureReason, Identification, ReceiptEvent, ReceiptParcel};

/// Tags are kept this long after `not_after`, so a hand-over at the very end of the day can finish.
pub const PURGE_GRACE_MS: i64 = 10 * 60 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Parcels that expired undelivered (one receipt each).
    pub expired: u32,
    /// Parcels whose tags were deleted.
    pub tags_purged: u32,
}

impl Device {
    /// Purges tags whose validity (plus grace) has ended on trusted time, expires undelivered
    /// parcels into receipts, and lets go of held days that are over. Safe to call at any time;
    /// does nothing when nothing is due.
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        let (report, let_go) = self.write(|s| Ok((purge_due(s)?, super::manifest::let_go_of_finished_days(s)?)))?;
        if report != PurgeReport::default() || let_go > 0 {
            self.log(
                LogLevel::Info,
                &format!(
                    "purged tags of {} parcels, {} expired, {let_go} finished days let go",
                    report.tags_purged, report.expired
                ),
            );
        }
        Ok(report)
    }
}

/// The purge inside a write transaction (a full manifest runs it too, before it judges which
/// held days are over).
pub(super) fn purge_due(s: &Session<'_>) -> Result<PurgeReport> {
    let cutoff = s.now.trusted_ms - PURGE_GRACE_MS;
    let due: Vec<(String, String, String, u32, u32)> =
        s.tx.prepare_cached(
            "SELECT parcel_id, barcode, state, attempts_used, attempt_epoch FROM parcel
              WHERE not_after_ms <= ?1 AND (salt IS NOT NULL OR state IN ('pending','failed','locked'))",
        )?
        .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut report = PurgeReport::default();
    for (parcel_id, barcode, state, attempts_used, attempt_epoch) in due {
        // A row damaged on disk (its window among what might be wrong) is neither expired nor
        // resealed: a full manifest of its day restores it first.
        if super::parcels::by_id(&s.tx, &s.now, &parcel_id)?.is_some_and(|row| row.damaged) {
            continue;
        }
        report.tags_purged += s.tx.execute("DELETE FROM code_tag WHERE parcel_id = ?1", [&parcel_id])?.min(1) as u32;
        s.tx.execute("UPDATE parcel SET salt = NULL WHERE parcel_id = ?1", [&parcel_id])?;
        super::parcels::reseal(&s.tx, &parcel_id)?;
        if matches!(state.as_str(), "pending" | "failed" | "locked") {
            s.tx.execute(
                "UPDATE parcel SET state = ?1, updated_at_ms = ?2 WHERE parcel_id = ?3",
                params![ParcelState::Expired.as_str(), s.now.trusted_ms, parcel_id],
            )?;
            let parcel = ReceiptParcel {
                parcel_id,
                barcode,
                identified: Identification::Typed,
                attempts_used,
                attempt_epoch,
                code_proof: None,
                id_checked: None,
                inspection: None,
            };
            let mut draft = Draft::new(ReceiptEvent::Expired, vec![parcel]);
            draft.reason = Some(FailureReason::CodeExpired);
            receipts::append(s, Uuid::now_v7(), draft)?;
            report.expired += 1;
        }
    }
    Ok(report)
}
