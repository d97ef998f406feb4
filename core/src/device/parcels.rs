//! Parcel queries for the driver's screens: by id, tracking barcode, stop, or the whole route.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Device, TimeReading};
use crate::protocol::Holder;
use crate::{CoreError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParcelState {
    /// On the vehicle, not yet handed over.
    Pending,
    Delivered,
    /// A failed attempt was recorded; the parcel may still be handed over later the same day.
    Failed,
    /// Too many wrong codes; only a dispatch reset (or a QR token) unlocks it.
    Locked,
    /// Its validity ended before it was handed over.
    Expired,
}

impl ParcelState {
    pub const ALL: [ParcelState; 5] =
        [ParcelState::Pending, ParcelState::Delivered, ParcelState::Failed, ParcelState::Locked, ParcelState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            ParcelState::Pending => "pending",
            ParcelState::Delivered => "delivered",
            ParcelState::Failed => "failed",
            ParcelState::Locked => "locked",
            ParcelState::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ParcelState> {
        ParcelState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CoreError::Integrity(format!("unknown parcel state {s:?}")))
    }
}

/// Where now stands in a parcel's validity window, judged on trusted time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    NotYetValid,
    Valid,
    Expired,
}

/// A parcel as the driver's app shows it. Holds no code and no tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParcelView {
    pub parcel_id: String,
    /// The delivery day whose manifest carries the parcel (a phone may hold more than one).
    pub delivery_date: NaiveDate,
    pub barcode: String,
    pub stop_id: String,
    pub stop_sequence: u32,
    pub address_hint: String,
    pub recipient_hint: String,
    pub needs_code: bool,
    /// Who holds a code: the customer and any named delegates.
    pub holders: Vec<Holder>,
    pub state: ParcelState,
    pub attempts_used: u32,
    pub attempts_left: u32,
    pub max_attempts: u32,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub validity: Validity,
}

/// A parcel row with what the code check needs.
pub(crate) struct ParcelRow {
    pub view: ParcelView,
    pub salt: Option<Vec<u8>>,
    pub tag_bits: u8,
    pub key_epoch: u32,
    /// How many times dispatch reset the parcel's attempts (receipts name it).
    pub attempt_epoch: u32,
    /// The receipt that delivered the parcel.
    pub delivery_receipt: Option<String>,
    /// (holder, tag) pairs; the view's `holders` lists the same holders.
    pub tags: Vec<(Holder, Vec<u8>)>,
}

const COLUMNS: &str = "parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code, state, \
     attempts_used, max_attempts, not_before_ms, not_after_ms, salt, tag_bits, key_epoch, delivery_receipt, \
     attempt_epoch, delivery_date";

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn validity(now: &TimeReading, not_before_ms: i64, not_after_ms: i64) -> Validity {
    if now.trusted_ms < not_before_ms {
        Validity::NotYetValid
    } else if now.trusted_ms >= not_after_ms {
        Validity::Expired
    } else {
        Validity::Valid
    }
}

fn from_row(row: &Row<'_>, now: &TimeReading) -> rusqlite::Result<(ParcelRow, String)> {
    let used: u32 = row.get(8)?;
    let max: u32 = row.get(9)?;
    let not_before_ms: i64 = row.get(10)?;
    let not_after_ms: i64 = row.get(11)?;
    let state: String = row.get(7)?;
    let date: String = row.get(17)?;
    let view = ParcelView {
        parcel_id: row.get(0)?,
        delivery_date: date
            .parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, Box::new(e)))?,
        barcode: row.get(1)?,
        stop_id: row.get(2)?,
        stop_sequence: row.get(3)?,
        address_hint: row.get(4)?,
        recipient_hint: row.get(5)?,
        needs_code: row.get(6)?,
        holders: Vec::new(),
        state: ParcelState::Pending,
        attempts_used: used,
        attempts_left: max.saturating_sub(used),
        max_attempts: max,
        not_before: ms_to_time(not_before_ms),
        not_after: ms_to_time(not_after_ms),
        validity: validity(now, not_before_ms, not_after_ms),
    };
    Ok((
        ParcelRow {
            view,
            salt: row.get(12)?,
            tag_bits: row.get(13)?,
            key_epoch: row.get(14)?,
            delivery_receipt: row.get(15)?,
            attempt_epoch: row.get(16)?,
            tags: Vec::new(),
        },
        state,
    ))
}

fn finish(conn: &Connection, (mut row, state): (ParcelRow, String)) -> Result<ParcelRow> {
    row.view.state = ParcelState::parse(&state)?;
    let mut stmt = conn.prepare_cached("SELECT holder, tag FROM code_tag WHERE parcel_id = ?1 ORDER BY holder")?;
    for tag in stmt.query_map([&row.view.parcel_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
        let (holder, tag) = tag?;
        let holder = Holder::from_key(&holder).ok_or_else(|| CoreError::Integrity("unknown holder".into()))?;
        row.view.holders.push(holder.clone());
        row.tags.push((holder, tag));
    }
    Ok(row)
}

pub(crate) fn by_barcode(conn: &Connection, now: &TimeReading, barcode: &str) -> Result<Option<ParcelRow>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel WHERE barcode = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([barcode], |r| from_row(r, now)).optional()?;
    raw.map(|r| finish(conn, r)).transpose()
}

pub(crate) fn by_id(conn: &Connection, now: &TimeReading, parcel_id: &str) -> Result<Option<ParcelRow>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel WHERE parcel_id = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([parcel_id], |r| from_row(r, now)).optional()?;
    raw.map(|r| finish(conn, r)).transpose()
}

fn many(conn: &Connection, now: &TimeReading, filter: &str, arg: Option<&str>) -> Result<Vec<ParcelView>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel {filter} ORDER BY stop_seq, stop_id, parcel_id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = match arg {
        Some(a) => stmt.query_map(params![a], |r| from_row(r, now))?.collect::<rusqlite::Result<Vec<_>>>()?,
        None => stmt.query_map([], |r| from_row(r, now))?.collect::<rusqlite::Result<Vec<_>>>()?,
    };
    rows.into_iter().map(|r| finish(conn, r).map(|p| p.view)).collect()
}

impl Device {
    pub fn parcel(&self, parcel_id: &str) -> Result<ParcelView> {
        self.read(|conn, now, _| {
            by_id(conn, &now, parcel_id)?.map(|p| p.view).ok_or_else(|| CoreError::UnknownParcel(parcel_id.into()))
        })
    }

    pub fn parcel_by_barcode(&self, barcode: &str) -> Result<ParcelView> {
        let barcode = barcode.trim();
        self.read(|conn, now, _| {
            by_barcode(conn, &now, barcode)?.map(|p| p.view).ok_or_else(|| CoreError::UnknownParcel(barcode.into()))
        })
    }

    /// The parcels of one stop, in route order.
    pub fn parcels_at_stop(&self, stop_id: &str) -> Result<Vec<ParcelView>> {
        self.read(|conn, now, _| many(conn, &now, "WHERE stop_id = ?1", Some(stop_id)))
    }

    /// Every parcel on the device, in route order.
    pub fn parcels(&self) -> Result<Vec<ParcelView>> {
        self.read(|conn, now, _| many(conn, &now, "", None))
    }
}
