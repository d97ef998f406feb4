//! The PostgreSQL backend: a pool of connections (deadpool-postgres over tokio-postgres) shared
//! by every request of this node, and any number of nodes on one database. Transactions are
//! `SERIALIZABLE`: PostgreSQL aborts one of two that would not give the same result run one after
//! the other, and [`super::Db::run`] runs the aborted one again, so nodes never reuse a manifest
//! sequence or spend an enrolment token twice. Uploads are the exception
//! ([`super::Db::run_locking`]): they lock the device and parcel rows their verdicts depend on and
//! run at `READ COMMITTED`, so many at once do not abort each other for touching the same index
//! pages; unique keys keep each receipt stored once.
//!
//! The store's work is synchronous and runs on tokio's blocking pool; this backend drives its
//! connections on a small runtime of its own and waits for each statement there, so it works the
//! same under `serve`, in tests and in the command-line tools.

use std::cell::RefCell;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, NoTls};

use super::{FailureKind, Isolation, Param, Row, StorageError, ToParam, Tx, Value};
use crate::error::{DispatchError, Result};

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (libpq's URL or key=value form).
    pub url: String,
    /// Connections this node holds at most.
    pub pool_size: usize,
    /// Keep the tables in this schema (created if absent) instead of `public`: several
    /// dispatch instances in one database (a staging copy, a test each).
    pub schema: Option<String>,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        // Above the uploads one node reads at once (16, `api::device`), which may wait on each
        // other's row locks: manifests and operator requests always find a connection.
        PostgresConfig { url: url.into(), pool_size: 24, schema: None }
    }

    /// The same database, with the tables in `schema` (lower-case letters, digits, `_`).
    pub fn in_schema(mut self, schema: impl Into<String>) -> PostgresConfig {
        self.schema = Some(schema.into());
        self
    }
}

pub struct Postgres {
    pool: Pool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // May be dropped inside another runtime (the server's): never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Postgres {
    pub(super) fn connect(config: &PostgresConfig) -> Result<Postgres> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| DispatchError::BadRequest(format!("--database is not a PostgreSQL URL: {e}")))?;
        if let Some(schema) = &config.schema {
            let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            if schema.is_empty() || schema.len() > 63 || !schema.chars().all(plain) {
                return Err(DispatchError::BadRequest(format!(
                    "schema {schema:?}: use 1 to 63 lower-case letters, digits and _"
                )));
            }
            pg.options(format!("-c search_path={schema}"));
        }
        if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(DispatchError::BadRequest(
                "sslmode=require: this build reaches PostgreSQL without TLS (loopback, a Unix socket or a private \
                 network); drop sslmode or put a TLS tunnel in front"
                    .into(),
            ));
        }
        if pg.get_hosts().iter().any(|h| matches!(h, tokio_postgres::config::Host::Tcp(name) if name.contains('@'))) {
            return Err(DispatchError::BadRequest(
                "--database: the password (or user) contains '@'; write it as %40".into(),
            ));
        }
        // Where, for errors: hosts, ports and database, never the password.
        let hosts: Vec<String> = pg
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = pg.get_ports().iter().map(u16::to_string).collect();
        let where_ = format!(
            "{} port {} database {}",
            hosts.join(","),
            if ports.is_empty() { "5432".into() } else { ports.join(",") },
            pg.get_dbname().unwrap_or("(the user's)")
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("doorstep-postgres")
            .enable_all()
            .build()?;
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            // A database that is down or saturated answers 500 in 10 s rather than piling up waiters.
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| DispatchError::BadRequest(format!("PostgreSQL pool: {e}")))?;
        let db = Postgres { pool, runtime: Some(runtime) };
        // Reach it once now: a wrong address or password is named at start, not at the first request.
        let client = db.handle().block_on(db.pool.get()).map_err(|e| {
            DispatchError::Storage(StorageError::new(
                FailureKind::Other,
                format!("cannot reach PostgreSQL at {where_}: {e}"),
            ))
        })?;
        if let Some(schema) = &config.schema {
            db.handle()
                .block_on(client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .map_err(StorageError::from)?;
        }
        drop(client);
        Ok(db)
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the runtime lives until drop").handle()
    }

    pub(super) fn run<T>(&self, isolation: Isolation, work: &mut impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        let rt = self.handle();
        let mut client = rt.block_on(self.pool.get()).map_err(|e| {
            DispatchError::Storage(StorageError::new(FailureKind::Other, format!("PostgreSQL pool: {e}")))
        })?;
        let tx = rt
            .block_on(
                client
                    .build_transaction()
                    .isolation_level(match isolation {
                        Isolation::Serializable => IsolationLevel::Serializable,
                        Isolation::LockedRows => IsolationLevel::ReadCommitted,
                    })
                    .start(),
            )
            .map_err(StorageError::from)?;
        let pg = PgTx { tx, rt, pending: RefCell::new(Vec::new()) };
        let scope = Tx::new(super::Inner::Postgres(&pg));
        let mut out = work(&scope);
        if out.is_ok() {
            // Writes still queued go out before the commit; a failure among them fails the work.
            if let Err(e) = scope.note(pg.flush()) {
                out = Err(DispatchError::Storage(e));
            }
        }
        let failed = scope.into_failure();
        let PgTx { tx, .. } = pg;
        // PostgreSQL ends a transaction that failed with a rollback even when asked to commit: work
        // that caught a storage failure and went on must not report success.
        if out.is_ok()
            && let Some(failure) = &failed
        {
            out = Err(DispatchError::Storage(StorageError::new(failure.kind, failure.message.clone())));
        }
        match out {
            Ok(value) => {
                rt.block_on(tx.commit()).map_err(StorageError::from)?;
                Ok(value)
            }
            Err(e) => {
                // Rolled back when dropped; do it now to give the connection back clean.
                let _ = rt.block_on(tx.rollback());
                Err(super::settle(e, failed))
            }
        }
    }
}

/// One PostgreSQL transaction. Writes whose outcome the work does not read
/// ([`Tx::execute_later`]) wait in `pending` and go out pipelined, in order, ahead of the next
/// statement (or the commit): one round trip for all of them instead of one each.
pub struct PgTx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    rt: &'a tokio::runtime::Handle,
    pending: RefCell<Vec<(String, Vec<Value>)>>,
}

impl PgTx<'_> {
    fn note<T>(&self, result: Result<T, tokio_postgres::Error>) -> Result<T, StorageError> {
        result.map_err(StorageError::from)
    }

    pub(super) fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize, StorageError> {
        match self.statement(sql, params, false)? {
            Answer::Changed(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Answer::Rows(_) => Ok(0),
        }
    }

    pub(super) fn execute_later(&self, sql: &str, params: &[&dyn ToParam]) {
        let values = params.iter().map(|p| Value::from(p.param())).collect();
        self.pending.borrow_mut().push((numbered(sql), values));
    }

    pub(super) fn query(&self, sql: &str, params: &[&dyn ToParam]) -> Result<Vec<Row>, StorageError> {
        match self.statement(sql, params, true)? {
            Answer::Rows(rows) => rows.iter().map(row).collect(),
            Answer::Changed(_) => Ok(Vec::new()),
        }
    }

    /// Runs one statement behind the queued writes, in one round trip: its rows (`rows`) or the
    /// number of rows it changed.
    fn statement(&self, sql: &str, params: &[&dyn ToParam], rows: bool) -> Result<Answer, StorageError> {
        let sql = numbered(sql);
        let bound: Vec<Bound<'_>> = params.iter().map(|p| Bound(p.param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let pending = self.pending.take();
        self.note(self.rt.block_on(async {
            let queued = self.prepare(&pending).await?;
            let stmt = self.tx.prepare_cached(&sql).await?;
            let answer = async {
                match rows {
                    true => self.tx.query(&stmt, &refs).await.map(Answer::Rows),
                    false => self.tx.execute(&stmt, &refs).await.map(Answer::Changed),
                }
            };
            self.pipelined(&queued, answer).await
        }))
    }

    pub(super) fn batch(&self, sql: &str) -> Result<(), StorageError> {
        self.flush()?;
        self.note(self.rt.block_on(self.tx.batch_execute(sql)))
    }

    /// Sends the writes still queued.
    fn flush(&self) -> Result<(), StorageError> {
        let pending = self.pending.take();
        if pending.is_empty() {
            return Ok(());
        }
        self.note(self.rt.block_on(async {
            let queued = self.prepare(&pending).await?;
            self.pipelined(&queued, std::future::ready(Ok(()))).await
        }))
    }

    /// The queued writes' statements, prepared (cached after the first time) before any is sent,
    /// so that they go out in the order they were queued.
    async fn prepare<'v>(
        &self,
        pending: &'v [(String, Vec<Value>)],
    ) -> Result<Vec<(tokio_postgres::Statement, &'v [Value])>, tokio_postgres::Error> {
        let mut queued = Vec::with_capacity(pending.len());
        for (sql, values) in pending {
            queued.push((self.tx.prepare_cached(sql).await?, values.as_slice()));
        }
        Ok(queued)
    }

    /// Sends the queued writes and then `last` on the connection at once, in that order, and
    /// waits for all of them: one round trip. Each request goes out when its future is first
    /// polled, so each is polled once, in order, before any is awaited. The first failure in that
    /// order is the answer (PostgreSQL fails the later statements of a failed transaction with
    /// "current transaction is aborted").
    async fn pipelined<T>(
        &self,
        queued: &[(tokio_postgres::Statement, &[Value])],
        last: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        let mut writes: Vec<_> = queued
            .iter()
            .map(|(stmt, values)| {
                Box::pin(async move {
                    let bound: Vec<Bound<'_>> = values.iter().map(|v| Bound(v.as_param())).collect();
                    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
                    self.tx.execute(stmt, &refs).await
                })
            })
            .collect();
        let mut early = Vec::with_capacity(writes.len());
        for write in &mut writes {
            early.push(poll_once(write.as_mut()).await);
        }
        let mut last = Box::pin(last);
        let last_early = poll_once(last.as_mut()).await;
        let mut first_failure = None;
        for (write, early) in writes.into_iter().zip(early) {
            let done = match early {
                Some(done) => done,
                None => write.await,
            };
            if let Err(e) = done {
                first_failure.get_or_insert(e);
            }
        }
        let last = match last_early {
            Some(done) => done,
            None => last.await,
        };
        match first_failure {
            Some(e) => Err(e),
            None => last,
        }
    }
}

/// What one statement answered.
enum Answer {
    Rows(Vec<tokio_postgres::Row>),
    Changed(u64),
}

/// `?N` parameters as PostgreSQL numbers them (`$N`); quoted text is left alone.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// A row as the store reads it: integers of every width and truth values as `i64`.
fn row(r: &tokio_postgres::Row) -> Result<Row, StorageError> {
    let get = |i: usize, ty: &Type| -> Result<Value, tokio_postgres::Error> {
        Ok(match *ty {
            Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Blob),
            _ => r.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text),
        })
    };
    r.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| get(i, c.type_()).map_err(StorageError::from))
        .collect::<Result<Vec<_>, _>>()
        .map(Row)
}

/// A parameter as tokio-postgres binds it, to whatever type PostgreSQL inferred for its place.
#[derive(Debug)]
struct Bound<'a>(Param<'a>);

impl ToSql for Bound<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => Err(format!("an integer parameter where PostgreSQL expects {ty}").into()),
            },
            Param::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => s.to_sql(ty, out),
                _ => Err(format!("a text parameter where PostgreSQL expects {ty}").into()),
            },
            Param::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(format!("a bytes parameter where PostgreSQL expects {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> StorageError {
        let kind = match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                FailureKind::Conflict
            }
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => FailureKind::Unique,
            _ => FailureKind::Other,
        };
        // The server's message only: its DETAIL may quote the values of a row.
        let message = match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
            None => format!("PostgreSQL: {e}"),
        };
        StorageError::new(kind, message)
    }
}

/// Polls a future once: its output if it is ready already, `None` otherwise (it stays pinned and
/// can be awaited later).
async fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        let polled = future.take().map(|f| f.poll(cx));
        std::task::Poll::Ready(match polled {
            Some(std::task::Poll::Ready(out)) => Some(out),
            _ => None,
        })
    })
    .await
}
