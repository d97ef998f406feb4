//! The insider: someone who copied a phone's database and unsealed its secrets (the device secret
//! and the receipt-signing key), and now signs receipts the phone never made. Whatever such a
//! receipt claims, dispatch must re-check it and flag what it cannot verify.

use std::path::Path;

use chrono::{DateTime, Utc};
use doorstep_core::crypto::{Code, DeviceSecret, SigningKey, code_proof};
use doorstep_core::device::Device;
use doorstep_core::device::KeyVault;
use doorstep_core::issuer::FLAGGED_FOR_PHONE;
use doorstep_core::protocol::{
    Ack, HandoverMethod, Holder, Identification, PROTOCOL_VERSION, ReceiptBody, ReceiptEvent, ReceiptParcel,
    ReceiptResult, ReceiptStatus, SignedEnvelope, UploadBatch, domain, genesis_hash,
};
use doorstep_core::protocol::{Base64Bytes, SignedReceipt};
use uuid::Uuid;

use crate::http::{Server, Vault};

/// A phone's secrets, unsealed from its database file.
pub struct Insider {
    pub device_id: String,
    pub secret: DeviceSecret,
    signing: SigningKey,
}

impl Insider {
    pub fn of(db: &Path) -> Insider {
        let file = rusqlite::Connection::open(db).unwrap();
        let (device_id, sealed_secret, sealed_key): (String, Vec<u8>, Vec<u8>) = file
            .query_row("SELECT device_id, sealed_secret, sealed_signing_key FROM device", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        let secret = DeviceSecret::from_bytes(&Vault.unseal(&sealed_secret).unwrap()).unwrap();
        let signing =
            SigningKey::from_pkcs8(format!("device:{device_id}"), &Vault.unseal(&sealed_key).unwrap()).unwrap();
        Insider { device_id, secret, signing }
    }

    /// A "delivered" receipt for one parcel at `at`, by `method` for `holder`, with a code proof
    /// made with `code` when one is given. Sequence and chain are filled in by [`Insider::upload`].
    pub fn handover(
        &self,
        parcel: &str,
        method: HandoverMethod,
        holder: Option<Holder>,
        code: Option<&str>,
        at: DateTime<Utc>,
    ) -> ReceiptBody {
        let receipt_id = Uuid::now_v7();
        let proof = code.map(|c| {
            Base64Bytes(
                code_proof(&self.secret.proof_key(), receipt_id.as_bytes(), parcel, &Code::parse(c).unwrap()).to_vec(),
            )
        });
        ReceiptBody {
            version: PROTOCOL_VERSION.into(),
            receipt_id,
            device_id: self.device_id.clone(),
            seq: 0,
            prev_hash: [0; 32],
            manifest_id: None,
            event: ReceiptEvent::Delivered,
            method: Some(method),
            holder,
            reason: None,
            note: None,
            reverses: None,
            parcels: vec![ReceiptParcel {
                parcel_id: parcel.into(),
                barcode: format!("BC{}", parcel.trim_start_matches('P')),
                identified: Identification::Scanned,
                attempts_used: 1,
                attempt_epoch: 0,
                code_proof: proof,
                id_checked: None,
                inspection: None,
            }],
            qr_token: None,
            device_time: at,
            trusted_time: at,
            skew_ms: 0,
            location: None,
        }
    }

    /// Signs `body` as the phone would, chained onto what dispatch already holds from it, uploads
    /// it over HTTP with the phone's request signature, and returns dispatch's verdict on it (or
    /// the HTTP status and body when the upload as a whole was refused). A flagged receipt's
    /// verdict carries the reason dispatch *stored*; the ack itself only says "held for review",
    /// which is checked here.
    pub fn upload(&self, server: &Server, phone: &Device, body: ReceiptBody) -> Result<ReceiptResult, (u16, String)> {
        let receipts = self.sign_chained(server, vec![body]);
        Ok(self.upload_receipts(server, phone, receipts)?.remove(0))
    }

    /// Signs `bodies` as the phone would, each chained onto the one before and the first onto
    /// what dispatch already holds from the phone.
    pub fn sign_chained(&self, server: &Server, bodies: Vec<ReceiptBody>) -> Vec<SignedReceipt> {
        let held = server.dispatch.receipts(&self.device_id).unwrap();
        let (mut seq, mut prev_hash) =
            held.last().map_or((0, genesis_hash(&self.device_id)), |r| (r.body.seq, r.receipt.hash()));
        bodies
            .into_iter()
            .map(|mut body| {
                seq += 1;
                (body.seq, body.prev_hash) = (seq, prev_hash);
                let receipt = SignedReceipt::sign(&body, &self.signing).unwrap();
                prev_hash = receipt.hash();
                receipt
            })
            .collect()
    }

    /// Uploads `receipts` as one batch (see [`Insider::upload`]); the verdicts in upload order.
    pub fn upload_receipts(
        &self,
        server: &Server,
        phone: &Device,
        receipts: Vec<SignedReceipt>,
    ) -> Result<Vec<ReceiptResult>, (u16, String)> {
        let batch = UploadBatch {
            format: domain::BATCH.into(),
            version: PROTOCOL_VERSION.into(),
            batch_id: Uuid::now_v7(),
            device_id: self.device_id.clone(),
            receipts,
        };
        let (status, answer) = server.signed_post(
            phone,
            &format!("/v1/devices/{}/receipts", self.device_id),
            &serde_json::to_vec(&batch).unwrap(),
        );
        if status != 200 {
            return Err((status, String::from_utf8_lossy(&answer).into_owned()));
        }
        let payload = SignedEnvelope::open(&answer, domain::ACK, &server.dispatch.verifying_keys()).unwrap();
        let ack: Ack = serde_json::from_slice(&payload).unwrap();
        let held = server.dispatch.receipts(&self.device_id).unwrap();
        let results = ack.results.into_iter().map(|mut result| {
            if result.status == ReceiptStatus::Flagged {
                assert_eq!(result.reason.as_deref(), Some(FLAGGED_FOR_PHONE), "the phone never learns why");
                let stored =
                    held.iter().find(|r| r.body.receipt_id == result.receipt_id).expect("a flagged receipt is kept");
                result.reason.clone_from(&stored.reason);
            }
            result
        });
        Ok(results.collect())
    }
}
