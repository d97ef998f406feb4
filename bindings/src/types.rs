//! The records and enums Kotlin and Swift see, and their conversions from and to the core's types.
//! Times are `SystemTime` (Kotlin `java.time.Instant`, Swift `Date`).

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use doorstep_core::device as core;
use doorstep_core::protocol as wire;

fn time(t: DateTime<Utc>) -> SystemTime {
    t.into()
}

/// A parcel presented for a hand-over.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ScannedParcel {
    /// The tracking barcode as scanned or typed.
    pub barcode: String,
    pub identified: Identification,
}

/// How a parcel was identified at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Identification {
    Scanned,
    Typed,
}

/// Where the hand-over happened, if the app knows.
#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: f64,
}

/// Who holds a code: the customer, or a trusted person the customer named.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Holder {
    Customer,
    Delegate { label: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HandoverMethod {
    Code,
    DelegateCode,
    QrToken,
    NoCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ReceiptEvent {
    Delivered,
    Failed,
    /// A wrong code was given (the attempt count travels to dispatch).
    WrongCode,
    LockedOut,
    Expired,
    Reversed,
}

/// A receipt the call just wrote (already on disk, waiting in the outbox).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Receipt {
    pub receipt_id: String,
    pub seq: u64,
    pub event: ReceiptEvent,
    pub parcel_ids: Vec<String>,
}

/// The answer at the door.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum HandoverOutcome {
    /// Hand the parcels over; the receipt is on disk.
    Accepted {
        holder: Holder,
        method: HandoverMethod,
        receipt: Receipt,
    },
    /// Not the code. `attempts_left` before the parcel locks.
    WrongCode {
        attempts_left: u32,
    },
    /// Too many wrong codes. `receipt` is set when this attempt caused the lock.
    Locked {
        barcode: String,
        receipt: Option<Receipt>,
    },
    /// The code's validity has ended.
    Expired {
        barcode: String,
    },
    /// The code is not valid yet.
    NotYetValid {
        barcode: String,
        valid_from: SystemTime,
    },
    AlreadyDelivered {
        barcode: String,
    },
    /// The barcode is not on this device's manifest.
    UnknownParcel {
        barcode: String,
    },
    /// None of the scanned parcels needs a code: use `deliverWithoutCode`.
    NoCodeNeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ParcelState {
    Pending,
    Delivered,
    /// A failed attempt was recorded; may still be handed over later the same day.
    Failed,
    /// Too many wrong codes; a dispatch reset or the customer's QR token unlocks it.
    Locked,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Validity {
    NotYetValid,
    Valid,
    Expired,
}

/// A parcel as the driver's app shows it. Holds no code.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Parcel {
    pub parcel_id: String,
    pub barcode: String,
    pub stop_id: String,
    pub stop_sequence: u32,
    pub address_hint: String,
    pub recipient_hint: String,
    pub needs_code: bool,
    pub holders: Vec<Holder>,
    pub state: ParcelState,
    pub attempts_used: u32,
    pub attempts_left: u32,
    pub max_attempts: u32,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub validity: Validity,
}

/// Why a hand-over did not happen (ANSI X12 shipment-status code where one exists: see
/// `failureReasonX12Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FailureReason {
    RecipientUnavailable,
    NoAccess,
    BusinessClosed,
    AddressIncorrect,
    UnableToLocate,
    RefusedByRecipient,
    SealBroken,
    DamagedNotDelivered,
    CodeNotAvailable,
    CodeLockedOut,
    CodeExpired,
    DelegateNotAuthorised,
    CustomerRequestedLater,
    InsufficientTime,
    UnsafeOrWeather,
    ParcelNotOnVehicle,
    StopRevokedOrReassigned,
    DeviceClockUntrusted,
    /// Needs a note.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// What applying a manifest changed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ApplyReport {
    pub manifest_id: String,
    pub sequence: u64,
    pub full: bool,
    pub added: u32,
    pub updated: u32,
    pub removed: u32,
    pub reset: u32,
    pub kept_delivered: u32,
}

/// A batch of receipts to POST to dispatch.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UploadBatch {
    pub batch_id: String,
    /// The request body (JSON).
    pub body: Vec<u8>,
    pub receipt_count: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// This batch was handed out before and is being sent again.
    pub resend: bool,
    /// Wait this long before sending (backoff after failures); 0 means now.
    pub retry_after_ms: i64,
}

/// Dispatch's verdict on one receipt.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceiptVerdict {
    pub receipt_id: String,
    pub seq: u64,
    pub reason: Option<String>,
}

/// What an accepted acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AckReport {
    pub acked_through: u64,
    pub removed: u32,
    pub accepted: u32,
    pub duplicates: u32,
    /// Stored by dispatch but flagged for a person to look at.
    pub flagged: Vec<ReceiptVerdict>,
    /// Refused by dispatch; they stay on the device.
    pub rejected: Vec<ReceiptVerdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct RetryAdvice {
    pub consecutive_failures: u32,
    pub retry_after_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct PurgeReport {
    pub expired: u32,
    pub tags_purged: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct ParcelCounts {
    pub pending: u32,
    pub delivered: u32,
    pub failed: u32,
    pub locked: u32,
    pub expired: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClockStatus {
    pub wall_time: SystemTime,
    pub trusted_time: SystemTime,
    pub skew_ms: i64,
    /// The phone's clock is behind trusted time by more than 5 minutes.
    pub wall_clock_set_back: bool,
    pub last_server_time: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Status {
    pub enrolled: bool,
    pub device_id: Option<String>,
    pub route_id: Option<String>,
    /// ISO date (YYYY-MM-DD) of the applied manifest.
    pub delivery_date: Option<String>,
    pub manifest_sequence: Option<u64>,
    pub last_sync: Option<SystemTime>,
    pub parcels: ParcelCounts,
    pub parcels_needing_code: u32,
    pub pending_receipts: u32,
    pub oldest_pending_receipt_age_ms: Option<i64>,
    pub rejected_receipts: u32,
    pub upload_failures: u32,
    pub next_upload_after_ms: Option<i64>,
    pub clock: ClockStatus,
}

// ---- conversions -------------------------------------------------------------------------------

impl From<ScannedParcel> for core::ScannedParcel {
    fn from(s: ScannedParcel) -> Self {
        core::ScannedParcel { barcode: s.barcode, identified: s.identified.into() }
    }
}

impl From<Identification> for wire::Identification {
    fn from(i: Identification) -> Self {
        match i {
            Identification::Scanned => wire::Identification::Scanned,
            Identification::Typed => wire::Identification::Typed,
        }
    }
}

impl From<Location> for wire::Location {
    fn from(l: Location) -> Self {
        wire::Location { latitude: l.latitude, longitude: l.longitude, accuracy_m: l.accuracy_m }
    }
}

impl From<wire::Holder> for Holder {
    fn from(h: wire::Holder) -> Self {
        match h {
            wire::Holder::Customer => Holder::Customer,
            wire::Holder::Delegate(label) => Holder::Delegate { label },
        }
    }
}

impl From<Holder> for wire::Holder {
    fn from(h: Holder) -> Self {
        match h {
            Holder::Customer => wire::Holder::Customer,
            Holder::Delegate { label } => wire::Holder::Delegate(label),
        }
    }
}

impl From<wire::HandoverMethod> for HandoverMethod {
    fn from(m: wire::HandoverMethod) -> Self {
        match m {
            wire::HandoverMethod::Code => HandoverMethod::Code,
            wire::HandoverMethod::DelegateCode => HandoverMethod::DelegateCode,
            wire::HandoverMethod::QrToken => HandoverMethod::QrToken,
            wire::HandoverMethod::NoCode => HandoverMethod::NoCode,
        }
    }
}

impl From<wire::ReceiptEvent> for ReceiptEvent {
    fn from(e: wire::ReceiptEvent) -> Self {
        match e {
            wire::ReceiptEvent::Delivered => ReceiptEvent::Delivered,
            wire::ReceiptEvent::Failed => ReceiptEvent::Failed,
            wire::ReceiptEvent::WrongCode => ReceiptEvent::WrongCode,
            wire::ReceiptEvent::LockedOut => ReceiptEvent::LockedOut,
            wire::ReceiptEvent::Expired => ReceiptEvent::Expired,
            wire::ReceiptEvent::Reversed => ReceiptEvent::Reversed,
        }
    }
}

impl From<core::ReceiptSummary> for Receipt {
    fn from(r: core::ReceiptSummary) -> Self {
        Receipt { receipt_id: r.receipt_id.to_string(), seq: r.seq, event: r.event.into(), parcel_ids: r.parcel_ids }
    }
}

impl From<core::HandoverOutcome> for HandoverOutcome {
    fn from(o: core::HandoverOutcome) -> Self {
        use core::HandoverOutcome as C;
        match o {
            C::Accepted { holder, method, receipt } => {
                HandoverOutcome::Accepted { holder: holder.into(), method: method.into(), receipt: receipt.into() }
            }
            C::WrongCode { attempts_left } => HandoverOutcome::WrongCode { attempts_left },
            C::Locked { barcode, receipt } => HandoverOutcome::Locked { barcode, receipt: receipt.map(Into::into) },
            C::Expired { barcode } => HandoverOutcome::Expired { barcode },
            C::NotYetValid { barcode, valid_from } => {
                HandoverOutcome::NotYetValid { barcode, valid_from: time(valid_from) }
            }
            C::AlreadyDelivered { barcode } => HandoverOutcome::AlreadyDelivered { barcode },
            C::UnknownParcel { barcode } => HandoverOutcome::UnknownParcel { barcode },
            C::NoCodeNeeded => HandoverOutcome::NoCodeNeeded,
        }
    }
}

impl From<core::ParcelState> for ParcelState {
    fn from(s: core::ParcelState) -> Self {
        match s {
            core::ParcelState::Pending => ParcelState::Pending,
            core::ParcelState::Delivered => ParcelState::Delivered,
            core::ParcelState::Failed => ParcelState::Failed,
            core::ParcelState::Locked => ParcelState::Locked,
            core::ParcelState::Expired => ParcelState::Expired,
        }
    }
}

impl From<core::ParcelView> for Parcel {
    fn from(p: core::ParcelView) -> Self {
        Parcel {
            parcel_id: p.parcel_id,
            barcode: p.barcode,
            stop_id: p.stop_id,
            stop_sequence: p.stop_sequence,
            address_hint: p.address_hint,
            recipient_hint: p.recipient_hint,
            needs_code: p.needs_code,
            holders: p.holders.into_iter().map(Into::into).collect(),
            state: p.state.into(),
            attempts_used: p.attempts_used,
            attempts_left: p.attempts_left,
            max_attempts: p.max_attempts,
            not_before: time(p.not_before),
            not_after: time(p.not_after),
            validity: match p.validity {
                core::Validity::NotYetValid => Validity::NotYetValid,
                core::Validity::Valid => Validity::Valid,
                core::Validity::Expired => Validity::Expired,
            },
        }
    }
}

impl From<FailureReason> for wire::FailureReason {
    fn from(r: FailureReason) -> Self {
        use wire::FailureReason as W;
        match r {
            FailureReason::RecipientUnavailable => W::RecipientUnavailable,
            FailureReason::NoAccess => W::NoAccess,
            FailureReason::BusinessClosed => W::BusinessClosed,
            FailureReason::AddressIncorrect => W::AddressIncorrect,
            FailureReason::UnableToLocate => W::UnableToLocate,
            FailureReason::RefusedByRecipient => W::RefusedByRecipient,
            FailureReason::SealBroken => W::SealBroken,
            FailureReason::DamagedNotDelivered => W::DamagedNotDelivered,
            FailureReason::CodeNotAvailable => W::CodeNotAvailable,
            FailureReason::CodeLockedOut => W::CodeLockedOut,
            FailureReason::CodeExpired => W::CodeExpired,
            FailureReason::DelegateNotAuthorised => W::DelegateNotAuthorised,
            FailureReason::CustomerRequestedLater => W::CustomerRequestedLater,
            FailureReason::InsufficientTime => W::InsufficientTime,
            FailureReason::UnsafeOrWeather => W::UnsafeOrWeather,
            FailureReason::ParcelNotOnVehicle => W::ParcelNotOnVehicle,
            FailureReason::StopRevokedOrReassigned => W::StopRevokedOrReassigned,
            FailureReason::DeviceClockUntrusted => W::DeviceClockUntrusted,
            FailureReason::Other => W::Other,
        }
    }
}

impl From<core::LogLevel> for LogLevel {
    fn from(l: core::LogLevel) -> Self {
        match l {
            core::LogLevel::Debug => LogLevel::Debug,
            core::LogLevel::Info => LogLevel::Info,
            core::LogLevel::Warn => LogLevel::Warn,
            core::LogLevel::Error => LogLevel::Error,
        }
    }
}

impl From<core::ApplyReport> for ApplyReport {
    fn from(r: core::ApplyReport) -> Self {
        ApplyReport {
            manifest_id: r.manifest_id,
            sequence: r.sequence,
            full: r.full,
            added: r.added,
            updated: r.updated,
            removed: r.removed,
            reset: r.reset,
            kept_delivered: r.kept_delivered,
        }
    }
}

impl From<core::OutboxBatch> for UploadBatch {
    fn from(b: core::OutboxBatch) -> Self {
        UploadBatch {
            batch_id: b.batch_id.to_string(),
            body: b.bytes,
            receipt_count: b.receipt_count,
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            resend: b.resend,
            retry_after_ms: b.retry_after_ms,
        }
    }
}

fn verdict(r: wire::ReceiptResult) -> ReceiptVerdict {
    ReceiptVerdict { receipt_id: r.receipt_id.to_string(), seq: r.seq, reason: r.reason }
}

impl From<core::AckReport> for AckReport {
    fn from(r: core::AckReport) -> Self {
        AckReport {
            acked_through: r.acked_through,
            removed: r.removed,
            accepted: r.accepted,
            duplicates: r.duplicates,
            flagged: r.flagged.into_iter().map(verdict).collect(),
            rejected: r.rejected.into_iter().map(verdict).collect(),
        }
    }
}

impl From<core::RetryAdvice> for RetryAdvice {
    fn from(r: core::RetryAdvice) -> Self {
        RetryAdvice { consecutive_failures: r.consecutive_failures, retry_after_ms: r.retry_after_ms }
    }
}

impl From<core::PurgeReport> for PurgeReport {
    fn from(r: core::PurgeReport) -> Self {
        PurgeReport { expired: r.expired, tags_purged: r.tags_purged }
    }
}

impl From<core::Status> for Status {
    fn from(s: core::Status) -> Self {
        let count = |st| s.parcels_by_state.get(&st).copied().unwrap_or(0);
        Status {
            enrolled: s.enrolled,
            parcels: ParcelCounts {
                pending: count(core::ParcelState::Pending),
                delivered: count(core::ParcelState::Delivered),
                failed: count(core::ParcelState::Failed),
                locked: count(core::ParcelState::Locked),
                expired: count(core::ParcelState::Expired),
            },
            device_id: s.device_id,
            route_id: s.route_id,
            delivery_date: s.delivery_date.map(|d| d.to_string()),
            manifest_sequence: s.manifest_sequence,
            last_sync: s.last_sync.map(time),
            parcels_needing_code: s.parcels_needing_code,
            pending_receipts: s.pending_receipts,
            oldest_pending_receipt_age_ms: s.oldest_pending_receipt_age_ms,
            rejected_receipts: s.rejected_receipts,
            upload_failures: s.upload_failures,
            next_upload_after_ms: s.next_upload_after_ms,
            clock: ClockStatus {
                wall_time: time(s.clock.wall_time),
                trusted_time: time(s.clock.trusted_time),
                skew_ms: s.clock.skew_ms,
                wall_clock_set_back: s.clock.wall_clock_set_back,
                last_server_time: s.clock.last_server_time.map(time),
            },
        }
    }
}

/// The ANSI X12 shipment-status reason code for a failure reason, where one exists.
#[uniffi::export]
pub fn failure_reason_x12_code(reason: FailureReason) -> Result<Option<String>, crate::DoorstepError> {
    Ok(wire::FailureReason::from(reason).x12_code().map(str::to_owned))
}
