//! The stores the gateway runs on: SQLite files and one PostgreSQL database the harness creates,
//! seeded with bulk SQL copies of one real verification.

use crate::load::Error;
use sqlx::{AnyPool, Connection, Row, any::AnyPoolOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The columns copied from the template verification into every seeded row (the others, `id`,
/// `tenant`, `reference`, `subject_id`, `provider_reference`, `country` and `created_at`'s day,
/// vary by row).
const COPIED: [&str; 13] = [
    "provider",
    "status",
    "reason",
    "verification_url",
    "expires_at",
    "decision",
    "metadata",
    "request_hash",
    "created_at",
    "updated_at",
    "completed_at",
    "routing",
    "reconcile_at",
];

/// One real verification, as the gateway stored it (created through the gateway, approved at
/// the simulator, its webhook applied), whose columns the seeded rows copy.
#[derive(Clone, Debug)]
pub struct Template(Vec<Option<String>>);

impl Template {
    /// Reads verification `id` from the store at `url`.
    pub async fn read(url: &str, id: &str) -> Result<Template, Error> {
        let pool = pool(url).await?;
        let row = sqlx::query("SELECT * FROM verifications WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?;
        let mut values = Vec::new();
        for column in COPIED {
            values.push(row.try_get::<Option<String>, _>(column)?);
        }
        pool.close().await;
        Ok(Template(values))
    }
}

/// The id of seeded row `n` (1-based): `ver_` and 26 digits, as long as a real `ver_` + ULID.
pub fn seeded_id(n: u64) -> String {
    format!("ver_{n:026}")
}

/// The subject of seeded row `n`: two rows per subject.
pub fn seeded_subject(n: u64) -> String {
    format!("subject-{}", n / 2)
}

/// The tenant every seeded row belongs to.
pub const TENANT: &str = "bench";

/// Days the seeded rows' creation is spread over (row `n` is `n % DAYS` days before the
/// template's), so that the stats rollups hold a year of days.
pub const DAYS: u64 = 365;

/// Subject countries of the seeded rows, in turn, a year of days each.
const COUNTRIES: [&str; 5] = ["CL", "AR", "MX", "PE", "CO"];

/// Distinct decision-time buckets per day, instance and country: real times spread over about a
/// minute to three days, some 170 buckets of 5 %; a busy day fills most of them.
const BUCKETS: u64 = 150;

async fn pool(url: &str) -> Result<AnyPool, Error> {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await?)
}

/// A store the harness seeds before it starts a gateway on it.
pub struct Store {
    /// The URL the gateway is given.
    pub url: String,
    /// Rows seeded so far (ids 1..=rows).
    pub rows: u64,
    postgres: bool,
}

impl Store {
    /// A new SQLite file in `dir`, with the gateway's schema.
    pub async fn sqlite(dir: &Path, name: &str) -> Result<Store, Error> {
        // Not beside the policy files: the gateway watches their directory, and every write to
        // the database would wake the watcher.
        let dir = dir.join("stores");
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Store::migrated(url, false).await
    }

    /// The PostgreSQL database at `url` (just created by [`Postgres::create`]), with the schema.
    pub async fn postgres(url: &str) -> Result<Store, Error> {
        Store::migrated(url.to_owned(), true).await
    }

    async fn migrated(url: String, postgres: bool) -> Result<Store, Error> {
        // The gateway's own migrations, as `serve` runs them.
        drop(kyc_gateway::store::SqlStore::connect(&url).await?);
        Ok(Store {
            url,
            rows: 0,
            postgres,
        })
    }

    /// Adds rows up to `rows` in all (copies of `template`), then refreshes the planner's
    /// statistics (`ANALYZE`; `VACUUM ANALYZE` on PostgreSQL, so autovacuum does not start in
    /// the middle of a measurement). Answers the time the inserts took.
    pub async fn seed_to(&mut self, rows: u64, template: &Template) -> Result<Duration, Error> {
        let started = Instant::now();
        if rows > self.rows {
            let pool = pool(&self.url).await?;
            let columns = COPIED.join(", ");
            let mut copied: Vec<String> = (3..3 + COPIED.len()).map(|i| format!("${i}")).collect();
            // created_at: the template's time of day, `n % DAYS` days before its day.
            let created = 3 + COPIED
                .iter()
                .position(|c| *c == "created_at")
                .expect("copied");
            copied[created - 3] = if self.postgres {
                format!(
                    "to_char(substr(${created}, 1, 10)::date - (n % {DAYS})::int, 'YYYY-MM-DD') \
                     || substr(${created}, 11)"
                )
            } else {
                format!(
                    "date(substr(${created}, 1, 10), '-' || (n % {DAYS}) || ' days') \
                     || substr(${created}, 11)"
                )
            };
            let copied = copied.join(", ");
            let country = format!(
                "CASE n / {DAYS} % 5 {} END",
                COUNTRIES
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("WHEN {i} THEN '{c}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let sql = if self.postgres {
                format!(
                    "INSERT INTO verifications (id, tenant, reference, subject_id, \
                     provider_reference, country, {columns}) \
                     SELECT 'ver_' || lpad(n::text, 26, '0'), '{TENANT}', 'bench-ref-' || n, \
                     'subject-' || (n / 2), lpad(n::text, 36, '0'), {country}, {copied} \
                     FROM generate_series($1::bigint, $2::bigint) AS g(n)"
                )
            } else {
                format!(
                    "WITH RECURSIVE g(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM g WHERE n < $2) \
                     INSERT INTO verifications (id, tenant, reference, subject_id, \
                     provider_reference, country, {columns}) \
                     SELECT 'ver_' || printf('%026d', n), '{TENANT}', 'bench-ref-' || n, \
                     'subject-' || (n / 2), printf('%036d', n), {country}, {copied} FROM g"
                )
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind((self.rows + 1) as i64)
                .bind(rows as i64);
            for value in &template.0 {
                query = query.bind(value.clone());
            }
            query.execute(&pool).await?;
            self.count_rows(&pool).await?;
            let analyze = if self.postgres {
                "VACUUM ANALYZE verifications"
            } else {
                "ANALYZE"
            };
            sqlx::query(analyze).execute(&pool).await?;
            pool.close().await;
            self.rows = rows;
        }
        Ok(started.elapsed())
    }
}

impl Store {
    /// Counts the seeded rows into the stats rollups, as the gateway does with each change: per
    /// day, instance and country, `stats_daily` by status and its `decision_times` by bucket
    /// (spread over [`BUCKETS`] buckets by row number; the rows' own times are copies).
    async fn count_rows(&self, pool: &AnyPool) -> Result<(), Error> {
        let seq = if self.postgres {
            "CAST(substr(id, 5) AS BIGINT)"
        } else {
            "CAST(substr(id, 5) AS INTEGER)"
        };
        // Rows of one day and country are DAYS * 5 apart: the next of them, the next bucket.
        let per_bucket = DAYS * COUNTRIES.len() as u64;
        let counted =
            |status: &str| format!("SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)");
        let joined = if self.postgres {
            "string_agg(bucket::text || ':' || n::text, ',')"
        } else {
            "group_concat(bucket || ':' || n, ',')"
        };
        let statements = [
            format!("DELETE FROM stats_daily WHERE tenant = '{TENANT}'"),
            format!(
                "INSERT INTO stats_daily (tenant, day, provider, country, started, fallbacks, \
                 approved, rejected, expired, abandoned, cancelled) \
                 SELECT tenant, substr(created_at, 1, 10), provider, COALESCE(country, ''), \
                 COUNT(*), 0, {}, {}, {}, {}, {} FROM verifications WHERE tenant = '{TENANT}' \
                 GROUP BY tenant, substr(created_at, 1, 10), provider, COALESCE(country, '')",
                counted("approved"),
                counted("rejected"),
                counted("expired"),
                counted("abandoned"),
                counted("cancelled"),
            ),
            "DROP TABLE IF EXISTS bench_times".to_string(),
            format!(
                "CREATE TEMPORARY TABLE bench_times AS \
                 SELECT substr(created_at, 1, 10) AS day, provider, COALESCE(country, '') AS country, \
                 100 + {seq} / {per_bucket} % {BUCKETS} AS bucket, COUNT(*) AS n \
                 FROM verifications WHERE tenant = '{TENANT}' AND status IN \
                 ('approved', 'rejected', 'expired', 'abandoned', 'cancelled') \
                 GROUP BY 1, 2, 3, 4"
            ),
            format!(
                "UPDATE stats_daily SET decision_times = t.times FROM \
                 (SELECT day, provider, country, {joined} AS times FROM bench_times \
                 GROUP BY day, provider, country) AS t \
                 WHERE stats_daily.tenant = '{TENANT}' AND stats_daily.day = t.day \
                 AND stats_daily.provider = t.provider AND stats_daily.country = t.country"
            ),
            "DROP TABLE bench_times".to_string(),
        ];
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
        }
        Ok(())
    }
}

/// A PostgreSQL server reached through an admin URL, and the database the harness made there.
pub struct Postgres {
    admin_url: String,
    /// `kyc_bench_<pid>`.
    pub name: String,
    /// The admin URL with the database replaced by [`Self::name`].
    pub url: String,
}

impl Postgres {
    /// Creates `kyc_bench_<pid>` (dropping a leftover of that name first).
    pub async fn create(admin_url: &str) -> Result<Postgres, Error> {
        sqlx::any::install_default_drivers();
        let name = format!("kyc_bench_{}", std::process::id());
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        let mut admin = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::AnyConnection::connect(admin_url),
        )
        .await
        .map_err(|_| "timed out")??;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Postgres {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database (and any connection still open to it).
    pub async fn drop_database(&self) -> Result<(), Error> {
        let mut admin = sqlx::AnyConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }

    /// Empties the gateway's tables, for a part that needs fewer rows than are there.
    pub async fn truncate(store: &mut Store) -> Result<(), Error> {
        let pool = pool(&store.url).await?;
        sqlx::query("TRUNCATE verifications, status_changes, events, event_attempts, subject_refs")
            .execute(&pool)
            .await?;
        pool.close().await;
        store.rows = 0;
        Ok(())
    }
}
