//! A summary for the app's status screen and for support: counts by state, the outbox, last sync and
//! the clock.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::OptionalExtension;

use super::parcels::ParcelState;
use super::{Device, TimeReading};
use crate::Result;
use crate::protocol::Task;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockStatus {
    pub wall_time: DateTime<Utc>,
    pub trusted_time: DateTime<Utc>,
    /// Wall minus trusted, in ms (negative: the phone's clock is behind).
    pub skew_ms: i64,
    /// The wall clock is behind trusted time by more than the tolerance (it was set back).
    pub wall_clock_set_back: bool,
    pub last_server_time: Option<DateTime<Utc>>,
}

/// Parcels on the device, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParcelCounts {
    pub pending: u32,
    pub delivered: u32,
    pub failed: u32,
    pub locked: u32,
    pub expired: u32,
    /// Pickups collected from their customers.
    pub collected: u32,
}

impl ParcelCounts {
    fn slot(&mut self, state: ParcelState) -> &mut u32 {
        match state {
            ParcelState::Pending => &mut self.pending,
            ParcelState::Delivered => &mut self.delivered,
            ParcelState::Failed => &mut self.failed,
            ParcelState::Locked => &mut self.locked,
            ParcelState::Expired => &mut self.expired,
            ParcelState::Collected => &mut self.collected,
        }
    }
}

/// One delivery day the phone holds, with its parcels by state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldDay {
    pub delivery_date: NaiveDate,
    pub route_id: String,
    /// The IANA zone the day's windows are in (e.g. `Europe/Berlin`).
    pub time_zone: String,
    pub parcels: ParcelCounts,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub enrolled: bool,
    pub device_id: Option<String>,
    /// The route of the oldest held day.
    pub route_id: Option<String>,
    /// The oldest held day (usually today; `days` lists them all).
    pub delivery_date: Option<NaiveDate>,
    /// Every delivery day the phone holds, oldest first (at most [`super::MAX_HELD_DAYS`]).
    pub days: Vec<HeldDay>,
    pub manifest_sequence: Option<u64>,
    pub last_sync: Option<DateTime<Utc>>,
    pub parcels: ParcelCounts,
    pub parcels_needing_code: u32,
    /// Receipts not yet covered by a server acknowledgement.
    pub pending_receipts: u32,
    /// How long the oldest receipt has waited for dispatch (trusted time).
    pub oldest_pending_receipt_age: Option<Duration>,
    /// Receipts dispatch refused (they stay until resolved).
    pub rejected_receipts: u32,
    pub upload_failures: u32,
    /// Set while uploads back off after a failure: how long until the next try.
    pub next_upload_after: Option<Duration>,
    pub clock: ClockStatus,
}

/// A span in ms as a `Duration` (a negative one, from clocks in disorder, as zero).
pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Device {
    pub fn status(&self) -> Result<Status> {
        self.read(|conn, now: TimeReading, keys| {
            let sequence: Option<i64> = conn
                .query_row("SELECT manifest_seq FROM device_state WHERE manifest_id IS NOT NULL", [], |r| r.get(0))
                .optional()?
                .flatten();
            let mut days = Vec::new();
            let mut stmt =
                conn.prepare("SELECT delivery_date, route_id, time_zone FROM held_day ORDER BY delivery_date")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))? {
                let (date, route_id, time_zone) = row?;
                let delivery_date =
                    date.parse().map_err(|_| crate::CoreError::Integrity(format!("held day {date:?}")))?;
                days.push(HeldDay { delivery_date, route_id, time_zone, parcels: ParcelCounts::default() });
            }
            let mut parcels = ParcelCounts::default();
            let mut stmt = conn.prepare(
                "SELECT delivery_date, state, task, count(*) FROM parcel GROUP BY delivery_date, state, task",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, u32>(3)?))
            })? {
                let (date, state, task, n) = row?;
                let task = Task::parse(&task).ok_or_else(|| crate::CoreError::Integrity(format!("task {task:?}")))?;
                let state = ParcelState::of_row(&state, task)?;
                *parcels.slot(state) += n;
                if let Some(day) = days.iter_mut().find(|d| d.delivery_date.to_string() == date) {
                    *day.parcels.slot(state) += n;
                }
            }
            let parcels_needing_code =
                conn.query_row("SELECT count(*) FROM parcel WHERE needs_code", [], |r| r.get(0))?;
            let (pending, oldest, rejected): (u32, Option<i64>, u32) =
                conn.query_row("SELECT count(*), min(created_at_ms), count(server_status) FROM receipt", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let (high_water, last_server, last_sync): (i64, Option<i64>, Option<i64>) = conn.query_row(
                "SELECT high_water_ms, last_server_ms, last_sync_ms FROM device_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let trusted = now.trusted_ms.max(high_water);
            let backoff: Option<(u32, i64)> = conn
                .query_row("SELECT failures, retry_at_ms FROM upload_backoff WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(Status {
                enrolled: keys.is_some(),
                device_id: keys.map(|k| k.device_id.clone()),
                route_id: days.first().map(|d| d.route_id.clone()),
                delivery_date: days.first().map(|d| d.delivery_date),
                days,
                manifest_sequence: sequence.map(|s| s as u64),
                last_sync: last_sync.map(time),
                parcels,
                parcels_needing_code,
                pending_receipts: pending,
                oldest_pending_receipt_age: oldest.map(|t| millis(trusted - t)),
                rejected_receipts: rejected,
                upload_failures: backoff.map_or(0, |b| b.0),
                next_upload_after: backoff.map(|b| millis(b.1 - trusted)),
                clock: ClockStatus {
                    wall_time: time(now.wall_ms),
                    trusted_time: time(trusted),
                    skew_ms: now.wall_ms - trusted,
                    wall_clock_set_back: now.wall_ms - trusted < -super::SKEW_TOLERANCE_MS,
                    last_server_time: last_server.map(time),
                },
            })
        })
    }
}
