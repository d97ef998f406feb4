//! # doorstep-dispatch
//!
//! The reference issuing service: the core's issuer library behind HTTP, with its state in one
//! folder (SQLite + signing keys). See `docs/dispatch.md` for the API and what is still to come.
//!
//! - [`store`]: [`Dispatch`], the service's state and operations (blocking; one writer connection):
//!   its schema and upgrades, the customer's side and the e-mail outbox in their own modules.
//! - [`pages`]: the HTML pages for people: the customer's parcel page and the operator's console.
//! - [`api`]: the axum router that exposes them, one module per caller (operator, device, customer).
//! - [`listen`]: where `serve` may listen, and TLS served with rustls or left to a proxy.
//! - [`places`]: counted places in all and per key (connections, uploads), given back on drop.
//! - [`epcis`]: the ledger as EPCIS 2.0 events (`doorstep export --epcis`), each `eventID` its
//!   CBV 2.0 event hash.
//! - [`proof`]: `doorstep evidence` and `verify-evidence`: a parcel's evidence file, checked offline.
//! - [`operators`]: operator keys and the audit trail of operator actions.
//! - [`clock`]: [`SetClock`], the settable clock of simulated days (demo, tests, benchmarks);
//!   `serve` uses the system clock.

pub mod api;
pub mod clock;
pub mod demo;
pub mod epcis;
pub mod error;
pub mod listen;
pub mod mail;
pub mod operators;
pub mod pages;
pub mod places;
pub mod proof;
pub mod sealing;
pub mod store;
pub mod terminal;
pub mod validate;

pub use clock::SetClock;
pub use error::DispatchError;
pub use mail::MailConfig;
pub use operators::Operator;
pub use store::{
    Dispatch, HighValuePolicy, NewParcel, PostgresConfig, add_key, delivery_window, promote_key, rotate_kek,
};
