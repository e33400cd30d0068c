//! Where verifications live: a small trait and one SQL implementation, so the same queries run on
//! an embedded SQLite file (the default) and on PostgreSQL (several replicas). Reads go through
//! sqlx's `Any` driver, and on SQLite reads by key are made on the calling thread ([`inline`]).
//! Each write is one transaction body written once against [`write::WriteTx`]: on PostgreSQL it
//! runs in a transaction from the pool; on SQLite it goes to one writer thread that commits
//! whatever writes are waiting together, one `fsync` for the batch ([`group_commit`]).
//!
//! The store only queries; the rules are the lifecycle's. A change is written compare-and-set on the
//! status the service read, together with its history row and its outbox event in one
//! transaction, so a change is never recorded without its event nor the other way round.

mod attempts;
mod audit;
mod experiments;
mod figures;
mod group_commit;
mod held_reads;
mod inline;
mod lapses;
mod outbox;
#[cfg(test)]
mod plans;
mod reconcile;
mod removal;
mod setup;
mod subjects;
mod tenant_events;
mod verifications;
mod write;

pub use attempts::{AttemptState, AttemptStore, CreateAttempt, Reserved};
pub use audit::*;
pub use experiments::*;
pub use figures::*;
pub use lapses::*;
pub use outbox::{AttemptOutcome, DisabledEndpoint, DueEvent, EventState, EventStore, Recorded};
pub use reconcile::*;
pub use removal::*;
pub use subjects::*;
pub use tenant_events::*;
pub use verifications::*;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use kyc_core::{Source, Status, StatusChange, Verification};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlSafeStr};
use std::collections::BTreeMap;
use std::time::Duration;
pub(in crate::store) use write::{WriteTx, args};

/// A store failure. Its text may name tables and constraints, never row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite answered a read made on the calling thread, or a write on the writer's thread, with
    /// an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A write ended without an answer: the writer stopped (the runtime shutting down), the write
    /// panicked, or the database rolled back its whole batch.
    #[error("the write was interrupted")]
    Interrupted,
    /// SQLite's writer did not answer a write in time (the disk stalled, or another process
    /// held the file); the write may still be made.
    #[error("the store's writer did not answer in time")]
    WriterTimedOut,
    /// A SQLite store was given no file (`sqlite::memory:`): its writer and its readers are
    /// connections of their own, and only a file is shared between them.
    #[error("a SQLite store needs a file")]
    NeedsFile,
    /// Migrations failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be read back.
    #[error("corrupt row in {table}: {column}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
    },
}

impl StoreError {
    /// Whether the database gave up on a statement for a time limit: PostgreSQL's
    /// `statement_timeout` or `lock_timeout` (SQLSTATE 57014, 55P03), SQLite busy past its
    /// timeout, or no connection free in time.
    pub fn is_timeout(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut) | StoreError::WriterTimedOut => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("57014" | "55P03" | "5" | "6"))
                    || db.message().contains("database is locked")
            }
            _ => false,
        }
    }

    /// Whether PostgreSQL ended the transaction to break a deadlock or a serialization conflict
    /// (SQLSTATE 40P01, 40001): it was rolled back whole, so running it again is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("40P01" | "40001"))
        )
    }

    /// Whether trying again shortly may succeed: a time limit, or a conflict.
    pub fn is_transient(&self) -> bool {
        self.is_timeout() || self.is_conflict()
    }
}

/// How many times a transaction that lost a deadlock is run in all.
const CONFLICT_TRIES: u32 = 3;

/// Runs `transaction` again when the database ended it to break a deadlock (it was rolled back
/// whole), up to [`CONFLICT_TRIES`] times in all: tenant-wide updates of many rows can meet the
/// outbox's row-by-row writes in the other order.
pub(crate) async fn retrying_conflicts<T, F, Fut>(mut transaction: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 1;
    loop {
        match transaction().await {
            Err(error) if error.is_conflict() && tries < CONFLICT_TRIES => {
                tries += 1;
                tracing::info!("store: a transaction lost a deadlock; running it again");
            }
            done => return done,
        }
    }
}

/// The storage operations the gateway needs; one implementation per backend family.
#[async_trait]
pub trait Store:
    VerificationStore
    + SubjectStore
    + ReconcileStore
    + FigureStore
    + ExperimentStore
    + EventStore
    + TenantEventStore
    + AttemptStore
    + LapseStore
    + AuditStore
    + RemovalStore
    + Send
    + Sync
{
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The SQL store, on SQLite or PostgreSQL.
pub struct SqlStore {
    /// Reads (and, on PostgreSQL, writes).
    pool: AnyPool,
    /// Where writes go: on SQLite the one writer thread, which commits them in groups, so that
    /// writers queue there, in order, rather than in SQLite's busy handler, which sleeps.
    writer: Writer,
    /// On a SQLite file, reads by key made on the calling thread.
    inline: Option<inline::InlineReads>,
    /// On PostgreSQL, reads by key on connections kept outside the pool.
    held_reads: Option<held_reads::HeldReads>,
}

/// Where a store's writes go.
enum Writer {
    /// SQLite: the one writer thread.
    Sqlite(group_commit::GroupCommit),
    /// PostgreSQL: a transaction per write from the pool.
    Postgres,
}

impl SqlStore {
    /// Runs `body` in a transaction and answers once it is durable. On SQLite the body shares the
    /// transaction with the other writes of its batch, inside a savepoint of its own: an error it
    /// returns rolls back its statements only and is its answer, and the others commit. Once the
    /// writer has taken it, a body runs to its end even when the caller stops waiting.
    async fn write<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn WriteTx) -> write::BoxFuture<'t, Result<T, StoreError>>
            + Send
            + 'static,
    {
        match &self.writer {
            Writer::Sqlite(group) => group.submit(body).await,
            Writer::Postgres => write::in_transaction(&self.pool, body).await,
        }
    }
}

/// Now, at the precision the store keeps (microseconds), so an answer given before a write equals
/// the same row read back; shifted by [`CLOCK_OFFSET_VAR`] when it is set.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    (Utc::now() + clock_offset()).trunc_subsecs(6)
}

/// An environment variable that shifts the gateway's clock by this many milliseconds (at most
/// ten minutes either way; anything else is ignored): how the tests run a replica whose clock is
/// off, as replicas' clocks can be. Not for production.
pub const CLOCK_OFFSET_VAR: &str = "KYC_GATEWAY_CLOCK_OFFSET_MS";

fn clock_offset() -> chrono::Duration {
    static OFFSET: std::sync::OnceLock<chrono::Duration> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var(CLOCK_OFFSET_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|ms| ms.abs() <= 600_000)
            .map(chrono::Duration::milliseconds)
            .unwrap_or_default()
    })
}

/// The least verification id made at `t`: ids are `ver_` + ULID, whose first part is the
/// creation time, so the (tenant, id) index finds a period by them.
fn first_id_at(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    format!("ver_{}", ulid::Ulid::from_parts(ms, 0))
}

/// Timestamps are stored in one fixed form so that text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: Option<String>, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StoreError::Corrupt {
                table: "verifications",
                column,
            })
    })
    .transpose()
}

fn to_json<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).expect("model types serialize"))
}

fn from_json<T: serde::de::DeserializeOwned>(
    s: Option<String>,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    s.map(|s| {
        serde_json::from_str(&s).map_err(|_| StoreError::Corrupt {
            table: "verifications",
            column,
        })
    })
    .transpose()
}

/// A page of one tenant's rows: `SELECT … WHERE tenant = $1`, then the filters given, each with
/// its own bind, newest first.
struct TenantPage {
    sql: String,
    binds: Vec<String>,
}

impl TenantPage {
    fn new(columns: &str, table: &str, tenant: &str) -> TenantPage {
        TenantPage {
            sql: format!("SELECT {columns} FROM {table} WHERE tenant = $1"),
            binds: vec![tenant.to_string()],
        }
    }

    /// Adds `AND column op $n` when there is a value.
    fn and(mut self, column: &str, op: &str, value: Option<String>) -> TenantPage {
        if let Some(value) = value {
            self.binds.push(value);
            self.sql
                .push_str(&format!(" AND {column} {op} ${}", self.binds.len()));
        }
        self
    }

    /// Newest first (unless at most one row can match), `limit` rows.
    fn finish(mut self, ordered: bool, limit: u32) -> (String, Vec<String>) {
        if ordered {
            self.sql.push_str(" ORDER BY id DESC");
        }
        self.sql.push_str(&format!(" LIMIT {limit}"));
        (self.sql, self.binds)
    }
}

/// A count column.
fn count(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get(column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A query with its text binds.
fn bound(
    sql: String,
    binds: Vec<String>,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    binds
        .into_iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), |query, b| query.bind(b))
}

/// Writes one outbox event inside a transaction, due at its `due_at`, last in its line: its
/// sequence follows the line's last one, and it is the line's head (read by the due scan) only
/// when no earlier event of the line is pending. The change's compare-and-set (a status that moved, an
/// experiment stopped once) makes the transaction the only writer of that line.
pub(in crate::store) async fn insert_event(
    tx: &mut dyn WriteTx,
    event: &NewEvent,
) -> Result<(), StoreError> {
    // The head of its line (due at `due_at`) unless an earlier event of the line is pending.
    tx.execute(
        "INSERT INTO events (id, tenant, verification_id, event_type, payload, \
         created_at, state, attempts, next_attempt_at, seq, due_at) \
         SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, COALESCE(MAX(seq), 0) + 1, \
         CASE WHEN SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) > 0 THEN NULL ELSE $7 END \
         FROM events WHERE tenant = $2 AND verification_id = $3",
        &args![
            &event.id,
            &event.tenant,
            &event.verification_id,
            event.event_type,
            &event.payload,
            ts(event.created_at),
            ts(event.due_at),
        ],
    )
    .await?;
    Ok(())
}

impl StoreError {
    /// Whether a statement broke a unique constraint (a key already taken).
    pub(super) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod upgrade_tests;

#[cfg(test)]
mod conflict_tests;

#[cfg(test)]
mod group_commit_tests;

#[cfg(test)]
mod held_reads_tests;

#[cfg(test)]
mod removal_tests;

#[cfg(test)]
mod tests;
