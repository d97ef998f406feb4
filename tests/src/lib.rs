//! Cross-crate end-to-end tests live in `tests/tests/`; this library holds what they share.
//!
//! - [`http`]: a dispatch served on loopback with phones from the core, all on one settable clock
//!   placed at a chosen instant of a chosen delivery day, so no test depends on when it runs.
//! - [`insider`]: a phone's secrets unsealed from its file, to sign receipts the phone never made.
//! - [`smtp`]: an SMTP sink, so customer e-mail leaves dispatch without touching its state folder.

pub mod fuzz;
pub mod http;
pub mod insider;
pub mod smtp;
