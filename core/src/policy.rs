//! The per-manifest policy (attempt limit, tag length, key epoch, delegates per parcel), its allowed
//! ranges, and the security figures it implies, so the docs print numbers computed from the same
//! code. Dispatch enforces the delegate cap when a customer names one; the device refuses a
//! manifest whose parcel carries more codes than the policy allows.

use serde::{Deserialize, Serialize};

use crate::crypto::{MAX_TAG_BITS, MIN_TAG_BITS};
use crate::error::ManifestRejection;

pub const MIN_ATTEMPTS: u8 = 3;
pub const MAX_ATTEMPTS: u8 = 10;
pub const DEFAULT_ATTEMPTS: u8 = 5;
pub const DEFAULT_TAG_BITS: u8 = 20;
/// Delegates a customer may name per parcel: each one is another valid code at the door.
pub const DEFAULT_DELEGATES: u8 = 3;
pub const MAX_DELEGATES: u8 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Wrong codes allowed per parcel before it locks (3..=10).
    pub max_attempts: u8,
    /// Length of the stored code tags in bits (16..=32).
    pub tag_bits: u8,
    /// Which derived tag key (`K_tag`) the tags were made with.
    pub key_epoch: u32,
    /// Delegates per parcel (0..=15). Manifests of dispatch builds before the cap carry none and
    /// are read with the old limit, 15.
    #[serde(default = "delegates_before_the_cap")]
    pub max_delegates: u8,
}

fn delegates_before_the_cap() -> u8 {
    MAX_DELEGATES
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: DEFAULT_ATTEMPTS,
            tag_bits: DEFAULT_TAG_BITS,
            key_epoch: 0,
            max_delegates: DEFAULT_DELEGATES,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), ManifestRejection> {
        if !(MIN_ATTEMPTS..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ManifestRejection::PolicyOutOfRange {
                field: "max_attempts",
                value: i64::from(self.max_attempts),
                range: "3..=10",
            });
        }
        if !(MIN_TAG_BITS..=MAX_TAG_BITS).contains(&self.tag_bits) {
            return Err(ManifestRejection::PolicyOutOfRange {
                field: "tag_bits",
                value: i64::from(self.tag_bits),
                range: "16..=32",
            });
        }
        if self.max_delegates > MAX_DELEGATES {
            return Err(ManifestRejection::PolicyOutOfRange {
                field: "max_delegates",
                value: i64::from(self.max_delegates),
                range: "0..=15",
            });
        }
        Ok(())
    }

    /// Chance that someone at the door guesses a parcel's code within the attempt limit, with
    /// `codes` valid codes on the parcel (customer plus delegates). A guess succeeds if it is a valid
    /// code, or if its truncated tag collides with one.
    pub fn guess_success(&self, codes: u32) -> f64 {
        let per_code = 1e-6 + (1.0 - 1e-6) * 2f64.powi(-i32::from(self.tag_bits));
        let per_guess = 1.0 - (1.0 - per_code).powi(codes as i32);
        1.0 - (1.0 - per_guess).powi(i32::from(self.max_attempts))
    }

    /// Codes an insider who extracted the device secret is left with after brute-forcing one tag.
    pub fn insider_candidates(&self) -> f64 {
        1.0 + 999_999.0 * 2f64.powi(-i32::from(self.tag_bits))
    }

    /// Chance that dispatch flags a hand-over forged by such an insider (its code proof is made with
    /// a candidate that is not the true code).
    pub fn forged_receipt_caught(&self) -> f64 {
        1.0 - 1.0 / self.insider_candidates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tag_bits: u8) -> Policy {
        Policy { max_attempts: 5, tag_bits, ..Policy::default() }
    }

    /// The table in the design brief and docs/security.md.
    #[test]
    fn figures_match_the_published_table() {
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1e-12);
        assert!(close(p(16).guess_success(1), 8.1e-5, 0.02));
        assert!(close(p(20).guess_success(1), 9.8e-6, 0.02));
        assert!(close(p(32).guess_success(1), 5.0e-6, 0.01));
        assert!(close(p(16).insider_candidates(), 16.3, 0.01));
        assert!(close(p(20).insider_candidates(), 1.95, 0.01));
        assert!(close(p(32).insider_candidates(), 1.0, 0.001));
        assert!(close(p(16).forged_receipt_caught(), 0.94, 0.01));
        assert!(close(p(20).forged_receipt_caught(), 0.49, 0.01));
        assert!(p(32).forged_receipt_caught() < 0.001);
        // Each holder's code is valid at the door (docs/security.md, "Delegates").
        for (holders, figure) in [(1, 9.8e-6), (2, 1.95e-5), (3, 2.9e-5), (4, 3.9e-5), (16, 1.56e-4)] {
            assert!(close(p(20).guess_success(holders), figure, 0.02), "{holders}");
        }
    }

    #[test]
    fn ranges_are_enforced() {
        assert!(Policy::default().validate().is_ok());
        for (a, b) in [(2, 20), (11, 20), (5, 15), (5, 33), (0, 0)] {
            assert!(Policy { max_attempts: a, tag_bits: b, ..Policy::default() }.validate().is_err());
        }
    }
}
