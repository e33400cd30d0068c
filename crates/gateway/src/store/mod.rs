//! Where verifications live: a small trait and one SQL implementation over sqlx's `Any` driver, so
//! the same queries run on an embedded SQLite file (the default) and on PostgreSQL (several
//! replicas). On SQLite, reads by key are made on the calling thread ([`inline`]) and writes take
//! turns on one connection.
//!
//! The store only queries; the rules are the service's. A change is written compare-and-set on the
//! status the service read, together with its history row and its outbox event in one
//! transaction, so a change is never recorded without its event nor the other way round.

mod attempts;
mod inline;
mod outbox;
#[cfg(test)]
mod plans;

pub use attempts::{AttemptState, AttemptStore, CreateAttempt, Reserved};
pub use outbox::{
    Attempt, AttemptOutcome, DisabledEndpoint, DueEvent, EventFilter, EventRecord, EventState,
    EventStore, Recorded,
};

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

/// A stored verification with what only the gateway needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVerification {
    /// The owning tenant.
    pub tenant: String,
    /// SHA-256 of the canonical create request: same reference with another body is a conflict.
    pub request_hash: String,
    /// The subject's country, for the figures by country (none on rows older than the column).
    pub country: Option<String>,
    /// What callers see.
    pub verification: Verification,
}

/// Filters for listing a tenant's verifications.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Exact caller reference.
    pub reference: Option<String>,
    /// Exact subject id.
    pub subject_id: Option<String>,
    /// Exact provider instance.
    pub provider: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Exact status.
    pub status: Option<Status>,
    /// Only ids before this one (newest first paging).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A status change to record, with the verification it belongs to.
#[derive(Debug, Clone)]
pub struct NewChange {
    /// The owning tenant.
    pub tenant: String,
    /// The verification.
    pub verification_id: String,
    /// What changed, why and when.
    pub change: StatusChange,
}

/// An event for the outbox, to be delivered to the tenant's `webhook_url`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `evt_` + ULID: the `webhook-id`, the same on every attempt.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// The verification it reports on (events are delivered in order per verification); for an
    /// experiment's event, `experiment:<name>`.
    pub verification_id: String,
    /// `verification.updated` or `experiment.stopped`.
    pub event_type: &'static str,
    /// The body to send, as written at the change.
    pub payload: String,
    /// When the change happened.
    pub created_at: DateTime<Utc>,
    /// When the first delivery attempt is due.
    pub due_at: DateTime<Utc>,
}

/// What an insert did.
#[derive(Debug)]
pub enum Inserted {
    /// The row is new.
    Created,
    /// The tenant already has this reference: here is that row.
    Exists(Box<StoredVerification>),
}

/// The storage operations the gateway needs; one implementation per backend family.
#[async_trait]
pub trait Store: EventStore + AttemptStore + Send + Sync {
    /// Inserts a new verification with its first history row, or returns the one that already
    /// holds (tenant, reference).
    async fn insert(
        &self,
        row: &StoredVerification,
        created: &NewChange,
    ) -> Result<Inserted, StoreError>;
    /// One verification of a tenant.
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<StoredVerification>, StoreError>;
    /// A tenant's verification by the caller's reference.
    async fn find_by_reference(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError>;
    /// The verification a provider knows by `provider_reference` (for webhooks).
    async fn find_by_provider_reference(
        &self,
        provider: &str,
        provider_reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError>;
    /// A page of a tenant's verifications, newest first.
    async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredVerification>, StoreError>;
    /// The subject's newest verification, and its newest approved one.
    async fn subject_history(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Option<Verification>, Option<Verification>), StoreError>;
    /// Writes `next` over the tenant's stored verification if its status is still `expected`,
    /// with the change's history row and outbox event, in one transaction. `false` when another
    /// writer changed the status first (nothing is written).
    async fn save_change(
        &self,
        tenant: &str,
        expected: Status,
        next: &Verification,
        change: Option<&NewChange>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;
    /// Attributes the change of a verification to `to`, recorded since `since` by a provider
    /// read (webhook, refresh, reconciler), to `source` and `actor` instead: the read only saw
    /// what the caller's own action caused.
    async fn attribute_change(
        &self,
        tenant: &str,
        verification_id: &str,
        to: Status,
        since: DateTime<Utc>,
        source: Source,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// A verification's status changes, oldest first.
    async fn history(
        &self,
        tenant: &str,
        verification_id: &str,
    ) -> Result<Vec<StatusChange>, StoreError>;
    /// The provider's id for a tenant's subject, if remembered.
    async fn subject_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject_id: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Remembers the provider's id for a tenant's subject (first one wins).
    async fn remember_subject_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject_id: &str,
        subject_ref: &str,
    ) -> Result<(), StoreError>;
    /// Claims for the reconciler up to `limit` of a provider instance's verifications that are
    /// not final and due by `now`, in id order after `after_id` (keyset paging), and makes them
    /// not due again before `until`. Replicas claiming at once get disjoint rows: on PostgreSQL a
    /// row another replica is claiming is skipped (`FOR UPDATE SKIP LOCKED`), not waited for.
    async fn claim_unfinished(
        &self,
        provider: &str,
        after_id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredVerification>, StoreError>;
    /// When the reconciler next reads each of these verifications (a claim holds them only
    /// while it reads them), in one transaction.
    async fn schedule_reads(&self, next: &[(String, DateTime<Utc>)]) -> Result<(), StoreError>;
    /// How many of a provider instance's verifications are not final (the reconciler's backlog;
    /// a reload may not remove an instance that still has some).
    async fn unfinished_count(&self, provider: &str) -> Result<u64, StoreError>;
    /// A tenant's counts of verifications created on the UTC days `from` to `to` (`YYYY-MM-DD`,
    /// both included), per provider instance and country.
    async fn stats(&self, tenant: &str, from: &str, to: &str) -> Result<Vec<StatsRow>, StoreError>;
    /// How long those of them that reached a final status took, as counts per provider instance,
    /// country and [`decision_bucket`].
    async fn decision_times(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DecisionCount>, StoreError>;
    /// Counts a failed call to instance `provider` for a tenant's verification of a subject of
    /// `country`, on the UTC day of `at`.
    async fn count_provider_error(
        &self,
        tenant: &str,
        provider: &str,
        country: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Records that this replica's circuit for `provider` opened at `opened_at` until `closes_at`.
    async fn record_circuit_opening(
        &self,
        provider: &str,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The circuit openings of any instance that overlap `start..end`: (provider, opened,
    /// closes).
    async fn circuit_openings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, StoreError>;
    /// What routing read for a page of a tenant's verifications created from `since` to
    /// `until` (for a replay): up to `limit` of them, in id order after `after_id` (keyset
    /// paging, so a replay of any period holds one page at a time).
    async fn routed_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Routed>, StoreError>;
    /// How many of a tenant's verifications an experiment routed to each arm are in each status.
    async fn experiment_counts(
        &self,
        tenant: &str,
        experiment: &str,
    ) -> Result<Vec<ArmCount>, StoreError>;
    /// Records that an experiment's guardrail stopped it, with the tenant's event if any, in one
    /// transaction; `false` (nothing written) when it was already stopped.
    async fn stop_experiment(
        &self,
        tenant: &str,
        experiment: &str,
        at: DateTime<Utc>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;
    /// Every stopped experiment: (tenant, experiment, when).
    async fn stopped_experiments(&self)
    -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError>;
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What routing read for one stored verification, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The verification's id.
    pub id: String,
    /// The subject id (the sticky key).
    pub subject_id: String,
    /// The subject's country, when stored.
    pub country: Option<String>,
    /// The instance that ran it.
    pub provider: String,
    /// Why it went there, when stored.
    pub reason: Option<kyc_core::RoutingReason>,
}

/// How many of an experiment's verifications in one arm are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmCount {
    /// The arm.
    pub arm: kyc_core::Arm,
    /// The status.
    pub status: Status,
    /// How many.
    pub count: u64,
}

/// How many verifications of one provider instance and country took a time in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCount {
    /// The provider instance.
    pub provider: String,
    /// The country (`""` when unknown).
    pub country: String,
    /// The [`decision_bucket`].
    pub bucket: u32,
    /// How many.
    pub decided: u64,
}

/// Growth of each decision-time bucket over the one before: 5 %.
const BUCKET_GROWTH: f64 = 1.05;

/// The bucket a decision time of `ms` milliseconds is counted in: 0 for at most 1 ms, then `b`
/// for times from 1.05^(b-1) to 1.05^b ms. Counts, not times, are stored, so that percentiles
/// come from a few rows per day; their resolution is the buckets' 5 %.
pub fn decision_bucket(ms: i64) -> u32 {
    if ms <= 1 {
        0
    } else {
        // At most 896, for i64::MAX ms.
        (ms as f64).ln().div_euclid(BUCKET_GROWTH.ln()) as u32 + 1
    }
}

/// A time that stands for bucket `b`, in seconds: the geometric middle of its range, so within
/// 2.5 % of any time counted in it.
pub fn bucket_seconds(bucket: u32) -> f64 {
    if bucket == 0 {
        0.0
    } else {
        BUCKET_GROWTH.powf(f64::from(bucket) - 0.5) / 1000.0
    }
}

/// Counts of the verifications of one provider instance and country.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsRow {
    /// The provider instance.
    pub provider: String,
    /// The country (`""` for verifications stored before countries were).
    pub country: String,
    /// Created.
    pub started: u64,
    /// Created at a fallback instance.
    pub fallbacks: u64,
    /// Failed calls to the instance on these days (not by creation day).
    pub provider_errors: u64,
    /// Of those created, how many are approved, rejected, expired, abandoned, cancelled.
    pub approved: u64,
    /// See `approved`.
    pub rejected: u64,
    /// See `approved`.
    pub expired: u64,
    /// See `approved`.
    pub abandoned: u64,
    /// See `approved`.
    pub cancelled: u64,
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

const COLUMNS: &str = "id, tenant, reference, subject_id, provider, provider_reference, status, \
     reason, verification_url, expires_at, decision, metadata, request_hash, created_at, updated_at, completed_at, \
     routing, country";

/// Every migration, in order, for SQLite (`sqlite`) or PostgreSQL. Released files never change
/// (the store refuses to start on a database where an applied one differs), and each new one
/// follows the rule in docs/operations.md, "Upgrading": it only adds, so the previous release's
/// replicas keep working beside it (a test checks each file).
fn migrations(sqlite: bool) -> Vec<Migration> {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_string().into(),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            false,
        )
    };
    // On PostgreSQL, an index built concurrently: outside a transaction.
    let concurrent = |version, name: &str, sql: &'static str| Migration {
        no_tx: !sqlite,
        ..migration(version, name, sql)
    };
    vec![
        migration(1, "init", include_str!("../../migrations/0001_init.sql")),
        migration(
            2,
            "history and outbox",
            include_str!("../../migrations/0002_history_and_outbox.sql"),
        ),
        migration(
            3,
            "disabled endpoints",
            include_str!("../../migrations/0003_disabled_endpoints.sql"),
        ),
        migration(
            4,
            "indexes",
            include_str!("../../migrations/0004_indexes.sql"),
        ),
        migration(
            5,
            "routing",
            include_str!("../../migrations/0005_routing.sql"),
        ),
        migration(
            6,
            "reconcile at",
            include_str!("../../migrations/0006_reconcile_at.sql"),
        ),
        migration(7, "stats", include_str!("../../migrations/0007_stats.sql")),
        migration(
            8,
            "decision times",
            include_str!("../../migrations/0008_decision_times.sql"),
        ),
        migration(
            9,
            "experiments",
            include_str!("../../migrations/0009_experiments.sql"),
        ),
        migration(
            10,
            "provider errors",
            include_str!("../../migrations/0010_provider_errors.sql"),
        ),
        // The two backends name the aggregate that joins text differently.
        migration(
            11,
            "decision times per day",
            if sqlite {
                include_str!("../../migrations/0011_decision_times_per_day.sqlite.sql")
            } else {
                include_str!("../../migrations/0011_decision_times_per_day.postgres.sql")
            },
        ),
        migration(
            12,
            "create attempts",
            include_str!("../../migrations/0012_create_attempts.sql"),
        ),
        migration(
            13,
            "outbox fencing",
            include_str!("../../migrations/0013_outbox_fencing.sql"),
        ),
        migration(
            14,
            "outbox heads",
            include_str!("../../migrations/0014_outbox_heads.sql"),
        ),
        migration(
            15,
            "endpoint health",
            include_str!("../../migrations/0015_endpoint_health.sql"),
        ),
        concurrent(
            16,
            "unsequenced events",
            if sqlite {
                include_str!("../../migrations/0016_unsequenced_events.sqlite.sql")
            } else {
                include_str!("../../migrations/0016_unsequenced_events.postgres.sql")
            },
        ),
    ]
}

/// The PostgreSQL advisory lock the replicas take in turn to migrate ("kyc_migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b79_635f_6d69_6772;

/// Runs `migrations` (those up to `up_to`, or all) on one connection of `pool`. On PostgreSQL
/// that connection has no statement time limit while it migrates (building an index on a large
/// table takes as long as it takes; the lock time limit stays, so a migration that cannot get its
/// lock fails instead of queueing every writer behind it), and an index a concurrent build left
/// invalid (a build that failed, then `IF NOT EXISTS` on the next start) is built again.
async fn migrate(
    pool: &AnyPool,
    migrations: &[Migration],
    up_to: Option<i64>,
    limits: Option<&str>,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let postgres = conn.backend_name() == "PostgreSQL";
    if postgres {
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut *conn)
            .await?;
    }
    let wanted: Vec<Migration> = migrations
        .iter()
        .filter(|m| up_to.is_none_or(|v| m.version <= v))
        .cloned()
        .collect();
    let mut migrator = Migrator::with_migrations(wanted);
    if postgres {
        // One replica migrates at a time. The others poll for the lock rather than block on it:
        // a statement blocked on it holds a snapshot, and a concurrent index build waits for
        // every older snapshot to end, so the two would deadlock (sqlx's own lock blocks).
        while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        migrator.set_locking(false);
    }
    let result = migrator.run(&mut *conn).await;
    if postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    if postgres && result.is_ok() {
        let invalid: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT i.indisvalid AND n.nspname = current_schema()",
        )
        .fetch_all(&mut *conn)
        .await?;
        for index in invalid {
            tracing::warn!(%index, "an index build was left invalid; building it again");
            sqlx::raw_sql(AssertSqlSafe(format!(
                "REINDEX INDEX CONCURRENTLY \"{}\"",
                index.replace('"', "")
            )))
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some(limits) = limits.filter(|_| postgres) {
        sqlx::raw_sql(AssertSqlSafe(limits.to_string()))
            .execute(&mut *conn)
            .await?;
    }
    result?;
    Ok(())
}

impl SqlStore {
    /// Connects (creating a SQLite file if needed) and runs the migrations, with the default
    /// time limits.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        SqlStore::connect_with(&crate::config::StoreConfig::at(url)).await
    }

    /// Connects as `config` says: on PostgreSQL each connection gets its `statement_timeout`
    /// and `lock_timeout`, so a stuck lock or a runaway query ends as an error
    /// ([`StoreError::is_timeout`]) instead of holding a request or a job for ever.
    pub async fn connect_with(config: &crate::config::StoreConfig) -> Result<SqlStore, StoreError> {
        let url = config.url.as_str();
        let limits = format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            config.statement_timeout_ms.clamp(100, 600_000),
            config.lock_timeout_ms.clamp(100, 600_000)
        );
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let pool = |max_connections| {
            let limits = limits.clone();
            AnyPoolOptions::new()
                .max_connections(max_connections)
                // No ping before each use: a broken connection shows as the query's error (and
                // sqlx still tests each one as it goes back to the pool). The ping was a third
                // round trip on every read.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    let limits = limits.clone();
                    Box::pin(async move {
                        if !sqlite {
                            sqlx::raw_sql(AssertSqlSafe(limits))
                                .execute(&mut *conn)
                                .await?;
                        }
                        if sqlite {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let (pool, writes) = if sqlite {
            let writes = pool(1).connect(&url).await?;
            (pool(4).connect(&url).await?, writes)
        } else {
            let pool = pool(16).connect(&url).await?;
            (pool.clone(), pool)
        };
        migrate(&writes, &migrations(sqlite), None, Some(&limits)).await?;
        let inline = if sqlite {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let path = options.get_filename();
            let in_memory = path.as_os_str().is_empty() || path.as_os_str() == ":memory:";
            // As many as the runtime has threads to read on.
            let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
            (!in_memory)
                .then(|| inline::InlineReads::open(path, threads))
                .transpose()?
        } else {
            None
        };
        Ok(SqlStore {
            pool,
            writes,
            inline,
            insert_sql: insert_sql(!sqlite),
            postgres: !sqlite,
        })
    }

    async fn fetch_one_where(
        &self,
        condition: &'static str,
        binds: &[&str],
    ) -> Result<Option<StoredVerification>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM verifications WHERE {condition}");
        if let Some(read) = self.inline.as_ref().and_then(|inline| {
            inline.first_row(&sql, binds, |row| {
                stored_from(|i| Ok(row.get::<_, Option<String>>(i)?))
            })
        }) {
            return read;
        }
        bound(sql, binds.iter().map(|b| b.to_string()).collect())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_to_stored(&r))
            .transpose()
    }

    /// Counts a verification that reached a final status in its creation day's row: the status,
    /// and its decision time merged into the row's `decision_times` (read, then written, with
    /// the row locked on PostgreSQL, so replicas finishing verifications of one day at once
    /// take turns).
    async fn count_decision(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant: &str,
        next: &Verification,
    ) -> Result<(), StoreError> {
        // One of the five final statuses' names.
        let column = next.status.as_str();
        let took = next.completed_at.unwrap_or(next.updated_at) - next.created_at;
        let bucket = decision_bucket(took.num_milliseconds());
        let lock = if self.postgres {
            " FOR UPDATE OF s"
        } else {
            ""
        };
        let day = sqlx::query(AssertSqlSafe(format!(
            "SELECT s.day, s.provider, s.country, s.decision_times FROM verifications v \
             JOIN stats_daily s ON s.tenant = v.tenant AND s.day = substr(v.created_at, 1, 10) \
             AND s.provider = v.provider AND s.country = COALESCE(v.country, '') \
             WHERE v.tenant = $1 AND v.id = $2{lock}"
        )))
        .bind(tenant)
        .bind(&next.id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(day) = day {
            let times: String = day.try_get(3)?;
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE stats_daily SET {column} = {column} + 1, decision_times = $5 \
                 WHERE tenant = $1 AND day = $2 AND provider = $3 AND country = $4"
            )))
            .bind(tenant)
            .bind(day.try_get::<String, _>(0)?)
            .bind(day.try_get::<String, _>(1)?)
            .bind(day.try_get::<String, _>(2)?)
            .bind(with_decision_time(&times, bucket))
            .execute(&mut **tx)
            .await?;
        } else {
            // The day's row is made with the verification; one missing (a store restored in
            // part, say) is made now.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO stats_daily (tenant, day, provider, country, {column}, \
                 decision_times) \
                 SELECT tenant, substr(created_at, 1, 10), provider, COALESCE(country, ''), 1, $3 \
                 FROM verifications WHERE tenant = $1 AND id = $2 \
                 ON CONFLICT (tenant, day, provider, country) DO UPDATE SET \
                 {column} = stats_daily.{column} + 1"
            )))
            .bind(tenant)
            .bind(&next.id)
            .bind(with_decision_time("", bucket))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The rows of a rollup query over a tenant's days: `[tenant, from, to]` bind `$1` to `$3`.
    async fn days_of(&self, sql: String, binds: [&str; 3]) -> Result<Vec<AnyRow>, StoreError> {
        Ok(bound(sql, binds.map(str::to_string).to_vec())
            .fetch_all(&self.pool)
            .await?)
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

fn row_to_stored(row: &AnyRow) -> Result<StoredVerification, StoreError> {
    stored_from(|i| Ok(row.try_get::<Option<String>, _>(i)?))
}

/// A verification from its row: `text(i)` is column `i` of [`COLUMNS`] (all of them are text).
fn stored_from(
    text: impl Fn(usize) -> Result<Option<String>, StoreError>,
) -> Result<StoredVerification, StoreError> {
    let corrupt = |column| StoreError::Corrupt {
        table: "verifications",
        column,
    };
    let required = |i, column| text(i)?.ok_or(corrupt(column));
    let status = required(6, "status")?;
    let verification = Verification {
        id: required(0, "id")?,
        reference: required(2, "reference")?,
        subject_id: required(3, "subject_id")?,
        provider: required(4, "provider")?,
        provider_reference: required(5, "provider_reference")?,
        status: Status::parse(&status).ok_or(corrupt("status"))?,
        reason: from_json(text(7)?, "reason")?,
        verification_url: text(8)?,
        expires_at: parse_ts(text(9)?, "expires_at")?,
        decision: from_json(text(10)?, "decision")?,
        metadata: from_json(text(11)?, "metadata")?,
        routing: from_json(text(16)?, "routing")?,
        created_at: parse_ts(Some(required(13, "created_at")?), "created_at")?
            .expect("some in, some out"),
        updated_at: parse_ts(Some(required(14, "updated_at")?), "updated_at")?
            .expect("some in, some out"),
        completed_at: parse_ts(text(15)?, "completed_at")?,
    };
    Ok(StoredVerification {
        tenant: required(1, "tenant")?,
        request_hash: required(12, "request_hash")?,
        country: text(17)?,
        verification,
    })
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

/// The SQL and binds of a list of a tenant's verifications (also read by the query-plan test).
fn list_query(tenant: &str, filter: &ListFilter) -> (String, Vec<String>) {
    TenantPage::new(COLUMNS, "verifications", tenant)
        .and("reference", "=", filter.reference.clone())
        .and("subject_id", "=", filter.subject_id.clone())
        .and("status", "=", filter.status.map(|s| s.as_str().to_string()))
        .and("provider", "=", filter.provider.clone())
        // Times are stored as fixed-width RFC 3339 UTC text, so text order is time order.
        .and("created_at", ">=", filter.created_after.map(ts))
        .and("created_at", "<", filter.created_before.map(ts))
        .and("id", "<", filter.before_id.clone())
        // A reference names at most one verification: nothing to order.
        .finish(filter.reference.is_none(), filter.limit)
}

/// A tenant's verification by id.
const BY_ID: &str = "tenant = $1 AND id = $2";
/// A tenant's verification by the caller's reference.
const BY_REFERENCE: &str = "tenant = $1 AND reference = $2";
/// A provider instance's verification by the provider's id (webhooks).
const BY_PROVIDER_REFERENCE: &str = "provider = $1 AND provider_reference = $2";
/// The subject's newest verification.
const SUBJECT_LATEST: &str = "tenant = $1 AND subject_id = $2 ORDER BY id DESC LIMIT 1";
/// The subject's newest approval.
const SUBJECT_APPROVED: &str = "tenant = $1 AND subject_id = $2 AND status = 'approved' \
     ORDER BY completed_at DESC LIMIT 1";
/// A provider instance's unfinished verifications due for the reconciler by `$3`, a page after an
/// id.
const UNFINISHED: &str = "provider = $1 AND status IN ('pending', 'in_progress', 'in_review') \
     AND id > $2 AND (reconcile_at IS NULL OR reconcile_at <= $3) ORDER BY id";
/// The reconciler's claim: one statement, so the rows it picks are the rows it marks. The CTE is
/// materialized so that PostgreSQL runs the locking select once. SQLite has no row locks to skip;
/// its one writer at a time makes the statement atomic.
fn claim_unfinished_sql(postgres: bool, limit: u32) -> String {
    let skip_locked = if postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    format!(
        "WITH due AS MATERIALIZED (SELECT id FROM verifications WHERE {UNFINISHED} \
         LIMIT {limit}{skip_locked}) \
         UPDATE verifications SET reconcile_at = $4 WHERE id IN (SELECT id FROM due) \
         RETURNING {COLUMNS}"
    )
}

/// An experiment's verifications counted per arm and status (the partial index on experiment).
const EXPERIMENT_COUNTS: &str = "SELECT arm, status, COUNT(*) FROM verifications \
     WHERE tenant = $1 AND experiment = $2 AND arm IS NOT NULL GROUP BY arm, status";

/// What routing reads of a tenant's verifications created in a period, in id order: ids between
/// two ULID bounds ($2, $3) and after the last page's ($6), times between $4 and $5.
const ROUTED_SINCE: &str = "SELECT subject_id, country, provider, routing, id FROM verifications \
     WHERE tenant = $1 AND id >= $2 AND id < $3 AND created_at >= $4 AND created_at < $5 \
     AND id > $6 ORDER BY id";

/// The decision times of a tenant's day rows from $2 to $3.
const DECISION_DAYS: &str = "SELECT provider, country, decided_at_once, decision_times \
     FROM stats_daily WHERE tenant = $1 AND day >= $2 AND day <= $3";

/// A verification's history.
const HISTORY: &str = "SELECT from_status, to_status, source, actor, at FROM status_changes \
     WHERE tenant = $1 AND verification_id = $2 ORDER BY id";

/// A new verification ($1 to $18, the [`COLUMNS`], then $19 and $20, its experiment and arm),
/// its first history row ($21 to $28: id, tenant, verification id, from, to, source, actor, at)
/// and its count in `stats_daily` ($29: 1 when it went to a fallback), all or nothing, in one
/// round trip: on PostgreSQL one statement, on SQLite one batch that the connection's worker
/// runs at once (a transaction statement by statement was five hand-offs to that thread, with the
/// one writer connection held throughout).
fn insert_sql(postgres: bool) -> String {
    let verification = format!(
        "INSERT INTO verifications ({COLUMNS}, experiment, arm) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20)"
    );
    let change = "INSERT INTO status_changes (id, tenant, verification_id, from_status, \
         to_status, source, actor, at)";
    let counted = |status: &str| format!("CASE WHEN $7 = '{status}' THEN 1 ELSE 0 END");
    let stats = "INSERT INTO stats_daily (tenant, day, provider, country, started, fallbacks, \
         approved, rejected, expired, abandoned, cancelled, decided_at_once)";
    // Final already at creation: decided in no time.
    let final_now = "CASE WHEN $7 IN ('approved', 'rejected', 'expired', 'abandoned', \
         'cancelled') THEN 1 ELSE 0 END";
    let counts = format!(
        "$2, substr($14, 1, 10), $5, COALESCE($18, ''), 1, $29, {}, {}, {}, {}, {}, {final_now}",
        counted("approved"),
        counted("rejected"),
        counted("expired"),
        counted("abandoned"),
        counted("cancelled"),
    );
    let add = "ON CONFLICT (tenant, day, provider, country) DO UPDATE SET \
         started = stats_daily.started + 1, fallbacks = stats_daily.fallbacks + excluded.fallbacks, \
         approved = stats_daily.approved + excluded.approved, \
         rejected = stats_daily.rejected + excluded.rejected, \
         expired = stats_daily.expired + excluded.expired, \
         abandoned = stats_daily.abandoned + excluded.abandoned, \
         cancelled = stats_daily.cancelled + excluded.cancelled, \
         decided_at_once = stats_daily.decided_at_once + excluded.decided_at_once";
    // The create's reservation is settled by the verification: it goes with the same write.
    let settled = "DELETE FROM create_attempts WHERE tenant = $2 AND reference = $3";
    if postgres {
        // Selected from `created`, so nothing is counted when the verification is not written.
        format!(
            "WITH created AS ({verification} RETURNING id), \
             history AS ({change} SELECT $21, $22, $23, $24, $25, $26, $27, $28 FROM created), \
             settled AS ({settled} AND EXISTS (SELECT 1 FROM created)) \
             {stats} SELECT {counts} FROM created {add}"
        )
    } else {
        format!(
            "BEGIN IMMEDIATE; {verification}; \
             {change} VALUES ($21, $22, $23, $24, $25, $26, $27, $28); \
             {settled}; \
             {stats} VALUES ({counts}) {add}; COMMIT"
        )
    }
}

/// The decision times of a day's row (`stats_daily.decision_times`): `bucket:count` pairs, comma
/// separated, one per [`decision_bucket`] that has any. A pair that does not read is skipped.
fn decision_times_of(text: &str) -> impl Iterator<Item = (u32, u64)> + '_ {
    text.split(',').filter_map(|pair| {
        let (bucket, count) = pair.split_once(':')?;
        Some((bucket.parse().ok()?, count.parse().ok()?))
    })
}

/// `text` with one more time in `bucket`, buckets in ascending order.
fn with_decision_time(text: &str, bucket: u32) -> String {
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for (b, count) in decision_times_of(text) {
        *counts.entry(b).or_default() += count;
    }
    *counts.entry(bucket).or_default() += 1;
    counts
        .iter()
        .map(|(b, count)| format!("{b}:{count}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes one history row inside a transaction. Its id is a ULID, so history reads in time order.
async fn insert_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &NewChange,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, source, \
         actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(format!("chg_{}", ulid::Ulid::generate()))
    .bind(&c.tenant)
    .bind(&c.verification_id)
    .bind(c.change.from.map(Status::as_str))
    .bind(c.change.to.as_str())
    .bind(c.change.source.as_str())
    .bind(&c.change.actor)
    .bind(ts(c.change.at))
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    async fn insert(
        &self,
        row: &StoredVerification,
        created: &NewChange,
    ) -> Result<Inserted, StoreError> {
        let v = &row.verification;
        let c = &created.change;
        let query = sqlx::query(AssertSqlSafe(self.insert_sql.clone()))
            .bind(v.id.clone())
            .bind(row.tenant.clone())
            .bind(v.reference.clone())
            .bind(v.subject_id.clone())
            .bind(v.provider.clone())
            .bind(v.provider_reference.clone())
            .bind(v.status.as_str())
            .bind(to_json(&v.reason))
            .bind(v.verification_url.clone())
            .bind(v.expires_at.map(ts))
            .bind(to_json(&v.decision))
            .bind(to_json(&v.metadata))
            .bind(row.request_hash.clone())
            .bind(ts(v.created_at))
            .bind(ts(v.updated_at))
            .bind(v.completed_at.map(ts))
            .bind(to_json(&v.routing))
            .bind(row.country.clone())
            .bind(v.routing.as_ref().and_then(|r| r.experiment.clone()))
            .bind(
                v.routing
                    .as_ref()
                    .and_then(|r| r.arm)
                    .map(kyc_core::Arm::as_str),
            )
            .bind(format!("chg_{}", ulid::Ulid::generate()))
            .bind(created.tenant.clone())
            .bind(created.verification_id.clone())
            .bind(c.from.map(Status::as_str))
            .bind(c.to.as_str())
            .bind(c.source.as_str())
            .bind(c.actor.clone())
            .bind(ts(c.at))
            .bind(i64::from(v.routing.as_ref().is_some_and(|r| {
                r.reason == kyc_core::RoutingReason::Fallback
            })));
        let writes = self.writes.clone();
        let sqlite = !self.postgres;
        // A task of its own, so that a request given up half way (a timeout, a caller gone)
        // cannot leave a SQLite batch stopped inside its transaction.
        let result = tokio::spawn(async move {
            let mut connection = writes.acquire().await?;
            let result = query.execute(&mut *connection).await;
            if result.is_err() && sqlite {
                // The batch stopped at the failing statement, inside its transaction.
                if sqlx::query("ROLLBACK")
                    .execute(&mut *connection)
                    .await
                    .is_err()
                {
                    connection.close_on_drop();
                }
            }
            result
        })
        .await
        .map_err(|_| StoreError::Interrupted)?;
        match result {
            Ok(_) => Ok(Inserted::Created),
            Err(e) if is_unique_violation(&e) => {
                match self.find_by_reference(&row.tenant, &v.reference).await? {
                    Some(existing) => Ok(Inserted::Exists(Box::new(existing))),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<StoredVerification>, StoreError> {
        self.fetch_one_where(BY_ID, &[tenant, id]).await
    }

    async fn find_by_reference(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError> {
        self.fetch_one_where(BY_REFERENCE, &[tenant, reference])
            .await
    }

    async fn find_by_provider_reference(
        &self,
        provider: &str,
        provider_reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError> {
        self.fetch_one_where(BY_PROVIDER_REFERENCE, &[provider, provider_reference])
            .await
    }

    async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredVerification>, StoreError> {
        let (sql, binds) = list_query(tenant, filter);
        let rows = bound(sql, binds).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_stored).collect()
    }

    async fn subject_history(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Option<Verification>, Option<Verification>), StoreError> {
        let latest = self
            .fetch_one_where(SUBJECT_LATEST, &[tenant, subject_id])
            .await?;
        let approved = self
            .fetch_one_where(SUBJECT_APPROVED, &[tenant, subject_id])
            .await?;
        Ok((
            latest.map(|s| s.verification),
            approved.map(|s| s.verification),
        ))
    }

    async fn save_change(
        &self,
        tenant: &str,
        expected: Status,
        next: &Verification,
        change: Option<&NewChange>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writes.begin().await?;
        let done = sqlx::query(
            "UPDATE verifications SET status = $1, reason = $2, verification_url = $3, \
             expires_at = $4, decision = $5, updated_at = $6, completed_at = $7 \
             WHERE tenant = $8 AND id = $9 AND status = $10",
        )
        .bind(next.status.as_str())
        .bind(to_json(&next.reason))
        .bind(&next.verification_url)
        .bind(next.expires_at.map(ts))
        .bind(to_json(&next.decision))
        .bind(ts(next.updated_at))
        .bind(next.completed_at.map(ts))
        .bind(tenant)
        .bind(&next.id)
        .bind(expected.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(change) = change {
            insert_change(&mut tx, change).await?;
        }
        if next.status.is_final() && !expected.is_final() {
            self.count_decision(&mut tx, tenant, next).await?;
        }
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn attribute_change(
        &self,
        tenant: &str,
        verification_id: &str,
        to: Status,
        since: DateTime<Utc>,
        source: Source,
        actor: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE status_changes SET source = $1, actor = $2 \
             WHERE tenant = $3 AND verification_id = $4 AND to_status = $5 AND at >= $6 \
             AND source IN ('webhook', 'refresh', 'reconciler')",
        )
        .bind(source.as_str())
        .bind(actor)
        .bind(tenant)
        .bind(verification_id)
        .bind(to.as_str())
        .bind(ts(since))
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn history(
        &self,
        tenant: &str,
        verification_id: &str,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let rows = sqlx::query(HISTORY)
            .bind(tenant)
            .bind(verification_id)
            .fetch_all(&self.pool)
            .await?;
        let corrupt = |column| StoreError::Corrupt {
            table: "status_changes",
            column,
        };
        rows.iter()
            .map(|row| {
                let from: Option<String> = row.try_get("from_status")?;
                let to: String = row.try_get("to_status")?;
                let source: String = row.try_get("source")?;
                Ok(StatusChange {
                    from: from
                        .map(|f| Status::parse(&f).ok_or(corrupt("from_status")))
                        .transpose()?,
                    to: Status::parse(&to).ok_or(corrupt("to_status"))?,
                    source: Source::parse(&source).ok_or(corrupt("source"))?,
                    actor: row.try_get("actor")?,
                    at: parse_ts(Some(row.try_get("at")?), "at")?.expect("some in, some out"),
                })
            })
            .collect()
    }

    async fn subject_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject_id: &str,
    ) -> Result<Option<String>, StoreError> {
        const SUBJECT_REF: &str = "SELECT subject_ref FROM subject_refs \
             WHERE tenant = $1 AND provider = $2 AND subject_id = $3";
        if let Some(read) = self.inline.as_ref().and_then(|inline| {
            inline.first_row(SUBJECT_REF, &[tenant, provider, subject_id], |row| {
                Ok(row.get(0)?)
            })
        }) {
            return read;
        }
        let row = sqlx::query(SUBJECT_REF)
            .bind(tenant)
            .bind(provider)
            .bind(subject_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("subject_ref")).transpose()?)
    }

    async fn remember_subject_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject_id: &str,
        subject_ref: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subject_refs (tenant, provider, subject_id, subject_ref, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, provider, subject_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(provider)
        .bind(subject_id)
        .bind(subject_ref)
        .bind(ts(Utc::now()))
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn claim_unfinished(
        &self,
        provider: &str,
        after_id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredVerification>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(claim_unfinished_sql(self.postgres, limit)))
            .bind(provider)
            .bind(after_id)
            .bind(ts(now))
            .bind(ts(until))
            .fetch_all(&self.writes)
            .await?;
        let mut claimed = rows
            .iter()
            .map(row_to_stored)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING keeps no order; the caller pages on the last id.
        claimed.sort_by(|a, b| a.verification.id.cmp(&b.verification.id));
        Ok(claimed)
    }

    async fn schedule_reads(&self, next: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tx = self.writes.begin().await?;
        for (id, at) in next {
            sqlx::query("UPDATE verifications SET reconcile_at = $1 WHERE id = $2")
                .bind(ts(*at))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn unfinished_count(&self, provider: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM verifications WHERE provider = $1 \
             AND status IN ('pending', 'in_progress', 'in_review')",
        )
        .bind(provider)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn stats(&self, tenant: &str, from: &str, to: &str) -> Result<Vec<StatsRow>, StoreError> {
        let sum = |column: &str| format!("CAST(SUM({column}) AS BIGINT) AS {column}");
        let sums = [
            "started",
            "fallbacks",
            "provider_errors",
            "approved",
            "rejected",
            "expired",
            "abandoned",
            "cancelled",
        ]
        .map(sum)
        .join(", ");
        let rows = self
            .days_of(
                format!(
                    "SELECT provider, country, {sums} FROM stats_daily \
                     WHERE tenant = $1 AND day >= $2 AND day <= $3 \
                     GROUP BY provider, country ORDER BY provider, country"
                ),
                [tenant, from, to],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StatsRow {
                    provider: row.try_get("provider")?,
                    country: row.try_get("country")?,
                    started: count(row, "started")?,
                    fallbacks: count(row, "fallbacks")?,
                    provider_errors: count(row, "provider_errors")?,
                    approved: count(row, "approved")?,
                    rejected: count(row, "rejected")?,
                    expired: count(row, "expired")?,
                    abandoned: count(row, "abandoned")?,
                    cancelled: count(row, "cancelled")?,
                })
            })
            .collect()
    }

    async fn decision_times(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DecisionCount>, StoreError> {
        // The same day rows as `stats` reads, in a query of their own: summing the counts in SQL
        // and fetching only these four columns is faster than fetching every column of every
        // row once (sqlx decodes column by column; measured with kyc-bench (e)).
        let rows = self
            .days_of(DECISION_DAYS.to_string(), [tenant, from, to])
            .await?;
        // A day's row holds its own counts: summed here per instance and country, a few rows per
        // day of the period.
        let mut sums: BTreeMap<(String, String), BTreeMap<u32, u64>> = BTreeMap::new();
        for row in &rows {
            let buckets = sums.entry((row.try_get(0)?, row.try_get(1)?)).or_default();
            let at_once = count(row, "decided_at_once")?;
            let times: String = row.try_get(3)?;
            let counts = std::iter::once((0, at_once)).chain(decision_times_of(&times));
            for (bucket, decided) in counts.filter(|(_, n)| *n > 0) {
                *buckets.entry(bucket).or_default() += decided;
            }
        }
        Ok(sums
            .into_iter()
            .flat_map(|((provider, country), buckets)| {
                buckets
                    .into_iter()
                    .map(move |(bucket, decided)| DecisionCount {
                        provider: provider.clone(),
                        country: country.clone(),
                        bucket,
                        decided,
                    })
            })
            .collect())
    }

    async fn count_provider_error(
        &self,
        tenant: &str,
        provider: &str,
        country: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stats_daily (tenant, day, provider, country, provider_errors) \
             VALUES ($1, $2, $3, $4, 1) ON CONFLICT (tenant, day, provider, country) \
             DO UPDATE SET provider_errors = stats_daily.provider_errors + 1",
        )
        .bind(tenant)
        .bind(at.date_naive().to_string())
        .bind(provider)
        .bind(country)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn record_circuit_opening(
        &self,
        provider: &str,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO circuit_openings (provider, opened_at, closes_at) VALUES ($1, $2, $3)",
        )
        .bind(provider)
        .bind(ts(opened_at))
        .bind(ts(closes_at))
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn circuit_openings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, opened_at, closes_at FROM circuit_openings \
             WHERE opened_at < $1 AND closes_at > $2",
        )
        .bind(ts(end))
        .bind(ts(start))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let at = |i, column| {
                    parse_ts(row.try_get(i)?, column)?.ok_or(StoreError::Corrupt {
                        table: "circuit_openings",
                        column,
                    })
                };
                Ok((row.try_get(0)?, at(1, "opened_at")?, at(2, "closes_at")?))
            })
            .collect()
    }

    async fn routed_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Routed>, StoreError> {
        // Ids are `ver_` + ULID, whose first part is the creation time: the (tenant, id) index
        // finds the period; created_at decides within the millisecond.
        let first_id = |t: DateTime<Utc>| {
            let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
            format!("ver_{}", ulid::Ulid::from_parts(ms, 0))
        };
        let rows = sqlx::query(AssertSqlSafe(format!("{ROUTED_SINCE} LIMIT {limit}")))
            .bind(tenant)
            .bind(first_id(since))
            .bind(first_id(until + chrono::Duration::milliseconds(1)))
            .bind(ts(since))
            .bind(ts(until))
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let routing: Option<kyc_core::RoutingRecord> =
                    from_json(row.try_get(3)?, "routing")?;
                Ok(Routed {
                    subject_id: row.try_get(0)?,
                    country: row.try_get(1)?,
                    provider: row.try_get(2)?,
                    reason: routing.map(|r| r.reason),
                    id: row.try_get(4)?,
                })
            })
            .collect()
    }

    async fn experiment_counts(
        &self,
        tenant: &str,
        experiment: &str,
    ) -> Result<Vec<ArmCount>, StoreError> {
        let rows = sqlx::query(EXPERIMENT_COUNTS)
            .bind(tenant)
            .bind(experiment)
            .fetch_all(&self.pool)
            .await?;
        let corrupt = |column| StoreError::Corrupt {
            table: "verifications",
            column,
        };
        rows.iter()
            .map(|row| {
                let arm: String = row.try_get(0)?;
                let status: String = row.try_get(1)?;
                let count: i64 = row.try_get(2)?;
                Ok(ArmCount {
                    arm: kyc_core::Arm::parse(&arm).ok_or(corrupt("arm"))?,
                    status: Status::parse(&status).ok_or(corrupt("status"))?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn stop_experiment(
        &self,
        tenant: &str,
        experiment: &str,
        at: DateTime<Utc>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writes.begin().await?;
        let stopped = sqlx::query(
            "INSERT INTO experiment_stops (tenant, name, stopped_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, name) DO NOTHING",
        )
        .bind(tenant)
        .bind(experiment)
        .bind(ts(at))
        .execute(&mut *tx)
        .await?;
        if stopped.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn stopped_experiments(
        &self,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query("SELECT tenant, name, stopped_at FROM experiment_stops")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let at = parse_ts(row.try_get(2)?, "stopped_at")?.expect("some in, some out");
                Ok((row.try_get(0)?, row.try_get(1)?, at))
            })
            .collect()
    }

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
mod tests {
    //! One suite, run against a SQLite file and against PostgreSQL. The PostgreSQL run is
    //! `#[ignore]`d (plain `cargo test` lists it as ignored); `.ci/run` includes it and sets
    //! `KYC_TEST_POSTGRES_URL`, and without that variable it fails rather than pass unrun.

    use super::*;
    use kyc_core::{Decision, Reason};

    fn sample(tenant: &str, reference: &str, subject: &str) -> StoredVerification {
        let t = now();
        StoredVerification {
            tenant: tenant.into(),
            request_hash: format!("hash-{reference}"),
            country: Some("CL".into()),
            verification: Verification {
                id: format!("ver_{}", ulid::Ulid::generate()),
                reference: reference.into(),
                subject_id: subject.into(),
                provider: "p1".into(),
                provider_reference: format!("pref-{tenant}-{reference}"),
                status: Status::Pending,
                reason: None,
                verification_url: Some("https://example.test/v".into()),
                expires_at: Some(t),
                decision: None,
                metadata: None,
                routing: None,
                created_at: t,
                updated_at: t,
                completed_at: None,
            },
        }
    }

    fn created(row: &StoredVerification) -> NewChange {
        change(row, None, row.verification.status, Source::Create)
    }

    fn change(
        row: &StoredVerification,
        from: Option<Status>,
        to: Status,
        source: Source,
    ) -> NewChange {
        NewChange {
            tenant: row.tenant.clone(),
            verification_id: row.verification.id.clone(),
            change: StatusChange {
                from,
                to,
                source,
                actor: None,
                at: now(),
            },
        }
    }

    /// `row` moved to `status`, with a reason and a decision.
    fn moved(row: &StoredVerification, status: Status) -> Verification {
        Verification {
            status,
            reason: Some(Reason {
                code: "c".into(),
                provider_code: Some("pc".into()),
                message: None,
            }),
            decision: Some(Decision::default()),
            updated_at: now(),
            completed_at: status.is_final().then(now),
            ..row.verification.clone()
        }
    }

    async fn count(store: &SqlStore, table: &str, verification_id: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE verification_id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(verification_id)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    async fn suite(store: &SqlStore) {
        let tenant = format!("t_{}", ulid::Ulid::generate());
        let other = format!("o_{}", ulid::Ulid::generate());
        let a = sample(&tenant, "ref-a", "sub-1");
        let inserted = store.insert(&a, &created(&a)).await.unwrap();
        assert!(matches!(inserted, Inserted::Created));
        // The same reference again returns the first row, not a second one, and no history.
        let dup = sample(&tenant, "ref-a", "sub-1");
        match store.insert(&dup, &created(&dup)).await.unwrap() {
            Inserted::Exists(existing) => assert_eq!(*existing, a),
            Inserted::Created => panic!("a second row for one reference"),
        }
        assert_eq!(
            count(store, "status_changes", &dup.verification.id).await,
            0
        );
        // Tenants are separate.
        assert_eq!(
            store.get(&tenant, &a.verification.id).await.unwrap(),
            Some(a.clone())
        );
        assert_eq!(store.get(&other, &a.verification.id).await.unwrap(), None);
        let found = store
            .find_by_provider_reference("p1", &a.verification.provider_reference)
            .await
            .unwrap();
        assert_eq!(found, Some(a.clone()));

        // A change is written compare-and-set on the status read, with its history and event.
        let next = moved(&a, Status::InProgress);
        let event = NewEvent {
            id: format!("evt_{}", ulid::Ulid::generate()),
            tenant: tenant.clone(),
            verification_id: a.verification.id.clone(),
            event_type: "verification.updated",
            payload: "{}".into(),
            created_at: now(),
            due_at: now(),
        };
        let step = change(
            &a,
            Some(Status::Pending),
            Status::InProgress,
            Source::Webhook,
        );
        let saved = store
            .save_change(&tenant, Status::Pending, &next, Some(&step), Some(&event))
            .await
            .unwrap();
        assert!(saved);
        // Another writer that read `pending` too loses, and writes nothing.
        let stale = moved(&a, Status::Approved);
        let lost = store
            .save_change(&tenant, Status::Pending, &stale, Some(&step), Some(&event))
            .await
            .unwrap();
        assert!(!lost);
        // Another tenant cannot write it at all.
        let foreign = store
            .save_change(&other, Status::InProgress, &stale, None, None)
            .await
            .unwrap();
        assert!(!foreign);
        let back = store
            .get(&tenant, &a.verification.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.verification, next);
        assert_eq!(count(store, "events", &a.verification.id).await, 1);
        let history = store.history(&tenant, &a.verification.id).await.unwrap();
        assert_eq!(
            history
                .iter()
                .map(|c| (c.from, c.to, c.source))
                .collect::<Vec<_>>(),
            [
                (None, Status::Pending, Source::Create),
                (Some(Status::Pending), Status::InProgress, Source::Webhook)
            ]
        );
        assert!(
            store
                .history(&other, &a.verification.id)
                .await
                .unwrap()
                .is_empty()
        );
        let done = moved(&a, Status::Approved);
        let approve = change(
            &a,
            Some(Status::InProgress),
            Status::Approved,
            Source::Refresh,
        );
        let later = NewEvent {
            id: format!("evt_{}", ulid::Ulid::generate()),
            created_at: now(),
            due_at: now(),
            ..event.clone()
        };
        assert!(
            store
                .save_change(
                    &tenant,
                    Status::InProgress,
                    &done,
                    Some(&approve),
                    Some(&later)
                )
                .await
                .unwrap()
        );

        // The outbox: events of one verification go in order, each claimed by one sender.
        let due_ids = |due: Vec<DueEvent>| -> Vec<String> {
            due.into_iter()
                .map(|d| d.id)
                .filter(|id| *id == event.id || *id == later.id)
                .collect()
        };
        let soon = now() + chrono::Duration::seconds(1);
        assert_eq!(
            due_ids(store.due_events(soon, 10_000).await.unwrap()),
            std::slice::from_ref(&event.id)
        );
        let lease = soon + chrono::Duration::seconds(60);
        let due = store
            .due_events(soon, 10_000)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.id == event.id)
            .unwrap();
        assert!(store.claim_event(&due, "a", soon, lease).await.unwrap());
        assert!(!store.claim_event(&due, "b", soon, lease).await.unwrap());
        assert!(due_ids(store.due_events(soon, 10_000).await.unwrap()).is_empty());
        let attempt = Attempt {
            at: soon,
            status_code: Some(204),
            latency_ms: 3,
            error: None,
        };
        assert!(
            store
                .record_attempt(
                    &due,
                    "a",
                    "https://receiver.test/hook",
                    &attempt,
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap()
                .stood
        );
        assert_eq!(
            due_ids(store.due_events(soon, 10_000).await.unwrap()),
            std::slice::from_ref(&later.id)
        );
        let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
        assert_eq!(
            (logged.state, logged.attempts),
            (EventState::Delivered, vec![attempt])
        );
        assert!(store.get_event(&other, &event.id).await.unwrap().is_none());

        // Listing, filtering, paging, standing.
        for i in 0..3 {
            let row = sample(&tenant, &format!("ref-{i}"), "sub-2");
            store.insert(&row, &created(&row)).await.unwrap();
        }
        let filter = ListFilter {
            subject_id: Some("sub-2".into()),
            limit: 2,
            ..Default::default()
        };
        let first = store.list(&tenant, &filter).await.unwrap();
        assert_eq!(first.len(), 2);
        let rest = store
            .list(
                &tenant,
                &ListFilter {
                    before_id: Some(first[1].verification.id.clone()),
                    ..filter.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        let approved = ListFilter {
            status: Some(Status::Approved),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.list(&tenant, &approved).await.unwrap().len(), 1);
        let (latest, ok) = store.subject_history(&tenant, "sub-1").await.unwrap();
        assert_eq!(latest.unwrap().id, a.verification.id);
        assert_eq!(ok.unwrap().status, Status::Approved);
        // The reconciler's backlog: this tenant's three pending ones, claimed in pages, in id
        // order; claimed, they are not due again until the claim's end.
        let at = now();
        let until = at + chrono::Duration::seconds(60);
        let mine = &tenant;
        let claim_all = |at, until| async move {
            let mut seen = Vec::new();
            let mut after = String::new();
            loop {
                let page = store
                    .claim_unfinished("p1", &after, at, until, 2)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                assert!(last.verification.id > after);
                after = last.verification.id.clone();
                assert!(page.iter().all(|s| !s.verification.status.is_final()));
                assert!(page.is_sorted_by_key(|s| s.verification.id.clone()));
                seen.extend(page.into_iter().filter(|s| s.tenant == *mine));
            }
            seen
        };
        assert_eq!(claim_all(at, until).await.len(), 3);
        assert!(claim_all(at, until).await.is_empty(), "claimed, not due");
        let later = until + chrono::Duration::seconds(1);
        let claimed = claim_all(later, later).await;
        assert_eq!(claimed.len(), 3, "due again");
        // A read schedules the next one: the one read last is due later than the others.
        let much_later = later + chrono::Duration::hours(6);
        let next: Vec<(String, DateTime<Utc>)> = claimed
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = if i == 0 { much_later } else { later };
                (s.verification.id.clone(), at)
            })
            .collect();
        store.schedule_reads(&next).await.unwrap();
        assert_eq!(claim_all(later, later).await.len(), 2, "two due again");
        assert_eq!(claim_all(much_later, much_later).await.len(), 3);
        assert!(
            store
                .claim_unfinished("p2", "", later, later, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.unfinished_count("p1").await.unwrap() >= 3);
        claims_are_disjoint(store).await;

        // Subject refs: first one wins.
        store
            .remember_subject_ref(&tenant, "p1", "sub-1", "ent-1")
            .await
            .unwrap();
        store
            .remember_subject_ref(&tenant, "p1", "sub-1", "ent-2")
            .await
            .unwrap();
        let remembered = store.subject_ref(&tenant, "p1", "sub-1").await.unwrap();
        assert_eq!(remembered.as_deref(), Some("ent-1"));
        assert_eq!(
            store.subject_ref(&other, "p1", "sub-1").await.unwrap(),
            None
        );
        store.ping().await.unwrap();
    }

    /// Two claimers at once (two replicas' rounds) share one instance's backlog: every row goes
    /// to exactly one of them.
    async fn claims_are_disjoint(store: &SqlStore) {
        let tenant = format!("t_{}", ulid::Ulid::generate());
        let provider = format!("p_{}", ulid::Ulid::generate());
        let mut ids = Vec::new();
        for i in 0..40 {
            let mut row = sample(&tenant, &format!("ref-c{i}"), "sub-c");
            row.verification.provider = provider.clone();
            store.insert(&row, &created(&row)).await.unwrap();
            ids.push(row.verification.id);
        }
        let at = now();
        let until = at + chrono::Duration::seconds(60);
        let claimer = || async {
            let mut mine = Vec::new();
            let mut after = String::new();
            loop {
                let page = store
                    .claim_unfinished(&provider, &after, at, until, 3)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                after = last.verification.id.clone();
                mine.extend(page.into_iter().map(|s| s.verification.id));
            }
            mine
        };
        let (a, b) = tokio::join!(claimer(), claimer());
        let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
        all.sort();
        ids.sort();
        assert_eq!(all, ids, "each row claimed once: {a:?} {b:?}");
    }

    /// `stats_daily` counts each verification once, on its creation day, by how it ended. Its
    /// instances are its own: the suite counts `p1`'s and `p2`'s rows in a shared database.
    /// What experiments, replays and the provider figures read and write: arms counted by
    /// status, a stop written once, the routing inputs of a period, errors and circuit openings.
    async fn experiments_replays_and_provider_failures(store: &SqlStore) {
        let tenant = format!("x_{}", ulid::Ulid::generate());
        let experiment = format!("exp-{tenant}");
        // Final rows, and an instance of their own, so the other tests' counts stay as they are.
        let row = |reference: &str, status: Status| {
            let mut row = sample(&tenant, reference, &format!("subject-{reference}"));
            row.verification.provider = "x-p1".into();
            row.verification.status = status;
            row
        };
        let in_arm = |reference: &str, arm: kyc_core::Arm, status: Status| {
            let mut row = row(reference, status);
            row.verification.routing = Some(kyc_core::RoutingRecord {
                reason: kyc_core::RoutingReason::Experiment,
                tried: Vec::new(),
                experiment: Some(experiment.clone()),
                arm: Some(arm),
            });
            row
        };
        let rows = [
            in_arm("e1", kyc_core::Arm::Champion, Status::Approved),
            in_arm("e2", kyc_core::Arm::Champion, Status::Approved),
            in_arm("e3", kyc_core::Arm::Challenger, Status::Rejected),
            row("plain", Status::Rejected),
        ];
        for row in &rows {
            store.insert(row, &created(row)).await.unwrap();
        }
        let mut counts = store.experiment_counts(&tenant, &experiment).await.unwrap();
        counts.sort_by_key(|c| c.arm.as_str());
        assert_eq!(
            counts,
            [
                ArmCount {
                    arm: kyc_core::Arm::Challenger,
                    status: Status::Rejected,
                    count: 1
                },
                ArmCount {
                    arm: kyc_core::Arm::Champion,
                    status: Status::Approved,
                    count: 2
                },
            ]
        );
        assert_eq!(store.experiment_counts(&tenant, "other").await.unwrap(), []);

        // A stop is written once, with its event; the second writer learns it was first.
        let at = now();
        let event = new_event(
            &tenant,
            &format!("experiment:{experiment}"),
            "experiment.stopped",
            at,
        );
        assert!(
            store
                .stop_experiment(&tenant, &experiment, at, Some(&event))
                .await
                .unwrap()
        );
        assert!(
            !store
                .stop_experiment(&tenant, &experiment, at, None)
                .await
                .unwrap()
        );
        let stopped = store.stopped_experiments().await.unwrap();
        assert!(stopped.contains(&(tenant.clone(), experiment.clone(), at)));
        let filter = EventFilter {
            verification_id: Some(format!("experiment:{experiment}")),
            limit: 10,
            ..EventFilter::default()
        };
        assert_eq!(store.list_events(&tenant, &filter).await.unwrap().len(), 1);

        // The routing inputs of a period: every row of the tenant created in it, and no other.
        let first = rows[0].verification.created_at;
        let until = now() + chrono::Duration::seconds(1);
        let mut routed = store
            .routed_page(&tenant, first, until, "", 3)
            .await
            .unwrap();
        // Pages of 3: the next page starts after the last id.
        assert_eq!(routed.len(), 3);
        let after = routed[2].id.clone();
        let rest = store
            .routed_page(&tenant, first, until, &after, 3)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].id > after);
        routed.extend(rest);
        routed.sort_by(|a, b| a.subject_id.cmp(&b.subject_id));
        assert_eq!(routed.len(), 4);
        assert_eq!(routed[0].subject_id, "subject-e1");
        assert_eq!(routed[0].country.as_deref(), Some("CL"));
        assert_eq!(routed[0].reason, Some(kyc_core::RoutingReason::Experiment));
        assert_eq!(routed[3].reason, None);
        let later = now() + chrono::Duration::seconds(1);
        assert_eq!(
            store
                .routed_page(&tenant, later, later + chrono::Duration::days(1), "", 10)
                .await
                .unwrap(),
            []
        );

        // Provider errors count on their own day; circuit openings are found by overlap.
        let day = at.date_naive().to_string();
        for _ in 0..2 {
            store
                .count_provider_error(&tenant, "p-errors", "AR", at)
                .await
                .unwrap();
        }
        let errors: Vec<(String, u64)> = store
            .stats(&tenant, &day, &day)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.provider, r.provider_errors))
            .collect();
        assert_eq!(
            errors,
            [("p-errors".to_string(), 2), ("x-p1".to_string(), 0)]
        );
        let provider = format!("circuit-{tenant}");
        let opened = at - chrono::Duration::seconds(30);
        store
            .record_circuit_opening(&provider, opened, at)
            .await
            .unwrap();
        let provider = &provider;
        let overlapping = |start, end| async move {
            store
                .circuit_openings(start, end)
                .await
                .unwrap()
                .into_iter()
                .filter(|(p, _, _)| p == provider)
                .count()
        };
        assert_eq!(overlapping(at - chrono::Duration::seconds(10), at).await, 1);
        assert_eq!(overlapping(at, at + chrono::Duration::seconds(10)).await, 0);
    }

    async fn stats_count_what_was_started_and_how_it_ended(store: &SqlStore) {
        let tenant = format!("s_{}", ulid::Ulid::generate());
        let row = |reference: &str, provider: &str, country: &str, status: Status| {
            let mut row = sample(&tenant, reference, reference);
            row.verification.provider = provider.into();
            row.verification.status = status;
            row.country = Some(country.into());
            row
        };
        let a = row("a", "stats-p1", "CL", Status::Pending);
        let b = row("b", "stats-p1", "AR", Status::Approved);
        let mut c = row("c", "stats-p2", "CL", Status::Pending);
        c.verification.routing = Some(kyc_core::RoutingRecord {
            reason: kyc_core::RoutingReason::Fallback,
            tried: vec!["stats-p1".into()],
            experiment: None,
            arm: None,
        });
        for r in [&a, &b, &c] {
            store.insert(r, &created(r)).await.unwrap();
        }
        // A replayed reference is not a second start.
        let again = row("a", "stats-p1", "CL", Status::Pending);
        store.insert(&again, &created(&again)).await.unwrap();
        // a ends approved (counted once, however often the change is tried); c only moves on.
        let approved = moved(&a, Status::Approved);
        for _ in 0..2 {
            store
                .save_change(&tenant, Status::Pending, &approved, None, None)
                .await
                .unwrap();
        }
        store
            .save_change(
                &tenant,
                Status::Pending,
                &moved(&c, Status::InProgress),
                None,
                None,
            )
            .await
            .unwrap();

        let today = a.verification.created_at.date_naive().to_string();
        let expect = |provider: &str, country: &str, counts: [u64; 3]| StatsRow {
            provider: provider.into(),
            country: country.into(),
            started: counts[0],
            fallbacks: counts[1],
            approved: counts[2],
            ..StatsRow::default()
        };
        assert_eq!(
            store.stats(&tenant, &today, &today).await.unwrap(),
            [
                expect("stats-p1", "AR", [1, 0, 1]),
                expect("stats-p1", "CL", [1, 0, 1]),
                expect("stats-p2", "CL", [1, 1, 0])
            ]
        );
        // b decided at once; a when its change was saved, in the bucket of its time.
        let took = approved.completed_at.unwrap() - a.verification.created_at;
        let bucket = decision_bucket(took.num_milliseconds());
        let decided = |country: &str, bucket| DecisionCount {
            provider: "stats-p1".into(),
            country: country.into(),
            bucket,
            decided: 1,
        };
        assert_eq!(
            store.decision_times(&tenant, &today, &today).await.unwrap(),
            [decided("AR", 0), decided("CL", bucket)]
        );
        // Other days, and other tenants, see none of it.
        assert_eq!(
            store
                .stats(&tenant, "2000-01-01", "2000-12-31")
                .await
                .unwrap(),
            []
        );
        assert_eq!(store.stats("nobody", &today, &today).await.unwrap(), []);
        assert_eq!(
            store
                .decision_times("nobody", &today, &today)
                .await
                .unwrap(),
            []
        );
    }

    #[test]
    fn decision_times_merge_into_one_pair_per_bucket() {
        assert_eq!(with_decision_time("", 12), "12:1");
        assert_eq!(with_decision_time("12:1", 12), "12:2");
        // Out of order or repeated pairs are merged; a pair that does not read is dropped.
        assert_eq!(with_decision_time("30:2,4:1,x:y,4:3", 7), "4:4,7:1,30:2");
        assert_eq!(decision_times_of("").count(), 0);
    }

    /// A pending event of `line`, written and due at `at`.
    fn new_event(
        tenant: &str,
        line: &str,
        event_type: &'static str,
        at: DateTime<Utc>,
    ) -> NewEvent {
        NewEvent {
            id: format!("evt_{}", ulid::Ulid::generate()),
            tenant: tenant.to_string(),
            verification_id: line.to_string(),
            event_type,
            payload: "{}".into(),
            created_at: at,
            due_at: at,
        }
    }

    /// Claims are fenced: an attempt that outlived its lease cannot undo what the next claim's
    /// attempt or a redeliver did, and attempt numbers never collide.
    async fn outbox_fencing(store: &SqlStore) {
        let tenant = format!("f_{}", ulid::Ulid::generate());
        let mut row = sample(&tenant, "ref-f", "sub-f");
        // An instance of its own, so the suite's counts of p1 stay as they were.
        row.verification.provider = "p-fenced".into();
        store.insert(&row, &created(&row)).await.unwrap();
        let at = now();
        let event = new_event(&tenant, &row.verification.id, "verification.updated", at);
        let next = moved(&row, Status::InProgress);
        let change = change(
            &row,
            Some(Status::Pending),
            Status::InProgress,
            Source::Webhook,
        );
        assert!(
            store
                .save_change(&tenant, Status::Pending, &next, Some(&change), Some(&event))
                .await
                .unwrap()
        );
        let due_at = |t| {
            let id = event.id.clone();
            async move {
                store
                    .due_events(t, 100_000)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|d| d.id == id)
            }
        };
        let attempt = |code| Attempt {
            at: now(),
            status_code: Some(code),
            latency_ms: 1,
            error: None,
        };
        // A claims with a short lease; B claims once it has run out.
        let t0 = now() + chrono::Duration::seconds(1);
        let for_a = due_at(t0).await.unwrap();
        let short = t0 + chrono::Duration::milliseconds(10);
        assert!(store.claim_event(&for_a, "A", t0, short).await.unwrap());
        let t1 = t0 + chrono::Duration::seconds(1);
        let for_b = due_at(t1).await.expect("due again once A's lease ran out");
        assert!(
            store
                .claim_event(&for_b, "B", t1, t1 + chrono::Duration::seconds(60))
                .await
                .unwrap()
        );
        // A delivered: that stands. B's failure, recorded after, does not undo it.
        assert!(
            store
                .record_attempt(
                    &for_a,
                    "A",
                    "https://receiver.test/hook",
                    &attempt(204),
                    AttemptOutcome::Delivered
                )
                .await
                .unwrap()
                .stood
        );
        let retry = AttemptOutcome::RetryAt(t1 + chrono::Duration::seconds(5));
        assert!(
            !store
                .record_attempt(
                    &for_b,
                    "B",
                    "https://receiver.test/hook",
                    &attempt(500),
                    retry
                )
                .await
                .unwrap()
                .stood,
            "B's write lost the claim"
        );
        let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
        assert_eq!(logged.state, EventState::Delivered);
        assert_eq!(
            logged.attempts.len(),
            2,
            "both attempts are in the log, numbered apart"
        );
        assert!(due_at(t1 + chrono::Duration::seconds(60)).await.is_none());

        // A redeliver while an attempt is in flight stands: the attempt's late outcome, a
        // delivery or a failure, changes nothing.
        assert!(store.redeliver(&tenant, &event.id, t1).await.unwrap());
        let t2 = t1 + chrono::Duration::seconds(1);
        let for_c = due_at(t2).await.unwrap();
        assert!(
            store
                .claim_event(&for_c, "C", t2, t2 + chrono::Duration::seconds(60))
                .await
                .unwrap()
        );
        assert!(store.redeliver(&tenant, &event.id, t2).await.unwrap());
        for outcome in [AttemptOutcome::Delivered, AttemptOutcome::Failed] {
            assert!(
                !store
                    .record_attempt(
                        &for_c,
                        "C",
                        "https://receiver.test/hook",
                        &attempt(204),
                        outcome
                    )
                    .await
                    .unwrap()
                    .stood
            );
        }
        let logged = store.get_event(&tenant, &event.id).await.unwrap().unwrap();
        assert_eq!(logged.state, EventState::Pending, "the redeliver stands");
        assert!(due_at(t2).await.is_some());
    }

    /// The due scan reads heads only: an event behind an earlier pending one of its line is not
    /// due until that one is done; a parked event is not due until resumed; a redelivered event
    /// earlier in its line takes the head's place.
    async fn outbox_heads(store: &SqlStore) {
        let tenant = format!("h_{}", ulid::Ulid::generate());
        let mut row = sample(&tenant, "ref-h", "sub-h");
        row.verification.provider = "p-heads".into();
        store.insert(&row, &created(&row)).await.unwrap();
        let mut events = Vec::new();
        let mut current = row.verification.clone();
        for to in [Status::InProgress, Status::InReview, Status::Approved] {
            let at = now();
            let event = new_event(&tenant, &row.verification.id, "verification.updated", at);
            let next = Verification {
                status: to,
                updated_at: at,
                completed_at: to.is_final().then_some(at),
                ..current.clone()
            };
            let stored = StoredVerification {
                verification: current.clone(),
                ..row.clone()
            };
            let change = change(&stored, Some(current.status), to, Source::Webhook);
            assert!(
                store
                    .save_change(&tenant, current.status, &next, Some(&change), Some(&event))
                    .await
                    .unwrap()
            );
            current = next;
            events.push(event.id);
        }
        let soon = now() + chrono::Duration::seconds(1);
        let due = || async {
            store
                .due_events(soon, 100_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|d| events.contains(&d.id))
                .collect::<Vec<_>>()
        };
        let deliver = |event: DueEvent, token: &'static str| async move {
            assert!(store.claim_event(&event, token, soon, soon).await.unwrap());
            let attempt = Attempt {
                at: soon,
                status_code: Some(204),
                latency_ms: 1,
                error: None,
            };
            assert!(
                store
                    .record_attempt(
                        &event,
                        token,
                        "https://receiver.test/hook",
                        &attempt,
                        AttemptOutcome::Delivered
                    )
                    .await
                    .unwrap()
                    .stood
            );
        };
        let ids = |due: &[DueEvent]| due.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        let first = due().await;
        assert_eq!(ids(&first), [events[0].clone()], "only the head is due");
        deliver(first[0].clone(), "one").await;
        let second = due().await;
        assert_eq!(ids(&second), [events[1].clone()]);
        // The tenant's endpoint does not work: the head is parked, and nothing of the line is due.
        assert!(
            store
                .claim_event(&second[0], "two", soon, soon)
                .await
                .unwrap()
        );
        store.park_event(&events[1], "two").await.unwrap();
        assert!(due().await.is_empty());
        assert_eq!(store.resume_parked(&tenant).await.unwrap(), 1);
        assert_eq!(ids(&due().await), [events[1].clone()]);
        // Redelivering the first takes the head's place from the second.
        assert!(store.redeliver(&tenant, &events[0], soon).await.unwrap());
        let again = due().await;
        assert_eq!(ids(&again), [events[0].clone()]);
        deliver(again[0].clone(), "three").await;
        assert_eq!(ids(&due().await), [events[1].clone()]);
    }

    /// Tenant-level events are lines of their tenant: one tenant's experiment event waiting on a
    /// failing receiver never holds back another tenant's event of an experiment of the same
    /// name.
    async fn tenant_lines(store: &SqlStore) {
        let run = ulid::Ulid::generate().to_string();
        let (a, b) = (format!("la_{run}"), format!("lb_{run}"));
        let at = now();
        let stopped =
            |tenant: &str| new_event(tenant, "experiment:same-name", "experiment.stopped", at);
        let (for_a, for_b) = (stopped(&a), stopped(&b));
        assert!(
            store
                .stop_experiment(&a, "same-name", at, Some(&for_a))
                .await
                .unwrap()
        );
        // A's event is tried and its receiver fails: it waits for a retry in an hour.
        let t0 = at + chrono::Duration::seconds(1);
        let due = store.due_events(t0, 100_000).await.unwrap();
        let a_due = due.iter().find(|d| d.id == for_a.id).unwrap().clone();
        assert!(
            store
                .claim_event(&a_due, "A", t0, t0 + chrono::Duration::seconds(60))
                .await
                .unwrap()
        );
        let failed = Attempt {
            at: t0,
            status_code: Some(500),
            latency_ms: 1,
            error: None,
        };
        let in_an_hour = AttemptOutcome::RetryAt(t0 + chrono::Duration::hours(1));
        assert!(
            store
                .record_attempt(
                    &a_due,
                    "A",
                    "https://receiver.test/hook",
                    &failed,
                    in_an_hour
                )
                .await
                .unwrap()
                .stood
        );
        // B's experiment of the same name stops later: its event is due at once.
        let later = NewEvent {
            created_at: t0,
            due_at: t0,
            ..for_b
        };
        assert!(
            store
                .stop_experiment(&b, "same-name", t0, Some(&later))
                .await
                .unwrap()
        );
        let due = store
            .due_events(t0 + chrono::Duration::seconds(1), 100_000)
            .await
            .unwrap();
        assert!(
            due.iter().any(|d| d.id == later.id),
            "B is not held behind A"
        );
        assert!(!due.iter().any(|d| d.id == for_a.id));
    }

    /// A create's reservation: unique per (tenant, reference), every change compare-and-set on
    /// its beat, and gone with the verification's insert.
    async fn create_reservations(store: &SqlStore) {
        let tenant = format!("r_{}", ulid::Ulid::generate());
        let at = now();
        let attempt = CreateAttempt {
            tenant: tenant.clone(),
            reference: "ref-r".into(),
            request_hash: "hash-ref-r".into(),
            state: AttemptState::Calling,
            provider: "p1".into(),
            routing: kyc_core::RoutingRecord {
                reason: kyc_core::RoutingReason::Default,
                tried: Vec::new(),
                experiment: None,
                arm: None,
            },
            beat: 0,
            subject_id: "sub-r".into(),
            country: "CL".into(),
            metadata: serde_json::json!({"order": "1"}).as_object().cloned(),
            ambiguous_at: None,
            created_at: at,
            updated_at: at,
        };
        assert!(matches!(
            store.reserve(&attempt).await.unwrap(),
            Reserved::Fresh
        ));
        let other_body = CreateAttempt {
            request_hash: "another body".into(),
            ..attempt.clone()
        };
        match store.reserve(&other_body).await.unwrap() {
            Reserved::Existing(existing) => assert_eq!(*existing, attempt),
            other => panic!("{other:?}"),
        }
        // A write on a stale beat changes nothing; on the current one it bumps the beat.
        let ambiguous = CreateAttempt {
            state: AttemptState::Ambiguous,
            ambiguous_at: Some(now()),
            updated_at: now(),
            ..attempt.clone()
        };
        assert!(!store.update_attempt(&ambiguous, 7).await.unwrap());
        assert!(store.update_attempt(&ambiguous, 0).await.unwrap());
        assert!(!store.update_attempt(&ambiguous, 0).await.unwrap());
        let read = store.attempt(&tenant, "ref-r").await.unwrap().unwrap();
        assert_eq!(
            read,
            CreateAttempt {
                beat: 1,
                ..ambiguous.clone()
            }
        );
        let unsettled = store.unsettled_attempts(10_000).await.unwrap();
        assert!(unsettled.iter().any(|a| a.tenant == tenant));
        let open = CreateAttempt {
            state: AttemptState::Open,
            ambiguous_at: None,
            ..read.clone()
        };
        assert!(store.update_attempt(&open, 1).await.unwrap());
        let unsettled = store.unsettled_attempts(10_000).await.unwrap();
        assert!(
            !unsettled.iter().any(|a| a.tenant == tenant),
            "open is settled"
        );
        // The verification's insert removes it.
        let mut row = sample(&tenant, "ref-r", "sub-r");
        // An instance of its own, so the suite's counts of p1 stay as they were.
        row.verification.provider = "p-reserved".into();
        store.insert(&row, &created(&row)).await.unwrap();
        assert_eq!(store.attempt(&tenant, "ref-r").await.unwrap(), None);
        assert!(matches!(
            store.reserve(&attempt).await.unwrap(),
            Reserved::Fresh
        ));
    }

    #[tokio::test]
    async fn sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        suite(&store).await;
        create_reservations(&store).await;
        outbox_fencing(&store).await;
        outbox_heads(&store).await;
        tenant_lines(&store).await;
        stats_count_what_was_started_and_how_it_ended(&store).await;
        experiments_replays_and_provider_failures(&store).await;
        // Reopening runs the migrations again harmlessly and keeps the data.
        drop(store);
        let again = SqlStore::connect(&url).await.unwrap();
        assert_eq!(again.unfinished_count("p1").await.unwrap(), 3);
        // An upgrade from before decision times were kept in the day's row moves the bucket
        // counts there.
        sqlx::raw_sql(
            "DELETE FROM _sqlx_migrations WHERE version = 11; \
             ALTER TABLE stats_daily DROP COLUMN decided_at_once; \
             ALTER TABLE stats_daily DROP COLUMN decision_times; \
             CREATE TABLE stats_decisions (tenant TEXT NOT NULL, day TEXT NOT NULL, \
             provider TEXT NOT NULL, country TEXT NOT NULL, bucket BIGINT NOT NULL, \
             decided BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, day, provider, country, bucket)); \
             INSERT INTO stats_decisions SELECT tenant, day, provider, country, 9, 1 FROM stats_daily; \
             INSERT INTO stats_decisions SELECT tenant, day, provider, country, 7, 2 FROM stats_daily",
        )
        .execute(&again.writes)
        .await
        .unwrap();
        drop(again);
        let again = SqlStore::connect(&url).await.unwrap();
        let moved: Vec<String> = sqlx::query("SELECT decision_times FROM stats_daily")
            .fetch_all(&again.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect();
        assert!(!moved.is_empty());
        for times in &moved {
            let mut pairs: Vec<(u32, u64)> = decision_times_of(times).collect();
            pairs.sort_unstable();
            assert_eq!(pairs, [(7, 2), (9, 1)], "{times}");
        }
        // An upgrade from before the daily counts counts what is already stored, country unknown.
        sqlx::raw_sql(
            "DELETE FROM _sqlx_migrations WHERE version = 7; DROP TABLE stats_daily; \
             ALTER TABLE verifications DROP COLUMN country",
        )
        .execute(&again.writes)
        .await
        .unwrap();
        drop(again);
        let upgraded = SqlStore::connect(&url).await.unwrap();
        let pool = &upgraded.pool;
        let one = |sql: &'static str| async move {
            let n: i64 = sqlx::query(sql)
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            n
        };
        let stored = one("SELECT COUNT(*) FROM verifications").await;
        assert!(stored > 0);
        assert_eq!(
            one("SELECT CAST(SUM(started) AS BIGINT) FROM stats_daily").await,
            stored
        );
        assert_eq!(
            one("SELECT COUNT(*) FROM stats_daily WHERE country <> ''").await,
            0
        );
        assert_eq!(
            one("SELECT CAST(SUM(approved) AS BIGINT) FROM stats_daily").await,
            one("SELECT COUNT(*) FROM verifications WHERE status = 'approved'").await
        );
    }

    /// A PostgreSQL database to test against: `KYC_TEST_POSTGRES_URL`, which `.ci/run` sets.
    pub(super) fn postgres_url() -> String {
        std::env::var("KYC_TEST_POSTGRES_URL")
            .expect("this test needs PostgreSQL: set KYC_TEST_POSTGRES_URL=postgres://user@host/db")
    }

    /// A schema of its own on the test database, named `{prefix}_<ulid>`: the rows a test makes
    /// there meet no other test's, and go with [`PgSchema::drop`].
    pub(super) struct PgSchema {
        admin: sqlx::AnyPool,
        name: String,
        /// The database URL with the schema as its search path.
        pub url: String,
    }

    impl PgSchema {
        pub(super) async fn create(prefix: &str) -> PgSchema {
            let base = postgres_url();
            let name = format!(
                "{prefix}_{}",
                ulid::Ulid::generate().to_string().to_lowercase()
            );
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&base).await.unwrap();
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                .execute(&admin)
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
            PgSchema { admin, name, url }
        }

        pub(super) async fn drop(self) {
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
                .execute(&self.admin)
                .await
                .unwrap();
            self.admin.close().await;
        }
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
    async fn postgres_store() {
        let store = SqlStore::connect(&postgres_url()).await.unwrap();
        suite(&store).await;
        create_reservations(&store).await;
        outbox_fencing(&store).await;
        outbox_heads(&store).await;
        tenant_lines(&store).await;
        stats_count_what_was_started_and_how_it_ended(&store).await;
        experiments_replays_and_provider_failures(&store).await;
    }
}
