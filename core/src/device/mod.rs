//! The phone's side: a [`Device`] opened on a SQLite file, through the host's [`KeyVault`],
//! [`Clock`] and optional [`Logger`].
//!
//! Every operation that changes state runs in one `BEGIN IMMEDIATE` transaction committed with
//! `synchronous=FULL` before it returns, so the caller never sees an answer that is not on disk.
//! The object is `Send + Sync`; calls are serialised on its single writer connection.
//!
//! Operations live in their own modules: [`enrol`](self::enrol) (enrolment), `manifest` (sync),
//! `parcels` (queries), `handover` (code and QR checks, failures, reversals), `outbox` (upload
//! batches and acks), `purge` (end of day), `status`.

mod enrol;
mod handover;
mod host;
mod manifest;
mod outbox;
mod parcels;
mod purge;
mod receipts;
mod status;
mod store;
mod time;

pub use handover::{HandoverOutcome, ScannedParcel};
pub use host::{Clock, HostError, KeyVault, LogLevel, Logger, SystemClock};
pub use manifest::{ApplyReport, MAX_HELD_DAYS};
pub use outbox::{AckReport, OutboxBatch, RetryAdvice};
pub use parcels::{ParcelState, ParcelView, Validity};
pub use purge::{PURGE_GRACE_MS, PurgeReport};
pub use receipts::ReceiptSummary;
pub use status::{ClockStatus, HeldDay, ParcelCounts, Status};
pub use store::quarantine;
pub use time::{SKEW_TOLERANCE_MS, TimeReading};

pub(crate) use store::classify as classify_sqlite_error;

use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::crypto::{DeviceSecret, ProofKey, SigningKey, VerifyingKey};
use crate::{CoreError, Result};

/// How far reads may advance trusted time before they persist it (at most one small write a
/// minute while only reads happen).
pub const READ_PERSIST_MS: i64 = 60_000;

/// The offline hand-over core on one phone.
pub struct Device {
    inner: Mutex<Inner>,
    vault: Arc<dyn KeyVault>,
    clock: Arc<dyn Clock>,
    logger: Option<Arc<dyn Logger>>,
}

struct Inner {
    conn: Connection,
    keys: Option<Arc<DeviceKeys>>,
    anchor: time::MonotonicAnchor,
    /// The persisted trusted-time high-water mark (this connection is its only writer).
    high_water: i64,
}

/// The unsealed secrets of an enrolled device, in memory only.
pub(crate) struct DeviceKeys {
    pub device_id: String,
    pub secret: DeviceSecret,
    pub signing: SigningKey,
    pub proof: ProofKey,
    pub dispatch: Vec<VerifyingKey>,
}

/// What a write operation gets: its transaction, the time, and the keys (when enrolled).
pub(crate) struct Session<'a> {
    pub tx: Transaction<'a>,
    pub now: TimeReading,
    pub keys: Option<Arc<DeviceKeys>>,
    /// The high-water mark this transaction must leave on disk (trusted time, or a later server
    /// time seen in a signed message), and what it has written so far.
    high_water: Cell<i64>,
    persisted: Cell<i64>,
}

impl Session<'_> {
    pub fn keys(&self) -> Result<&DeviceKeys> {
        self.keys.as_deref().ok_or(CoreError::NotEnrolled)
    }

    /// Records a server time from a signed message; it raises trusted time.
    pub fn saw_server_time(&self, server_ms: i64) -> Result<()> {
        self.tx.execute("UPDATE device_state SET last_server_ms = ?1 WHERE id = 1", [server_ms])?;
        self.high_water.set(self.high_water.get().max(server_ms));
        Ok(())
    }

    /// The high-water mark to persist; callers that write it mark it with [`Session::persisted`].
    pub fn high_water(&self) -> i64 {
        self.high_water.get()
    }

    pub fn persisted(&self, value: i64) {
        self.persisted.set(value);
    }
}

impl Device {
    /// Opens or creates the device database at `path`. A foreign, corrupt or newer file is refused
    /// with a clear error and left untouched (see [`quarantine`]).
    pub fn open(
        path: impl AsRef<Path>,
        vault: Arc<dyn KeyVault>,
        clock: Arc<dyn Clock>,
        logger: Option<Arc<dyn Logger>>,
    ) -> Result<Device> {
        let conn = store::open(path.as_ref())?;
        let keys = load_keys(&conn, &*vault)?;
        let high_water = receipts::persisted_high_water(&conn)?;
        let device = Device {
            inner: Mutex::new(Inner { conn, keys: keys.map(Arc::new), anchor: Default::default(), high_water }),
            vault,
            clock,
            logger,
        };
        device.log(LogLevel::Info, "device database opened");
        Ok(device)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-written state (the transaction rolls back
        // on drop), so a poisoned lock is safe to take over.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        if let Some(logger) = &self.logger {
            logger.log(level, message);
        }
    }

    /// Runs `f` in one immediate transaction; trusted time is read and persisted in it, and the
    /// commit is durable before this returns.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Session<'_>) -> Result<T>) -> Result<T> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = inner.anchor.read(&*self.clock, inner.high_water)?;
        let tx = inner.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let session = Session {
            tx,
            now,
            keys: inner.keys.clone(),
            high_water: Cell::new(now.trusted_ms),
            persisted: Cell::new(inner.high_water),
        };
        let out = f(&session)?;
        let high_water = session.high_water();
        if session.persisted.get() < high_water {
            session
                .tx
                .execute("UPDATE device_state SET high_water_ms = max(high_water_ms, ?1) WHERE id = 1", [high_water])?;
        }
        session.tx.commit()?;
        inner.high_water = inner.high_water.max(high_water);
        Ok(out)
    }

    /// Runs a read-only `f` on the connection with the current time. A read that advances trusted
    /// time by more than [`READ_PERSIST_MS`] past the persisted mark persists it first, so a code
    /// seen expired by reads alone stays expired after a restart with the clock set back.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection, TimeReading, Option<&DeviceKeys>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = inner.anchor.read(&*self.clock, inner.high_water)?;
        if now.trusted_ms > inner.high_water.saturating_add(READ_PERSIST_MS) {
            let persist = "UPDATE device_state SET high_water_ms = max(high_water_ms, ?1) WHERE id = 1";
            match inner.conn.execute(persist, [now.trusted_ms]) {
                Ok(_) => inner.high_water = now.trusted_ms,
                // The read still answers (trusted time is right in memory); the next write or
                // read persists the mark.
                Err(e) => self.log(LogLevel::Warn, &format!("could not persist trusted time: {}", store::classify(e))),
            }
        }
        f(&inner.conn, now, inner.keys.as_deref())
    }

    /// Reloads the unsealed keys after enrolment or a dispatch key rotation.
    pub(crate) fn reload_keys(&self) -> Result<()> {
        let mut guard = self.lock();
        let keys = load_keys(&guard.conn, &*self.vault)?;
        guard.keys = keys.map(Arc::new);
        Ok(())
    }

    /// Trusted time now (never earlier than any time seen before).
    pub fn time(&self) -> Result<TimeReading> {
        self.read(|_, now, _| Ok(now))
    }
}

fn load_keys(conn: &Connection, vault: &dyn KeyVault) -> Result<Option<DeviceKeys>> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT device_id, sealed_secret, sealed_signing_key FROM device WHERE id = 1 AND device_id IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((device_id, sealed_secret, sealed_key)) = row else {
        return Ok(None);
    };
    let secret = zeroize::Zeroizing::new(vault.unseal(&sealed_secret).map_err(|e| CoreError::KeyVault(e.0))?);
    let pkcs8 = zeroize::Zeroizing::new(vault.unseal(&sealed_key).map_err(|e| CoreError::KeyVault(e.0))?);
    let mut stmt = conn.prepare("SELECT key_id, public_key FROM dispatch_key ORDER BY key_id")?;
    let dispatch = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?
        .map(|row| {
            let (key_id, public) = row?;
            let public: [u8; 32] =
                public.try_into().map_err(|_| CoreError::Integrity("stored dispatch key is not 32 bytes".into()))?;
            Ok(VerifyingKey { key_id, public })
        })
        .collect::<Result<Vec<_>>>()?;
    let secret = DeviceSecret::from_bytes(&secret)?;
    Ok(Some(DeviceKeys {
        signing: SigningKey::from_pkcs8(format!("device:{device_id}"), &pkcs8)?,
        proof: secret.proof_key(),
        secret,
        device_id,
        dispatch,
    }))
}
