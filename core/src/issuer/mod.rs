//! Dispatch's side as a library: enrol devices, build and sign manifests, sign QR tokens, verify
//! uploaded receipt batches and answer with signed acknowledgements.
//!
//! Storage-agnostic: the caller keeps device records, what it issued ([`CodeBook`]: each parcel's
//! window and every code with its lifetime) and received receipts ([`ReceiptLedger`]);
//! [`MemoryCodeBook`] and [`MemoryLedger`] serve tests and small tools.

mod checked;
mod enrol;
mod ledger;
mod manifest;
mod verify;

pub use checked::CheckedBatch;
pub use enrol::EnrolledDevice;
pub use ledger::{
    ChainHead, CodeBook, IssuedCode, MemoryCodeBook, MemoryLedger, ParcelRecord, PriorHandover, ReceiptLedger,
    StoredReceipt, Verdict,
};
pub use manifest::{IssuedParcel, ManifestSpec};
pub use verify::{BatchVerdict, FLAGGED_FOR_PHONE};

use crate::crypto::{SigningKey, VerifyingKey};
use crate::protocol::{Ack, QrToken, SignedEnvelope, SignedReceipt, domain};
use crate::{CoreError, Result};

/// Dispatch's signing keys: one current key signs; older ones stay listed so devices can still
/// verify what they signed until the rotation has reached every device.
#[derive(Debug)]
pub struct Issuer {
    keys: Vec<SigningKey>,
}

impl Issuer {
    pub fn new(current: SigningKey) -> Issuer {
        Issuer { keys: vec![current] }
    }

    /// Makes `key` the current signing key; earlier keys stay verifiable.
    pub fn rotate_to(&mut self, key: SigningKey) -> Result<()> {
        if self.keys.iter().any(|k| k.key_id() == key.key_id()) {
            return Err(CoreError::InvalidInput { what: "key id", why: "already in use".into() });
        }
        self.keys.push(key);
        Ok(())
    }

    pub fn current_key(&self) -> &SigningKey {
        // `keys` is never empty: `new` puts one in and nothing removes it.
        &self.keys[self.keys.len() - 1]
    }

    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().map(SigningKey::verifying_key).collect()
    }

    pub fn sign_qr(&self, token: &QrToken) -> Result<String> {
        token.sign(self.current_key()).map_err(|_| CoreError::Integrity("QR token did not serialise".into()))
    }

    /// An evidence file about one parcel: `statement` signed with the current key, with the
    /// parcel's receipts (see [`crate::evidence`]).
    pub fn evidence(&self, statement: &crate::evidence::Statement, receipts: Vec<SignedReceipt>) -> Result<Vec<u8>> {
        crate::evidence::seal(statement, receipts, self.current_key())
    }

    pub fn sign_ack(&self, ack: &Ack) -> Result<Vec<u8>> {
        let payload = serde_json::to_vec(ack).map_err(|_| CoreError::Integrity("ack did not serialise".into()))?;
        Ok(SignedEnvelope::sign(domain::ACK, payload, self.current_key()).to_bytes())
    }
}
