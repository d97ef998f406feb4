//! dispatch's schema and its upgrades, for both backends. The tables are written once
//! (`SCHEMA`, in SQLite's words; [`postgres_schema`] says the same in PostgreSQL's). A SQLite
//! state folder written by an earlier build is brought up to this one by [`upgrade`], one `PRAGMA
//! user_version` step at a time, each in its own transaction; a PostgreSQL database records its
//! version in `doorstep_schema` ([`migrate_postgres`]; its history starts at version 7). A new
//! table goes into `SCHEMA`; a new column or a rewrite of old rows is a new step at the end of
//! both, never an edit of an old one. `tests::an_upgraded_state_folder_has_exactly_the_fresh_schema`
//! replays the oldest layout and compares it, table by table, with a fresh one.

use std::path::Path;

use rusqlite::Connection;
use rusqlite::params as sqlite_params;

use super::*;

pub(super) const SCHEMA: &str = r#"
-- One-time enrolment tokens, kept as the hex SHA-256 of the token, with the end of their life
-- fixed when they are made.
CREATE TABLE IF NOT EXISTS enrolment_token (
    token         TEXT PRIMARY KEY,
    route_id      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    used_by       TEXT,
    expires_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS device (
    device_id      TEXT PRIMARY KEY,
    route_id       TEXT NOT NULL,
    secret         BLOB NOT NULL,
    public_key     BLOB NOT NULL,
    manifest_seq   INTEGER NOT NULL DEFAULT 0,
    manifest_date  TEXT,
    enrolled_at_ms INTEGER NOT NULL
);
-- The delivery days a device holds (what it said when it last fetched a full manifest, and that
-- manifest's day): every change to one of those route-days is journalled to it as a delta. `device.manifest_date`
-- is the day of its latest full manifest, kept for earlier builds.
CREATE TABLE IF NOT EXISTS device_day (
    device_id     TEXT NOT NULL REFERENCES device (device_id),
    delivery_date TEXT NOT NULL,
    PRIMARY KEY (device_id, delivery_date)
);
-- The journal: every manifest issued to a device (deltas, and full manifests since step 9), by
-- sequence: `?since=N` returns N+1.
CREATE TABLE IF NOT EXISTS delta (
    device_id TEXT NOT NULL REFERENCES device (device_id),
    seq       INTEGER NOT NULL,
    envelope  BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE IF NOT EXISTS parcel (
    parcel_id      TEXT PRIMARY KEY,
    barcode        TEXT NOT NULL UNIQUE,
    route_id       TEXT NOT NULL,
    stop_id        TEXT NOT NULL,
    stop_seq       INTEGER NOT NULL,
    delivery_date  TEXT NOT NULL,
    time_zone      TEXT NOT NULL,
    value_cents    INTEGER NOT NULL,
    category       TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    address_hint   TEXT NOT NULL,
    recipient_hint TEXT NOT NULL,
    needs_code     INTEGER NOT NULL,
    departed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS parcel_by_route ON parcel (route_id, delivery_date);
-- Every code issued, sealed; a holder's latest (highest id) is current.
CREATE TABLE IF NOT EXISTS code (
    id            INTEGER PRIMARY KEY,
    parcel_id     TEXT NOT NULL REFERENCES parcel (parcel_id),
    holder        TEXT NOT NULL,
    code          BLOB NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    UNIQUE (parcel_id, holder, code)
);
-- A customer link opens one parcel (its code, delegates and QR tokens) until the end of its
-- delivery day. A fresh one goes out with every code e-mail; only its SHA-256 is kept.
CREATE TABLE IF NOT EXISTS customer_link (
    token_hash    BLOB NOT NULL,
    parcel_id     TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (token_hash, parcel_id)
) WITHOUT ROWID;
-- Customer e-mail composed in the transaction that issued its code, sealed (it holds the code and
-- a link), delivered after the commit and kept until it went out.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id            INTEGER PRIMARY KEY,
    parcel_id     TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    message       BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    -- When a sender may take it next: after a failure's backoff, or a sender's claim on it; never
    -- (i64::MAX) once the relay refused it for good.
    retry_at_ms   INTEGER NOT NULL DEFAULT 0
);
-- QR tokens issued per parcel and holder (capped: each one opens the parcel, locked or not).
-- How many times a customer named or revoked a parcel's delegates (capped: each change is a delta
-- to every phone on the route).
CREATE TABLE IF NOT EXISTS delegate_changes (
    parcel_id TEXT PRIMARY KEY,
    changes   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS qr_issued (
    parcel_id TEXT NOT NULL,
    holder    TEXT NOT NULL,
    issued    INTEGER NOT NULL,
    PRIMARY KEY (parcel_id, holder)
) WITHOUT ROWID;
-- Console logins: a session token's SHA-256, its operator and its end (operators.rs).
CREATE TABLE IF NOT EXISTS console_session (
    token_hash    BLOB PRIMARY KEY,
    operator_id   TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
-- The QR token the customer's page shows (sealed), kept so a reload shows it again instead of
-- using up the parcel's tokens; replaced once the customer's code is reissued.
CREATE TABLE IF NOT EXISTS page_qr (
    parcel_id    TEXT PRIMARY KEY,
    token        BLOB NOT NULL,
    minted_at_ms INTEGER NOT NULL
);
-- Which parcels each stored receipt speaks of (the hand-over history query).
CREATE TABLE IF NOT EXISTS receipt_parcel (
    receipt_id TEXT NOT NULL,
    parcel_id  TEXT NOT NULL,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- QR token nonces already used by a stored hand-over: a token opens a parcel once, across phones.
CREATE TABLE IF NOT EXISTS qr_nonce (
    nonce      BLOB PRIMARY KEY,
    receipt_id TEXT NOT NULL
);
-- Which parcels each device was sent in a manifest: a phone makes receipts only for those. A
-- reassignment withdraws the parcel from the old route's phones: after the next reset their wrong
-- codes no longer count.
CREATE TABLE IF NOT EXISTS parcel_sent (
    device_id       TEXT NOT NULL,
    parcel_id       TEXT NOT NULL,
    withdrawn_at_ms INTEGER,
    PRIMARY KEY (device_id, parcel_id)
) WITHOUT ROWID;
-- A parcel's rules at the door where it has any (`DoorRules::bits`: 1 addressee only, 2 open
-- box), from its import or a category rule; carried in manifests and re-checked on receipts.
CREATE TABLE IF NOT EXISTS parcel_rules (
    parcel_id TEXT PRIMARY KEY REFERENCES parcel (parcel_id),
    rules     INTEGER NOT NULL
);
-- A return the driver collects from the customer against their pickup code (a pickup task),
-- instead of a delivery: one row per such parcel.
CREATE TABLE IF NOT EXISTS pickup (
    parcel_id TEXT PRIMARY KEY REFERENCES parcel (parcel_id)
);
-- A parcel's GS1 identifier where the import gave one (EPCIS events name the parcel by it): its
-- SSCC as 18 digits, or as an `urn:epc:id:sscc:` URN.
CREATE TABLE IF NOT EXISTS parcel_gs1 (
    parcel_id TEXT PRIMARY KEY REFERENCES parcel (parcel_id),
    sscc      TEXT NOT NULL,
    -- The 18 digits it names: one SSCC names one parcel, whichever form it was given in.
    digits    TEXT NOT NULL UNIQUE
);
-- How many times an operator reset a parcel's attempts (manifests and receipts name it), and when
-- last (receipts of protocol 1.0 carry no epoch and are judged by their time).
CREATE TABLE IF NOT EXISTS parcel_epoch (
    parcel_id     TEXT PRIMARY KEY,
    attempt_epoch INTEGER NOT NULL,
    reset_at_ms   INTEGER NOT NULL
);
-- Every accepted wrong-code or lock-out receipt per parcel, with the epoch and count it names.
-- A parcel's attempts in its current epoch are the larger of how many such receipts there are
-- (two phones guessing at once both count) and the highest count one names; manifests carry them
-- so a parcel never gets fresh attempts by moving to another phone.
CREATE TABLE IF NOT EXISTS wrong_attempt (
    parcel_id     TEXT NOT NULL,
    receipt_id    TEXT NOT NULL,
    attempt_epoch INTEGER NOT NULL,
    attempts_used INTEGER NOT NULL,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- Every stored "delivered" receipt, per parcel, with its verdict; a later reversal by the same
-- device marks it. A parcel is handed over once; after a flagged hand-over every later one is held.
CREATE TABLE IF NOT EXISTS handover (
    parcel_id  TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    flagged    INTEGER NOT NULL,
    reversed   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- Device request signatures seen within the clock window: a signed request is answered once.
CREATE TABLE IF NOT EXISTS seen_request (
    signature_hash BLOB PRIMARY KEY,
    at_ms          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_request_by_age ON seen_request (at_ms);
-- Operator keys: the secret only as its SHA-256 (see operators.rs).
CREATE TABLE IF NOT EXISTS operator (
    operator_id   TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
-- Every operator action, with who did it (a parcel's history shows those on it).
CREATE TABLE IF NOT EXISTS operator_action (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    operator_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    parcel_id   TEXT,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS operator_action_by_parcel ON operator_action (parcel_id);
CREATE TABLE IF NOT EXISTS receipt (
    device_id      TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    receipt_id     TEXT NOT NULL UNIQUE,
    body           BLOB NOT NULL,
    signature      BLOB NOT NULL,
    hash           BLOB NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT,
    PRIMARY KEY (device_id, seq)
);
-- The keys this database is used with: a value sealed under the key-encryption key, and each
-- signing key's public half (see keys.rs); a node holding other keys is refused.
CREATE TABLE IF NOT EXISTS key_registry (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Customers still to be told of a stored hand-over or failed attempt (notices.rs): written with
-- the upload, turned into e-mail by the mail sender.
CREATE TABLE IF NOT EXISTS notice (
    receipt_id TEXT NOT NULL,
    parcel_id  TEXT NOT NULL,
    PRIMARY KEY (receipt_id, parcel_id)
);
-- Receipts dispatch flagged, for an operator to look at (GET /v1/alerts), one row each.
CREATE TABLE IF NOT EXISTS alert (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    device_id  TEXT NOT NULL,
    receipt_id TEXT NOT NULL UNIQUE,
    parcels    TEXT NOT NULL,
    reason     TEXT NOT NULL
);
-- Each route-day's version: how many changes were journalled to it (every delta, `push_delta`),
-- and how many full manifests were kept of it. A full manifest built outside its transaction is
-- kept only if the version is still the one it was read at (manifests.rs).
CREATE TABLE IF NOT EXISTS route_day (
    route_id       TEXT NOT NULL,
    delivery_date  TEXT NOT NULL,
    version        INTEGER NOT NULL,
    full_manifests INTEGER NOT NULL,
    PRIMARY KEY (route_id, delivery_date)
);
"#;

/// The schema version this build writes (SQLite's `user_version`, PostgreSQL's `doorstep_schema`).
pub(super) const SCHEMA_VERSION: i64 = 13;

/// `SCHEMA` in PostgreSQL's words: 64-bit integers, identity keys, bytes as BYTEA, and text
/// compared byte by byte (collation "C") so that both backends order rows alike.
pub(super) fn postgres_schema() -> String {
    SCHEMA
        .replace("INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
        .replace("TEXT", "TEXT COLLATE \"C\"")
        .replace(") WITHOUT ROWID;", ");")
}

/// How PostgreSQL keeps the journal's envelopes (step 13): out of line as they are. A full
/// manifest's is about 100 KB of base64 text that compression shrinks little, at a cost paid in
/// the transaction that issues it.
const POSTGRES_STORAGE: &str = "ALTER TABLE delta ALTER COLUMN envelope SET STORAGE EXTERNAL;";

/// Brings a PostgreSQL database to this build's schema: creates it in an empty database, and
/// refuses one written by a newer build. Safe when several nodes start at once (the version row
/// is one row; a second node's transaction runs again and finds it).
pub(super) fn migrate_postgres(tx: &Tx<'_>) -> Result<()> {
    tx.batch("CREATE TABLE IF NOT EXISTS doorstep_schema (singleton BIGINT PRIMARY KEY CHECK (singleton = 1), version BIGINT NOT NULL)")?;
    let version: Option<i64> = tx.opt("SELECT version FROM doorstep_schema", params![])?;
    match version {
        Some(found) if found > SCHEMA_VERSION => Err(bad(format!(
            "the database was written by a newer doorstep (schema {found}, this build knows {SCHEMA_VERSION})"
        ))),
        Some(found) if found < SCHEMA_VERSION => {
            // Every step since 7 only adds tables: `SCHEMA` creates those missing.
            tx.batch(&postgres_schema())?;
            if found < 9 {
                tx.batch(FILL_DEVICE_DAYS)?;
            }
            tx.batch(POSTGRES_STORAGE)?;
            tx.execute("UPDATE doorstep_schema SET version = ?1", params![SCHEMA_VERSION])?;
            Ok(())
        }
        Some(_) => Ok(()),
        None => {
            tx.batch(&postgres_schema())?;
            tx.batch(POSTGRES_STORAGE)?;
            tx.execute(
                "INSERT INTO doorstep_schema (singleton, version) VALUES (1, ?1) ON CONFLICT DO NOTHING",
                params![SCHEMA_VERSION],
            )?;
            Ok(())
        }
    }
}

/// Brings a state folder written by an earlier build up to this one (`PRAGMA user_version`; the
/// tables themselves are created above), one step per version, each in its own transaction.
/// 1. Fills what protocol 1.1's checks read and earlier builds did not keep: which parcels each
///    phone holds (every departed parcel of its route and day, as its last full manifest carried
///    them) and the attempt counts kept per parcel before.
/// 2. Seals the codes and device secrets earlier builds kept in the clear.
/// 3. Keeps enrolment tokens as hashes, and turns each customer's one token (sent in every code
///    e-mail, valid forever) into links for that customer's parcels, ending with their days.
/// 4. Gives enrolment tokens the end of their life (`expires_at_ms`).
pub(super) fn upgrade(conn: &Connection, kek: &SealingKey) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(
            "INSERT OR IGNORE INTO parcel_sent (device_id, parcel_id)
                 SELECT d.device_id, p.parcel_id FROM device d
                 JOIN parcel p ON p.route_id = d.route_id AND p.delivery_date = d.manifest_date
                 WHERE d.manifest_seq > 0 AND p.departed_at_ms IS NOT NULL;",
        )?;
        if table_exists(&tx, "parcel_attempts")? {
            tx.execute_batch(
                "INSERT OR IGNORE INTO wrong_attempt (parcel_id, receipt_id, attempt_epoch, attempts_used)
                     SELECT parcel_id, 'before-1.1', 0, attempts_used FROM parcel_attempts WHERE attempts_used > 0;
                 DROP TABLE parcel_attempts;",
            )?;
        }
        tx.execute_batch("PRAGMA user_version = 1;")?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.unchecked_transaction()?;
        let plain_codes: Vec<(i64, String, String, String, i64)> = tx
            .prepare("SELECT rowid, parcel_id, holder, code, issued_at_ms FROM code WHERE typeof(code) = 'text'")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (rowid, parcel, holder, code, issued) in plain_codes {
            let sealed = kek.seal(&code_aad(&parcel, &holder, issued), code.as_bytes())?;
            tx.execute("UPDATE code SET code = ?2 WHERE rowid = ?1", sqlite_params![rowid, sealed])?;
        }
        let plain_secrets: Vec<(String, Vec<u8>)> = tx
            .prepare("SELECT device_id, secret FROM device WHERE length(secret) = ?1")?
            .query_map([doorstep_core::crypto::DEVICE_SECRET_LEN as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (device_id, secret) in plain_secrets {
            let sealed = kek.seal(&device_secret_aad(&device_id), &secret)?;
            tx.execute("UPDATE device SET secret = ?2 WHERE device_id = ?1", sqlite_params![device_id, sealed])?;
        }
        tx.execute_batch("PRAGMA user_version = 2;")?;
        tx.commit()?;
    }
    if version < 3 {
        let tx = conn.unchecked_transaction()?;
        let plain: Vec<String> = tx
            .prepare("SELECT token FROM enrolment_token WHERE length(token) != 64")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for token in plain {
            tx.execute(
                "UPDATE enrolment_token SET token = ?2 WHERE token = ?1",
                sqlite_params![token, token_hash(&token)],
            )?;
        }
        if table_exists(&tx, "customer")? {
            let links: Vec<(String, String, String, String)> = tx
                .prepare(
                    "SELECT c.token, p.parcel_id, p.delivery_date, p.time_zone
                     FROM customer c JOIN parcel p ON p.customer_email = c.email",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (token, parcel_id, date, zone) in links {
                let (_, expires) = stored_window(&date, &zone)?;
                tx.execute(
                    "INSERT OR IGNORE INTO customer_link (token_hash, parcel_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                    sqlite_params![sha256(token.as_bytes()).to_vec(), parcel_id, expires.timestamp_millis()],
                )?;
            }
            tx.execute_batch("DROP TABLE customer;")?;
        }
        tx.execute_batch("PRAGMA user_version = 3;")?;
        tx.commit()?;
    }
    if version < 4 {
        // Step 4: enrolment tokens keep the end of their life from when they were made (older
        // rows keep NULL and live the default lifetime).
        add_column_step(conn, 4, "enrolment_token", "expires_at_ms", "INTEGER")?;
    }
    if version < 5 {
        // Step 5: queued e-mail gets its own retry time (an outbox from step 4 has none).
        add_column_step(conn, 5, "mail_outbox", "retry_at_ms", "INTEGER NOT NULL DEFAULT 0")?;
    }
    if version < 6 {
        // Step 6: codes and operator actions get an explicit `id` (their SQLite rowid, which
        // PostgreSQL has no equivalent of), and a code's sealed value is declared as bytes.
        let tx = conn.unchecked_transaction()?;
        if !column_exists(&tx, "code", "id")? {
            tx.execute_batch(
                "CREATE TABLE code_v6 (
                     id            INTEGER PRIMARY KEY,
                     parcel_id     TEXT NOT NULL REFERENCES parcel (parcel_id),
                     holder        TEXT NOT NULL,
                     code          BLOB NOT NULL,
                     issued_at_ms  INTEGER NOT NULL,
                     revoked_at_ms INTEGER,
                     UNIQUE (parcel_id, holder, code)
                 );
                 INSERT INTO code_v6 (id, parcel_id, holder, code, issued_at_ms, revoked_at_ms)
                     SELECT rowid, parcel_id, holder, code, issued_at_ms, revoked_at_ms FROM code;
                 DROP TABLE code;
                 ALTER TABLE code_v6 RENAME TO code;",
            )?;
        }
        if !column_exists(&tx, "operator_action", "id")? {
            tx.execute_batch(
                "CREATE TABLE operator_action_v6 (
                     id          INTEGER PRIMARY KEY,
                     at_ms       INTEGER NOT NULL,
                     operator_id TEXT NOT NULL,
                     action      TEXT NOT NULL,
                     parcel_id   TEXT,
                     detail      TEXT
                 );
                 INSERT INTO operator_action_v6 (id, at_ms, operator_id, action, parcel_id, detail)
                     SELECT rowid, at_ms, operator_id, action, parcel_id, detail FROM operator_action;
                 DROP TABLE operator_action;
                 ALTER TABLE operator_action_v6 RENAME TO operator_action;
                 CREATE INDEX operator_action_by_parcel ON operator_action (parcel_id);",
            )?;
        }
        tx.execute_batch("PRAGMA user_version = 6;")?;
        tx.commit()?;
    }
    if version < 7 {
        // Step 7: the columns the schema of step 1 gained without a step of their own (a folder
        // from before step 1 lacked them): which phones a parcel was withdrawn from, and when an
        // epoch began (epochs begun before that count from the start of time).
        add_column_step(conn, 7, "parcel_sent", "withdrawn_at_ms", "INTEGER")?;
        let tx = conn.unchecked_transaction()?;
        if !column_exists(&tx, "parcel_epoch", "reset_at_ms")? {
            tx.execute_batch(
                "CREATE TABLE parcel_epoch_v7 (
                     parcel_id     TEXT PRIMARY KEY,
                     attempt_epoch INTEGER NOT NULL,
                     reset_at_ms   INTEGER NOT NULL
                 );
                 INSERT INTO parcel_epoch_v7 (parcel_id, attempt_epoch, reset_at_ms)
                     SELECT parcel_id, attempt_epoch, 0 FROM parcel_epoch;
                 DROP TABLE parcel_epoch;
                 ALTER TABLE parcel_epoch_v7 RENAME TO parcel_epoch;",
            )?;
        }
        tx.commit()?;
    }
    if version < 8 {
        // Step 8: the notice and alert tables, which `SCHEMA` creates; recorded so both backends
        // count alike.
        conn.execute_batch("PRAGMA user_version = 8;")?;
    }
    if version < 9 {
        // Step 9: phones hold more than one day; the day each held until now is its first.
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(FILL_DEVICE_DAYS)?;
        tx.execute_batch("PRAGMA user_version = 9;")?;
        tx.commit()?;
    }
    if version < 10 {
        // Step 10: the customer page's QR token table, which `SCHEMA` creates.
        conn.execute_batch("PRAGMA user_version = 10;")?;
    }
    if version < 11 {
        // Step 11: the console's session table, which `SCHEMA` creates.
        conn.execute_batch("PRAGMA user_version = 11;")?;
    }
    if version < 12 {
        // Step 12: the parcels' SSCCs, their rules at the door and pickup tasks, in tables
        // `SCHEMA` creates.
        conn.execute_batch("PRAGMA user_version = 12;")?;
    }
    if version < 13 {
        // Step 13: the route-days' versions, in a table `SCHEMA` creates (a route-day without a
        // row is at version 0).
        conn.execute_batch("PRAGMA user_version = 13;")?;
    }
    if version < 3 {
        // Steps 2 and 3 replaced secrets kept in the clear: rewrite the file and empty the WAL so
        // no old page keeps a copy.
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    Ok(())
}

/// Step 9, in words both backends read: each device holds the day of its latest full manifest.
const FILL_DEVICE_DAYS: &str = "INSERT INTO device_day (device_id, delivery_date)
     SELECT device_id, manifest_date FROM device WHERE manifest_seq > 0 AND manifest_date IS NOT NULL
     ON CONFLICT DO NOTHING;";

/// An upgrade step that adds `table.column` (unless `SCHEMA` already created it, on a folder whose
/// tables were made by this build) and records `version`, in one transaction.
fn add_column_step(conn: &Connection, version: i64, table: &str, column: &str, definition: &str) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    if !column_exists(&tx, table, column)? {
        tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition};"))?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {version};"))?;
    tx.commit()?;
    Ok(())
}

/// Whether `table` has `column` (an earlier build may lack it).
fn column_exists(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn
        .prepare(&format!("PRAGMA table_info({table})"))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .iter()
        .any(|name| name == column))
}

/// Whether an earlier build left a table of this name.
fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// Whether a database holds values sealed under a KEK (written by a build that seals).
pub(super) fn has_sealed_rows(db: &Path) -> Result<bool> {
    let conn = Connection::open(db)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 2 {
        return Ok(false);
    }
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM code) OR EXISTS (SELECT 1 FROM device)", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables as the first build wrote them, before schema versions existed (frozen: the
    /// oldest state folder an upgrade must bring up to date).
    const LAYOUT_BEFORE_VERSIONS: &str = r#"
CREATE TABLE IF NOT EXISTS enrolment_token (
    token         TEXT PRIMARY KEY,
    route_id      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    used_by       TEXT
);
CREATE TABLE IF NOT EXISTS device (
    device_id      TEXT PRIMARY KEY,
    route_id       TEXT NOT NULL,
    secret         BLOB NOT NULL,
    public_key     BLOB NOT NULL,
    manifest_seq   INTEGER NOT NULL DEFAULT 0,
    manifest_date  TEXT,
    enrolled_at_ms INTEGER NOT NULL
);
-- Deltas issued to a device, by sequence: `?since=N` returns delta N+1.
CREATE TABLE IF NOT EXISTS delta (
    device_id TEXT NOT NULL REFERENCES device (device_id),
    seq       INTEGER NOT NULL,
    envelope  BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE IF NOT EXISTS parcel (
    parcel_id      TEXT PRIMARY KEY,
    barcode        TEXT NOT NULL UNIQUE,
    route_id       TEXT NOT NULL,
    stop_id        TEXT NOT NULL,
    stop_seq       INTEGER NOT NULL,
    delivery_date  TEXT NOT NULL,
    time_zone      TEXT NOT NULL,
    value_cents    INTEGER NOT NULL,
    category       TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    address_hint   TEXT NOT NULL,
    recipient_hint TEXT NOT NULL,
    needs_code     INTEGER NOT NULL,
    departed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS parcel_by_route ON parcel (route_id, delivery_date);
CREATE TABLE IF NOT EXISTS code (
    parcel_id     TEXT NOT NULL REFERENCES parcel (parcel_id),
    holder        TEXT NOT NULL,
    code          TEXT NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    PRIMARY KEY (parcel_id, holder, code)
);
-- Customers authenticate to their own parcels with a bearer token sent in the code e-mail.
CREATE TABLE IF NOT EXISTS customer (
    email TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE
);
-- Which parcels each stored receipt speaks of (the hand-over history query).
CREATE TABLE IF NOT EXISTS receipt_parcel (
    receipt_id TEXT NOT NULL,
    parcel_id  TEXT NOT NULL,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- QR token nonces already used by a stored hand-over: a token opens a parcel once, across phones.
CREATE TABLE IF NOT EXISTS qr_nonce (
    nonce      BLOB PRIMARY KEY,
    receipt_id TEXT NOT NULL
);
-- Which parcels each device was sent in a manifest: a phone makes receipts only for those.
CREATE TABLE IF NOT EXISTS parcel_sent (
    device_id TEXT NOT NULL,
    parcel_id TEXT NOT NULL,
    PRIMARY KEY (device_id, parcel_id)
) WITHOUT ROWID;
-- How many times an operator reset a parcel's attempts; manifests and receipts name it.
CREATE TABLE IF NOT EXISTS parcel_epoch (
    parcel_id     TEXT PRIMARY KEY,
    attempt_epoch INTEGER NOT NULL
);
-- Every accepted wrong-code or lock-out receipt per parcel, with the epoch and count it names.
-- A parcel's attempts in its current epoch are the larger of how many such receipts there are
-- (two phones guessing at once both count) and the highest count one names; manifests carry them
-- so a parcel never gets fresh attempts by moving to another phone.
CREATE TABLE IF NOT EXISTS wrong_attempt (
    parcel_id     TEXT NOT NULL,
    receipt_id    TEXT NOT NULL,
    attempt_epoch INTEGER NOT NULL,
    attempts_used INTEGER NOT NULL,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- Every stored "delivered" receipt, per parcel, with its verdict; a later reversal by the same
-- device marks it. A parcel is handed over once; after a flagged hand-over every later one is held.
CREATE TABLE IF NOT EXISTS handover (
    parcel_id  TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    flagged    INTEGER NOT NULL,
    reversed   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (parcel_id, receipt_id)
);
-- Device request signatures seen within the clock window: a signed request is answered once.
CREATE TABLE IF NOT EXISTS seen_request (
    signature_hash BLOB PRIMARY KEY,
    at_ms          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_request_by_age ON seen_request (at_ms);
-- Operator keys: the secret only as its SHA-256 (see operators.rs).
CREATE TABLE IF NOT EXISTS operator (
    operator_id   TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
-- Every operator action, with who did it (a parcel's history shows those on it).
CREATE TABLE IF NOT EXISTS operator_action (
    at_ms       INTEGER NOT NULL,
    operator_id TEXT NOT NULL,
    action      TEXT NOT NULL,
    parcel_id   TEXT,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS operator_action_by_parcel ON operator_action (parcel_id);
CREATE TABLE IF NOT EXISTS receipt (
    device_id      TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    receipt_id     TEXT NOT NULL UNIQUE,
    body           BLOB NOT NULL,
    signature      BLOB NOT NULL,
    hash           BLOB NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT,
    PRIMARY KEY (device_id, seq)
);
"#;

    /// Everything about a database's tables that the code relies on: each table's kind and
    /// columns (name, type, not null, default, key), its indexes (columns, unique) and its
    /// foreign keys, in a stable order.
    fn layout(conn: &Connection) -> Vec<String> {
        let strings = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            let width = stmt.column_count();
            let text = |v: rusqlite::types::ValueRef<'_>| match v {
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            };
            stmt.query_map([], |r| {
                Ok((0..width).map(|i| r.get_ref(i).map(text)).collect::<rusqlite::Result<Vec<_>>>()?.join(" | "))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        let tables =
            strings("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
        let mut out = Vec::new();
        for table in tables {
            out.push(format!(
                "table {table}: {:?}",
                strings(&format!("SELECT type, ncol, wr, strict FROM pragma_table_list('{table}')"))
            ));
            out.extend(strings(&format!("SELECT '{table}', name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{table}') ORDER BY cid")));
            out.extend(strings(&format!(
                "SELECT '{table} index', l.\"unique\", l.origin, l.partial,
                        (SELECT group_concat(i.name, ',') FROM pragma_index_info(l.name) i),
                        CASE WHEN l.origin = 'c' THEN l.name ELSE '' END
                 FROM pragma_index_list('{table}') l ORDER BY 5, 6"
            )));
            out.extend(strings(&format!(
                "SELECT '{table} references', \"table\", \"from\", \"to\" FROM pragma_foreign_key_list('{table}') ORDER BY 3"
            )));
        }
        out
    }

    #[test]
    fn an_upgraded_state_folder_has_exactly_the_fresh_schema() {
        let old = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(old.path().join("dispatch.db")).unwrap();
            conn.execute_batch(LAYOUT_BEFORE_VERSIONS).unwrap();
            conn.execute_batch(
                "INSERT INTO parcel_epoch VALUES ('P1', 2);
                 INSERT INTO operator_action VALUES (5, 'op', 'reset', 'P1', NULL);",
            )
            .unwrap();
        }
        let upgraded = Dispatch::open(old.path(), HighValuePolicy::default()).unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Dispatch::open(fresh_dir.path(), HighValuePolicy::default()).unwrap();
        let (was, is) = (layout(&upgraded.lock()), layout(&fresh.lock()));
        for (a, b) in was.iter().zip(&is) {
            assert_eq!(a, b, "the upgraded layout (left) differs from a fresh one (right)");
        }
        assert_eq!(was.len(), is.len(), "{was:#?}\n{is:#?}");
        let version = |d: &Dispatch| d.lock().query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!((version(&upgraded), version(&fresh)), (SCHEMA_VERSION, SCHEMA_VERSION));
        // What the old rows said is kept.
        let kept: (i64, i64, i64) = upgraded
            .lock()
            .query_row("SELECT e.attempt_epoch, e.reset_at_ms, a.id FROM parcel_epoch e, operator_action a", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(kept, (2, 0, 1));
    }
}
