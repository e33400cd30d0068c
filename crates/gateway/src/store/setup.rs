//! Connecting (pools, time limits, SQLite's inline reads) and migrating.

use super::*;

/// The migration files, embedded: `NNNN_name.sql` for both backends, or `NNNN_name.sqlite.sql` and
/// `NNNN_name.postgres.sql` where the two differ.
static MIGRATION_FILES: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Every migration, in order, for SQLite (`sqlite`) or PostgreSQL, read from the files (a new
/// file is a new migration; there is no list to keep). Released files never change (the store
/// refuses to start on a database where an applied one differs), and each new one follows the
/// rule in docs/operations.md, "Upgrading": it only adds, so the previous release's replicas keep
/// working beside it (a test checks each file). A PostgreSQL migration that builds an index
/// `CONCURRENTLY` runs outside a transaction, as PostgreSQL requires.
pub(super) fn migrations(sqlite: bool) -> Vec<Migration> {
    let other = if sqlite {
        ".postgres.sql"
    } else {
        ".sqlite.sql"
    };
    let mut found: Vec<Migration> = MIGRATION_FILES
        .files()
        .filter_map(|file| {
            let name = file.path().file_name()?.to_str()?;
            if name.ends_with(other) || !name.ends_with(".sql") {
                return None;
            }
            let stem = name.split('.').next()?;
            let (version, description) = stem.split_once('_')?;
            let sql = file.contents_utf8()?;
            let mut migration = Migration::new(
                version.parse().ok()?,
                description.replace('_', " ").into(),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            );
            migration.no_tx = !sqlite && sql.contains("CONCURRENTLY");
            Some(migration)
        })
        .collect();
    found.sort_by_key(|m| m.version);
    found
}

/// The PostgreSQL advisory lock the replicas take in turn to migrate ("kyc_migr" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x6b79_635f_6d69_6772;

/// Runs `migrations` (those up to `up_to`, or all) on one connection of `pool`. On PostgreSQL
/// that connection has no statement time limit while it migrates (building an index on a large
/// table takes as long as it takes; the lock time limit stays, so a migration that cannot get its
/// lock fails instead of queueing every writer behind it), and an index a concurrent build left
/// invalid (a build that failed, then `IF NOT EXISTS` on the next start) is built again.
pub(super) async fn migrate(
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
    // A migration that alters a table a writer of the previous release holds can lose a
    // deadlock to it; it was rolled back whole, so it is run again.
    let mut tries = 0;
    let result = loop {
        tries += 1;
        match migrator.run(&mut *conn).await {
            Err(sqlx::migrate::MigrateError::ExecuteMigration(
                sqlx::Error::Database(db),
                version,
            )) if db.code().as_deref() == Some("40P01") && tries < CONFLICT_TRIES => {
                tracing::info!(version, "a migration lost a deadlock; running it again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done => break done,
        }
    };
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
                            sqlx::query("PRAGMA secure_delete = ON")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool(if sqlite { 4 } else { 16 }).connect(&url).await?;
        migrate(&pool, &migrations(sqlite), None, Some(&limits)).await?;
        let (writer, inline) = if sqlite {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let path = options.get_filename();
            let in_memory = path.as_os_str().is_empty() || path.as_os_str() == ":memory:";
            if in_memory {
                // The writer and the readers are connections of their own: they must share a file.
                return Err(StoreError::NeedsFile);
            }
            // As many as the runtime has threads to read on.
            let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
            (
                Writer::Sqlite(group_commit::GroupCommit::open(path)?),
                Some(inline::InlineReads::open(path, threads)?),
            )
        } else {
            (Writer::Postgres, None)
        };
        let held_reads = (!sqlite).then(|| held_reads::HeldReads::new(pool.clone(), limits));
        Ok(SqlStore {
            pool,
            writer,
            inline,
            held_reads,
        })
    }
}

#[cfg(test)]
mod tests {
    /// The names the released migrations were recorded under, as the hand list had them.
    const RELEASED: [&str; 16] = [
        "init",
        "history and outbox",
        "disabled endpoints",
        "indexes",
        "routing",
        "reconcile at",
        "stats",
        "decision times",
        "experiments",
        "provider errors",
        "decision times per day",
        "create attempts",
        "outbox fencing",
        "outbox heads",
        "endpoint health",
        "unsequenced events",
    ];

    /// The files give each backend one migration per version, numbered 1, 2, 3… with no gap,
    /// under the names they were released with (a name is part of what sqlx records).
    #[test]
    fn the_files_make_one_unbroken_list_per_backend() {
        for sqlite in [true, false] {
            let migrations = super::migrations(sqlite);
            let versions: Vec<i64> = migrations.iter().map(|m| m.version).collect();
            assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
            let names: Vec<&str> = migrations.iter().map(|m| &*m.description).collect();
            assert_eq!(names[..RELEASED.len()], RELEASED[..]);
            let concurrent: Vec<i64> = migrations
                .iter()
                .filter(|m| m.no_tx)
                .map(|m| m.version)
                .collect();
            assert_eq!(
                concurrent,
                if sqlite {
                    vec![]
                } else {
                    vec![16, 18, 20, 21, 22, 23]
                }
            );
        }
    }
}
