//! Where verifications live: a small trait and one SQL implementation over sqlx's `Any` driver, so
//! the same queries run on an embedded SQLite file (the default) and on PostgreSQL (several
//! replicas). On SQLite, reads by key are made on the calling thread ([`inline`]) and writes take
//! turns on one connection.
//!
//! The store only queries; the rules are the lifecycle's. A change is written compare-and-set on the
//! status the service read, together with its history row and its outbox event in one
//! transaction, so a change is never recorded without its event nor the other way round.

mod attempts;
mod experiments;
mod figures;
mod inline;
mod outbox;
#[cfg(test)]
mod plans;
mod reconcile;
mod setup;
mod subjects;
mod tenant_events;
mod verifications;

pub use attempts::{AttemptState, AttemptStore, CreateAttempt, Reserved};
pub use experiments::*;
pub use figures::*;
pub use outbox::{AttemptOutcome, DisabledEndpoint, DueEvent, EventState, EventStore, Recorded};
pub use reconcile::*;
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

/// A store failure. Its text may name tables and constraints, never row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite answered a read made on the calling thread with an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A write's task ended before its answer (the runtime shutting down, or a panic).
    #[error("the write was interrupted")]
    Interrupted,
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
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
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
    + Send
    + Sync
{
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The SQL store, on SQLite or PostgreSQL.
pub struct SqlStore {
    /// Reads.
    pool: AnyPool,
    /// Writes. On SQLite a pool of one connection, so that writers queue here, in order, rather
    /// than in SQLite's busy handler, which sleeps (up to 100 ms a turn) and made a create at 16
    /// concurrent callers wait 25 ms at the median. On PostgreSQL the same pool as reads.
    writes: AnyPool,
    /// On a SQLite file, reads by key made on the calling thread.
    inline: Option<inline::InlineReads>,
    /// [`insert_sql`] for this backend, built once.
    insert_sql: String,
    /// PostgreSQL rather than SQLite: row locks can be skipped.
    postgres: bool,
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
pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &NewEvent,
) -> Result<(), StoreError> {
    // The head of its line (due at `due_at`) unless an earlier event of the line is pending.
    sqlx::query(
        "INSERT INTO events (id, tenant, verification_id, event_type, payload, \
         created_at, state, attempts, next_attempt_at, seq, due_at) \
         SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, COALESCE(MAX(seq), 0) + 1, \
         CASE WHEN SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) > 0 THEN NULL ELSE $7 END \
         FROM events WHERE tenant = $2 AND verification_id = $3",
    )
    .bind(&event.id)
    .bind(&event.tenant)
    .bind(&event.verification_id)
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(ts(event.created_at))
    .bind(ts(event.due_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
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
mod tests;
