//! The records and enums Kotlin and Swift see. Each is the core's own type, re-declared here with
//! `#[uniffi::remote(...)]`: the compiler checks every declaration against core's definition, so
//! they cannot drift, and core stays free of UniFFI. A declaration lists the type exactly as core
//! defines it; a type alias gives it the name the apps see (`Parcel` for `ParcelView`). Times, ids
//! and dates cross as the custom types of `uniffi_support.rs`, durations as `Duration`.

use std::time::Duration;

pub use doorstep_core::device::{
    AckReport, ApplyReport, ClockStatus, HandoverOutcome, HeldDay, LogLevel, OutboxBatch, ParcelCounts, ParcelState,
    ParcelView, PurgeReport, ReceiptSummary, RetryAdvice, ScannedParcel, Status, Validity,
};
#[cfg(feature = "evidence")]
pub use doorstep_core::evidence::{EvidenceEvent, EvidenceReport};
pub use doorstep_core::protocol::{
    DoorRules, FailureReason, HandoverMethod, Holder, IdDocument, Identification, Inspection, Location, ReceiptEvent,
    ReceiptResult, ReceiptStatus, Task,
};

use crate::uniffi_support::{IsoDate, Timestamp, Uuid};

/// A receipt the call just wrote (already on disk, waiting in the outbox).
pub type Receipt = ReceiptSummary;
/// A parcel as the driver's app shows it. Holds no code.
pub type Parcel = ParcelView;
/// A batch of receipts to POST to dispatch (`bytes` is the request body).
pub type UploadBatch = OutboxBatch;
/// Dispatch's verdict on one receipt.
pub type ReceiptVerdict = ReceiptResult;

/// A parcel presented for a hand-over, with what the driver confirms when the parcel's `rules`
/// ask: the kind of ID checked (addressee only), what the customer found on opening it (open box).
#[uniffi::remote(Record)]
pub struct ScannedParcel {
    /// The tracking barcode as scanned or typed.
    pub barcode: String,
    pub identified: Identification,
    /// An addressee-only parcel: the kind of ID checked (never its number).
    #[uniffi(default)]
    pub id_checked: Option<IdDocument>,
    /// An open-box parcel: what the customer found, when they take it.
    #[uniffi(default)]
    pub inspection: Option<Inspection>,
}

/// What a parcel asks at the door beyond its code.
#[uniffi::remote(Record)]
pub struct DoorRules {
    /// Only the addressee, after an ID check: no delegate, no one else's QR token.
    pub addressee_only: bool,
    /// The customer opens and inspects it before taking it.
    pub open_box: bool,
}

/// The kind of ID the driver checked.
#[uniffi::remote(Enum)]
pub enum IdDocument {
    NationalIdCard,
    Passport,
    DrivingLicence,
    ResidencePermit,
    OtherPhotoId,
}

/// What the customer found on opening an open-box parcel they take (refusing it is a failure
/// with reason `RefusedOnInspection`).
#[uniffi::remote(Enum)]
pub enum Inspection {
    Accepted,
    AcceptedWithReservation { note: String },
}

/// How a parcel was identified at the door.
#[uniffi::remote(Enum)]
pub enum Identification {
    Scanned,
    Typed,
}

/// Where the hand-over happened, if the app knows.
#[uniffi::remote(Record)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: f64,
}

/// Who holds a code: the customer, or a trusted person the customer named (with the label the
/// customer gave).
#[uniffi::remote(Enum)]
pub enum Holder {
    Customer,
    Delegate(String),
}

#[uniffi::remote(Enum)]
pub enum HandoverMethod {
    Code,
    DelegateCode,
    QrToken,
    NoCode,
}

#[uniffi::remote(Enum)]
pub enum ReceiptEvent {
    Delivered,
    Failed,
    WrongCode,
    LockedOut,
    Expired,
    Reversed,
    /// A pickup collected from the customer.
    Collected,
}

#[uniffi::remote(Record)]
pub struct Receipt {
    pub receipt_id: Uuid,
    pub seq: u64,
    pub event: ReceiptEvent,
    pub parcel_ids: Vec<String>,
}

/// The answer at the door.
#[uniffi::remote(Enum)]
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
        valid_from: Timestamp,
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

#[uniffi::remote(Enum)]
pub enum ParcelState {
    Pending,
    Delivered,
    /// A failed attempt was recorded; may still be handed over later the same day.
    Failed,
    /// Too many wrong codes; a dispatch reset or the customer's QR token unlocks it.
    Locked,
    Expired,
    /// A pickup collected from the customer.
    Collected,
}

#[uniffi::remote(Enum)]
pub enum Validity {
    NotYetValid,
    Valid,
    Expired,
}

#[uniffi::remote(Record)]
pub struct Parcel {
    pub parcel_id: String,
    /// The delivery day whose manifest carries the parcel (a phone may hold up to three).
    pub delivery_date: IsoDate,
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
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub validity: Validity,
    /// What the driver must confirm beyond the code (an ID check, the customer's inspection).
    pub rules: DoorRules,
    /// A delivery, or a pickup: a return collected from the customer with their pickup code.
    pub task: Task,
}

/// What the driver does with a parcel at the door.
#[uniffi::remote(Enum)]
pub enum Task {
    Delivery,
    /// Collect it from the customer (a return): same code check; the receipt says `Collected`.
    Pickup,
}

/// Why a hand-over did not happen (ANSI X12 shipment-status code where one exists: see
/// `failureReasonX12Code`).
#[uniffi::remote(Enum)]
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
    /// Addressee only: no ID shown, or not the addressee's.
    NoIdShown,
    /// Open box: the customer refused it on opening it.
    RefusedOnInspection,
    /// Needs a note.
    Other,
}

#[uniffi::remote(Enum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// What applying a manifest changed.
#[uniffi::remote(Record)]
pub struct ApplyReport {
    pub manifest_id: String,
    pub sequence: u64,
    pub full: bool,
    pub added: u32,
    pub updated: u32,
    pub removed: u32,
    pub reset: u32,
    pub kept_delivered: u32,
    /// Why none of it applied although it was taken (a full manifest of a day the phone cannot
    /// hold: before every held day, or a fourth day); `null` when it applied.
    pub not_applied: Option<String>,
}

#[uniffi::remote(Record)]
pub struct UploadBatch {
    pub batch_id: Uuid,
    /// The request body (JSON).
    pub bytes: Vec<u8>,
    pub receipt_count: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// This batch was handed out before and is being sent again.
    pub resend: bool,
    /// Wait this long before sending (backoff after failures); zero means now.
    pub retry_after: Duration,
}

#[uniffi::remote(Enum)]
pub enum ReceiptStatus {
    Accepted,
    Duplicate,
    /// Stored, but a person must look at it.
    Flagged,
    /// Not stored; the receipt stays on the device.
    Rejected,
}

#[uniffi::remote(Record)]
pub struct ReceiptVerdict {
    pub receipt_id: Uuid,
    pub seq: u64,
    pub status: ReceiptStatus,
    pub reason: Option<String>,
}

/// What an accepted acknowledgement did.
#[uniffi::remote(Record)]
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

#[uniffi::remote(Record)]
pub struct RetryAdvice {
    pub consecutive_failures: u32,
    pub retry_after: Duration,
}

#[uniffi::remote(Record)]
pub struct PurgeReport {
    pub expired: u32,
    pub tags_purged: u32,
}

#[uniffi::remote(Record)]
pub struct ParcelCounts {
    pub pending: u32,
    pub delivered: u32,
    pub failed: u32,
    pub locked: u32,
    pub expired: u32,
    /// Pickups collected from their customers.
    pub collected: u32,
}

#[uniffi::remote(Record)]
pub struct ClockStatus {
    pub wall_time: Timestamp,
    pub trusted_time: Timestamp,
    /// Wall minus trusted, in ms (negative: the phone's clock is behind).
    pub skew_ms: i64,
    /// The phone's clock is behind trusted time by more than 5 minutes.
    pub wall_clock_set_back: bool,
    pub last_server_time: Option<Timestamp>,
}

/// One delivery day the phone holds, with its parcels by state.
#[uniffi::remote(Record)]
pub struct HeldDay {
    pub delivery_date: IsoDate,
    pub route_id: String,
    /// The IANA zone of the day's windows (e.g. `Europe/Berlin`).
    pub time_zone: String,
    pub parcels: ParcelCounts,
}

#[uniffi::remote(Record)]
pub struct Status {
    pub enrolled: bool,
    pub device_id: Option<String>,
    /// The route of the oldest held day.
    pub route_id: Option<String>,
    /// The oldest held day (usually today; `days` lists them all).
    pub delivery_date: Option<IsoDate>,
    /// Every delivery day the phone holds, oldest first (tomorrow's route loads beside today's).
    pub days: Vec<HeldDay>,
    pub manifest_sequence: Option<u64>,
    pub last_sync: Option<Timestamp>,
    pub parcels: ParcelCounts,
    pub parcels_needing_code: u32,
    pub pending_receipts: u32,
    pub oldest_pending_receipt_age: Option<Duration>,
    pub rejected_receipts: u32,
    pub upload_failures: u32,
    pub next_upload_after: Option<Duration>,
    pub clock: ClockStatus,
}

/// The ANSI X12 shipment-status reason code for a failure reason, where one exists.
#[uniffi::export]
pub fn failure_reason_x12_code(reason: FailureReason) -> Result<Option<String>, crate::DoorstepError> {
    Ok(reason.x12_code().map(str::to_owned))
}

/// One receipt about the parcel in a verified evidence file.
#[cfg(feature = "evidence")]
#[uniffi::remote(Record)]
pub struct EvidenceEvent {
    pub device_id: String,
    pub seq: u64,
    pub receipt_id: Uuid,
    pub event: ReceiptEvent,
    pub holder: Option<Holder>,
    pub method: Option<HandoverMethod>,
    pub reason: Option<FailureReason>,
    /// The phone's trusted time when it made the receipt.
    pub trusted_time: Timestamp,
    /// Dispatch's verdict, and why when it is not plain acceptance.
    pub status: ReceiptStatus,
    pub status_reason: Option<String>,
}

/// What a verified evidence file shows: the parcel's receipts, oldest first.
#[cfg(feature = "evidence")]
#[uniffi::remote(Record)]
pub struct EvidenceReport {
    pub parcel_id: String,
    /// The dispatch key that signed the statement.
    pub signed_by: String,
    pub issued_at: Timestamp,
    pub events: Vec<EvidenceEvent>,
}
