//! `DoorstepDevice`: the device side of the core as one thread-safe object.
//!
//! Calls may come from any thread; the core serialises them on its single database connection.
//! Every call blocks for at most one fsync'd commit, so apps call it off the main thread (the
//! Kotlin and Swift layers do this for you). Releasing the object (Kotlin `close()`/`destroy()`,
//! Swift `deinit`) closes the database once calls in progress have finished.

use std::sync::Arc;

use doorstep_core::device::Device;

use crate::error::DoorstepError;
use crate::host::{ClockAdapter, LoggerAdapter, VaultAdapter};
use crate::types::*;
use crate::{Clock, KeyVault, Logger};

type Result<T, E = DoorstepError> = std::result::Result<T, E>;

/// The offline hand-over core on this phone, opened on one SQLite file.
#[derive(uniffi::Object)]
pub struct DoorstepDevice {
    device: Device,
}

#[uniffi::export]
impl DoorstepDevice {
    /// Opens (or creates) the device database at `path`. A corrupt, foreign or newer file fails
    /// with `DatabaseUnusable` and is left untouched.
    #[uniffi::constructor]
    pub fn open(
        path: String,
        vault: Arc<dyn KeyVault>,
        clock: Arc<dyn Clock>,
        logger: Option<Arc<dyn Logger>>,
    ) -> Result<Arc<Self>> {
        let logger = logger.map(|l| Arc::new(LoggerAdapter(l)) as Arc<dyn doorstep_core::device::Logger>);
        let device = Device::open(path, Arc::new(VaultAdapter(vault)), Arc::new(ClockAdapter(clock)), logger)?;
        Ok(Arc::new(DoorstepDevice { device }))
    }

    pub fn is_enrolled(&self) -> Result<bool> {
        Ok(self.device.is_enrolled())
    }

    /// The enrolment request to send to dispatch (JSON). Creates the receipt-signing key on the
    /// first call; later calls return the same request until enrolment completes.
    pub fn enrolment_request(&self) -> Result<Vec<u8>> {
        Ok(self.device.enrolment_request()?)
    }

    /// The `Device-Signature` header value for a request to dispatch: method, path with query, and
    /// body, signed with this device's key. Add it to manifest fetches and receipt uploads.
    pub fn sign_request(&self, method: String, path: String, body: Vec<u8>) -> Result<String> {
        Ok(self.device.sign_request(&method, &path, &body)?)
    }

    /// Stores dispatch's enrolment answer; the device secret is sealed by the `KeyVault` at once.
    pub fn complete_enrolment(&self, bundle: Vec<u8>) -> Result<()> {
        Ok(self.device.complete_enrolment(&bundle)?)
    }

    /// Verifies and applies a manifest (full or delta) all-or-nothing.
    pub fn apply_manifest(&self, envelope: Vec<u8>) -> Result<ApplyReport> {
        Ok(self.device.apply_manifest(&envelope)?)
    }

    pub fn parcel(&self, parcel_id: String) -> Result<Parcel> {
        Ok(self.device.parcel(&parcel_id)?)
    }

    pub fn parcel_by_barcode(&self, barcode: String) -> Result<Parcel> {
        Ok(self.device.parcel_by_barcode(&barcode)?)
    }

    /// The parcels of one stop, in route order.
    pub fn parcels_at_stop(&self, stop_id: String) -> Result<Vec<Parcel>> {
        Ok(self.device.parcels_at_stop(&stop_id)?)
    }

    /// Every parcel on the device, in route order.
    pub fn parcels(&self) -> Result<Vec<Parcel>> {
        Ok(self.device.parcels()?)
    }

    /// Checks the code the recipient gave for the scanned parcels. Spaces and hyphens are ignored;
    /// anything but 6 digits fails with `CodeFormat` and spends no attempt. When accepted, the
    /// hand-over and its receipt are on disk before this returns.
    pub fn verify_code(
        &self,
        scanned: Vec<ScannedParcel>,
        code: String,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        Ok(self.device.verify_code(&scanned, &code, location)?)
    }

    /// Checks a QR token from the customer app instead of a code (signed by dispatch, used once).
    pub fn verify_qr_token(
        &self,
        scanned: Vec<ScannedParcel>,
        token: String,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        Ok(self.device.verify_qr_token(&scanned, &token, location)?)
    }

    /// Hands over parcels that need no code.
    pub fn deliver_without_code(
        &self,
        scanned: Vec<ScannedParcel>,
        location: Option<Location>,
    ) -> Result<HandoverOutcome> {
        Ok(self.device.deliver_without_code(&scanned, location)?)
    }

    /// Records that the scanned parcels could not be handed over. `Other` needs a note.
    pub fn record_failure(
        &self,
        scanned: Vec<ScannedParcel>,
        reason: FailureReason,
        note: Option<String>,
        location: Option<Location>,
    ) -> Result<Receipt> {
        Ok(self.device.record_failure(&scanned, reason, note, location)?)
    }

    /// Corrects a hand-over recorded by mistake with a new receipt; nothing is deleted.
    pub fn reverse_delivery(
        &self,
        parcel_id: String,
        reason: FailureReason,
        note: Option<String>,
        location: Option<Location>,
    ) -> Result<Receipt> {
        Ok(self.device.reverse_delivery(&parcel_id, reason, note, location)?)
    }

    /// The next batch of receipts to upload, or null when the outbox is empty. POST `body` to
    /// dispatch and pass its answer to `applyAck`, or call `recordUploadFailure`.
    pub fn next_batch(&self, max_receipts: u32, max_bytes: u32) -> Result<Option<UploadBatch>> {
        Ok(self.device.next_batch(max_receipts, max_bytes)?)
    }

    /// Verifies dispatch's signed answer and forgets the receipts it covers.
    pub fn apply_ack(&self, signed_ack: Vec<u8>) -> Result<AckReport> {
        Ok(self.device.apply_ack(&signed_ack)?)
    }

    /// Records a failed upload; returns how long to wait before retrying (exponential backoff with
    /// full jitter). `error` is kept for diagnostics; it must not contain personal data.
    pub fn record_upload_failure(&self, error: String) -> Result<RetryAdvice> {
        Ok(self.device.record_upload_failure(&error)?)
    }

    /// Deletes the tags of parcels whose validity has ended and expires undelivered ones.
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        Ok(self.device.purge_expired()?)
    }

    pub fn status(&self) -> Result<Status> {
        Ok(self.device.status()?)
    }
}

/// Moves an unusable database (and its WAL) aside so the app can start afresh; returns the new
/// path. Nothing is deleted.
#[uniffi::export]
pub fn quarantine_database(path: String) -> Result<String> {
    let now = chrono::Utc::now().timestamp_millis();
    let moved = doorstep_core::device::quarantine(std::path::Path::new(&path), now)?;
    Ok(moved.to_string_lossy().into_owned())
}

#[cfg(feature = "evidence")]
/// Checks a parcel's evidence file (from dispatch: `GET /v1/parcels/{id}/evidence`) offline against
/// dispatch's published keys document (`GET /v1/dispatch-keys`); returns what it shows, or
/// `EvidenceRejected` when any byte was changed or the signer is not trusted.
#[uniffi::export]
pub fn verify_evidence(evidence: Vec<u8>, dispatch_keys: Vec<u8>) -> Result<doorstep_core::evidence::EvidenceReport> {
    let keys: Vec<doorstep_core::crypto::VerifyingKey> = serde_json::from_slice(&dispatch_keys)
        .map_err(|e| DoorstepError::InvalidInput { reason: format!("dispatch_keys is not a keys document: {e}") })?;
    Ok(doorstep_core::evidence::verify(&evidence, &keys).map_err(doorstep_core::CoreError::from)?)
}
