//! Ed25519 keys (ring) with key ids, and SHA-256.
//!
//! Every signature covers `domain ‖ 0x00 ‖ payload bytes`: the exact bytes that travel, never a
//! re-serialisation, and a domain label so a signature made for one kind of message (a manifest)
//! can never be passed off as another (an acknowledgement).

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::{CoreError, Result};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

fn signed_message(domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + 1 + payload.len());
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(payload);
    msg
}

/// A private Ed25519 key with its id. The PKCS#8 document is kept only to be sealed for storage.
pub struct SigningKey {
    key_id: String,
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl SigningKey {
    pub fn generate(key_id: impl Into<String>) -> Result<SigningKey> {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())?;
        SigningKey::from_pkcs8(key_id, doc.as_ref())
    }

    pub fn from_pkcs8(key_id: impl Into<String>, pkcs8: &[u8]) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CoreError::Crypto("invalid Ed25519 PKCS#8 key"))?;
        Ok(SigningKey { key_id: key_id.into(), pair, pkcs8: Zeroizing::new(pkcs8.to_vec()) })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn sign(&self, domain: &str, payload: &[u8]) -> Vec<u8> {
        self.pair.sign(&signed_message(domain, payload)).as_ref().to_vec()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey { key_id: self.key_id.clone(), public }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

/// A public Ed25519 key with its id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyingKey {
    pub key_id: String,
    #[serde(with = "crate::encoding::b64_32")]
    pub public: [u8; 32],
}

impl VerifyingKey {
    pub fn verify(&self, domain: &str, payload: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public).verify(&signed_message(domain, payload), signature).is_ok()
    }

    /// Whether `public` is an encoding no honest key has, which dispatch must never enrol:
    /// - a point of small order (the identity and its kin): ring accepts them, and a signature
    ///   under one verifies for any message without any secret (`R` = the identity, `S` = 0);
    /// - a non-canonical encoding (y ≥ p): a second spelling of a key, which would enrol it twice.
    ///
    /// The eight small-order points are, sign bit aside, the five encodings below (libsodium keeps
    /// the same list; each was checked to give the identity when multiplied by 8).
    pub fn is_weak(public: &[u8; 32]) -> bool {
        const SMALL_ORDER: [[u8; 32]; 5] = [
            [0; 32],
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [
                0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5,
                0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
            ],
            [
                0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a,
                0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
            ],
            [
                0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ];
        let mut y = *public;
        y[31] &= 0x7f;
        // y ≥ p = 2^255 − 19: the top byte 0x7f, the middle all 0xff, the lowest ≥ 0xed.
        let non_canonical = y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed;
        non_canonical || SMALL_ORDER.contains(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_bound_to_domain_payload_and_key() {
        let key = SigningKey::generate("k1").unwrap();
        let sig = key.sign("doorstep.manifest", b"payload");
        let vk = key.verifying_key();
        assert!(vk.verify("doorstep.manifest", b"payload", &sig));
        assert!(!vk.verify("doorstep.ack", b"payload", &sig));
        assert!(!vk.verify("doorstep.manifest", b"payloaD", &sig));
        let other = SigningKey::generate("k2").unwrap().verifying_key();
        assert!(!other.verify("doorstep.manifest", b"payload", &sig));
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_weak_and_real_keys_are_not() {
        let identity = {
            let mut k = [0u8; 32];
            k[0] = 1;
            k
        };
        // The forgery the review made: under the identity key, R = identity and S = 0 verify.
        let forged = [identity.to_vec(), vec![0; 32]].concat();
        let weak = VerifyingKey { key_id: "x".into(), public: identity };
        assert!(weak.verify("doorstep.request/1.1", b"anything", &forged), "ring accepts it: the check is ours");
        assert!(VerifyingKey::is_weak(&identity));
        assert!(VerifyingKey::is_weak(&[0; 32]));
        let mut p_plus_one = [0xff; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        assert!(VerifyingKey::is_weak(&p_plus_one), "p + 1 spells the identity again");
        let mut with_sign = identity;
        with_sign[31] |= 0x80;
        assert!(VerifyingKey::is_weak(&with_sign));
        for i in 0..64 {
            let key = SigningKey::generate(format!("k{i}")).unwrap().verifying_key();
            assert!(!VerifyingKey::is_weak(&key.public));
        }
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let key = SigningKey::generate("k").unwrap();
        let again = SigningKey::from_pkcs8("k", key.pkcs8()).unwrap();
        assert_eq!(key.verifying_key(), again.verifying_key());
        assert!(SigningKey::from_pkcs8("k", b"junk").is_err());
    }
}
