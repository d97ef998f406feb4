//! Receipts: the signed, hash-chained record of every hand-over, failure, lockout, expiry and
//! reversal. Each is signed by the device's Ed25519 key over its exact body bytes; `prev_hash` is the
//! SHA-256 of the previous receipt's body, so a cut, reordered or edited log is detected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Base64Bytes, IdDocument, Inspection, check_version, domain, signing_domain};
use crate::crypto::{SigningKey, VerifyingKey, sha256};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// The customer named on the order.
    Customer,
    /// A trusted person the customer named, with the label the customer gave.
    Delegate(String),
}

impl Holder {
    /// Stable storage form: `customer` or `delegate:<label>`.
    pub fn to_key(&self) -> String {
        match self {
            Holder::Customer => "customer".into(),
            Holder::Delegate(label) => format!("delegate:{label}"),
        }
    }

    pub fn from_key(key: &str) -> Option<Holder> {
        match key {
            "customer" => Some(Holder::Customer),
            _ => key.strip_prefix("delegate:").map(|l| Holder::Delegate(l.to_owned())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptEvent {
    Delivered,
    Failed,
    /// A wrong code was given; the parcel is not locked yet. Carries each parcel's attempt count,
    /// so dispatch knows it and a parcel never gets fresh attempts by moving (reassigned, removed
    /// and re-added, or the app reinstalled).
    WrongCode,
    LockedOut,
    Expired,
    Reversed,
    /// A pickup collected from the customer (with their pickup code, a QR token, or none needed).
    Collected,
}

impl ReceiptEvent {
    /// A parcel changed hands: delivered to the customer, or collected from them.
    pub fn is_handover(self) -> bool {
        matches!(self, ReceiptEvent::Delivered | ReceiptEvent::Collected)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoverMethod {
    Code,
    DelegateCode,
    QrToken,
    /// The parcel needed no code.
    NoCode,
}

/// How a parcel was identified at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identification {
    Scanned,
    Typed,
}

/// Why a hand-over did not happen, with the ANSI X12 shipment-status code where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// An addressee-only parcel: the person at the door showed no ID (or not the addressee's).
    NoIdShown,
    /// An open-box parcel the customer refused on opening it (damaged, not what was ordered).
    RefusedOnInspection,
    /// Requires a note.
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 21] = [
        Self::RecipientUnavailable,
        Self::NoAccess,
        Self::BusinessClosed,
        Self::AddressIncorrect,
        Self::UnableToLocate,
        Self::RefusedByRecipient,
        Self::SealBroken,
        Self::DamagedNotDelivered,
        Self::CodeNotAvailable,
        Self::CodeLockedOut,
        Self::CodeExpired,
        Self::DelegateNotAuthorised,
        Self::CustomerRequestedLater,
        Self::InsufficientTime,
        Self::UnsafeOrWeather,
        Self::ParcelNotOnVehicle,
        Self::StopRevokedOrReassigned,
        Self::DeviceClockUntrusted,
        Self::NoIdShown,
        Self::RefusedOnInspection,
        Self::Other,
    ];

    /// ANSI X12 shipment status reason code, where one exists.
    pub fn x12_code(self) -> Option<&'static str> {
        Some(match self {
            Self::RecipientUnavailable => "AQ",
            Self::BusinessClosed => "B1",
            Self::AddressIncorrect => "A2",
            Self::UnableToLocate => "A5",
            Self::RefusedByRecipient => "A07",
            Self::DamagedNotDelivered => "A10",
            Self::CustomerRequestedLater => "AD",
            Self::InsufficientTime => "BH",
            Self::UnsafeOrWeather => "AO",
            Self::ParcelNotOnVehicle => "AA",
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptParcel {
    pub parcel_id: String,
    pub barcode: String,
    pub identified: Identification,
    /// Code attempts spent on this parcel so far, this one included.
    pub attempts_used: u32,
    /// The parcel's attempt epoch on the phone when the receipt was made (see `ParcelEntry`).
    #[serde(default)]
    pub attempt_epoch: u32,
    /// `HMAC(K_proof, ...)` over the accepted code; only on delivered receipts made with a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_proof: Option<Base64Bytes>,
    /// On a hand-over of an addressee-only parcel: the kind of ID the driver checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_checked: Option<IdDocument>,
    /// On a hand-over of an open-box parcel: what the customer found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<Inspection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptBody {
    pub version: String,
    pub receipt_id: Uuid,
    pub device_id: String,
    /// 1, 2, 3, ... per device, without gaps.
    pub seq: u64,
    #[serde(with = "crate::encoding::b64_32")]
    pub prev_hash: [u8; 32],
    pub manifest_id: Option<String>,
    pub event: ReceiptEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HandoverMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a reversal: the receipt it corrects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<Uuid>,
    pub parcels: Vec<ReceiptParcel>,
    /// For a QR hand-over: the dispatch-signed token that was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_token: Option<String>,
    pub device_time: DateTime<Utc>,
    pub trusted_time: DateTime<Utc>,
    /// device_time − trusted_time, in milliseconds (negative: the wall clock was behind).
    pub skew_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// Most parcels one receipt may name (a hand-over covers one stop's parcels; an expiry names one).
/// Dispatch flags a receipt that names more.
pub const MAX_PARCELS_PER_RECEIPT: usize = 50;

/// The receipt version that signed under the bare `doorstep.receipt` domain.
const LEGACY_VERSION: &str = "1.0";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub body: Base64Bytes,
    pub signature: Base64Bytes,
}

impl SignedReceipt {
    /// Signs `body` with the device key. The signature covers the exact body bytes under the
    /// domain `doorstep.receipt/<version>`, so neither format nor version can be changed.
    pub fn sign(body: &ReceiptBody, key: &SigningKey) -> Result<SignedReceipt, serde_json::Error> {
        let bytes = serde_json::to_vec(body)?;
        let signature = key.sign(&signing_domain(domain::RECEIPT, &body.version), &bytes);
        Ok(SignedReceipt { body: Base64Bytes(bytes), signature: Base64Bytes(signature) })
    }

    /// Whether `key` signed these body bytes, whose parsed form is `body` (a version this build
    /// does not speak never verifies). 1.0 receipts were signed by earlier builds under either the
    /// bare `doorstep.receipt` or `doorstep.receipt/1.0`; both still verify so an outbox survives
    /// the app update (the body bytes carry `"version":"1.0"`, so the version stays bound), and only
    /// a 1.0 body verifies under the bare domain.
    pub fn verify(&self, key: &VerifyingKey, body: &ReceiptBody) -> bool {
        let signed_under = |domain: &str| key.verify(domain, &self.body.0, &self.signature.0);
        check_version(&body.version)
            && (signed_under(&signing_domain(domain::RECEIPT, &body.version))
                || (body.version == LEGACY_VERSION && signed_under(domain::RECEIPT)))
    }

    /// The chain hash of this receipt (SHA-256 of its body bytes).
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.body.0)
    }

    pub fn parse_body(&self) -> Result<ReceiptBody, serde_json::Error> {
        serde_json::from_slice(&self.body.0)
    }
}

/// `prev_hash` of a device's first receipt.
pub fn genesis_hash(device_id: &str) -> [u8; 32] {
    sha256(format!("doorstep/chain/genesis/v1/{device_id}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_keys_round_trip() {
        for h in [Holder::Customer, Holder::Delegate("Anna".into()), Holder::Delegate("customer".into())] {
            assert_eq!(Holder::from_key(&h.to_key()), Some(h));
        }
        assert_eq!(Holder::from_key("nobody"), None);
    }

    fn body(version: &str) -> ReceiptBody {
        ReceiptBody {
            version: version.into(),
            receipt_id: Uuid::nil(),
            device_id: "d".into(),
            seq: 1,
            prev_hash: genesis_hash("d"),
            manifest_id: None,
            event: ReceiptEvent::Failed,
            method: None,
            holder: None,
            reason: Some(FailureReason::NoAccess),
            note: None,
            reverses: None,
            parcels: vec![],
            qr_token: None,
            device_time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            trusted_time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            skew_ms: 0,
            location: None,
        }
    }

    #[test]
    fn a_receipt_signature_binds_format_and_version() {
        let key = SigningKey::generate("device:d").unwrap();
        let good = body("1.1");
        let signed = SignedReceipt::sign(&good, &key).unwrap();
        assert!(signed.verify(&key.verifying_key(), &good));
        // A 1.1 body signed under the bare domain of 1.0 builds: refused.
        let bare = |b: &ReceiptBody| {
            let bytes = serde_json::to_vec(b).unwrap();
            let signature = key.sign(domain::RECEIPT, &bytes);
            SignedReceipt { body: Base64Bytes(bytes), signature: Base64Bytes(signature) }
        };
        assert!(!bare(&good).verify(&key.verifying_key(), &good));
        // A 1.0 body as a 1.0 build signed it (waiting in an outbox across the update): verifies.
        let legacy = body("1.0");
        assert!(bare(&legacy).verify(&key.verifying_key(), &legacy));
        // The same signature does not carry over to the body relabelled 1.1.
        let relabelled = SignedReceipt { body: Base64Bytes(serde_json::to_vec(&good).unwrap()), ..bare(&legacy) };
        assert!(!relabelled.verify(&key.verifying_key(), &good));
        // A 1.0 body as the builds just before 1.1 signed it, under `doorstep.receipt/1.0`.
        assert!(SignedReceipt::sign(&legacy, &key).unwrap().verify(&key.verifying_key(), &legacy));
        // A major version this build does not speak never verifies, even correctly signed.
        let future = body("2.0");
        assert!(!SignedReceipt::sign(&future, &key).unwrap().verify(&key.verifying_key(), &future));
    }

    #[test]
    fn failure_reasons_serialise_snake_case_with_x12() {
        assert_eq!(serde_json::to_string(&FailureReason::RefusedByRecipient).unwrap(), "\"refused_by_recipient\"");
        assert_eq!(FailureReason::RecipientUnavailable.x12_code(), Some("AQ"));
        assert_eq!(FailureReason::SealBroken.x12_code(), None);
    }
}
