//! # doorstep-ffi
//!
//! The UniFFI layer over `doorstep-core`: what Kotlin and Swift see. It adds no behaviour of its own;
//! it converts types, maps the core's rich error to the small public [`DoorstepError`] in one place
//! (`error.rs`), and adapts the host's foreign traits ([`KeyVault`], [`Clock`], [`Logger`]).
//!
//! Every exported function and method returns a `Result`, so Swift never wraps a call in `try!` and a
//! Rust panic surfaces as an error instead of killing the app.

uniffi::setup_scaffolding!();

mod device;
mod error;
#[cfg(feature = "fixtures")]
mod fixtures;
mod host;
mod types;
mod uniffi_support;

#[cfg(feature = "evidence")]
pub use device::verify_evidence;
pub use device::{DoorstepDevice, quarantine_database};
pub use error::{DoorstepError, HostError};
#[cfg(feature = "fixtures")]
pub use fixtures::{BatchVerdict, DelegateCode, IssuedCodes, TestDispatch};
pub use host::{Clock, KeyVault, Logger};
pub use types::*;
pub use uniffi_support::{IsoDate, Timestamp, Uuid};
