//! Parcel queries for the driver's screens: by id, tracking barcode, stop, or the whole route.
//!
//! Each row carries a seal: SHA-256 over what a code check relies on and only a manifest or the
//! purge changes (ids, barcode, salt, tag parameters, window, day and every holder's tag), written
//! in their transaction and checked whenever a row is looked up by barcode (at the door), from
//! the row already read (no extra query), so a row damaged on disk is named instead of answering
//! "wrong code" and spending the customer's attempts.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Device, TimeReading};
use crate::protocol::{DoorRules, Holder, Task};
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
    /// A pickup collected from the customer (stored as `delivered`: the parcel changed hands;
    /// its task tells which way).
    Collected,
}

impl ParcelState {
    /// The states a row stores (`Collected` is read from `Delivered` and the parcel's task).
    pub const ALL: [ParcelState; 5] =
        [ParcelState::Pending, ParcelState::Delivered, ParcelState::Failed, ParcelState::Locked, ParcelState::Expired];

    /// Whether the parcel changed hands (delivered, or collected).
    pub fn is_handed_over(self) -> bool {
        matches!(self, ParcelState::Delivered | ParcelState::Collected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParcelState::Pending => "pending",
            ParcelState::Delivered => "delivered",
            // Never stored: a collection is stored as `delivered` (the row's CHECK refuses it).
            ParcelState::Collected => "collected",
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

    /// The state of a row that stores `state` for a parcel with `task`: a pickup handed over
    /// reads as collected.
    pub(crate) fn of_row(state: &str, task: Task) -> Result<ParcelState> {
        Ok(match (ParcelState::parse(state)?, task) {
            (ParcelState::Delivered, Task::Pickup) => ParcelState::Collected,
            (state, _) => state,
        })
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
    /// What the driver must confirm beyond the code: an ID check (addressee only), the
    /// customer's inspection (open box).
    pub rules: DoorRules,
    /// A delivery, or a pickup (a return collected from the customer with their pickup code).
    pub task: Task,
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
    /// The row's stored seal (`None` only on a damaged row).
    pub seal: Option<Vec<u8>>,
    /// The row no longer matches its seal (damaged on disk).
    pub damaged: bool,
}

const COLUMNS: &str = "parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code, state, \
     attempts_used, max_attempts, not_before_ms, not_after_ms, salt, tag_bits, key_epoch, delivery_receipt, \
     attempt_epoch, delivery_date, seal, rules, task";

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
        rules: DoorRules::from_bits(row.get(19)?),
        task: {
            let task: String = row.get(20)?;
            Task::parse(&task).ok_or(rusqlite::Error::InvalidColumnType(20, task, rusqlite::types::Type::Text))?
        },
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
            seal: row.get(18)?,
            damaged: false,
        },
        state,
    ))
}

/// What a parcel row's seal covers: everything a code check relies on that only a manifest or
/// the purge changes.
struct SealedFields<'a> {
    parcel_id: &'a str,
    barcode: &'a str,
    needs_code: bool,
    salt: Option<&'a [u8]>,
    numbers: [i64; 5],
    delivery_date: &'a str,
    /// `DoorRules::bits`; covered only when set, so rows sealed before rules existed keep their seal.
    rules: i64,
    /// Covered only for a pickup, likewise.
    task: &'a str,
}

/// SHA-256 over `f` and the parcel's tags (holder key, tag, QR mint-after), each length-prefixed.
fn seal_of(f: &SealedFields<'_>, tags: &[(String, Vec<u8>, i64)]) -> [u8; 32] {
    let mut text = Vec::with_capacity(256);
    let mut field = |bytes: &[u8]| {
        text.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        text.extend_from_slice(bytes);
    };
    field(b"doorstep/parcel-seal/v1");
    field(f.parcel_id.as_bytes());
    field(f.barcode.as_bytes());
    field(&[u8::from(f.needs_code)]);
    field(f.salt.unwrap_or_default());
    for n in f.numbers {
        field(&n.to_be_bytes());
    }
    field(f.delivery_date.as_bytes());
    if f.rules != 0 {
        field(b"rules");
        field(&f.rules.to_be_bytes());
    }
    if f.task != Task::Delivery.as_str() {
        field(b"task");
        field(f.task.as_bytes());
    }
    for (holder, tag, minted_after) in tags {
        field(holder.as_bytes());
        field(tag);
        field(&minted_after.to_be_bytes());
    }
    crate::crypto::sha256(&text)
}

/// A parcel's tags as the seal covers them, in holder order.
fn sealed_tags(conn: &Connection, parcel_id: &str) -> Result<Vec<(String, Vec<u8>, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT holder, tag, coalesce(qr_minted_after_ms, -1) FROM code_tag WHERE parcel_id = ?1 ORDER BY holder",
    )?;
    let tags =
        stmt.query_map([parcel_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(tags)
}

/// The parcel with `barcode`, damaged or not (`ParcelRow::damaged` says), for what uses no code
/// data (recording a failure).
pub(crate) fn by_barcode_unchecked(conn: &Connection, now: &TimeReading, barcode: &str) -> Result<Option<ParcelRow>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel WHERE barcode = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([barcode], |r| from_row(r, now)).optional()?;
    raw.map(|r| finish(conn, r, true)).transpose()
}

/// Seals every row (the schema step that added seals, for the rows already there: a table from
/// before step 8, whose rows have no rules and no `rules` column yet).
pub(crate) fn seal_all_before_rules(conn: &Connection) -> Result<()> {
    let all: Vec<String> =
        conn.prepare("SELECT parcel_id FROM parcel")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    for parcel_id in &all {
        write_seal(conn, parcel_id, "0, 'delivery'")?;
    }
    Ok(())
}

/// Writes the seal of `parcel_id`'s row, in the transaction of the manifest or purge that changed it.
pub(crate) fn reseal(conn: &Connection, parcel_id: &str) -> Result<()> {
    write_seal(conn, parcel_id, "rules, task")
}

/// [`reseal`], reading the rules and the task from `rules_task` (the columns, or the defaults
/// before they existed).
fn write_seal(conn: &Connection, parcel_id: &str, rules_task: &str) -> Result<()> {
    type Row = (String, bool, Option<Vec<u8>>, [i64; 5], String, i64, String);
    let row: Option<Row> = conn
        .prepare_cached(&format!(
            "SELECT barcode, needs_code, salt, tag_bits, key_epoch, max_attempts, not_before_ms, not_after_ms,
                    delivery_date, {rules_task} FROM parcel WHERE parcel_id = ?1"
        ))?
        .query_row([parcel_id], |r| {
            let numbers = [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?];
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, numbers, r.get(8)?, r.get(9)?, r.get(10)?))
        })
        .optional()?;
    if let Some((barcode, needs_code, salt, numbers, delivery_date, rules, task)) = row {
        let fields = SealedFields {
            parcel_id,
            barcode: &barcode,
            needs_code,
            salt: salt.as_deref(),
            numbers,
            delivery_date: &delivery_date,
            rules,
            task: &task,
        };
        let seal = seal_of(&fields, &sealed_tags(conn, parcel_id)?);
        conn.prepare_cached("UPDATE parcel SET seal = ?2 WHERE parcel_id = ?1")?
            .execute(params![parcel_id, seal.to_vec()])?;
    }
    Ok(())
}

/// Completes a row with its tags; with `check`, judges it against its seal (`damaged`), which
/// the list views skip.
fn finish(conn: &Connection, (mut row, state): (ParcelRow, String), check: bool) -> Result<ParcelRow> {
    row.view.state = ParcelState::of_row(&state, row.view.task)?;
    let tags = sealed_tags(conn, &row.view.parcel_id)?;
    // Every row has had a seal since schema step 7 (written with the row): one without is damage.
    if check {
        let date = row.view.delivery_date.to_string();
        let fields = SealedFields {
            parcel_id: &row.view.parcel_id,
            barcode: &row.view.barcode,
            needs_code: row.view.needs_code,
            salt: row.salt.as_deref(),
            numbers: [
                i64::from(row.tag_bits),
                i64::from(row.key_epoch),
                i64::from(row.view.max_attempts),
                row.view.not_before.timestamp_millis(),
                row.view.not_after.timestamp_millis(),
            ],
            delivery_date: &date,
            rules: row.view.rules.bits(),
            task: row.view.task.as_str(),
        };
        row.damaged = row.seal.as_deref() != Some(&seal_of(&fields, &tags)[..]);
    }
    for (holder, tag, _) in tags {
        let holder = Holder::from_key(&holder).ok_or_else(|| CoreError::Integrity("unknown holder".into()))?;
        row.view.holders.push(holder.clone());
        row.tags.push((holder, tag));
    }
    Ok(row)
}

/// The parcel with `barcode`, as a hand-over uses it: `ParcelDamaged` when its row no longer
/// matches its seal.
pub(crate) fn by_barcode(conn: &Connection, now: &TimeReading, barcode: &str) -> Result<Option<ParcelRow>> {
    match by_barcode_unchecked(conn, now, barcode)? {
        Some(row) if row.damaged => Err(CoreError::ParcelDamaged(row.view.parcel_id)),
        row => Ok(row),
    }
}

pub(crate) fn by_id(conn: &Connection, now: &TimeReading, parcel_id: &str) -> Result<Option<ParcelRow>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel WHERE parcel_id = ?1");
    let raw = conn.prepare_cached(&sql)?.query_row([parcel_id], |r| from_row(r, now)).optional()?;
    raw.map(|r| finish(conn, r, true)).transpose()
}

fn many(conn: &Connection, now: &TimeReading, filter: &str, arg: Option<&str>) -> Result<Vec<ParcelView>> {
    let sql = format!("SELECT {COLUMNS} FROM parcel {filter} ORDER BY stop_seq, stop_id, parcel_id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = match arg {
        Some(a) => stmt.query_map(params![a], |r| from_row(r, now))?.collect::<rusqlite::Result<Vec<_>>>()?,
        None => stmt.query_map([], |r| from_row(r, now))?.collect::<rusqlite::Result<Vec<_>>>()?,
    };
    rows.into_iter().map(|r| finish(conn, r, false).map(|p| p.view)).collect()
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
