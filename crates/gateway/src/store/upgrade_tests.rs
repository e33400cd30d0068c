//! Rolling upgrades: each migration file checked against the rule in docs/operations.md, "Upgrading",
//! and the newest migrations applied while a writer using the previous release's statements keeps
//! writing, on a SQLite file and on PostgreSQL.

use super::setup::{migrate, migrations};
use super::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The migrations directory.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

/// Released migration files and the SHA-256 of each: never edited once released (on a database
/// where an applied migration differs, the store refuses to start). A release adds its own.
const RELEASED: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        "d799bf966670eba19c68861a993729795ed541e9ce8dec89137cc94728323b91",
    ),
    (
        "0002_history_and_outbox.sql",
        "30f507acd7f79a7e8f32f0a1ea1b251c7b93a01e68342b07c6f4bce82e787da9",
    ),
    (
        "0003_disabled_endpoints.sql",
        "4c212461e62ef5d66b03b7138760cfe483dcdb9f8b0e10e2f3a208fbff0fb472",
    ),
    (
        "0004_indexes.sql",
        "8bcee05869232a795642536b024b8c8c5588a79aad32f53bb40786f4b690bb7b",
    ),
    (
        "0005_routing.sql",
        "fb4ee182b51ae6ce29ab56a39106beaea379ee4bc5d386986177d0a0a9490de5",
    ),
    (
        "0006_reconcile_at.sql",
        "0315b3fc94d0b7c59227bd5b871b73d14610907195adb091935f12dfc2c3afe7",
    ),
    (
        "0007_stats.sql",
        "76956962f6823610d4791992ce1bed77c60bd626d83cbdd6890c7227377e2a47",
    ),
    (
        "0008_decision_times.sql",
        "2ec7da312806bd09925d60fdfa7fa27ce985c6dc10a9d113383a519a8c147e30",
    ),
    (
        "0009_experiments.sql",
        "577f87c2c4271bec5b3876992851ea30bbf6ff755eb26555b074313efd722981",
    ),
    (
        "0010_provider_errors.sql",
        "ffe4dd620f7077ca91bd316d4c21a730a9b1f4e532f220b52bdd1d46c97605e2",
    ),
    (
        "0011_decision_times_per_day.postgres.sql",
        "2165b3cfd027eb20bd7f447d540194e737d9a0fc31d4922238b5c3e50f6a1bb7",
    ),
    (
        "0011_decision_times_per_day.sqlite.sql",
        "259c2f75842cd73f968111eee655fad84c2749ff6ea495db190674a259a344c5",
    ),
    (
        "0012_create_attempts.sql",
        "25f459e4f0e86f9420a1cf33a9c9ffb116d35fc5a5eebd3bd6d2f751066a1177",
    ),
    (
        "0013_outbox_fencing.sql",
        "294c8a5de78de0d197ebfa0713124c1287034381eed1e8f9d9ff0451d94c912e",
    ),
    (
        "0014_outbox_heads.sql",
        "9dfa65cc025b2430f9b7835c68a26d04fa6dc12631ac12f31c1585add68f6c37",
    ),
    (
        "0015_endpoint_health.sql",
        "2737b0e982400e855e676337484ccacc97215bbe73142ebd64b9e0b6e7c06475",
    ),
    (
        "0016_unsequenced_events.postgres.sql",
        "6460aa9c714c73f07a37fd9a06f97e564a9fb099641436777c7640450e5ff61b",
    ),
    (
        "0016_unsequenced_events.sqlite.sql",
        "e97e5eeb35dc0658058d54f5fcb47f9f96b0298e7ee3bda8751e8738505206ee",
    ),
];

/// The first migration written under the rule; those before it are history, released before
/// there was one (0004 built indexes inside a transaction, 0011 dropped a table the release
/// before it wrote, 0014 dropped an index the release before it read).
const RULE_FROM: i64 = 16;

/// The statements of a migration file, comments removed, lower case.
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// What in migration file `name` (run outside a transaction when `no_tx`) breaks the rule: it
/// may only add, so that the previous release's replicas keep working beside it. A contraction
/// (dropping, renaming, retyping or tightening what exists) is allowed only in a file that says
/// so on a `-- Contraction:` line, naming the release since which nothing uses what it removes.
fn violations(name: &str, sql: &str, no_tx: bool) -> Vec<String> {
    let contraction = sql.lines().any(|l| l.starts_with("-- Contraction:"));
    let postgres_only = name.ends_with(".postgres.sql");
    let sqlite_only = name.ends_with(".sqlite.sql");
    let statements = statements(sql);
    let mut found = Vec::new();
    for s in &statements {
        let shrinks = [
            "drop ",
            " rename ",
            "alter column",
            "truncate",
            "delete from",
        ]
        .iter()
        .any(|word| s.contains(word));
        if shrinks && !contraction {
            found.push(format!(
                "{name}: `{s}` removes or changes what the previous release may use"
            ));
        }
        if s.contains("add column") && s.contains("not null") && !s.contains("default") {
            found.push(format!(
                "{name}: `{s}` adds a NOT NULL column without a default: the previous release's \
                 inserts would fail"
            ));
        }
        if s.contains("create index") || s.contains("create unique index") {
            if postgres_only {
                if !s.contains(" concurrently ") {
                    found.push(format!(
                        "{name}: `{s}` builds an index without CONCURRENTLY: writes would wait"
                    ));
                }
                if statements.len() != 1 || !no_tx {
                    found.push(format!(
                        "{name}: an index built concurrently is its migration's only statement, \
                         run outside a transaction"
                    ));
                }
            } else if !sqlite_only {
                found.push(format!(
                    "{name}: `{s}` builds an index in a migration shared by both stores; on \
                     PostgreSQL it must be built concurrently, in a file of its own"
                ));
            }
        }
    }
    found
}

/// Every migration file, by name.
fn files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .filter(|(name, _)| name.ends_with(".sql"))
        .collect();
    files.sort();
    files
}

fn version_of(name: &str) -> i64 {
    name[..4].parse().unwrap()
}

#[test]
fn released_migrations_are_never_edited() {
    let files = files();
    for (name, digest) in RELEASED {
        let (_, sql) = files
            .iter()
            .find(|(file, _)| file == name)
            .unwrap_or_else(|| panic!("{name} was released and is gone"));
        let actual: String = Sha256::digest(sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&actual, digest, "{name} was edited after its release");
    }
    for (name, _) in &files {
        assert!(
            version_of(name) >= RULE_FROM || RELEASED.iter().any(|(r, _)| r == name),
            "{name} predates the rule but is not listed as released"
        );
    }
}

#[test]
fn every_migration_only_expands() {
    for sqlite in [true, false] {
        let registered = migrations(sqlite);
        let files = files();
        let backend = if sqlite {
            ".sqlite.sql"
        } else {
            ".postgres.sql"
        };
        let other = if sqlite {
            ".postgres.sql"
        } else {
            ".sqlite.sql"
        };
        let runs: Vec<&(String, String)> = files
            .iter()
            .filter(|(name, _)| !name.ends_with(other))
            .collect();
        // What runs is what the files say, one file per version for each store.
        assert_eq!(
            runs.len(),
            registered.len(),
            "files and registered migrations differ"
        );
        for ((name, sql), migration) in runs.iter().zip(&registered) {
            assert_eq!(version_of(name), migration.version, "{name}");
            assert_eq!(migration.sql.as_ref(), sql.as_str(), "{name}");
            if version_of(name) >= RULE_FROM {
                let problems = violations(name, sql, migration.no_tx);
                assert!(problems.is_empty(), "{problems:#?}");
                if name.ends_with(backend) {
                    let twin = name.replace(backend, other);
                    assert!(
                        files.iter().any(|(f, _)| *f == twin),
                        "{name} has no {twin}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_rule_refuses_what_would_break_the_previous_release() {
    let refused = [
        ("0099_x.sql", "ALTER TABLE events DROP COLUMN seq;", false),
        ("0099_x.sql", "DROP TABLE stats_daily", false),
        ("0099_x.sql", "ALTER TABLE events RENAME TO outbox", false),
        (
            "0099_x.sql",
            "ALTER TABLE events ALTER COLUMN seq TYPE TEXT",
            false,
        ),
        (
            "0099_x.sql",
            "ALTER TABLE events ADD COLUMN x TEXT NOT NULL",
            false,
        ),
        ("0099_x.sql", "CREATE INDEX a ON events (seq)", false),
        (
            "0099_x.postgres.sql",
            "CREATE INDEX a ON events (seq)",
            true,
        ),
        (
            "0099_x.postgres.sql",
            "CREATE INDEX CONCURRENTLY a ON events (seq); CREATE INDEX CONCURRENTLY b ON events (id)",
            true,
        ),
        (
            "0099_x.postgres.sql",
            "CREATE INDEX CONCURRENTLY a ON events (seq)",
            false,
        ),
    ];
    for (name, sql, no_tx) in refused {
        assert!(!violations(name, sql, no_tx).is_empty(), "{sql} passed");
    }
    let allowed = [
        (
            "0099_x.sql",
            "ALTER TABLE events ADD COLUMN x TEXT NOT NULL DEFAULT ''",
            false,
        ),
        ("0099_x.sql", "CREATE TABLE IF NOT EXISTS t (a TEXT)", false),
        (
            "0099_x.sqlite.sql",
            "CREATE INDEX IF NOT EXISTS a ON events (seq)",
            false,
        ),
        (
            "0099_x.postgres.sql",
            "-- why\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a ON events (seq)",
            true,
        ),
        (
            "0099_x.sql",
            "-- Contraction: nothing reads stats_decisions since 0.3\nDROP TABLE stats_decisions",
            false,
        ),
    ];
    for (name, sql, no_tx) in allowed {
        assert_eq!(violations(name, sql, no_tx), Vec::<String>::new());
    }
}

/// The last migration of the release before the outbox was sequenced (0013).
const PREVIOUS_RELEASE: i64 = 12;

/// One round of the previous release's writes, with its own statements: a verification with its
/// history row and day count; then its approval, with its history row, its event (no sequence,
/// no due time: that release had neither) and its count.
async fn previous_release_round(pool: &AnyPool, tenant: &str, n: usize) -> Result<(), StoreError> {
    let at = ts(now());
    let day = at[..10].to_string();
    let id = format!("ver_{}", ulid::Ulid::generate());
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO verifications (id, tenant, reference, subject_id, provider, \
         provider_reference, status, request_hash, created_at, updated_at, country) \
         VALUES ($1, $2, $3, $4, 'p1', $5, 'pending', 'h', $6, $6, 'CL')",
    )
    .bind(&id)
    .bind(tenant)
    .bind(format!("old-{n}"))
    .bind(format!("sub-{n}"))
    .bind(format!("pref-{n}"))
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, \
         source, actor, at) VALUES ($1, $2, $3, NULL, 'pending', 'create', NULL, $4)",
    )
    .bind(format!("chg_{}", ulid::Ulid::generate()))
    .bind(tenant)
    .bind(&id)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO stats_daily (tenant, day, provider, country, started, fallbacks, approved, \
         rejected, expired, abandoned, cancelled, decided_at_once) \
         VALUES ($1, $2, 'p1', 'CL', 1, 0, 0, 0, 0, 0, 0, 0) \
         ON CONFLICT (tenant, day, provider, country) DO UPDATE SET \
         started = stats_daily.started + 1",
    )
    .bind(tenant)
    .bind(&day)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE verifications SET status = 'approved', updated_at = $1, completed_at = $1 \
         WHERE id = $2 AND status = 'pending'",
    )
    .bind(&at)
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, \
         source, actor, at) VALUES ($1, $2, $3, 'pending', 'approved', 'webhook', NULL, $4)",
    )
    .bind(format!("chg_{}", ulid::Ulid::generate()))
    .bind(tenant)
    .bind(&id)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO events (id, tenant, verification_id, event_type, payload, \
         created_at, state, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, 'verification.updated', '{}', $4, 'pending', 0, $4)",
    )
    .bind(format!("evt_{}", ulid::Ulid::generate()))
    .bind(tenant)
    .bind(&id)
    .bind(&at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE stats_daily SET approved = approved + 1 \
         WHERE tenant = $1 AND day = $2 AND provider = 'p1' AND country = 'CL'",
    )
    .bind(tenant)
    .bind(&day)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A database at the previous release; its writer keeps writing while this release starts on it
/// (and migrates it) and after: no write fails, the day's counts are exactly what was written,
/// and every event, including those written after the migrations, takes a place in its line
/// and is due, with attempt numbers that continue the previous release's.
async fn rolling_upgrade(url: &str, sqlite: bool) {
    sqlx::any::install_default_drivers();
    let old = AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    migrate(&old, &migrations(sqlite), Some(PREVIOUS_RELEASE), None)
        .await
        .unwrap();
    let tenant = format!("old-{}", ulid::Ulid::generate());
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (old, tenant, stop, written) =
            (old.clone(), tenant.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n = written.load(Ordering::SeqCst);
                match previous_release_round(&old, &tenant, n).await {
                    Ok(()) => {
                        written.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => errors.push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        })
    };
    while written.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This release starts on the same database: it runs migrations 13 onwards.
    let store = SqlStore::connect(url).await.unwrap();
    let at_upgrade = written.load(Ordering::SeqCst);
    while written.load(Ordering::SeqCst) < at_upgrade + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let errors = writer.await.unwrap();
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "the previous release's writes failed"
    );
    let written = i64::try_from(written.load(Ordering::SeqCst)).unwrap();
    let count = |sql: &'static str| {
        let (pool, tenant) = (&store.pool, &tenant);
        async move {
            let n: i64 = sqlx::query(sql)
                .bind(tenant)
                .fetch_one(pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            n
        }
    };
    // No miscount.
    assert_eq!(
        count("SELECT CAST(SUM(started) AS BIGINT) FROM stats_daily WHERE tenant = $1").await,
        written
    );
    assert_eq!(
        count("SELECT CAST(SUM(approved) AS BIGINT) FROM stats_daily WHERE tenant = $1").await,
        written
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE tenant = $1").await,
        written
    );
    // Events written after migration 0013 by the previous release have no place yet...
    let strays = count("SELECT COUNT(*) FROM events WHERE tenant = $1 AND seq = 0").await;
    assert!(strays >= 20, "{strays} events written after the upgrade");
    // ...and this release's outbox gives each its place and makes it due.
    let mut sequenced = 0;
    loop {
        let n = store.sequence_strays(7).await.unwrap();
        if n == 0 {
            break;
        }
        sequenced += n;
    }
    assert!(sequenced >= u64::try_from(strays).unwrap());
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE tenant = $1 AND seq = 0").await,
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM events WHERE tenant = $1 AND due_at IS NOT NULL \
             AND state = 'pending'"
        )
        .await,
        written,
        "each verification's one event heads its line"
    );
    // A replica of the previous release still delivering tries one of them, numbering its
    // attempt by `attempts` alone.
    let stray: String =
        sqlx::query("SELECT id FROM events WHERE tenant = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(&tenant)
            .fetch_one(&old)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "INSERT INTO event_attempts (event_id, attempt, at, status_code, latency_ms, error) \
         VALUES ('{stray}', 1, '{at}', 500, 3, NULL); \
         UPDATE events SET attempts = attempts + 1 WHERE id = '{stray}'",
        at = ts(now())
    )))
    .execute(&old)
    .await
    .unwrap();
    // This release's next attempt on the event the previous one tried is number 2.
    let due = store
        .due_events(now() + chrono::Duration::hours(1), 100_000)
        .await
        .unwrap();
    let event = due.into_iter().find(|e| e.id == stray).unwrap();
    let until = now() + chrono::Duration::seconds(30);
    assert!(
        store
            .claim_event(&event, "token", now(), until)
            .await
            .unwrap()
    );
    let attempt = Attempt {
        at: now(),
        status_code: Some(200),
        latency_ms: 2,
        error: None,
    };
    store
        .record_attempt(
            &event,
            "token",
            "https://example.test/hook",
            &attempt,
            AttemptOutcome::Delivered,
        )
        .await
        .unwrap();
    let numbers: Vec<i64> = sqlx::query_scalar(
        "SELECT attempt FROM event_attempts WHERE event_id = $1 ORDER BY attempt",
    )
    .bind(&stray)
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(numbers, [1, 2]);
}

#[tokio::test]
async fn a_rolling_upgrade_on_sqlite_loses_and_miscounts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
    rolling_upgrade(&url, true).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn a_rolling_upgrade_on_postgresql_loses_and_miscounts_nothing() {
    let schema = super::tests::PgSchema::create("upgrade").await;
    rolling_upgrade(&schema.url, false).await;
    schema.drop().await;
}

/// Two replicas starting at once on a new database both migrate it and start: the one that
/// waits for the other's migrations must not hold a snapshot while it waits, or the other's
/// concurrent index build (0016), which waits for every older snapshot, and its wait deadlock.
#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn two_replicas_starting_at_once_on_postgresql_both_migrate_and_start() {
    for _ in 0..3 {
        let schema = super::tests::PgSchema::create("twins").await;
        let url = &schema.url;
        let (a, b) = tokio::join!(SqlStore::connect(url), SqlStore::connect(url));
        let (a, b) = (a.map(|_| ()), b.map(|_| ()));
        schema.drop().await;
        assert!(a.is_ok() && b.is_ok(), "{a:?} / {b:?}");
    }
}
