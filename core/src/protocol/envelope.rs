//! The signed envelope, protocol version and signature domains.

use serde::{Deserialize, Serialize};

use crate::crypto::{SigningKey, VerifyingKey};

pub const PROTOCOL_MAJOR: u32 = 1;
/// 1.1: receipts sign under `doorstep.receipt/<version>` (1.0 receipts, signed under the bare
/// `doorstep.receipt` by earlier builds, still verify: they may wait in an outbox across an update).
pub const PROTOCOL_VERSION: &str = "1.1";

/// Signature domains (also the envelope `format` field).
pub mod domain {
    pub const MANIFEST: &str = "doorstep.manifest";
    pub const ACK: &str = "doorstep.ack";
    pub const QR: &str = "doorstep.qr";
    pub const RECEIPT: &str = "doorstep.receipt";
    pub const BATCH: &str = "doorstep.batch";
    pub const ENROLMENT: &str = "doorstep.enrolment";
    pub const ENROLMENT_REQUEST: &str = "doorstep.enrolment-request";
}

/// Checks a `MAJOR.MINOR` version string against the major version this build speaks.
pub fn check_version(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|m| m.parse::<u32>().ok());
    let minor_ok = parts.next().is_some_and(|m| m.parse::<u32>().is_ok());
    major == Some(PROTOCOL_MAJOR) && minor_ok && parts.next().is_none()
}

/// What a signature's domain label is: format and version, so neither can be changed without
/// breaking the signature.
pub fn signing_domain(format: &str, version: &str) -> String {
    format!("{format}/{version}")
}

/// Bytes that travel as unpadded URL-safe base64.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Base64Bytes(#[serde(with = "crate::encoding::b64")] pub Vec<u8>);

impl std::fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::encoding::encode(&self.0))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEnvelope {
    pub format: String,
    pub version: String,
    pub key_id: String,
    #[serde(with = "crate::encoding::b64")]
    pub payload: Vec<u8>,
    #[serde(with = "crate::encoding::b64")]
    pub signature: Vec<u8>,
}

/// Why an envelope did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    Malformed(String),
    UnsupportedVersion(String),
    UnknownKeyId(String),
    BadSignature,
}

impl SignedEnvelope {
    pub fn sign(format: &str, payload: Vec<u8>, key: &SigningKey) -> SignedEnvelope {
        let signature = key.sign(&signing_domain(format, PROTOCOL_VERSION), &payload);
        SignedEnvelope {
            format: format.to_owned(),
            version: PROTOCOL_VERSION.to_owned(),
            key_id: key.key_id().to_owned(),
            payload,
            signature,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and bytes cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the envelope, checks format and version, and verifies the signature with the key of
    /// that id; returns the verified payload bytes.
    pub fn open(bytes: &[u8], format: &str, keys: &[VerifyingKey]) -> Result<Vec<u8>, EnvelopeError> {
        let env: SignedEnvelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if env.format != format {
            return Err(EnvelopeError::Malformed(format!("format is {:?}, expected {format:?}", env.format)));
        }
        if !check_version(&env.version) {
            return Err(EnvelopeError::UnsupportedVersion(env.version));
        }
        let key = keys
            .iter()
            .find(|k| k.key_id == env.key_id)
            .ok_or_else(|| EnvelopeError::UnknownKeyId(env.key_id.clone()))?;
        if !key.verify(&signing_domain(format, &env.version), &env.payload, &env.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(env.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(check_version("1.0"));
        assert!(check_version("1.7"));
        assert!(!check_version("2.0"));
        assert!(!check_version("1"));
        assert!(!check_version("1.0.0"));
        assert!(!check_version("x.0"));
    }

    #[test]
    fn open_checks_format_version_key_and_signature() {
        let key = SigningKey::generate("k1").unwrap();
        let keys = [key.verifying_key()];
        let env = SignedEnvelope::sign(domain::ACK, b"{}".to_vec(), &key);
        assert_eq!(SignedEnvelope::open(&env.to_bytes(), domain::ACK, &keys).unwrap(), b"{}");
        assert!(matches!(
            SignedEnvelope::open(&env.to_bytes(), domain::MANIFEST, &keys),
            Err(EnvelopeError::Malformed(_))
        ));
        let mut v2 = env.clone();
        v2.version = "2.0".into();
        assert_eq!(
            SignedEnvelope::open(&v2.to_bytes(), domain::ACK, &keys),
            Err(EnvelopeError::UnsupportedVersion("2.0".into()))
        );
        let mut other = env.clone();
        other.key_id = "k9".into();
        assert_eq!(
            SignedEnvelope::open(&other.to_bytes(), domain::ACK, &keys),
            Err(EnvelopeError::UnknownKeyId("k9".into()))
        );
        let mut tampered = env.clone();
        tampered.payload = b"{ }".to_vec();
        assert_eq!(SignedEnvelope::open(&tampered.to_bytes(), domain::ACK, &keys), Err(EnvelopeError::BadSignature));
        assert!(matches!(SignedEnvelope::open(b"\xff", domain::ACK, &keys), Err(EnvelopeError::Malformed(_))));
    }
}
