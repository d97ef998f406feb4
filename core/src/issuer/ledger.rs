//! What batch verification needs from dispatch's storage: the issued codes and the receipts held.

use std::collections::HashMap;

use uuid::Uuid;

use crate::crypto::Code;
use crate::protocol::{Holder, ReceiptBody, ReceiptStatus, SignedReceipt, genesis_hash};

/// The codes dispatch issued. Several may be returned when a code was reissued during the day.
pub trait CodeBook {
    fn codes(&self, parcel_id: &str, holder: &Holder) -> Vec<Code>;
}

impl CodeBook for HashMap<(String, Holder), Vec<Code>> {
    fn codes(&self, parcel_id: &str, holder: &Holder) -> Vec<Code> {
        self.get(&(parcel_id.to_owned(), holder.clone())).cloned().unwrap_or_default()
    }
}

/// Dispatch's record of one device's receipt chain.
pub trait ReceiptLedger {
    /// Sequence and hash of the last receipt held with an unbroken chain (0 and the genesis hash
    /// when none).
    fn head(&self, device_id: &str) -> (u64, [u8; 32]);
    /// The sequence of a receipt already held, by id.
    fn seq_of(&self, device_id: &str, receipt_id: &Uuid) -> Option<u64>;
    /// Stores a verified receipt (accepted or flagged) as the new head.
    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, status: ReceiptStatus, reason: Option<&str>);
}

/// A receipt as the ledger keeps it.
#[derive(Clone, Debug)]
pub struct StoredReceipt {
    pub receipt: SignedReceipt,
    pub body: ReceiptBody,
    pub status: ReceiptStatus,
    pub reason: Option<String>,
}

/// An in-memory ledger for tests and tools.
#[derive(Default, Debug)]
pub struct MemoryLedger {
    pub chains: HashMap<String, Vec<StoredReceipt>>,
}

impl ReceiptLedger for MemoryLedger {
    fn head(&self, device_id: &str) -> (u64, [u8; 32]) {
        match self.chains.get(device_id).and_then(|c| c.last()) {
            Some(last) => (last.body.seq, last.receipt.hash()),
            None => (0, genesis_hash(device_id)),
        }
    }

    fn seq_of(&self, device_id: &str, receipt_id: &Uuid) -> Option<u64> {
        self.chains.get(device_id)?.iter().find(|r| &r.body.receipt_id == receipt_id).map(|r| r.body.seq)
    }

    fn append(&mut self, receipt: &SignedReceipt, body: &ReceiptBody, status: ReceiptStatus, reason: Option<&str>) {
        self.chains.entry(body.device_id.clone()).or_default().push(StoredReceipt {
            receipt: receipt.clone(),
            body: body.clone(),
            status,
            reason: reason.map(str::to_owned),
        });
    }
}
