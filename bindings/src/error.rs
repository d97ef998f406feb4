//! The public error: small, actionable, free of codes and personal data; mapped from the core's
//! `CoreError` in exactly one place (`From<CoreError>` below).

use doorstep_core::CoreError;
use doorstep_core::error::ManifestRejection;

/// What went wrong, in terms of what the app should do next. Nothing was changed by a call that
/// returned an error.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum DoorstepError {
    /// The entered code is not 6 digits. Ask again; no attempt was counted.
    #[error("the code must be 6 digits; no attempt was counted")]
    CodeFormat,
    /// An argument is not acceptable (empty scan, bad location, missing note...). Fix the call.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// The manifest was refused. If `fetch_full` is true, ask dispatch again with `since` = the
    /// device's `status().manifestSequence` (it answers with what continues it, or a full
    /// manifest); otherwise report it: the manifest is forged, misdirected or malformed.
    #[error("manifest rejected: {reason}")]
    ManifestRejected { reason: String, fetch_full: bool },
    /// The QR token was refused (forged, expired, used, other parcel). Ask for the code instead.
    #[error("QR token rejected: {reason}")]
    QrTokenRejected { reason: String },
    /// Dispatch's answer to an upload was refused; no receipt was deleted. Retry the upload later.
    #[error("acknowledgement rejected: {reason}")]
    AckRejected { reason: String },
    /// An evidence file did not verify: it was changed, or is not signed by a trusted dispatch
    /// key. Do not rely on it.
    #[error("evidence rejected: {reason}")]
    EvidenceRejected { reason: String },
    /// The enrolment answer was refused. Start enrolment again.
    #[error("enrolment rejected: {reason}")]
    EnrolmentRejected { reason: String },
    /// The device is not enrolled yet. Enrol it first.
    #[error("the device is not enrolled")]
    NotEnrolled,
    /// The parcel is not on this device's manifest.
    #[error("unknown parcel {parcel}")]
    UnknownParcel { parcel: String },
    /// Not allowed in the current state (e.g. reversing a parcel that was not delivered).
    #[error("not allowed: {reason}")]
    NotAllowed { reason: String },
    /// The database file cannot be used (corrupt, not doorstep's, or written by a newer version).
    /// It was left untouched: update the app, or call `quarantineDatabase` and enrol again.
    #[error("database unusable: {reason}")]
    DatabaseUnusable { reason: String },
    /// One parcel's stored code data is damaged (on disk): nothing was counted. Sync, then ask
    /// for the day's manifest once more without `since` (a new full manifest restores the
    /// parcel); the rest of the device works.
    #[error("parcel {parcel} is damaged on this device: {reason}")]
    ParcelDamaged { parcel: String, reason: String },
    /// The parcel's rules ask for a confirmation the call did not give (`idChecked` for an
    /// addressee-only parcel, `inspection` for an open-box one). Nothing was counted.
    #[error("{reason}")]
    DoorCheckMissing { parcel: String, reason: String },
    /// The database file cannot be opened or written: its folder is missing or read-only.
    #[error("storage unavailable: {reason}")]
    StorageUnavailable { reason: String },
    /// The phone's storage is full. Free space and retry; nothing was written.
    #[error("storage full; nothing was written")]
    StorageFull,
    /// The key vault refused (e.g. the phone is locked). Retry when it is available.
    #[error("key vault unavailable: {reason}")]
    KeyVaultUnavailable { reason: String },
    /// The host clock failed.
    #[error("clock unavailable: {reason}")]
    ClockUnavailable { reason: String },
    /// A bug or an I/O failure (disk full...). Nothing partial was written. Report it.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<CoreError> for DoorstepError {
    fn from(e: CoreError) -> Self {
        let reason = e.to_string();
        match e {
            CoreError::MalformedCode => DoorstepError::CodeFormat,
            CoreError::InvalidInput { .. } => DoorstepError::InvalidInput { reason },
            CoreError::ManifestRejected(r) => DoorstepError::ManifestRejected {
                fetch_full: matches!(
                    r,
                    ManifestRejection::SequenceGap { .. }
                        | ManifestRejection::DeltaWithoutBase
                        | ManifestRejection::MissedChanges { .. }
                ),
                reason,
            },
            CoreError::QrRejected(_) => DoorstepError::QrTokenRejected { reason },
            CoreError::AckRejected(_) => DoorstepError::AckRejected { reason },
            CoreError::EvidenceRejected(_) => DoorstepError::EvidenceRejected { reason },
            CoreError::EnrolmentRejected(_) | CoreError::BatchRejected(_) => {
                DoorstepError::EnrolmentRejected { reason }
            }
            CoreError::NotEnrolled => DoorstepError::NotEnrolled,
            CoreError::UnknownParcel(parcel) => DoorstepError::UnknownParcel { parcel },
            CoreError::ParcelDamaged(parcel) => DoorstepError::ParcelDamaged { parcel, reason },
            CoreError::DoorCheckMissing { parcel, .. } => DoorstepError::DoorCheckMissing { parcel, reason },
            CoreError::AlreadyEnrolled | CoreError::InvalidState { .. } => DoorstepError::NotAllowed { reason },
            CoreError::DatabaseCorrupt(_) | CoreError::ForeignDatabase | CoreError::DatabaseTooNew { .. } => {
                DoorstepError::DatabaseUnusable { reason }
            }
            CoreError::CannotOpen(_) => DoorstepError::StorageUnavailable { reason },
            CoreError::StorageFull => DoorstepError::StorageFull,
            CoreError::KeyVault(_) => DoorstepError::KeyVaultUnavailable { reason },
            CoreError::Clock(_) => DoorstepError::ClockUnavailable { reason },
            CoreError::Database(_) | CoreError::Migration(_) | CoreError::Integrity(_) | CoreError::Crypto(_) => {
                DoorstepError::Internal { reason }
            }
        }
    }
}

/// An error raised by the host's implementation of a foreign trait.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum HostError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for HostError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        HostError::Failed { reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_gap_asks_for_a_full_manifest() {
        let e: DoorstepError = CoreError::from(ManifestRejection::SequenceGap { got: 5, expected: 3 }).into();
        assert!(matches!(e, DoorstepError::ManifestRejected { fetch_full: true, .. }));
        let e: DoorstepError = CoreError::from(ManifestRejection::BadSignature).into();
        assert!(matches!(e, DoorstepError::ManifestRejected { fetch_full: false, .. }));
    }

    #[test]
    fn a_malformed_code_says_no_attempt_was_counted() {
        let e: DoorstepError = CoreError::MalformedCode.into();
        assert!(e.to_string().contains("no attempt"));
    }
}
