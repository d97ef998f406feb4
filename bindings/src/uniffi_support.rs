//! How the core's time, id and date types cross the FFI, declared once, so every core record that
//! holds one is re-exported as it is (`types.rs`) instead of mirrored:
//!
//! - [`Timestamp`] (`DateTime<Utc>`): Kotlin `java.time.Instant`, Swift `Date`;
//! - [`Uuid`]: its hyphenated text;
//! - [`IsoDate`] (`NaiveDate`): `YYYY-MM-DD`.
//!
//! Durations are UniFFI's own `std::time::Duration`: Kotlin `java.time.Duration`, Swift
//! `TimeInterval`.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
pub use uuid::Uuid;

/// An instant.
pub type Timestamp = DateTime<Utc>;

/// A calendar date (a delivery day).
pub type IsoDate = NaiveDate;

uniffi::custom_type!(Timestamp, SystemTime, {
    remote,
    lower: |t| t.into(),
    try_lift: |t| Ok(t.into()),
});

uniffi::custom_type!(Uuid, String, {
    remote,
    lower: |u| u.to_string(),
    try_lift: |s| Ok(Uuid::parse_str(&s)?),
});

uniffi::custom_type!(IsoDate, String, {
    remote,
    lower: |d| d.to_string(),
    try_lift: |s| Ok(s.parse()?),
});
