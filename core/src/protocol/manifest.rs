//! The manifest: the day's parcels for one device and route, with keyed, truncated code tags (never
//! codes). A full manifest replaces the day; a delta adds, updates, removes or resets parcels and must
//! follow the applied sequence number exactly.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{Base64Bytes, DoorRules, Holder};
use crate::crypto::{Tag, VerifyingKey};
use crate::error::ManifestRejection;
use crate::policy::Policy;

/// Largest envelope a device accepts (a 10,000-parcel day is about 4 MB).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_PARCELS: usize = 50_000;
pub const SALT_LEN: usize = 16;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_HINT_LEN: usize = 256;
/// A code is valid for at most one (long) delivery day plus slack for time zones.
const MAX_WINDOW: TimeDelta = TimeDelta::hours(48);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestKind {
    Full,
    Delta,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub id: String,
    /// Position on the route (1-based).
    pub sequence: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderTag {
    pub holder: Holder,
    pub tag: Base64Bytes,
    /// Set when this holder's code was reissued (a reissue answers a leak): the phone refuses a
    /// QR token for this holder minted before this instant or in its millisecond, or one that
    /// names no mint time.
    /// Absent for a code never reissued, so tokens of earlier builds still open the door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_minted_after: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParcelEntry {
    pub parcel_id: String,
    /// Tracking barcode as printed on the label.
    pub barcode: String,
    pub stop: Stop,
    /// Minimal hints for the driver (e.g. "12 Elm St, flat 3", "J. S."), no full personal data.
    #[serde(default)]
    pub address_hint: String,
    #[serde(default)]
    pub recipient_hint: String,
    /// Per-parcel random salt for the tags; empty when the parcel needs no code.
    #[serde(default)]
    pub salt: Base64Bytes,
    /// One tag per code holder (customer, named delegates); empty when the parcel needs no code.
    #[serde(default)]
    pub tags: Vec<HolderTag>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Wrong codes dispatch has seen for this parcel since its last reset (from any phone). A
    /// phone keeps the larger of its own count and this one, within one attempt epoch.
    #[serde(default)]
    pub attempts_used: u32,
    /// How many times dispatch reset the parcel's attempts. A phone holding a lower epoch takes
    /// this entry's count instead of its own (the reset reached it), and its receipts name the
    /// epoch, so dispatch never counts an attempt made before a reset against the fresh attempts.
    #[serde(default)]
    pub attempt_epoch: u32,
    /// What the driver must confirm at the door beyond the code (addressee only, open box).
    #[serde(default, skip_serializing_if = "DoorRules::is_none")]
    pub rules: DoorRules,
    /// A delivery (the default), or a return the driver collects from the customer.
    #[serde(default, skip_serializing_if = "Task::is_delivery")]
    pub task: Task,
}

/// What the driver does with a parcel at the door. A pickup is collected from the customer
/// against their pickup code, with the same tags, attempts, trusted time and receipts as a
/// delivery; its receipt's event is `collected`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Delivery,
    Pickup,
}

impl Task {
    pub fn is_delivery(&self) -> bool {
        *self == Task::Delivery
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Delivery => "delivery",
            Task::Pickup => "pickup",
        }
    }

    pub fn parse(s: &str) -> Option<Task> {
        [Task::Delivery, Task::Pickup].into_iter().find(|t| t.as_str() == s)
    }
}

impl ParcelEntry {
    pub fn needs_code(&self) -> bool {
        !self.tags.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPayload {
    pub manifest_id: String,
    pub device_id: String,
    pub route_id: String,
    pub delivery_date: NaiveDate,
    /// IANA zone of the deliveries; instants below are already UTC, computed by dispatch.
    pub time_zone: String,
    pub issued_at: DateTime<Utc>,
    pub sequence: u64,
    pub kind: ManifestKind,
    pub policy: Policy,
    /// Full: every parcel of the day. Delta: parcels added or replaced (new code, delegates, stop).
    #[serde(default)]
    pub parcels: Vec<ParcelEntry>,
    /// Delta only: parcels taken off this device (cancelled or reassigned to another route).
    #[serde(default)]
    pub removals: Vec<String>,
    /// Delta only: parcels whose attempt counter dispatch resets (unlocks).
    #[serde(default)]
    pub resets: Vec<String>,
    /// When non-empty, the complete set of dispatch keys from now on (key rotation). It must contain
    /// the key that signed this manifest.
    #[serde(default)]
    pub dispatch_keys: Vec<VerifyingKey>,
}

fn bad(parcel: &str, why: impl Into<String>) -> ManifestRejection {
    ManifestRejection::InvalidParcel { parcel: parcel.to_owned(), why: why.into() }
}

/// Whether `id` fits an id field of a manifest (parcel, barcode, stop, route, device): 1..=128
/// bytes, no control characters. Dispatch checks the same at the door of its API.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

fn check_id(what: &str, id: &str) -> Result<(), ManifestRejection> {
    if !is_valid_id(id) {
        return Err(ManifestRejection::Malformed(format!("{what} must be 1..={MAX_ID_LEN} printable characters")));
    }
    Ok(())
}

impl ManifestPayload {
    /// Structural checks that need nothing but the payload itself.
    pub fn validate(&self) -> Result<(), ManifestRejection> {
        self.policy.validate()?;
        check_id("manifest_id", &self.manifest_id)?;
        check_id("device_id", &self.device_id)?;
        check_id("route_id", &self.route_id)?;
        if self.sequence == 0 || self.sequence > i64::MAX as u64 {
            return Err(ManifestRejection::Malformed("sequence must be 1..=2^63-1".into()));
        }
        if self.parcels.len() > MAX_PARCELS {
            return Err(ManifestRejection::Malformed(format!("more than {MAX_PARCELS} parcels")));
        }
        if self.kind == ManifestKind::Full && !(self.removals.is_empty() && self.resets.is_empty()) {
            return Err(ManifestRejection::Malformed("a full manifest carries no removals or resets".into()));
        }
        let mut ids = HashSet::with_capacity(self.parcels.len());
        let mut barcodes = HashSet::with_capacity(self.parcels.len());
        let tag_len = Tag::len_for(self.policy.tag_bits);
        for p in &self.parcels {
            check_id("parcel_id", &p.parcel_id).map_err(|_| bad(&p.parcel_id, "invalid parcel id"))?;
            check_id("barcode", &p.barcode).map_err(|_| bad(&p.parcel_id, "invalid barcode"))?;
            check_id("stop id", &p.stop.id).map_err(|_| bad(&p.parcel_id, "invalid stop id"))?;
            if p.address_hint.len() > MAX_HINT_LEN || p.recipient_hint.len() > MAX_HINT_LEN {
                return Err(bad(&p.parcel_id, "hint too long"));
            }
            if !ids.insert(p.parcel_id.as_str()) {
                return Err(ManifestRejection::DuplicateParcel(p.parcel_id.clone()));
            }
            if !barcodes.insert(p.barcode.as_str()) {
                return Err(ManifestRejection::DuplicateBarcode(p.parcel_id.clone()));
            }
            if p.not_before >= p.not_after || p.not_after - p.not_before > MAX_WINDOW {
                return Err(ManifestRejection::InvalidValidity(p.parcel_id.clone()));
            }
            if p.needs_code() {
                if p.salt.0.len() != SALT_LEN {
                    return Err(bad(&p.parcel_id, format!("salt must be {SALT_LEN} bytes")));
                }
                if p.tags.len() > 1 + usize::from(self.policy.max_delegates) {
                    return Err(bad(&p.parcel_id, "too many code holders"));
                }
                let mut holders = HashSet::new();
                for t in &p.tags {
                    if t.tag.0.len() != tag_len {
                        return Err(bad(&p.parcel_id, "tag length does not match the policy"));
                    }
                    if let Holder::Delegate(label) = &t.holder
                        && (label.is_empty() || label.len() > MAX_HINT_LEN)
                    {
                        return Err(bad(&p.parcel_id, "invalid delegate label"));
                    }
                    if !holders.insert(&t.holder) {
                        return Err(bad(&p.parcel_id, "holder appears twice"));
                    }
                }
                if !p.tags.iter().any(|t| t.holder == Holder::Customer) {
                    return Err(bad(&p.parcel_id, "delegate codes need a customer code"));
                }
            } else if !p.salt.0.is_empty() {
                return Err(bad(&p.parcel_id, "salt without tags"));
            }
        }
        for (what, list) in [("removals", &self.removals), ("resets", &self.resets)] {
            let mut seen = HashSet::new();
            for id in list {
                check_id(what, id)?;
                if !seen.insert(id) {
                    return Err(ManifestRejection::DuplicateParcel(id.clone()));
                }
            }
        }
        if self.removals.iter().any(|id| ids.contains(id.as_str())) {
            return Err(ManifestRejection::Malformed("a parcel is both added and removed".into()));
        }
        Ok(())
    }
}
