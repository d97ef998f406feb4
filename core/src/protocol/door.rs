//! What a parcel asks of the driver at the door beyond its code, and what the driver confirms:
//! an addressee-only parcel (DHL's Ident-Check, an adult signature) is handed over only to the
//! addressee, by their own code or QR token or with no code, and only after an ID was checked,
//! of which the receipt names the *type* and never a number; an open-box parcel (open-box
//! delivery) is opened before the customer takes it, and the receipt carries what they found.
//! The phone refuses a hand-over that lacks a confirmation its parcel asks for, and dispatch
//! flags a receipt that lacks one (a phone of an earlier build, or a forged receipt).

use serde::{Deserialize, Serialize};

/// A parcel's rules at the door, set by dispatch at import and carried in the manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorRules {
    /// Only the addressee, after an ID check: no delegate, no one else's QR token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub addressee_only: bool,
    /// The customer inspects the opened parcel before taking it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_box: bool,
}

impl DoorRules {
    /// No rule beyond the code.
    pub fn is_none(&self) -> bool {
        *self == DoorRules::default()
    }

    /// The rules as a small number (bit 0: addressee only, bit 1: open box), as stored.
    pub fn bits(&self) -> i64 {
        i64::from(self.addressee_only) | i64::from(self.open_box) << 1
    }

    pub fn from_bits(bits: i64) -> DoorRules {
        DoorRules { addressee_only: bits & 1 != 0, open_box: bits & 2 != 0 }
    }
}

/// The kind of identity document the driver checked (never its number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdDocument {
    NationalIdCard,
    Passport,
    DrivingLicence,
    ResidencePermit,
    /// Another official photo ID.
    OtherPhotoId,
}

/// What the customer found on opening an open-box parcel, when they took it. Refusing it is a
/// failure with reason `refused_on_inspection`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inspection {
    /// As ordered, undamaged.
    Accepted,
    /// Taken with a reservation the customer stated (e.g. "scratch on the lid").
    AcceptedWithReservation { note: String },
}
