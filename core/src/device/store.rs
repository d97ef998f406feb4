//! The SQLite file: opening with the right settings, recognising foreign or corrupt files, and the
//! schema migrations (`PRAGMA user_version`, each applied in one transaction).
//!
//! One writer connection serves everything (the `Device` holds it behind a mutex); hand-over
//! commits run with `synchronous=FULL` in WAL mode, so a commit is on disk before the answer.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, ffi::ErrorCode};
use rusqlite_migration::{M, Migrations};

use crate::{CoreError, Result};

/// 'DSTP': marks a file as a doorstep device database.
pub(crate) const APPLICATION_ID: i64 = 0x4453_5450;

const MIGRATIONS: &[&str] = &[
    // 1: device identity, dispatch keys, device state (chain, trusted time, manifest), parcels and
    // their tags, used QR nonces, receipts.
    r#"
    CREATE TABLE device (
        id                 INTEGER PRIMARY KEY CHECK (id = 1),
        public_key         BLOB NOT NULL,
        sealed_signing_key BLOB NOT NULL,
        device_id          TEXT,
        sealed_secret      BLOB,
        enrolled_at_ms     INTEGER
    );
    CREATE TABLE dispatch_key (
        key_id     TEXT PRIMARY KEY,
        public_key BLOB NOT NULL
    ) WITHOUT ROWID;
    -- One row for the acknowledged part of the receipt chain, trusted time and the applied
    -- manifest. The chain's head is the newest receipt row (or the ack checkpoint when none is
    -- left), and the newest receipt's created_at_ms also counts as trusted time seen, so a
    -- hand-over commits only its parcel and receipt pages.
    CREATE TABLE device_state (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        acked_seq      INTEGER NOT NULL DEFAULT 0,
        acked_hash     BLOB,
        high_water_ms  INTEGER NOT NULL DEFAULT 0,
        last_server_ms INTEGER,
        last_sync_ms   INTEGER,
        manifest_id    TEXT,
        route_id       TEXT,
        delivery_date  TEXT,
        time_zone      TEXT,
        manifest_seq   INTEGER,
        max_attempts   INTEGER,
        tag_bits       INTEGER,
        key_epoch      INTEGER,
        issued_at_ms   INTEGER,
        applied_at_ms  INTEGER
    );
    INSERT INTO device_state (id) VALUES (1);
    CREATE TABLE parcel (
        parcel_id      TEXT PRIMARY KEY,
        barcode        TEXT NOT NULL UNIQUE,
        stop_id        TEXT NOT NULL,
        stop_seq       INTEGER NOT NULL,
        address_hint   TEXT NOT NULL,
        recipient_hint TEXT NOT NULL,
        needs_code     INTEGER NOT NULL,
        salt           BLOB,
        tag_bits       INTEGER NOT NULL,
        key_epoch      INTEGER NOT NULL,
        max_attempts   INTEGER NOT NULL,
        not_before_ms  INTEGER NOT NULL,
        not_after_ms   INTEGER NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('pending','delivered','failed','locked','expired')),
        attempts_used  INTEGER NOT NULL DEFAULT 0 CHECK (attempts_used >= 0),
        delivery_receipt TEXT,
        manifest_id    TEXT NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX parcel_by_stop ON parcel (stop_id, stop_seq);
    CREATE TABLE code_tag (
        parcel_id TEXT NOT NULL REFERENCES parcel (parcel_id) ON DELETE CASCADE,
        holder    TEXT NOT NULL,
        tag       BLOB NOT NULL,
        PRIMARY KEY (parcel_id, holder)
    ) WITHOUT ROWID;
    CREATE TABLE used_qr (
        nonce      BLOB PRIMARY KEY,
        parcel_id  TEXT NOT NULL,
        used_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE receipt (
        seq           INTEGER PRIMARY KEY,
        receipt_id    TEXT NOT NULL,
        event         TEXT NOT NULL,
        body          BLOB NOT NULL,
        signature     BLOB NOT NULL,
        hash          BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        server_status TEXT,
        server_reason TEXT
    );
    "#,
    // 2: the upload outbox: the batch in flight (resent after a crash) and the retry backoff.
    r#"
    CREATE TABLE outbox_batch (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        batch_id      TEXT NOT NULL,
        first_seq     INTEGER NOT NULL,
        last_seq      INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE upload_backoff (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        failures    INTEGER NOT NULL,
        retry_at_ms INTEGER NOT NULL,
        last_error  TEXT
    );
    "#,
    // 3: attempts spent on parcels that left this device (removed, or dropped by a full
    // manifest): a parcel that comes back resumes its count instead of getting fresh attempts.
    r#"
    CREATE TABLE spent_attempts (
        parcel_id     TEXT PRIMARY KEY,
        attempts_used INTEGER NOT NULL CHECK (attempts_used > 0)
    ) WITHOUT ROWID;
    "#,
    // 4: attempt epochs: how many times dispatch reset a parcel's attempts. A manifest entry with
    // a higher epoch replaces the phone's count (a reset the phone missed still reaches it), and
    // receipts name the epoch their attempts belong to.
    r#"
    ALTER TABLE parcel ADD COLUMN attempt_epoch INTEGER NOT NULL DEFAULT 0 CHECK (attempt_epoch >= 0);
    ALTER TABLE spent_attempts ADD COLUMN attempt_epoch INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: a reissued code's instant: QR tokens for its holder minted before it are refused.
    r#"
    ALTER TABLE code_tag ADD COLUMN qr_minted_after_ms INTEGER;
    "#,
    // 6: more than one delivery day held at once (today's route stays deliverable while
    // tomorrow's is loaded): each day's manifest, and the day each parcel and each set of spent
    // attempts belongs to. `device_state` keeps the manifest sequence (one per device, all days).
    r#"
    CREATE TABLE held_day (
        delivery_date TEXT PRIMARY KEY,
        route_id      TEXT NOT NULL,
        manifest_id   TEXT NOT NULL,
        time_zone     TEXT NOT NULL,
        issued_at_ms  INTEGER NOT NULL,
        applied_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO held_day (delivery_date, route_id, manifest_id, time_zone, issued_at_ms, applied_at_ms)
        SELECT delivery_date, route_id, manifest_id, coalesce(time_zone, 'UTC'), coalesce(issued_at_ms, 0),
               coalesce(applied_at_ms, 0)
          FROM device_state WHERE manifest_id IS NOT NULL AND delivery_date IS NOT NULL;
    ALTER TABLE parcel ADD COLUMN delivery_date TEXT NOT NULL DEFAULT '';
    UPDATE parcel SET delivery_date = coalesce((SELECT delivery_date FROM device_state WHERE id = 1), '');
    CREATE INDEX parcel_by_day ON parcel (delivery_date, state);
    ALTER TABLE spent_attempts ADD COLUMN delivery_date TEXT NOT NULL DEFAULT '';
    UPDATE spent_attempts SET delivery_date = coalesce((SELECT delivery_date FROM device_state WHERE id = 1), '');
    "#,
    // 7: each parcel row's seal (parcels.rs): SHA-256 over what a code check relies on, written by
    // every manifest and purge that changes it and checked before a hand-over uses the row. The
    // step's hook seals the rows already there.
    r#"
    ALTER TABLE parcel ADD COLUMN seal BLOB;
    "#,
    // 8: each parcel's rules at the door (`DoorRules::bits`: addressee only, open box) and its task
    // (a delivery, or a pickup collected from the customer), from its manifest entry; covered by
    // the seal when not the defaults (a row from before keeps its seal).
    r#"
    ALTER TABLE parcel ADD COLUMN rules INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE parcel ADD COLUMN task TEXT NOT NULL DEFAULT 'delivery';
    "#,
];

/// The steps, in order. Step 7's hook seals the rows that exist when it runs (parcels.rs), in the
/// step's own transaction.
fn migrations() -> Migrations<'static> {
    Migrations::new(
        MIGRATIONS
            .iter()
            .enumerate()
            .map(|(i, sql)| match i + 1 {
                7 => M::up_with_hook(sql, |tx: &rusqlite::Transaction<'_>| {
                    super::parcels::seal_all_before_rules(tx)
                        .map_err(|e| rusqlite_migration::HookError::Hook(e.to_string()))
                }),
                _ => M::up(sql),
            })
            .collect(),
    )
}

pub(crate) fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens (creating if absent) a device database, refusing foreign, corrupt, emptied or too-new
/// files without touching them.
///
/// A new database is built beside `path` and renamed into place once its schema is committed, so
/// no file doorstep made is ever empty at `path`: an empty file there held a database once (a
/// failing disk, a truncating copy) and is refused, never silently re-created.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(CoreError::DatabaseCorrupt(
                "the file is empty: it held this device's database before (a new one is only created \
                 where no file exists), so receipts may have been lost"
                    .into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
        _ => {}
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    check_identity(&conn)?;
    configure(&conn)?;
    migrations().to_latest(&mut conn)?;
    Ok(conn)
}

/// Builds a new database beside `path` under a name of its own and links it into place: of two
/// processes creating at once, the second finds `path` taken and opens the first one's database
/// (a link never replaces a file; a rename would).
fn create(path: &Path) -> Result<()> {
    let mut name = path.as_os_str().to_owned();
    let nonce = crate::crypto::random_bytes::<8>().map(u64::from_le_bytes).unwrap_or_default();
    name.push(format!(".creating-{}-{nonce:016x}", std::process::id()));
    let fresh = std::path::PathBuf::from(name);
    let cannot = |e: std::io::Error| CoreError::CannotOpen(format!("{}: {e}", fresh.display()));
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let built = (|| {
        let mut conn = Connection::open_with_flags(&fresh, flags).map_err(classify)?;
        configure(&conn)?;
        migrations().to_latest(&mut conn)?;
        // Closing the only connection checkpoints the WAL into the file and removes it.
        conn.close().map_err(|(_, e)| classify(e))?;
        std::fs::File::open(&fresh).and_then(|f| f.sync_all()).map_err(cannot)
    })();
    let linked = built.and_then(|()| match std::fs::hard_link(&fresh, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()), // another process's: open it
        Err(e) => Err(cannot(e)),
    });
    let _ = std::fs::remove_file(&fresh);
    linked?;
    // The link is durable once the folder is (not possible on every platform: best effort).
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let _ = std::fs::File::open(folder).and_then(|f| f.sync_all());
    Ok(())
}

/// Checks that the file is empty or ours, before anything writes to it.
fn check_identity(conn: &Connection) -> Result<()> {
    let app_id: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(classify)?;
    let user_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(classify)?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(classify)?;
    if app_id == 0 && user_version == 0 && objects == 0 {
        return Ok(()); // a new, empty file
    }
    if app_id != APPLICATION_ID {
        return Err(CoreError::ForeignDatabase);
    }
    if user_version > schema_version() {
        return Err(CoreError::DatabaseTooNew { found: user_version, supported: schema_version() });
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(classify)?;
    if check != "ok" {
        return Err(CoreError::DatabaseCorrupt(check));
    }
    Ok(())
}

fn configure(conn: &Connection) -> Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CoreError::Integrity(format!("could not switch to WAL (journal_mode = {mode})")));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(classify)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(classify)?;
    Ok(())
}

/// Migrates to `version`; tests use it to build databases at older schema versions.
#[cfg(test)]
pub(crate) fn migrate_to(conn: &mut Connection, version: i64) -> Result<()> {
    let m = migrations();
    m.to_version(conn, version as usize)?;
    Ok(())
}

/// Maps SQLite's "this is not a database" and corruption codes to the error that says so.
pub(crate) fn classify(e: rusqlite::Error) -> CoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => CoreError::DatabaseCorrupt("not a SQLite database, or encrypted".into()),
        Some(ErrorCode::DatabaseCorrupt) => CoreError::DatabaseCorrupt("SQLite reports corruption".into()),
        Some(ErrorCode::CannotOpen) | Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => {
            CoreError::CannotOpen(e.to_string())
        }
        Some(ErrorCode::DiskFull) => CoreError::StorageFull,
        // A stored value that cannot be what its column holds: the file was damaged in place.
        _ if matches!(
            e,
            rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::Utf8Error(..)
        ) =>
        {
            CoreError::DatabaseCorrupt(format!("a stored value cannot be read back ({e})"))
        }
        _ => CoreError::Database(e),
    }
}

/// Moves a database that failed to open (and its WAL and shared-memory files) aside as
/// `<name>.quarantined-<millis>`, so the app can start afresh without losing the evidence.
/// Returns the new path of the main file.
pub fn quarantine(path: &Path, now_ms: i64) -> Result<std::path::PathBuf> {
    let suffix = format!("quarantined-{now_ms}");
    let target = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.{suffix}", ext.to_string_lossy()),
        None => suffix.clone(),
    });
    let io = |e: std::io::Error| CoreError::Integrity(format!("could not quarantine the database: {e}"));
    std::fs::rename(path, &target).map_err(io)?;
    for side in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(side);
        let mut to = target.as_os_str().to_owned();
        to.push(side);
        if Path::new(&from).exists() {
            std::fs::rename(&from, &to).map_err(io)?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn the_step_that_adds_seals_seals_the_parcels_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        {
            let mut old = Connection::open(&path).unwrap();
            configure(&old).unwrap();
            migrate_to(&mut old, 6).unwrap();
            old.execute_batch(
                "INSERT INTO parcel (parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code,
                                     salt, tag_bits, key_epoch, max_attempts, not_before_ms, not_after_ms, state,
                                     manifest_id, updated_at_ms, delivery_date)
                 VALUES ('P1', 'BC1', 'S1', 1, '', '', 1, X'00', 20, 0, 5, 0, 1, 'pending', 'M1', 0, '2026-11-26');
                 INSERT INTO code_tag (parcel_id, holder, tag) VALUES ('P1', 'customer', X'0102');",
            )
            .unwrap();
        }
        let upgraded = open(&path).unwrap();
        let seal: Option<Vec<u8>> = upgraded.query_row("SELECT seal FROM parcel", [], |r| r.get(0)).unwrap();
        assert_eq!(seal.map(|s| s.len()), Some(32));
    }

    #[test]
    fn every_older_database_upgrades_to_the_fresh_schema() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = open(&dir.path().join("fresh.db")).unwrap();
        for start in 1..schema_version() {
            let path = dir.path().join(format!("v{start}.db"));
            {
                let mut old = Connection::open(&path).unwrap();
                configure(&old).unwrap();
                migrate_to(&mut old, start).unwrap();
                let v: i64 = old.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
                assert_eq!(v, start);
            }
            let upgraded = open(&path).unwrap();
            assert_eq!(schema(&upgraded), schema(&fresh), "upgraded from v{start}");
            let v: i64 = upgraded.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(v, schema_version());
        }
    }

    #[test]
    fn foreign_corrupt_and_newer_files_are_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![0x5Au8; 8192]).unwrap();
        assert!(matches!(open(&junk), Err(CoreError::DatabaseCorrupt(_))));
        assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5Au8; 8192]);

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE notes (t TEXT);").unwrap();
        let before = std::fs::read(&foreign).unwrap();
        assert!(matches!(open(&foreign), Err(CoreError::ForeignDatabase)));
        assert_eq!(std::fs::read(&foreign).unwrap(), before);

        let newer = dir.path().join("newer.db");
        drop(open(&newer).unwrap());
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(open(&newer), Err(CoreError::DatabaseTooNew { found: 99, .. })));
    }

    /// The bundled SQLite is trimmed (.cargo/config.toml); foreign keys need its trigger support,
    /// so a trim that took it would silently stop deleting a removed parcel's tags.
    #[test]
    fn foreign_keys_are_enforced_and_cascade_on_the_shipped_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("d.db")).unwrap();
        let orphan =
            conn.execute("INSERT INTO code_tag (parcel_id, holder, tag) VALUES ('nope', 'customer', x'00')", []);
        assert!(orphan.is_err(), "a tag for a parcel that does not exist is refused");
        conn.execute_batch(
            "INSERT INTO parcel (parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code,
                                 tag_bits, key_epoch, max_attempts, not_before_ms, not_after_ms, state,
                                 manifest_id, updated_at_ms)
             VALUES ('P1', 'BC1', 'S1', 1, '', '', 1, 20, 0, 5, 0, 1, 'pending', 'M1', 0);
             INSERT INTO code_tag (parcel_id, holder, tag) VALUES ('P1', 'customer', x'00');
             DELETE FROM parcel WHERE parcel_id = 'P1';",
        )
        .unwrap();
        let left: i64 = conn.query_row("SELECT count(*) FROM code_tag", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "deleting a parcel deletes its tags");
    }

    #[test]
    fn an_emptied_database_is_refused_and_left_untouched_never_re_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        drop(open(&path).unwrap());
        std::fs::File::create(&path).unwrap(); // truncated to 0 bytes
        let refused = open(&path);
        assert!(matches!(&refused, Err(CoreError::DatabaseCorrupt(why)) if why.contains("empty")), "{refused:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left untouched");
    }

    #[test]
    fn a_creation_that_lost_the_race_never_replaces_the_database_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        let first = open(&path).unwrap();
        first
            .execute_batch("CREATE TABLE written_by_the_first (x); INSERT INTO written_by_the_first VALUES (1);")
            .unwrap();
        drop(first); // checkpointed into the file
        // A second process that saw no file a moment ago finishes building its own.
        create(&path).unwrap();
        let second = open(&path).unwrap();
        let seen = second.query_row("SELECT count(*) FROM written_by_the_first", [], |r| r.get::<_, i64>(0));
        assert_eq!(seen.ok(), Some(1), "the first process's database is still the one in place");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().contains(".creating")), "{left:?}");
    }

    #[test]
    fn a_value_that_cannot_be_read_back_is_named_as_damage() {
        let e = rusqlite::Error::IntegralValueOutOfRange(13, -29);
        assert!(matches!(classify(e), CoreError::DatabaseCorrupt(why) if why.contains("cannot be read back")));
    }

    #[test]
    fn quarantine_moves_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        std::fs::write(&path, b"garbage").unwrap();
        let moved = quarantine(&path, 42).unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(&moved).unwrap(), b"garbage");
        assert!(moved.to_string_lossy().ends_with("device.db.quarantined-42"));
    }
}
