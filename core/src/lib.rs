//! # doorstep-core
//!
//! The offline hand-over core of doorstep: a parcel is handed over only when the person at the door
//! presents that parcel's one-time code (or a dispatch-signed QR token). This crate knows nothing of
//! FFI; `doorstep-ffi` (in `bindings/`) exports it to Kotlin and Swift.
//!
//! Layers, from the bottom up:
//! - [`crypto`]: codes, key derivation, code tags, code proofs, Ed25519 keys. No I/O.
//! - [`protocol`]: the versioned wire types shared by device and dispatch (manifests, receipts,
//!   upload batches, acknowledgements, QR tokens, enrolment).
//! - [`issuer`]: dispatch's side as a library: enrol devices, build and sign manifests, sign QR
//!   tokens, verify uploaded receipts and sign acknowledgements.
//! - [`evidence`]: one parcel's receipts with dispatch's signed statement, checked offline with
//!   only public keys.
//! - [`device`]: the phone's side: a [`device::Device`] opened on a SQLite file through host traits
//!   ([`device::KeyVault`], [`device::Clock`], [`device::Logger`]).
//!
//! The security promises and invariants this crate keeps are listed in `docs/security.md`.

pub mod crypto;
pub mod device;
mod encoding;
pub mod error;
pub mod evidence;
pub mod issuer;
pub mod policy;
pub mod protocol;

pub use error::{CoreError, Result};
