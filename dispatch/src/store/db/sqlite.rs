//! The SQLite backend: one connection behind a mutex, so transactions run one at a time (the
//! invariant of [`super::Db::run`] by construction); statements are prepared once and cached.
//! Work that only reads ([`super::Db::read`]) runs on connections of its own, opened on the same
//! file and made read-only (`query_only`): in WAL mode each reads one committed snapshot while the
//! writer goes on.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Param, Row, StorageError, ToParam, Tx, Value};
use crate::error::Result;

pub struct Sqlite {
    conn: Mutex<rusqlite::Connection>,
    /// The database file, for the read-only connections (`None`: in memory, the writer reads).
    path: Option<String>,
    /// Idle read-only connections.
    readers: Mutex<Vec<rusqlite::Connection>>,
    /// Read-only connections open, idle or reading: at most [`READERS`].
    open_readers: std::sync::atomic::AtomicUsize,
}

/// Read-only connections at most; a read beyond them runs on the writer's connection, in turn.
const READERS: usize = 4;

impl Sqlite {
    pub(super) fn new(conn: rusqlite::Connection) -> Sqlite {
        conn.set_prepared_statement_cache_capacity(128);
        let path = conn.path().map(str::to_owned).filter(|p| !p.is_empty());
        Sqlite { conn: Mutex::new(conn), path, readers: Mutex::new(Vec::new()), open_readers: Default::default() }
    }

    /// Runs `work` in a read transaction on a read-only connection: one committed snapshot, taken
    /// without waiting for the writer. A write in `work` fails (`query_only`). When every reader
    /// is busy (or there is no file), `work` runs on the writer's connection instead.
    pub(super) fn read<T>(&self, work: &mut impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        let Some(mut conn) = self.reader()? else { return self.run(work) };
        let out = {
            let tx = conn.transaction()?;
            let scope = Tx::new(super::Inner::Sqlite(&tx));
            let out = work(&scope);
            let failed = scope.into_failure();
            // Nothing to keep: the snapshot ends with the transaction (rolled back when dropped).
            drop(tx);
            out.map_err(|e| super::settle(e, failed))
        };
        if conn.is_autocommit() {
            self.readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        } else {
            // Left inside a transaction somehow: closed, never read from again.
            self.open_readers.fetch_sub(1, Ordering::SeqCst);
        }
        out
    }

    /// An idle reader, a new one while fewer than [`READERS`] are open, or `None`.
    fn reader(&self) -> Result<Option<rusqlite::Connection>> {
        if let Some(idle) = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(Some(idle));
        }
        let Some(path) = &self.path else { return Ok(None) };
        if self.open_readers.fetch_add(1, Ordering::SeqCst) >= READERS {
            self.open_readers.fetch_sub(1, Ordering::SeqCst);
            return Ok(None);
        }
        let opened = rusqlite::Connection::open(path).and_then(|conn| {
            conn.execute_batch("PRAGMA query_only = ON;")?;
            conn.set_prepared_statement_cache_capacity(64);
            Ok(conn)
        });
        match opened {
            Ok(conn) => Ok(Some(conn)),
            Err(e) => {
                self.open_readers.fetch_sub(1, Ordering::SeqCst);
                Err(e.into())
            }
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn run<T>(&self, work: &mut impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let scope = Tx::new(super::Inner::Sqlite(&tx));
        let out = work(&scope);
        let failed = scope.into_failure();
        match out {
            Ok(value) => {
                tx.commit()?;
                Ok(value)
            }
            Err(e) => Err(super::settle(e, failed)),
        }
    }
}

/// A parameter as rusqlite binds it.
struct Bound<'a>(Param<'a>);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind<'a>(params: &'a [&'a dyn ToParam]) -> Vec<Bound<'a>> {
    params.iter().map(|p| Bound(p.param())).collect()
}

pub(super) fn execute(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: &[&dyn ToParam],
) -> Result<usize, StorageError> {
    let bound = bind(params);
    Ok(tx.prepare_cached(sql)?.execute(rusqlite::params_from_iter(bound.iter()))?)
}

pub(super) fn query(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: &[&dyn ToParam],
) -> Result<Vec<Row>, StorageError> {
    read(tx, sql, params, usize::MAX)
}

pub(super) fn query_first(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: &[&dyn ToParam],
) -> Result<Vec<Row>, StorageError> {
    read(tx, sql, params, 1)
}

fn read(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: &[&dyn ToParam],
    most: usize,
) -> Result<Vec<Row>, StorageError> {
    let bound = bind(params);
    let mut stmt = tx.prepare_cached(sql)?;
    let width = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(bound.iter()))?;
    let mut out = Vec::new();
    while out.len() < most {
        let Some(row) = rows.next()? else { break };
        let values = (0..width)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    // Dispatch stores no floating-point values; one would be a foreign write.
                    ValueRef::Real(v) => Value::Text(v.to_string()),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(Row(values));
    }
    Ok(out)
}
