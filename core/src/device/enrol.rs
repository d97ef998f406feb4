//! Enrolment on the device: make the receipt-signing key, then store what dispatch sent back. Both
//! secrets are sealed by the host's `KeyVault` before they touch the disk.

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::{Device, LogLevel};
use crate::crypto::{DEVICE_SECRET_LEN, SigningKey};
use crate::protocol::{
    EnrolmentBundle, EnrolmentRequest, PROTOCOL_VERSION, check_version, domain, genesis_hash, signing_domain,
};
use crate::{CoreError, Result};

const MAX_BUNDLE_BYTES: usize = 64 * 1024;

impl Device {
    pub fn is_enrolled(&self) -> bool {
        self.lock().keys.is_some()
    }

    /// The enrolment request to send to dispatch (JSON bytes). Makes the device's receipt-signing
    /// key on first call; later calls return the same request until enrolment completes.
    pub fn enrolment_request(&self) -> Result<Vec<u8>> {
        let key = self.write(|s| {
            let row: Option<(Option<String>, Vec<u8>)> =
                s.tx.query_row("SELECT device_id, sealed_signing_key FROM device WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match row {
                Some((Some(_), _)) => Err(CoreError::AlreadyEnrolled),
                Some((None, sealed)) => {
                    let pkcs8 = Zeroizing::new(self.vault.unseal(&sealed).map_err(|e| CoreError::KeyVault(e.0))?);
                    SigningKey::from_pkcs8("device", &pkcs8)
                }
                None => {
                    let key = SigningKey::generate("device")?;
                    let sealed = self.vault.seal(key.pkcs8()).map_err(|e| CoreError::KeyVault(e.0))?;
                    s.tx.execute(
                        "INSERT INTO device (id, public_key, sealed_signing_key) VALUES (1, ?1, ?2)",
                        params![key.verifying_key().public.to_vec(), sealed],
                    )?;
                    Ok(key)
                }
            }
        })?;
        let public = key.verifying_key().public;
        // The key signs its own public key: dispatch learns the phone holds the key it enrols.
        let proof = key.sign(&signing_domain(domain::ENROLMENT_REQUEST, PROTOCOL_VERSION), &public);
        let request = EnrolmentRequest {
            format: domain::ENROLMENT_REQUEST.into(),
            version: PROTOCOL_VERSION.into(),
            device_public_key: public,
            proof: Some(crate::protocol::Base64Bytes(proof)),
        };
        serde_json::to_vec(&request).map_err(|_| CoreError::Integrity("enrolment request did not serialise".into()))
    }

    /// Signs an HTTP request to dispatch (method, path with query, body) with the device's key;
    /// returns the value of the `Device-Signature` header. Time is trusted time.
    pub fn sign_request(&self, method: &str, path: &str, body: &[u8]) -> Result<String> {
        self.read(|_, now, keys| {
            let keys = keys.ok_or(CoreError::NotEnrolled)?;
            let nonce = crate::protocol::request_nonce()?;
            let msg = crate::protocol::request_message(method, path, now.trusted_ms, Some(&nonce), body);
            let sig = keys.signing.sign(crate::protocol::request_domain(), &msg);
            Ok(format!("{}.{}.{nonce}.{}", keys.device_id, now.trusted_ms, crate::encoding::encode(&sig)))
        })
    }

    /// Stores dispatch's answer: device id, sealed device secret, dispatch keys, server time.
    pub fn complete_enrolment(&self, bundle: &[u8]) -> Result<()> {
        if bundle.len() > MAX_BUNDLE_BYTES {
            return Err(CoreError::EnrolmentRejected("bundle too large".into()));
        }
        let bundle: EnrolmentBundle =
            serde_json::from_slice(bundle).map_err(|e| CoreError::EnrolmentRejected(e.to_string()))?;
        if bundle.format != domain::ENROLMENT || !check_version(&bundle.version) {
            return Err(CoreError::EnrolmentRejected("unknown format or version".into()));
        }
        if bundle.device_secret.len() != DEVICE_SECRET_LEN {
            return Err(CoreError::EnrolmentRejected(format!("device secret must be {DEVICE_SECRET_LEN} bytes")));
        }
        if bundle.dispatch_keys.is_empty() {
            return Err(CoreError::EnrolmentRejected("no dispatch keys".into()));
        }
        if bundle.device_id.is_empty() || bundle.device_id.len() > 128 {
            return Err(CoreError::EnrolmentRejected("invalid device id".into()));
        }
        self.write(|s| {
            let state: Option<Option<String>> =
                s.tx.query_row("SELECT device_id FROM device WHERE id = 1", [], |r| r.get(0)).optional()?;
            match state {
                None => return Err(CoreError::EnrolmentRejected("call enrolment_request first".into())),
                Some(Some(_)) => return Err(CoreError::AlreadyEnrolled),
                Some(None) => {}
            }
            let secret = Zeroizing::new(bundle.device_secret.clone());
            let sealed = self.vault.seal(&secret).map_err(|e| CoreError::KeyVault(e.0))?;
            s.tx.execute(
                "UPDATE device SET device_id = ?1, sealed_secret = ?2, enrolled_at_ms = ?3 WHERE id = 1",
                params![bundle.device_id, sealed, s.now.trusted_ms],
            )?;
            for key in &bundle.dispatch_keys {
                s.tx.execute(
                    "INSERT OR REPLACE INTO dispatch_key (key_id, public_key) VALUES (?1, ?2)",
                    params![key.key_id, key.public.to_vec()],
                )?;
            }
            let genesis = genesis_hash(&bundle.device_id).to_vec();
            s.tx.execute("UPDATE device_state SET acked_hash = ?1 WHERE id = 1", params![genesis])?;
            s.saw_server_time(bundle.server_time.timestamp_millis())?;
            Ok(())
        })?;
        self.reload_keys()?;
        self.log(LogLevel::Info, &format!("enrolled as device {}", bundle.device_id));
        Ok(())
    }
}
