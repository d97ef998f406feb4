//! What the host app provides: a key vault for secrets at rest, a clock, and optionally a logger.
//! Kotlin and Swift implement these through the FFI layer (Android Keystore / iOS Keychain).

use std::fmt;

/// A failure reported by the host's implementation of a trait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seals and opens secrets at rest (the device secret and the receipt-signing key). An Android
/// implementation uses a non-exportable Keystore AES-GCM key; iOS uses the Keychain.
pub trait KeyVault: Send + Sync {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, HostError>;
    fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, HostError>;
}

/// Time as the host sees it.
pub trait Clock: Send + Sync {
    /// Wall-clock time in milliseconds since the Unix epoch (may be wrong or set back).
    fn wall_time_ms(&self) -> Result<i64, HostError>;
    /// A monotonic reading in milliseconds (e.g. `SystemClock.elapsedRealtime()`); only differences
    /// within one process lifetime are used.
    fn monotonic_ms(&self) -> Result<i64, HostError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Receives the core's log lines. Lines never contain codes or secrets.
pub trait Logger: Send + Sync {
    fn log(&self, level: LogLevel, message: &str);
}

/// The operating system's clocks, for tools and servers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_time_ms(&self) -> Result<i64, HostError> {
        Ok(chrono::Utc::now().timestamp_millis())
    }

    fn monotonic_ms(&self) -> Result<i64, HostError> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        Ok(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX))
    }
}
