//! Device enrolment on dispatch's side.

use chrono::{DateTime, Utc};

use super::Issuer;
use crate::crypto::{DeviceSecret, VerifyingKey};
use crate::protocol::{EnrolmentBundle, EnrolmentRequest, PROTOCOL_VERSION, check_version, domain};
use crate::{CoreError, Result};

/// What dispatch keeps about an enrolled device.
#[derive(Clone, Debug)]
pub struct EnrolledDevice {
    pub device_id: String,
    pub secret: DeviceSecret,
    /// The device's receipt-signing key.
    pub public_key: VerifyingKey,
}

impl Issuer {
    /// Enrols a device from its request bytes; returns the record to keep and the bundle bytes to
    /// send back (they contain the device secret: send them only over an authenticated channel).
    pub fn enrol(&self, request: &[u8], device_id: &str, now: DateTime<Utc>) -> Result<(EnrolledDevice, Vec<u8>)> {
        let req: EnrolmentRequest = serde_json::from_slice(request)
            .map_err(|e| CoreError::InvalidInput { what: "enrolment request", why: e.to_string() })?;
        if req.format != domain::ENROLMENT_REQUEST || !check_version(&req.version) {
            return Err(CoreError::InvalidInput { what: "enrolment request", why: "unknown format or version".into() });
        }
        if VerifyingKey::is_weak(&req.device_public_key) {
            return Err(CoreError::InvalidInput {
                what: "enrolment request",
                why: "the device key is not a usable Ed25519 public key".into(),
            });
        }
        if !req.proves_possession() {
            return Err(CoreError::InvalidInput {
                what: "enrolment request",
                why: "not signed by the key it enrols (a phone app of protocol 1.0: update it)".into(),
            });
        }
        if device_id.is_empty() || device_id.len() > 128 {
            return Err(CoreError::InvalidInput { what: "device id", why: "must be 1..=128 characters".into() });
        }
        let secret = DeviceSecret::generate()?;
        let bundle = EnrolmentBundle {
            format: domain::ENROLMENT.into(),
            version: PROTOCOL_VERSION.into(),
            device_id: device_id.into(),
            device_secret: secret.expose().to_vec(),
            dispatch_keys: self.verifying_keys(),
            server_time: now,
        };
        let bytes = serde_json::to_vec(&bundle)
            .map_err(|_| CoreError::Integrity("enrolment bundle did not serialise".into()))?;
        let device = EnrolledDevice {
            device_id: device_id.into(),
            secret,
            public_key: VerifyingKey { key_id: format!("device:{device_id}"), public: req.device_public_key },
        };
        Ok((device, bytes))
    }
}
