//! The host's traits, implemented in Kotlin or Swift, and their adapters to the core's traits.

use std::sync::Arc;

use doorstep_core::device as core;

use crate::error::HostError;
use crate::types::LogLevel;
use crate::uniffi_support::Timestamp;

/// Seals and unseals the device's secrets at rest. Android: a non-exportable Android Keystore
/// AES-GCM key. iOS: the Keychain (e.g. a Secure Enclave-wrapped key).
#[uniffi::export(foreign)]
pub trait KeyVault: Send + Sync {
    /// Encrypts `plaintext`; the result is stored in the database.
    fn seal(&self, plaintext: Vec<u8>) -> Result<Vec<u8>, HostError>;
    /// Decrypts what `seal` returned.
    fn unseal(&self, sealed: Vec<u8>) -> Result<Vec<u8>, HostError>;
}

/// The phone's clocks.
#[uniffi::export(foreign)]
pub trait Clock: Send + Sync {
    /// Wall-clock time (`Instant.now()`, `Date()`); the user may set it.
    fn wall_time(&self) -> Result<Timestamp, HostError>;
    /// Time since a fixed point such as boot, never set back (`SystemClock.elapsedRealtime()`,
    /// `ProcessInfo.systemUptime`).
    fn monotonic(&self) -> Result<std::time::Duration, HostError>;
}

/// Receives log lines; they never contain codes or secrets.
#[uniffi::export(foreign)]
pub trait Logger: Send + Sync {
    fn log(&self, level: LogLevel, message: String) -> Result<(), HostError>;
}

pub(crate) struct VaultAdapter(pub Arc<dyn KeyVault>);
pub(crate) struct ClockAdapter(pub Arc<dyn Clock>);
pub(crate) struct LoggerAdapter(pub Arc<dyn Logger>);

fn host_error(e: HostError) -> core::HostError {
    core::HostError(e.to_string())
}

impl core::KeyVault for VaultAdapter {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, core::HostError> {
        self.0.seal(plaintext.to_vec()).map_err(host_error)
    }

    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, core::HostError> {
        self.0.unseal(sealed.to_vec()).map_err(host_error)
    }
}

impl core::Clock for ClockAdapter {
    fn wall_time_ms(&self) -> Result<i64, core::HostError> {
        Ok(self.0.wall_time().map_err(host_error)?.timestamp_millis())
    }

    fn monotonic_ms(&self) -> Result<i64, core::HostError> {
        let reading = self.0.monotonic().map_err(host_error)?;
        i64::try_from(reading.as_millis()).map_err(|_| core::HostError("monotonic reading out of range".into()))
    }
}

impl core::Logger for LoggerAdapter {
    fn log(&self, level: core::LogLevel, message: &str) {
        // A failing logger must not fail the operation it reports on.
        let _ = self.0.log(level, message.to_owned());
    }
}
