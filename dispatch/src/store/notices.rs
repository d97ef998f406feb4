//! What dispatch tells people when an upload is stored, decided in the upload's own transaction, so
//! that exactly what is stored is told, once (a batch sent again is all duplicates and tells
//! nothing):
//! - each customer whose parcel was handed over (to whom, when) or not (why), by e-mail: the
//!   upload records one `notice` row per parcel (one multi-row insert, so a shift's uploads stay
//!   cheap), and the mail sender's round (`serve`: every 30 s) composes, seals and sends them;
//! - operators, of each receipt flagged for review: an alert row (`GET /v1/alerts`) and, after the
//!   commit, a line in the log.

use super::*;
use doorstep_core::protocol::FailureReason;

use crate::mail::{Door, DoorMail};

/// Alerts an operator listing returns at most.
pub const MAX_ALERTS: i64 = 500;

/// A receipt flagged for review, for an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// When dispatch flagged it (ms since the epoch).
    pub at_ms: i64,
    pub device_id: String,
    pub receipt_id: String,
    /// The parcels the receipt names.
    pub parcels: Vec<String>,
    /// Why it was flagged (never told to the phone).
    pub reason: String,
}

impl Dispatch {
    /// Queues the notices for a stored batch: `results` are its verdicts. Returns the log lines
    /// of its alerts, for after the commit.
    pub(super) fn notice(
        &self,
        tx: &Tx<'_>,
        checked: &CheckedBatch,
        results: &[doorstep_core::protocol::ReceiptResult],
    ) -> Result<Vec<String>> {
        let mut alerts = Vec::new();
        // Each receipt with its own verdict: a copy sent twice in one batch is a duplicate, the
        // first copy is what was stored and told.
        let mut told: Vec<(String, String)> = Vec::new();
        for (body, result) in checked.judged(results) {
            match result.status {
                ReceiptStatus::Accepted
                    if matches!(
                        body.event,
                        ReceiptEvent::Delivered | ReceiptEvent::Collected | ReceiptEvent::Failed
                    ) =>
                {
                    let id = body.receipt_id.to_string();
                    told.extend(body.parcels.iter().map(|p| (id.clone(), p.parcel_id.clone())));
                }
                ReceiptStatus::Flagged => {
                    let parcels: Vec<&str> = body.parcels.iter().map(|p| p.parcel_id.as_str()).collect();
                    let reason: String = tx.one(
                        "SELECT coalesce(reason, '') FROM receipt WHERE receipt_id = ?1",
                        params![body.receipt_id.to_string()],
                    )?;
                    tx.execute(
                        "INSERT INTO alert (at_ms, device_id, receipt_id, parcels, reason) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT DO NOTHING",
                        params![
                            self.now_ms()?,
                            body.device_id,
                            body.receipt_id.to_string(),
                            serde_json::to_string(&parcels).map_err(|e| bad(e.to_string()))?,
                            reason
                        ],
                    )?;
                    alerts.push(format!(
                        "alert: receipt {} of device {} about {} flagged: {reason}",
                        body.receipt_id,
                        body.device_id,
                        parcels.join(", ")
                    ));
                }
                _ => {}
            }
        }
        for chunk in db::shapes(&told) {
            let params: Vec<&dyn db::ToParam> =
                chunk.iter().flat_map(|(r, p)| [r as &dyn db::ToParam, p as &dyn db::ToParam]).collect();
            tx.execute_later(
                &format!(
                    "INSERT INTO notice (receipt_id, parcel_id) VALUES {} ON CONFLICT DO NOTHING",
                    db::value_rows(chunk.len(), 2)
                ),
                &params,
            )?;
        }
        Ok(alerts)
    }

    /// Turns up to `most` recorded notices into queued e-mail, in one transaction; returns how
    /// many it took (the mail sender calls this before each round).
    pub(super) fn compose_notices(&self, most: i64) -> Result<usize> {
        self.run(|tx| {
            let rows: Vec<(String, String, Vec<u8>)> = tx.all(
                "SELECT n.receipt_id, n.parcel_id, r.body FROM notice n JOIN receipt r ON r.receipt_id = n.receipt_id
                  ORDER BY n.receipt_id, n.parcel_id LIMIT ?1",
                params![most],
            )?;
            for (receipt_id, parcel_id, body) in &rows {
                match serde_json::from_slice::<ReceiptBody>(body) {
                    Ok(body) => self.tell_customer(tx, &body, parcel_id)?,
                    Err(e) => eprintln!("no notice for parcel {parcel_id}: stored receipt {receipt_id}: {e}"),
                }
                tx.execute_later(
                    "DELETE FROM notice WHERE receipt_id = ?1 AND parcel_id = ?2",
                    params![receipt_id, parcel_id],
                )?;
            }
            Ok(rows.len())
        })
    }

    /// Queues the e-mail telling `parcel_id`'s customer what the receipt says happened at the door.
    fn tell_customer(&self, tx: &Tx<'_>, body: &ReceiptBody, parcel_id: &str) -> Result<()> {
        let Some((email, zone, needs_code)): Option<(String, String, bool)> = tx
            .opt("SELECT customer_email, time_zone, needs_code FROM parcel WHERE parcel_id = ?1", params![parcel_id])?
        else {
            return Ok(());
        };
        let local = match zone.parse::<Tz>() {
            Ok(tz) => body.trusted_time.with_timezone(&tz).format("%Y-%m-%d at %H:%M").to_string(),
            Err(_) => body.trusted_time.format("%Y-%m-%d at %H:%M UTC").to_string(),
        };
        let what = match body.event {
            ReceiptEvent::Delivered => Door::HandedOver(body.holder.as_ref()),
            ReceiptEvent::Collected => Door::Collected(body.holder.as_ref()),
            _ => Door::Failed {
                why: body.reason.map_or_else(
                    || "no reason given".to_owned(),
                    |r| {
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                            .unwrap_or_default()
                    },
                ),
                // A code that expired or locked the parcel does not stay valid; a parcel that
                // needs no code has none.
                code_still_valid: needs_code
                    && !matches!(body.reason, Some(FailureReason::CodeLockedOut | FailureReason::CodeExpired)),
                pickup: Self::task_of(tx, parcel_id)? == Task::Pickup,
            },
        };
        let mail = DoorMail { to: &email, parcel_id, what, at: format!("{local} ({zone})") };
        // An address that no longer composes (stored before today's checks) must not hold up the
        // phone's upload: that notice is left out, and the log says so.
        match crate::mail::compose_door(&mail) {
            Ok(message) => {
                self.queue_mail(tx, parcel_id, &email, &message)?;
            }
            Err(e) => eprintln!("no notice for parcel {parcel_id}: {e}"),
        }
        Ok(())
    }

    /// Operator: receipts flagged for review, newest first (at most [`MAX_ALERTS`]).
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let rows: Vec<(i64, String, String, String, String)> = self.run(|tx| {
            Ok(tx.all(
                "SELECT at_ms, device_id, receipt_id, parcels, reason FROM alert ORDER BY id DESC LIMIT ?1",
                params![MAX_ALERTS],
            )?)
        })?;
        rows.into_iter()
            .map(|(at_ms, device_id, receipt_id, parcels, reason)| {
                let parcels = serde_json::from_str(&parcels).map_err(|_| bad("stored alert parcels"))?;
                Ok(Alert { at_ms, device_id, receipt_id, parcels, reason })
            })
            .collect()
    }
}
