//! Cross-crate end-to-end tests live in `tests/tests/`; this library holds what they share.
//!
//! - [`http`]: a dispatch served on loopback with phones from the core, all on one settable clock
//!   placed at a chosen instant of a chosen delivery day, so no test depends on when it runs.

pub mod http;
