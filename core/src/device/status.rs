//! A summary for the app's status screen and for support: counts by state, the outbox, last sync and
//! the clock.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::OptionalExtension;

use super::parcels::ParcelState;
use super::{Device, TimeReading};
use crate::Result;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub enrolled: bool,
    pub device_id: Option<String>,
    pub route_id: Option<String>,
    pub delivery_date: Option<NaiveDate>,
    pub manifest_sequence: Option<u64>,
    pub last_sync: Option<DateTime<Utc>>,
    pub parcels_by_state: HashMap<ParcelState, u32>,
    pub parcels_needing_code: u32,
    /// Receipts not yet covered by a server acknowledgement.
    pub pending_receipts: u32,
    pub oldest_pending_receipt_age_ms: Option<i64>,
    /// Receipts dispatch refused (they stay until resolved).
    pub rejected_receipts: u32,
    pub upload_failures: u32,
    pub next_upload_after_ms: Option<i64>,
    pub clock: ClockStatus,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Device {
    pub fn status(&self) -> Result<Status> {
        self.read(|conn, now: TimeReading, keys| {
            let manifest: Option<(String, String, i64)> = conn
                .query_row(
                    "SELECT route_id, delivery_date, manifest_seq FROM device_state WHERE manifest_id IS NOT NULL",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let mut parcels_by_state: HashMap<ParcelState, u32> = ParcelState::ALL.iter().map(|s| (*s, 0)).collect();
            let mut stmt = conn.prepare("SELECT state, count(*) FROM parcel GROUP BY state")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))? {
                let (state, n) = row?;
                parcels_by_state.insert(ParcelState::parse(&state)?, n);
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
                route_id: manifest.as_ref().map(|m| m.0.clone()),
                delivery_date: manifest.as_ref().and_then(|m| m.1.parse().ok()),
                manifest_sequence: manifest.map(|m| m.2 as u64),
                last_sync: last_sync.map(time),
                parcels_by_state,
                parcels_needing_code,
                pending_receipts: pending,
                oldest_pending_receipt_age_ms: oldest.map(|t| (trusted - t).max(0)),
                rejected_receipts: rejected,
                upload_failures: backoff.map_or(0, |b| b.0),
                next_upload_after_ms: backoff.map(|b| (b.1 - trusted).max(0)),
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
