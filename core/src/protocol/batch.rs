//! Upload batches (device → dispatch) and signed acknowledgements (dispatch → device).
//!
//! A batch is not signed as a whole: each receipt in it is. The ack carries a checkpoint (the highest
//! sequence dispatch holds without a gap, and that receipt's hash); only receipts the checkpoint
//! covers may be forgotten by the device.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SignedReceipt;

/// The largest upload body dispatch accepts. The device never builds a larger batch, whatever
/// the app asks for (`next_batch` keeps its receipts to half of it, so the envelope fits).
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBatch {
    pub format: String,
    pub version: String,
    pub batch_id: Uuid,
    pub device_id: String,
    pub receipts: Vec<SignedReceipt>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Highest receipt sequence dispatch holds with an unbroken chain from the first (0: none yet).
    pub seq: u64,
    #[serde(with = "crate::encoding::b64_32")]
    pub head_hash: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// Verified and stored.
    Accepted,
    /// Already stored from an earlier upload.
    Duplicate,
    /// Stored, but something is wrong and a person must look (e.g. a code proof that does not match).
    Flagged,
    /// Not stored: signature, chain or content invalid.
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptResult {
    pub receipt_id: Uuid,
    pub seq: u64,
    pub status: ReceiptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The payload of a signed acknowledgement envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub device_id: String,
    pub batch_id: Uuid,
    pub server_time: DateTime<Utc>,
    pub checkpoint: Checkpoint,
    pub results: Vec<ReceiptResult>,
}
