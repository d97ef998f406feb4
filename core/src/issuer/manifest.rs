//! Building and signing manifests: codes go in, keyed truncated tags come out.

use chrono::{DateTime, NaiveDate, Utc};

use super::{EnrolledDevice, Issuer};
use crate::crypto::{Code, Tag, VerifyingKey};
use crate::policy::Policy;
use crate::protocol::{
    Base64Bytes, DoorRules, Holder, HolderTag, ManifestKind, ManifestPayload, ParcelEntry, SignedEnvelope, Stop, Task,
    domain,
};
use crate::{CoreError, Result};

/// A parcel as dispatch knows it, with its codes in the clear (they never leave dispatch).
#[derive(Clone, Debug)]
pub struct IssuedParcel {
    pub parcel_id: String,
    pub barcode: String,
    pub stop: Stop,
    pub address_hint: String,
    pub recipient_hint: String,
    /// Empty: no code needed. Otherwise the customer's code and any delegates' codes.
    pub codes: Vec<(Holder, Code)>,
    /// Holders whose code was reissued, with the instant: QR tokens minted before it are refused
    /// at the door. Empty when no code was ever reissued.
    pub qr_minted_after: Vec<(Holder, DateTime<Utc>)>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Wrong codes seen for the parcel since its last reset (any phone); 0 when none.
    pub attempts_used: u32,
    /// How many times dispatch reset the parcel's attempts.
    pub attempt_epoch: u32,
    /// What the driver must confirm at the door beyond the code.
    pub rules: DoorRules,
    /// A delivery, or a pickup (a return collected from the customer).
    pub task: Task,
}

/// Everything a manifest says, before tags are computed and it is signed.
#[derive(Clone, Debug)]
pub struct ManifestSpec {
    pub manifest_id: String,
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub time_zone: String,
    pub issued_at: DateTime<Utc>,
    pub sequence: u64,
    pub kind: ManifestKind,
    pub policy: Policy,
    pub parcels: Vec<IssuedParcel>,
    pub removals: Vec<String>,
    pub resets: Vec<String>,
    pub dispatch_keys: Vec<VerifyingKey>,
}

impl IssuedParcel {
    /// The manifest entry for one device: the parcel's salt for that device (the same in every
    /// manifest, see `DeviceSecret::parcel_salt`) and one tag per holder.
    pub fn entry(&self, device: &EnrolledDevice, policy: &Policy) -> Result<ParcelEntry> {
        if self.rules.addressee_only && self.codes.iter().any(|(h, _)| *h != Holder::Customer) {
            return Err(CoreError::InvalidInput {
                what: "parcel",
                why: format!("{} is for the addressee only and cannot have a delegate's code", self.parcel_id),
            });
        }
        let (salt, tags) = if self.codes.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let salt = device.secret.parcel_salt(policy.key_epoch, &self.parcel_id).to_vec();
            let key = device.secret.tag_key(policy.key_epoch);
            let tags = self
                .codes
                .iter()
                .map(|(holder, code)| HolderTag {
                    holder: holder.clone(),
                    tag: Base64Bytes(Tag::compute(&key, &self.parcel_id, &salt, code, policy.tag_bits)),
                    qr_minted_after: self.qr_minted_after.iter().find(|(h, _)| h == holder).map(|(_, at)| *at),
                })
                .collect();
            (salt, tags)
        };
        Ok(ParcelEntry {
            parcel_id: self.parcel_id.clone(),
            barcode: self.barcode.clone(),
            stop: self.stop.clone(),
            address_hint: self.address_hint.clone(),
            recipient_hint: self.recipient_hint.clone(),
            salt: Base64Bytes(salt),
            tags,
            not_before: self.not_before,
            not_after: self.not_after,
            attempts_used: self.attempts_used,
            attempt_epoch: self.attempt_epoch,
            rules: self.rules,
            task: self.task,
        })
    }
}

impl Issuer {
    /// Computes the tags for `device`, validates the payload and signs it with the current key.
    pub fn build_manifest(&self, device: &EnrolledDevice, spec: &ManifestSpec) -> Result<Vec<u8>> {
        let payload = ManifestPayload {
            manifest_id: spec.manifest_id.clone(),
            device_id: device.device_id.clone(),
            route_id: spec.route_id.clone(),
            delivery_date: spec.delivery_date,
            time_zone: spec.time_zone.clone(),
            issued_at: spec.issued_at,
            sequence: spec.sequence,
            kind: spec.kind,
            policy: spec.policy,
            parcels: spec.parcels.iter().map(|p| p.entry(device, &spec.policy)).collect::<Result<_>>()?,
            removals: spec.removals.clone(),
            resets: spec.resets.clone(),
            dispatch_keys: spec.dispatch_keys.clone(),
        };
        payload.validate()?;
        self.sign_manifest(&payload)
    }

    /// Signs a payload as it is (tests use this to sign deliberately odd payloads).
    pub fn sign_manifest(&self, payload: &ManifestPayload) -> Result<Vec<u8>> {
        let bytes =
            serde_json::to_vec(payload).map_err(|_| CoreError::Integrity("manifest did not serialise".into()))?;
        Ok(SignedEnvelope::sign(domain::MANIFEST, bytes, self.current_key()).to_bytes())
    }
}
