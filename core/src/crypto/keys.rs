//! The device secret and the keys derived from it with HKDF-SHA256, one `info` label per purpose, so
//! a leaked tag key reveals nothing about the proof key and vice versa.

use std::fmt;

use ring::{hkdf, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{CoreError, Result};

/// 256 bits; the design requires at least 128.
pub const DEVICE_SECRET_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"doorstep/hkdf/v1";
const TAG_INFO: &[u8] = b"doorstep/k_tag/v1/epoch";
const PROOF_INFO: &[u8] = b"doorstep/k_proof/v1";
const SALT_INFO: &[u8] = b"doorstep/salt/v1";

/// The per-device secret shared by dispatch and the device. Held sealed by the host's `KeyVault` at
/// rest; in memory only while in use; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeviceSecret([u8; DEVICE_SECRET_LEN]);

impl DeviceSecret {
    pub fn generate() -> Result<DeviceSecret> {
        Ok(DeviceSecret(super::random_bytes()?))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceSecret> {
        let arr: [u8; DEVICE_SECRET_LEN] = bytes.try_into().map_err(|_| CoreError::InvalidInput {
            what: "device secret",
            why: format!("must be {DEVICE_SECRET_LEN} bytes"),
        })?;
        Ok(DeviceSecret(arr))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn derive(&self, info: &[&[u8]]) -> hmac::Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.0);
        // `expand` only fails when the output is longer than 255 hash blocks; 32 bytes never is.
        match prk.expand(info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            Err(_) => unreachable_key(),
        }
    }

    /// The key for code tags in one key epoch (rotating the epoch makes old tags useless).
    pub fn tag_key(&self, epoch: u32) -> TagKey {
        TagKey(self.derive(&[TAG_INFO, &epoch.to_be_bytes()]))
    }

    pub fn proof_key(&self) -> ProofKey {
        ProofKey(self.derive(&[PROOF_INFO]))
    }

    /// The salt of a parcel's tags for this device in one key epoch. Derived, not drawn: every
    /// manifest or delta that carries the parcel repeats the same salt, so the same code gives the
    /// same tag. A fresh salt per manifest would hand an insider one more independent tag of the
    /// code with each fetch, until the candidates shrink to the code itself.
    pub fn parcel_salt(&self, epoch: u32, parcel_id: &str) -> [u8; 16] {
        let key = self.derive(&[SALT_INFO, &epoch.to_be_bytes()]);
        let mac = hmac::sign(&key, parcel_id.as_bytes());
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&mac.as_ref()[..16]);
        salt
    }
}

#[cold]
fn unreachable_key() -> hmac::Key {
    // HKDF-SHA256 can always produce 32 bytes; keep a total function rather than panic.
    hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32])
}

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

/// HMAC key for code tags (`K_tag`).
pub struct TagKey(pub(crate) hmac::Key);

/// HMAC key for code proofs (`K_proof`).
pub struct ProofKey(pub(crate) hmac::Key);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_epochs_give_different_keys() {
        let secret = DeviceSecret::from_bytes(&[7u8; 32]).unwrap();
        let msg = b"m";
        let t0 = hmac::sign(&secret.tag_key(0).0, msg);
        let t1 = hmac::sign(&secret.tag_key(1).0, msg);
        let p = hmac::sign(&secret.proof_key().0, msg);
        assert_ne!(t0.as_ref(), t1.as_ref());
        assert_ne!(t0.as_ref(), p.as_ref());
        // Deterministic: same secret, same key.
        assert_eq!(t0.as_ref(), hmac::sign(&secret.tag_key(0).0, msg).as_ref());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(DeviceSecret::from_bytes(&[1u8; 16]).is_err());
    }
}
