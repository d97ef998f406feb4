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
    fn pkcs8_round_trip_keeps_the_key() {
        let key = SigningKey::generate("k").unwrap();
        let again = SigningKey::from_pkcs8("k", key.pkcs8()).unwrap();
        assert_eq!(key.verifying_key(), again.verifying_key());
        assert!(SigningKey::from_pkcs8("k", b"junk").is_err());
    }
}
