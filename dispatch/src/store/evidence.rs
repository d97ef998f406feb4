//! A parcel's evidence file (`doorstep evidence`, `GET /v1/parcels/{id}/evidence`): every stored
//! receipt that names the parcel, and dispatch's signed statement of each phone's enrolled key,
//! the chain hashes from the receipt before the parcel's first to its last, and its verdicts. A
//! receipt that also names another customer's parcel (one failure recorded for a whole stop) is
//! refused with 409: its signed body cannot be shown without theirs. Built by core ([`doorstep_core::evidence`]) from what the ledger stores, in one
//! transaction, so it states one moment of the ledger; anyone checks it offline with
//! [`doorstep_core::evidence::verify`] and the keys of `GET /v1/dispatch-keys`.

use doorstep_core::evidence::{self, Statement};

use super::receipts::stored_receipts_of;
use super::*;

impl Dispatch {
    /// Operator: the evidence file about `parcel_id` (404 for an id that is neither a parcel nor
    /// named by any receipt; a parcel with no receipt yet gets a statement saying so).
    pub fn evidence(&self, parcel_id: &str) -> Result<Vec<u8>> {
        self.run(|tx| {
            let devices: Vec<(String, i64)> = tx.all(
                "SELECT r.device_id, min(r.seq) FROM receipt_parcel rp JOIN receipt r ON r.receipt_id = rp.receipt_id
                  WHERE rp.parcel_id = ?1 GROUP BY r.device_id ORDER BY r.device_id",
                params![parcel_id],
            )?;
            let known: bool =
                tx.one("SELECT EXISTS (SELECT 1 FROM parcel WHERE parcel_id = ?1)", params![parcel_id])?;
            if devices.is_empty() && !known {
                return Err(DispatchError::NotFound(format!("parcel {parcel_id}")));
            }
            let mut chains = Vec::with_capacity(devices.len());
            let mut receipts = Vec::new();
            for (device_id, first) in devices {
                let key = Self::device_key(tx, &device_id)?
                    .ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?;
                // From the receipt before the parcel's first on (dispatch stores a device's receipts
                // only as an unbroken chain); `extract` ends it at the parcel's last.
                let chain: Vec<StoredReceipt> = stored_receipts_of(tx, &device_id, first - 1)?;
                if let Some((extract, theirs)) = evidence::extract(&device_id, &key, &chain, parcel_id)? {
                    Self::only_this_customer(tx, parcel_id, &theirs)?;
                    chains.push(extract);
                    receipts.extend(theirs);
                }
            }
            let statement = Statement { parcel_id: parcel_id.to_owned(), issued_at: self.now()?, chains };
            Ok(self.issuer.evidence(&statement, receipts)?)
        })
    }

    /// `Conflict` when one of the parcel's receipts also names a parcel of another customer: its
    /// signed body (barcodes, note, location) cannot be shown without telling about theirs.
    fn only_this_customer(tx: &Tx<'_>, parcel_id: &str, receipts: &[SignedReceipt]) -> Result<()> {
        let customer: String = tx.one("SELECT customer_email FROM parcel WHERE parcel_id = ?1", params![parcel_id])?;
        for receipt in receipts {
            let body = receipt.parse_body().map_err(|e| bad(e.to_string()))?;
            for other in body.parcels.iter().filter(|p| p.parcel_id != parcel_id) {
                let theirs: Option<String> =
                    tx.opt("SELECT customer_email FROM parcel WHERE parcel_id = ?1", params![other.parcel_id])?;
                if theirs.as_deref() != Some(customer.as_str()) {
                    return Err(DispatchError::Conflict(format!(
                        "receipt {} about parcel {parcel_id} also names parcel {} of another customer; its signed \
                         body cannot be shown without theirs, so no evidence file is written",
                        body.receipt_id, other.parcel_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The public keys dispatch signs with (manifests, acks, QR tokens, evidence): what a reader
    /// of an evidence file trusts.
    pub fn public_keys(&self) -> Vec<VerifyingKey> {
        self.announced_keys.clone()
    }
}
