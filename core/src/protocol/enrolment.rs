//! Enrolment: the device sends its receipt-signing public key; dispatch answers with the device id,
//! the device secret, its manifest-signing public keys and the server time. The bundle travels once,
//! over the host app's TLS connection, and the device seals the secret with its `KeyVault` at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::VerifyingKey;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentRequest {
    pub format: String,
    pub version: String,
    #[serde(with = "crate::encoding::b64_32")]
    pub device_public_key: [u8; 32],
    /// The device key's signature over its own public key (under
    /// `doorstep.enrolment-request/<version>`): the phone holds the key it enrols. Absent in
    /// requests of protocol 1.0, which dispatch refuses ("update the app").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<super::Base64Bytes>,
}

impl EnrolmentRequest {
    /// Whether `proof` is the enrolled key's own signature over it.
    pub fn proves_possession(&self) -> bool {
        let key = crate::crypto::VerifyingKey { key_id: "device".into(), public: self.device_public_key };
        self.proof.as_ref().is_some_and(|proof| {
            key.verify(
                &super::signing_domain(super::domain::ENROLMENT_REQUEST, &self.version),
                &self.device_public_key,
                &proof.0,
            )
        })
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct EnrolmentBundle {
    pub format: String,
    pub version: String,
    pub device_id: String,
    #[serde(with = "crate::encoding::b64")]
    pub device_secret: Vec<u8>,
    pub dispatch_keys: Vec<VerifyingKey>,
    pub server_time: DateTime<Utc>,
}

impl std::fmt::Debug for EnrolmentBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolmentBundle")
            .field("device_id", &self.device_id)
            .field("dispatch_keys", &self.dispatch_keys)
            .field("server_time", &self.server_time)
            .finish_non_exhaustive()
    }
}

impl Drop for EnrolmentBundle {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.device_secret);
    }
}
