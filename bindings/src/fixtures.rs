//! Test fixtures (cargo feature `fixtures`, never in release builds): dispatch's side in memory, so
//! Kotlin and Swift tests can enrol, sync, hand over, upload and have the chain verified without a
//! server. It wraps `doorstep_core::issuer` and holds the issued codes in memory.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_core::crypto::{Code, SigningKey, random_bytes};
use doorstep_core::issuer::{EnrolledDevice, IssuedParcel, Issuer, ManifestSpec, MemoryCodeBook, MemoryLedger};
use doorstep_core::policy::Policy;
use doorstep_core::protocol::{self as wire, Base64Bytes, ManifestKind, ReceiptStatus, Stop};

use crate::error::DoorstepError;

type Result<T, E = DoorstepError> = std::result::Result<T, E>;

/// The codes issued for one parcel (returned to the test in the clear, as dispatch e-mails them).
#[derive(Debug, Clone, uniffi::Record)]
pub struct IssuedCodes {
    pub customer: Option<String>,
    pub delegates: Vec<DelegateCode>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct DelegateCode {
    pub label: String,
    pub code: String,
}

/// Dispatch's verdict on an uploaded batch.
#[derive(Debug, Clone, uniffi::Record)]
pub struct BatchVerdict {
    /// The signed acknowledgement to pass to `DoorstepDevice.applyAck`.
    pub signed_ack: Vec<u8>,
    pub accepted: u32,
    pub duplicates: u32,
    pub flagged: u32,
    pub rejected: u32,
}

struct State {
    issuer: Issuer,
    device: Option<EnrolledDevice>,
    parcels: Vec<IssuedParcel>,
    codes: MemoryCodeBook,
    ledger: MemoryLedger,
    sequence: u64,
    manifest: Option<(String, NaiveDate)>,
}

/// An in-memory dispatch for one device.
#[derive(uniffi::Object)]
pub struct TestDispatch {
    state: Mutex<State>,
}

fn invalid(reason: impl Into<String>) -> DoorstepError {
    DoorstepError::InvalidInput { reason: reason.into() }
}

impl TestDispatch {
    /// Changes a parcel on the route with `change`, and dispatch's record of it alike (its rules
    /// and task judge its receipts).
    fn change_parcel(&self, parcel_id: &str, change: impl FnOnce(&mut IssuedParcel)) -> Result<()> {
        self.with(|s| {
            let parcel = s
                .parcels
                .iter_mut()
                .find(|p| p.parcel_id == parcel_id)
                .ok_or_else(|| invalid("no such parcel on the route"))?;
            change(parcel);
            if let Some(record) = s.codes.parcels.get_mut(parcel_id) {
                (record.rules, record.task) = (parcel.rules, parcel.task);
            }
            Ok(())
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl State {
    fn device(&self) -> Result<&EnrolledDevice> {
        self.device.as_ref().ok_or_else(|| invalid("enrol a device first"))
    }

    fn sign(&mut self, kind: ManifestKind, issued_at: SystemTime, resets: Vec<String>) -> Result<Vec<u8>> {
        let (route_id, delivery_date) = self.manifest.clone().ok_or_else(|| invalid("build a full manifest first"))?;
        self.sequence += 1;
        let spec = ManifestSpec {
            manifest_id: format!("M{}", self.sequence),
            route_id,
            delivery_date,
            time_zone: "UTC".into(),
            issued_at: DateTime::<Utc>::from(issued_at),
            sequence: self.sequence,
            kind,
            policy: Policy::default(),
            parcels: if kind == ManifestKind::Full { self.parcels.clone() } else { Vec::new() },
            removals: Vec::new(),
            resets,
            dispatch_keys: Vec::new(),
        };
        let device_id = self.device()?.device_id.clone();
        self.codes.send(&device_id, spec.parcels.iter().map(|p| p.parcel_id.as_str()));
        Ok(self.issuer.build_manifest(self.device()?, &spec)?)
    }
}

#[uniffi::export]
impl TestDispatch {
    #[uniffi::constructor]
    pub fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(TestDispatch {
            state: Mutex::new(State {
                issuer: Issuer::new(SigningKey::generate("test-dispatch-1")?),
                device: None,
                parcels: Vec::new(),
                codes: MemoryCodeBook::default(),
                ledger: MemoryLedger::default(),
                sequence: 0,
                manifest: None,
            }),
        }))
    }

    /// Answers a device's enrolment request; returns the bundle for `completeEnrolment`.
    pub fn enrol(&self, request: Vec<u8>, device_id: String, now: SystemTime) -> Result<Vec<u8>> {
        self.with(|s| {
            let (device, bundle) = s.issuer.enrol(&request, &device_id, now.into())?;
            s.device = Some(device);
            Ok(bundle)
        })
    }

    /// Adds a parcel to the next full manifest and issues its codes (customer and each delegate).
    #[allow(clippy::too_many_arguments)]
    pub fn add_parcel(
        &self,
        parcel_id: String,
        barcode: String,
        stop_id: String,
        stop_sequence: u32,
        needs_code: bool,
        delegates: Vec<String>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCodes> {
        self.with(|s| {
            let mut codes = Vec::new();
            if needs_code {
                codes.push((wire::Holder::Customer, Code::generate()?));
                for label in &delegates {
                    codes.push((wire::Holder::Delegate(label.clone()), Code::generate()?));
                }
            }
            let issued = IssuedCodes {
                customer: codes.first().map(|(_, c)| c.reveal().to_owned()),
                delegates: codes
                    .iter()
                    .skip(1)
                    .map(|(h, c)| DelegateCode {
                        label: match h {
                            wire::Holder::Delegate(l) => l.clone(),
                            wire::Holder::Customer => String::new(),
                        },
                        code: c.reveal().to_owned(),
                    })
                    .collect(),
            };
            let parcel = IssuedParcel {
                parcel_id,
                barcode,
                stop: Stop { id: stop_id, sequence: stop_sequence },
                address_hint: String::new(),
                recipient_hint: String::new(),
                codes,
                not_before: not_before.into(),
                not_after: not_after.into(),
                attempts_used: 0,
                attempt_epoch: 0,
                qr_minted_after: Vec::new(),
                rules: wire::DoorRules::default(),
                task: wire::Task::Delivery,
            };
            s.codes.issue(&parcel, parcel.not_before);
            s.parcels.push(parcel);
            Ok(issued)
        })
    }

    /// Sets a parcel's rules at the door (addressee only, open box) for the next manifest and for
    /// judging its receipts.
    pub fn set_door_rules(&self, parcel_id: String, rules: wire::DoorRules) -> Result<()> {
        self.change_parcel(&parcel_id, |p| p.rules = rules)
    }

    /// Makes a parcel a pickup (a return collected from the customer) or a delivery again, for
    /// the next manifest and for judging its receipts.
    pub fn set_task(&self, parcel_id: String, task: wire::Task) -> Result<()> {
        self.change_parcel(&parcel_id, |p| p.task = task)
    }

    /// A signed full manifest of every parcel added so far. `delivery_date` is YYYY-MM-DD.
    pub fn full_manifest(&self, route_id: String, delivery_date: String, issued_at: SystemTime) -> Result<Vec<u8>> {
        let date: NaiveDate = delivery_date.parse().map_err(|_| invalid("delivery_date must be YYYY-MM-DD"))?;
        self.with(|s| {
            s.manifest = Some((route_id, date));
            s.sign(ManifestKind::Full, issued_at, Vec::new())
        })
    }

    /// Starts another day's route: the next full manifest carries only the parcels added from now
    /// on (the codes already issued stay valid).
    pub fn start_route(&self) -> Result<()> {
        self.with(|s| {
            s.parcels.clear();
            Ok(())
        })
    }

    /// A signed delta that resets a parcel's lockout.
    pub fn reset_lockout(&self, parcel_id: String, issued_at: SystemTime) -> Result<Vec<u8>> {
        self.with(|s| s.sign(ManifestKind::Delta, issued_at, vec![parcel_id]))
    }

    /// A QR token as the customer app would show it.
    pub fn qr_token(
        &self,
        parcel_id: String,
        holder: wire::Holder,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String> {
        self.with(|s| {
            Ok(s.issuer.sign_qr(&wire::QrToken {
                parcel_id,
                holder,
                not_before: not_before.into(),
                not_after: not_after.into(),
                nonce: Base64Bytes(random_bytes::<16>()?.to_vec()),
                issued_at: None,
            })?)
        })
    }

    /// Verifies an uploaded batch and returns the signed acknowledgement with counts.
    pub fn verify_batch(&self, body: Vec<u8>, now: SystemTime) -> Result<BatchVerdict> {
        self.with(|s| {
            let device = s.device.clone().ok_or_else(|| invalid("enrol a device first"))?;
            let verdict = s.issuer.verify_batch(&device, &mut s.ledger, &s.codes, &body, now.into())?;
            Ok(BatchVerdict {
                accepted: verdict.count(ReceiptStatus::Accepted) as u32,
                duplicates: verdict.count(ReceiptStatus::Duplicate) as u32,
                flagged: verdict.count(ReceiptStatus::Flagged) as u32,
                rejected: verdict.count(ReceiptStatus::Rejected) as u32,
                signed_ack: verdict.signed_ack,
            })
        })
    }

    /// The evidence file about `parcel_id` from the receipts uploaded so far (as dispatch's
    /// `GET /v1/parcels/{id}/evidence` answers).
    pub fn evidence(&self, parcel_id: String, now: SystemTime) -> Result<Vec<u8>> {
        self.with(|s| {
            let device = s.device()?.clone();
            let chain = s.ledger.chains.get(&device.device_id).cloned().unwrap_or_default();
            let (chains, receipts) =
                match doorstep_core::evidence::extract(&device.device_id, &device.public_key, &chain, &parcel_id)? {
                    Some((extract, receipts)) => (vec![extract], receipts),
                    None => (Vec::new(), Vec::new()),
                };
            let statement = doorstep_core::evidence::Statement { parcel_id, issued_at: now.into(), chains };
            Ok(s.issuer.evidence(&statement, receipts)?)
        })
    }

    /// Dispatch's keys document (as `GET /v1/dispatch-keys` answers).
    pub fn public_keys(&self) -> Result<Vec<u8>> {
        self.with(|s| serde_json::to_vec(&[s.issuer.current_key().verifying_key()]).map_err(|e| invalid(e.to_string())))
    }

    /// How many receipts dispatch holds, after checking that they form one unbroken chain from the
    /// device's first receipt, all accepted. Fails if the chain is broken.
    pub fn verified_chain_length(&self) -> Result<u64> {
        self.with(|s| {
            let device_id = s.device()?.device_id.clone();
            let chain = s.ledger.chains.get(&device_id).cloned().unwrap_or_default();
            let mut prev = wire::genesis_hash(&device_id);
            for (i, r) in chain.iter().enumerate() {
                if r.body.seq != i as u64 + 1 || r.body.prev_hash != prev || r.status != ReceiptStatus::Accepted {
                    return Err(DoorstepError::Internal { reason: format!("chain broken at receipt {}", i + 1) });
                }
                prev = r.receipt.hash();
            }
            Ok(chain.len() as u64)
        })
    }
}
