//! The one storage interface every store module writes against, with two backends: SQLite (one
//! file, zero setup, one writer) and PostgreSQL (a pool shared by any number of dispatch nodes).
//!
//! SQL is written once, in the dialect both share: `?N` parameters, `ON CONFLICT`, `RETURNING`,
//! integers read as `i64` (BIGINT), bytes as BLOB/BYTEA, truth as 0/1. [`Db::run`] runs a closure
//! in one transaction that commits only when the closure returns `Ok`. The invariant the backends
//! keep: **every transaction behaves as if it ran alone**. SQLite gets it from its one connection
//! behind a mutex; PostgreSQL runs each transaction `SERIALIZABLE` and runs the closure again
//! (from a fresh snapshot) when the database reports a conflict with a concurrent transaction, so
//! a closure must have no effect outside its transaction.

mod postgres;
mod sqlite;
mod values;

pub use postgres::PostgresConfig;
pub(crate) use values::{FromRow, Param, Row, ToParam, Value};

use std::cell::RefCell;

use crate::error::{DispatchError, Result};

/// A storage failure: what the database said, and whether trying again may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    kind: FailureKind,
    message: String,
}

/// How a storage failure counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A concurrent transaction got there first (serialization failure, deadlock): run again.
    Conflict,
    /// A unique or primary key already holds this value.
    Unique,
    /// Anything else.
    Other,
}

impl StorageError {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> StorageError {
        StorageError { kind, message: message.into() }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.kind == FailureKind::Unique
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        let kind = match e.sqlite_error() {
            Some(se)
                if se.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || se.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                FailureKind::Unique
            }
            _ => FailureKind::Other,
        };
        StorageError::new(kind, e.to_string())
    }
}

impl From<rusqlite::Error> for DispatchError {
    fn from(e: rusqlite::Error) -> DispatchError {
        DispatchError::Storage(e.into())
    }
}

/// Where dispatch keeps its state.
pub enum Db {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// How many times a PostgreSQL transaction runs before a conflict is given up on (and answered
/// 500, which phones retry).
const MAX_RUNS: u32 = 12;

impl Db {
    pub(crate) fn sqlite(conn: rusqlite::Connection) -> Db {
        Db::Sqlite(sqlite::Sqlite::new(conn))
    }

    pub(crate) fn postgres(config: &PostgresConfig) -> Result<Db> {
        Ok(Db::Postgres(postgres::Postgres::connect(config)?))
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    /// `SERIALIZABLE` on PostgreSQL (see `postgres.rs`).
    pub(crate) fn run<T>(&self, work: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run_at(Isolation::Serializable, work)
    }

    /// Runs `work`, which only reads, without holding up writers: on SQLite in one snapshot on a
    /// read-only connection (beside the writer), on PostgreSQL at `READ COMMITTED` (each
    /// statement sees what committed before it began). What it read may be out of date by the
    /// time it is used: the caller checks again, in the transaction that acts on it.
    pub(crate) fn read<T>(&self, mut work: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(db) => db.read(&mut work),
            Db::Postgres(_) => self.run_at(Isolation::LockedRows, work),
        }
    }

    /// [`Db::run`] for work that first takes, with [`Tx::lock`], a lock on every row whose
    /// concurrent change would alter its outcome, and reads only after that: on PostgreSQL it
    /// runs at `READ COMMITTED`, where each statement sees what committed before it began, so
    /// concurrent work on other rows never aborts it (as `SERIALIZABLE`'s page-grained conflict
    /// detection does). Uploads, many at once at the end of a shift, run so.
    pub(crate) fn run_locking<T>(&self, work: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run_at(Isolation::LockedRows, work)
    }

    fn run_at<T>(&self, isolation: Isolation, mut work: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(db) => db.run(&mut work),
            Db::Postgres(db) => {
                let mut run = 1;
                loop {
                    match db.run(isolation, &mut work) {
                        // A unique key taken by a concurrent transaction is a conflict too; a
                        // value that is simply taken fails the same way on every run.
                        Err(DispatchError::Storage(e)) if e.kind != FailureKind::Other && run < MAX_RUNS => {
                            // Let the other transaction finish; spread the retries out.
                            let jitter = doorstep_core::crypto::random_bytes::<1>().map_or(0, |b| u64::from(b[0]) % 8);
                            std::thread::sleep(std::time::Duration::from_millis(u64::from(run) * 2 + jitter));
                            run += 1;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// Runs `work` on the SQLite connection itself (schema upgrades, which SQLite alone needs).
    pub(crate) fn with_sqlite<T>(&self, work: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Option<Result<T>> {
        match self {
            Db::Sqlite(db) => Some(work(&db.lock())),
            Db::Postgres(_) => None,
        }
    }

    /// Empties SQLite's write-ahead log into the file (after secrets were re-sealed, so no old
    /// page keeps them); nothing on PostgreSQL, whose old row versions `VACUUM` removes.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.with_sqlite(|conn| Ok(conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?)).unwrap_or(Ok(()))
    }
}

/// How a PostgreSQL transaction is kept apart from concurrent ones (SQLite runs one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isolation {
    Serializable,
    /// `READ COMMITTED`, with the rows the work depends on locked by [`Tx::lock`].
    LockedRows,
}

/// One transaction on either backend. It remembers its first storage failure: PostgreSQL
/// refuses every later statement of a failed transaction, and the failure says whether running
/// the transaction again may help, even when the work reported it as another error (the receipt
/// ledger reports to core in core's errors).
pub struct Tx<'a> {
    inner: Inner<'a>,
    failed: RefCell<Option<StorageError>>,
}

pub(crate) enum Inner<'a> {
    Sqlite(&'a rusqlite::Transaction<'a>),
    Postgres(&'a postgres::PgTx<'a>),
}

/// The error a transaction's work ends with: its own, unless it failed in storage (reported as a
/// storage error or in core's terms): then the transaction's *first* storage failure, the one
/// that says whether another run may help (PostgreSQL fails every later statement with "current
/// transaction is aborted").
fn settle(error: DispatchError, failed: Option<StorageError>) -> DispatchError {
    match (error, failed) {
        (DispatchError::Core(_) | DispatchError::Storage(_), Some(first)) => DispatchError::Storage(first),
        (error, _) => error,
    }
}

impl<'a> Tx<'a> {
    fn new(inner: Inner<'a>) -> Tx<'a> {
        Tx { inner, failed: RefCell::new(None) }
    }

    fn into_failure(self) -> Option<StorageError> {
        self.failed.into_inner()
    }

    pub(super) fn note<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result {
            self.failed.borrow_mut().get_or_insert_with(|| StorageError::new(e.kind, e.message.clone()));
        }
        result
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize, StorageError> {
        self.note(match self.inner {
            Inner::Sqlite(tx) => sqlite::execute(tx, sql, params),
            Inner::Postgres(tx) => tx.execute(sql, params),
        })
    }

    /// Runs a write whose outcome the work does not read (no row count, no rows): on PostgreSQL it
    /// is queued and sent pipelined with the next statement or the commit, and a failure surfaces
    /// there (failing the transaction as any failure does); on SQLite it runs at once.
    pub fn execute_later(&self, sql: &str, params: &[&dyn ToParam]) -> Result<(), StorageError> {
        match self.inner {
            Inner::Sqlite(tx) => self.note(sqlite::execute(tx, sql, params)).map(|_| ()),
            Inner::Postgres(tx) => {
                tx.execute_later(sql, params);
                Ok(())
            }
        }
    }

    /// Runs statements without parameters (schema changes).
    pub fn batch(&self, sql: &str) -> Result<(), StorageError> {
        self.note(match self.inner {
            Inner::Sqlite(tx) => tx.execute_batch(sql).map_err(StorageError::from),
            Inner::Postgres(tx) => tx.batch(sql),
        })
    }

    /// Locks the rows a `SELECT … FOR UPDATE` names until the transaction ends (for
    /// [`Db::run_locking`]); a transaction wanting one of them waits. Nothing on SQLite, where the
    /// one connection runs one transaction at a time.
    pub fn lock(&self, sql: &str, params: &[&dyn ToParam]) -> Result<(), StorageError> {
        match self.inner {
            Inner::Sqlite(_) => Ok(()),
            Inner::Postgres(tx) => self.note(tx.query(sql, params)).map(drop),
        }
    }

    /// Every row the query yields.
    pub fn all<T: FromRow>(&self, sql: &str, params: &[&dyn ToParam]) -> Result<Vec<T>, StorageError> {
        self.rows(sql, params)?.iter().map(T::from_row).collect()
    }

    /// Every row the query yields, to read column by column (wider rows than a tuple holds).
    pub fn rows(&self, sql: &str, params: &[&dyn ToParam]) -> Result<Vec<Row>, StorageError> {
        self.note(match self.inner {
            Inner::Sqlite(tx) => sqlite::query(tx, sql, params),
            Inner::Postgres(tx) => tx.query(sql, params),
        })
    }

    /// The first row the query yields, if any.
    pub fn opt<T: FromRow>(&self, sql: &str, params: &[&dyn ToParam]) -> Result<Option<T>, StorageError> {
        let rows = self.note(match self.inner {
            Inner::Sqlite(tx) => sqlite::query_first(tx, sql, params),
            Inner::Postgres(tx) => tx.query(sql, params),
        })?;
        rows.first().map(T::from_row).transpose()
    }

    /// The first row of a query that always yields one (an aggregate, `EXISTS`, a row known to be
    /// there).
    pub fn one<T: FromRow>(&self, sql: &str, params: &[&dyn ToParam]) -> Result<T, StorageError> {
        self.opt(sql, params)?.ok_or_else(|| {
            StorageError::new(
                FailureKind::Other,
                format!("no row where one was expected ({} characters of SQL)", sql.len()),
            )
        })
    }
}

/// `items` in slices of 256, 128, … 1 (the largest that fits, in order): a statement per slice
/// whose size is a power of two, so few distinct statement texts are ever prepared.
pub fn shapes<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, after) = rest.split_at(1usize << rest.len().min(256).ilog2());
        rest = after;
        Some(chunk)
    })
}

/// `?{first}, ?{first + 1}, …` for `n` parameters (an `IN (…)` list).
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// `(?1, …, ?{width}), (?{width + 1}, …), …` for `rows` rows of a multi-row `VALUES`.
pub fn value_rows(rows: usize, width: usize) -> String {
    (0..rows).map(|r| format!("({})", placeholders(r * width + 1, width))).collect::<Vec<_>>().join(", ")
}

/// A list of statement parameters: `params![a, b]` is `&[&a, &b]` as `&[&dyn ToParam]`.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::db::ToParam]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToParam),+] as &[&dyn $crate::store::db::ToParam]
    };
}
pub(crate) use params;
