//! The core's rich internal error. Every fallible operation returns [`CoreError`]; the FFI layer maps
//! it, in one place, to a small public error that tells the app what to do.
//!
//! No message ever contains a code, a secret or personal data: variants carry identifiers
//! (parcel ids, key ids, sequence numbers) and reasons only.

use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    /// The entered code is not six digits (after removing spaces and hyphens). No attempt was spent.
    #[error("the code must be 6 digits (spaces and hyphens are ignored); no attempt was counted")]
    MalformedCode,
    /// An argument from the caller is not acceptable.
    #[error("invalid input: {what}: {why}")]
    InvalidInput { what: &'static str, why: String },
    #[error("manifest rejected: {0}")]
    ManifestRejected(#[from] ManifestRejection),
    #[error("QR token rejected: {0}")]
    QrRejected(#[from] QrRejection),
    #[error("acknowledgement rejected: {0}")]
    AckRejected(#[from] AckRejection),
    #[error("evidence rejected: {0}")]
    EvidenceRejected(#[from] crate::evidence::EvidenceRejection),
    #[error("enrolment bundle rejected: {0}")]
    EnrolmentRejected(String),
    #[error("upload batch rejected: {0}")]
    BatchRejected(String),
    #[error("this device is not enrolled yet")]
    NotEnrolled,
    #[error("this device is already enrolled")]
    AlreadyEnrolled,
    #[error("unknown parcel {0}")]
    UnknownParcel(String),
    #[error("the operation is not allowed for parcel {parcel} in state {state}")]
    InvalidState { parcel: String, state: String },
    #[error("the database file is corrupt or unreadable ({0}); it was left in place untouched")]
    DatabaseCorrupt(String),
    /// One parcel's row no longer matches its seal (damaged on disk): refused at the door with no
    /// attempt counted; a full manifest of its day restores it.
    #[error(
        "parcel {0}'s stored code data is damaged on this phone; sync a full manifest of its day to restore it \
         (`doorstep device sync --full`); no attempt was counted"
    )]
    ParcelDamaged(String),
    /// A parcel asks the driver to confirm something at the door (an ID check, the customer's
    /// inspection) and the hand-over did not say it. Nothing was counted or recorded.
    #[error("parcel {parcel} {needs}; nothing was counted or recorded")]
    DoorCheckMissing { parcel: String, needs: &'static str },
    #[error("the file is not a doorstep database; it was left in place untouched")]
    ForeignDatabase,
    #[error("the database was written by a newer doorstep (schema {found}, this build knows {supported})")]
    DatabaseTooNew { found: i64, supported: i64 },
    #[error("the database file cannot be opened or written ({0}); check that its folder exists and is writable")]
    CannotOpen(String),
    #[error("the storage is full; nothing was written")]
    StorageFull,
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error("the key vault failed: {0}")]
    KeyVault(String),
    #[error("the clock failed: {0}")]
    Clock(String),
    #[error("stored data is inconsistent: {0}")]
    Integrity(String),
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// Why a manifest was refused. A refused manifest changes nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ManifestRejection {
    #[error("payload is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a manifest envelope: {0}")]
    Malformed(String),
    #[error("unsupported manifest version {0}")]
    UnsupportedVersion(String),
    #[error("signed with unknown key id {0}")]
    UnknownKeyId(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("manifest is for another device")]
    WrongDevice,
    #[error("delta manifest is for route {got}, the device holds route {expected}")]
    WrongRoute { got: String, expected: String },
    #[error("manifest is for delivery date {got}, the device holds {expected}")]
    WrongDate { got: String, expected: String },
    #[error(
        "manifest {got} skips changes after {current} that may concern another day this device holds; ask \
         again from sequence {current}"
    )]
    MissedChanges { current: u64, got: u64 },
    #[error(
        "the device already holds {limit} delivery days ({held}), the most it holds at once; a day is let go \
         once every parcel of it is handed over or expired"
    )]
    TooManyDays { held: String, limit: usize },
    #[error("sequence {got} is not newer than the applied sequence {current} (replayed or out of order)")]
    StaleSequence { got: u64, current: u64 },
    #[error("sequence gap: expected {expected}, got {got}; fetch a full manifest")]
    SequenceGap { got: u64, expected: u64 },
    #[error("delta manifest without a full manifest to apply it to")]
    DeltaWithoutBase,
    #[error("parcel id {0} appears twice")]
    DuplicateParcel(String),
    #[error("tracking barcode of parcel {0} is used by another parcel")]
    DuplicateBarcode(String),
    #[error("parcel {0} has an inconsistent validity window")]
    InvalidValidity(String),
    #[error("policy {field} = {value} is out of range {range}")]
    PolicyOutOfRange { field: &'static str, value: i64, range: &'static str },
    #[error("parcel {parcel}: {why}")]
    InvalidParcel { parcel: String, why: String },
}

/// Why a QR token was refused. Refusing a token changes nothing and spends no attempt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QrRejection {
    #[error("not a doorstep QR token")]
    Malformed,
    #[error("signed with unknown key id {0}")]
    UnknownKeyId(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token is for another parcel than the one scanned")]
    WrongParcel,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has expired")]
    Expired,
    #[error("token was already used")]
    AlreadyUsed,
    #[error("the token's holder is no longer authorised for this parcel")]
    HolderNotAuthorised,
    #[error("the token was issued before the holder's code was reissued: ask for the current one")]
    Superseded,
}

/// Why a server acknowledgement was refused. A refused ack deletes nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AckRejection {
    #[error("not an acknowledgement: {0}")]
    Malformed(String),
    #[error("signed with unknown key id {0}")]
    UnknownKeyId(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("acknowledgement is for another device")]
    WrongDevice,
    #[error("checkpoint at sequence {seq} does not match the device's receipt chain")]
    CheckpointMismatch { seq: u64 },
}

impl From<rusqlite::Error> for CoreError {
    fn from(e: rusqlite::Error) -> Self {
        crate::device::classify_sqlite_error(e)
    }
}

impl From<rusqlite_migration::Error> for CoreError {
    fn from(e: rusqlite_migration::Error) -> Self {
        match e {
            rusqlite_migration::Error::RusqliteError { err, .. } => err.into(),
            other => CoreError::Migration(other.to_string()),
        }
    }
}

impl From<crate::protocol::EnvelopeError> for ManifestRejection {
    fn from(e: crate::protocol::EnvelopeError) -> Self {
        use crate::protocol::EnvelopeError as E;
        match e {
            E::Malformed(why) => ManifestRejection::Malformed(why),
            E::UnsupportedVersion(v) => ManifestRejection::UnsupportedVersion(v),
            E::UnknownKeyId(k) => ManifestRejection::UnknownKeyId(k),
            E::BadSignature => ManifestRejection::BadSignature,
        }
    }
}

impl From<crate::protocol::EnvelopeError> for AckRejection {
    fn from(e: crate::protocol::EnvelopeError) -> Self {
        use crate::protocol::EnvelopeError as E;
        match e {
            E::Malformed(why) => AckRejection::Malformed(why),
            E::UnsupportedVersion(v) => AckRejection::Malformed(format!("unsupported version {v}")),
            E::UnknownKeyId(k) => AckRejection::UnknownKeyId(k),
            E::BadSignature => AckRejection::BadSignature,
        }
    }
}

impl From<ring::error::Unspecified> for CoreError {
    fn from(_: ring::error::Unspecified) -> Self {
        CoreError::Crypto("the system random source or a primitive failed")
    }
}
