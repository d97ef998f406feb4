//! Cryptographic building blocks. No I/O, no storage: pure functions over explicit key types.
//!
//! Secrets have their own types ([`DeviceSecret`], [`Code`], [`TagKey`], [`ProofKey`]) that zeroize
//! on drop and never print their contents.

mod code;
mod keys;
mod proof;
mod signing;
mod tag;

pub use code::{CODE_DIGITS, Code};
pub use keys::{DEVICE_SECRET_LEN, DeviceSecret, ProofKey, TagKey};
pub use proof::{PROOF_LEN, code_proof, verify_code_proof};
pub use signing::{SigningKey, VerifyingKey, sha256};
pub use tag::{MAX_TAG_BITS, MIN_TAG_BITS, Tag};

use ring::rand::{SecureRandom, SystemRandom};

/// Fills a fresh array from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> crate::Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out)?;
    Ok(out)
}
