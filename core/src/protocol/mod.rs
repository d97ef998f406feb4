//! Versioned wire types shared by the device and dispatch, as JSON (serde).
//!
//! Signed messages travel in a [`SignedEnvelope`]: the payload is carried as bytes (base64) and the
//! Ed25519 signature covers exactly those bytes, so nothing is ever re-serialised before checking.
//! The version is `MAJOR.MINOR`: an unknown major version is refused, a newer minor version is
//! accepted and unknown fields are ignored.

mod batch;
mod door;
mod enrolment;
mod envelope;
mod manifest;
mod qr;
mod receipt;
mod request;

pub use batch::{Ack, Checkpoint, MAX_BATCH_BYTES, ReceiptResult, ReceiptStatus, UploadBatch};
pub use door::{DoorRules, IdDocument, Inspection};
pub use enrolment::{EnrolmentBundle, EnrolmentRequest};
pub use envelope::{
    Base64Bytes, EnvelopeError, PROTOCOL_MAJOR, PROTOCOL_VERSION, SignedEnvelope, check_version, domain, signing_domain,
};
pub use manifest::{
    HolderTag, MAX_HINT_LEN, MAX_ID_LEN, MAX_MANIFEST_BYTES, MAX_PARCELS, ManifestKind, ManifestPayload, ParcelEntry,
    SALT_LEN, Stop, Task, is_valid_id,
};
pub use qr::QrToken;
pub use receipt::{
    FailureReason, HandoverMethod, Holder, Identification, Location, MAX_PARCELS_PER_RECEIPT, ReceiptBody,
    ReceiptEvent, ReceiptParcel, SignedReceipt, genesis_hash,
};
pub use request::{
    REQUEST_HEADER, REQUEST_SKEW_MS, RequestRejection, check_request_header, request_device, verify_request,
};
pub(crate) use request::{request_domain, request_message, request_nonce};
