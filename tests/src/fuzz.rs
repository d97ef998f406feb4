//! Every parser that takes bytes from outside, as a function of those bytes alone: the fuzz
//! targets (`tests/fuzz_targets/`, built by `scripts/fuzz.sh` with libFuzzer) call these, and
//! `tests/tests/fuzz_corpus.rs` replays the seed corpus and every past finding through them on
//! each test run. A target passes when it returns, whatever it returns: refusing bad input with an
//! error is right; a panic, an abort or a hang is a finding.
//!
//! The device targets (`device_*`) feed a real enrolled device: what dispatch might sign (a
//! manifest, an ack) is signed here with the key the device trusts, so the device's handling of
//! any content behind a valid signature is fuzzed too, not only the signature check.

use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use doorstep_core::crypto::{Code, SigningKey, VerifyingKey};
use doorstep_core::device::{Device, SystemClock};
use doorstep_core::issuer::{CheckedBatch, Issuer};
use doorstep_core::protocol::{Ack, ManifestPayload, QrToken, REQUEST_SKEW_MS, SignedEnvelope, domain, verify_request};
use doorstep_dispatch::validate;

use crate::http::Vault;

/// A target: a name (its folder under `tests/fuzz/corpus/`) and the function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("manifest_envelope", manifest_envelope),
    ("manifest_payload", manifest_payload),
    ("device_manifest", device_manifest),
    ("ack", ack),
    ("device_ack", device_ack),
    ("batch", batch),
    ("qr_token", qr_token),
    ("enrolment_request", enrolment_request),
    ("device_enrolment_bundle", device_enrolment_bundle),
    ("request_header", request_header),
    ("csv_import", csv_import),
    ("json_import", json_import),
    ("code", code),
];

/// Dispatch's signing key for the process (the device targets' device trusts it).
fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| Issuer::new(SigningKey::generate("fuzz-dispatch").expect("a key")))
}

fn key() -> VerifyingKey {
    issuer().current_key().verifying_key()
}

/// A device enrolled with [`issuer`], in a folder that lives as long as the process.
fn device() -> &'static Mutex<Device> {
    static DEVICE: OnceLock<Mutex<Device>> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a folder").keep();
        let device = Device::open(dir.join("d.db"), Arc::new(Vault), Arc::new(SystemClock), None).expect("a device");
        let request = device.enrolment_request().expect("a request");
        let (_, bundle) = issuer().enrol(&request, "fuzz-device", Utc::now()).expect("enrolled");
        device.complete_enrolment(&bundle).expect("enrolled");
        Mutex::new(device)
    })
}

/// A device with an enrolment request outstanding, never enrolled by a valid bundle of ours.
fn enrolling_device() -> &'static Mutex<Device> {
    static DEVICE: OnceLock<Mutex<Device>> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a folder").keep();
        let device = Device::open(dir.join("d.db"), Arc::new(Vault), Arc::new(SystemClock), None).expect("a device");
        device.enrolment_request().expect("a request");
        Mutex::new(device)
    })
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A signed envelope as the device opens one (format, version, key id, signature).
pub fn manifest_envelope(data: &[u8]) {
    let _ = SignedEnvelope::open(data, domain::MANIFEST, &[key()]);
}

/// A manifest's payload and its checks, as the device reads one after the signature verified.
pub fn manifest_payload(data: &[u8]) {
    if let Ok(payload) = serde_json::from_slice::<ManifestPayload>(data) {
        let _ = payload.validate();
    }
}

/// Any payload, signed by the device's dispatch, applied as a manifest.
pub fn device_manifest(data: &[u8]) {
    let envelope = SignedEnvelope::sign(domain::MANIFEST, data.to_vec(), issuer().current_key()).to_bytes();
    let device = device().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = device.apply_manifest(&envelope);
}

/// An ack's envelope and payload.
pub fn ack(data: &[u8]) {
    let _ = SignedEnvelope::open(data, domain::ACK, &[key()]);
    let _ = serde_json::from_slice::<Ack>(data);
}

/// Any payload, signed by the device's dispatch, applied as an ack.
pub fn device_ack(data: &[u8]) {
    let envelope = SignedEnvelope::sign(domain::ACK, data.to_vec(), issuer().current_key()).to_bytes();
    let device = device().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = device.apply_ack(&envelope);
}

/// An uploaded batch as dispatch reads it (format, receipts, their signatures), for the device
/// the batch names.
pub fn batch(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Named {
        device_id: String,
    }
    let device = serde_json::from_slice::<Named>(data).map_or_else(|_| "fuzz-device".to_owned(), |n| n.device_id);
    let _ = CheckedBatch::check(&device, &key(), data);
}

/// A QR token as the phone scans it.
pub fn qr_token(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = QrToken::verify(text, &[key()]);
    }
}

/// An enrolment request as dispatch reads it.
pub fn enrolment_request(data: &[u8]) {
    let _ = issuer().enrol(data, "fuzz-device", Utc::now());
}

/// An enrolment bundle as the phone completes its enrolment with it.
pub fn device_enrolment_bundle(data: &[u8]) {
    let device = enrolling_device().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = device.complete_enrolment(data);
}

/// A `Device-Signature` header, with the request it signs, as dispatch checks it: the input is
/// the header, a newline, and the body.
pub fn request_header(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    if let Some(header) = text(header) {
        let now = Utc::now().timestamp_millis();
        let path = "/v1/devices/fuzz-device/receipts";
        let _ = verify_request(header, "fuzz-device", &key(), "POST", path, body, now, REQUEST_SKEW_MS);
    }
}

/// An operator's CSV import, each line checked as the store checks it.
pub fn csv_import(data: &[u8]) {
    if let Ok(parcels) = validate::csv_import(data) {
        parcels.iter().for_each(|p| drop(validate::new_parcel(p)));
    }
}

/// An operator's JSON import, each line checked as the store checks it.
pub fn json_import(data: &[u8]) {
    if let Ok(parcels) = validate::json_import(data) {
        parcels.iter().for_each(|p| drop(validate::new_parcel(p)));
    }
}

/// A code as typed at the door.
pub fn code(data: &[u8]) {
    if let Some(text) = text(data) {
        let _ = Code::parse(text);
    }
}
