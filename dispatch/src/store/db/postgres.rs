//! The PostgreSQL backend: a pool of connections (deadpool-postgres over tokio-postgres) shared
//! by every request of this node, and any number of nodes on one database. Each transaction is
//! `SERIALIZABLE`: PostgreSQL aborts one of two that would not give the same result run one
//! after the other, and [`super::Db::run`] runs the aborted one again, so nodes never fork a
//! receipt chain, reuse a manifest sequence or spend an enrolment token twice.
//!
//! The store's work is synchronous and runs on tokio's blocking pool; this backend drives its
//! connections on a small runtime of its own and waits for each statement there, so it works the
//! same under `serve`, in tests and in the command-line tools.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, NoTls};

use super::{FailureKind, Param, Row, StorageError, ToParam, Tx, Value};
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
        PostgresConfig { url: url.into(), pool_size: 16, schema: None }
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
        let where_ = format!("{:?} port {:?} database {:?}", pg.get_hosts(), pg.get_ports(), pg.get_dbname());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("doorstep-postgres")
            .enable_all()
            .build()?;
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
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

    pub(super) fn run<T>(&self, work: &mut impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        let rt = self.handle();
        let mut client = rt.block_on(self.pool.get()).map_err(|e| {
            DispatchError::Storage(StorageError::new(FailureKind::Other, format!("PostgreSQL pool: {e}")))
        })?;
        let tx = rt
            .block_on(client.build_transaction().isolation_level(IsolationLevel::Serializable).start())
            .map_err(StorageError::from)?;
        let pg = PgTx { tx, rt };
        let scope = Tx::new(super::Inner::Postgres(&pg));
        let out = work(&scope);
        let failed = scope.into_failure();
        let PgTx { tx, .. } = pg;
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

/// One PostgreSQL transaction.
pub struct PgTx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    rt: &'a tokio::runtime::Handle,
}

impl PgTx<'_> {
    fn note<T>(&self, result: Result<T, tokio_postgres::Error>) -> Result<T, StorageError> {
        result.map_err(StorageError::from)
    }

    pub(super) fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize, StorageError> {
        let sql = numbered(sql);
        let bound: Vec<Bound<'_>> = params.iter().map(|p| Bound(p.param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let changed = self.note(self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(&sql).await?;
            self.tx.execute(&stmt, &refs).await
        }))?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&self, sql: &str, params: &[&dyn ToParam]) -> Result<Vec<Row>, StorageError> {
        let sql = numbered(sql);
        let bound: Vec<Bound<'_>> = params.iter().map(|p| Bound(p.param())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let rows = self.note(self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(&sql).await?;
            self.tx.query(&stmt, &refs).await
        }))?;
        rows.iter().map(row).collect()
    }

    pub(super) fn batch(&self, sql: &str) -> Result<(), StorageError> {
        self.note(self.rt.block_on(self.tx.batch_execute(sql)))
    }
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
