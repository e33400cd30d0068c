//! Where verifications live: a small trait and one SQL implementation over sqlx's `Any` driver, so
//! the same queries run on an embedded SQLite file (the default) and on PostgreSQL (several
//! replicas).
//!
//! The store enforces the status rule itself: an update that would move a verification out of a
//! final status, or back to an earlier stage, changes nothing. Updates are compare-and-set on the
//! status read, so two replicas applying events at once cannot overwrite each other.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use kyc_core::{ProviderVerification, Status, Verification};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlSafeStr};
use std::time::Duration;

/// A store failure. Its text may name tables and constraints, never row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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

/// A stored verification with what only the gateway needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVerification {
    /// The owning tenant.
    pub tenant: String,
    /// SHA-256 of the canonical create request: same reference with another body is a conflict.
    pub request_hash: String,
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
    /// Exact status.
    pub status: Option<Status>,
    /// Only ids before this one (newest first paging).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: u32,
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
pub trait Store: Send + Sync {
    /// Inserts a new verification, or returns the one that already holds (tenant, reference).
    async fn insert(&self, row: &StoredVerification) -> Result<Inserted, StoreError>;
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
    /// Applies what a provider says now, respecting the status rule; returns the stored result.
    async fn apply(
        &self,
        current: &StoredVerification,
        update: &ProviderVerification,
    ) -> Result<StoredVerification, StoreError>;
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
    /// Verifications not yet final, least recently updated first (for the reconciler).
    async fn unfinished(&self, limit: u32) -> Result<Vec<StoredVerification>, StoreError>;
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The SQL store, on SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
}

const COLUMNS: &str = "id, tenant, reference, subject_id, provider, provider_reference, status, \
     reason, verification_url, expires_at, decision, metadata, request_hash, created_at, updated_at, completed_at";

impl SqlStore {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
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
            .connect(&url)
            .await?;
        let migration = Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            AssertSqlSafe(include_str!("../migrations/0001_init.sql")).into_sql_str(),
            false,
        );
        Migrator::with_migrations(vec![migration])
            .run(&pool)
            .await?;
        Ok(SqlStore { pool })
    }

    async fn fetch_one_where(
        &self,
        condition: &'static str,
        binds: &[&str],
    ) -> Result<Option<StoredVerification>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM verifications WHERE {condition}");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b.to_string());
        }
        query
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row_to_stored(&r))
            .transpose()
    }
}

/// Now, at the precision the store keeps (microseconds), so an answer given before a write equals
/// the same row read back.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
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
    let status: String = row.try_get("status")?;
    let verification = Verification {
        id: row.try_get("id")?,
        reference: row.try_get("reference")?,
        subject_id: row.try_get("subject_id")?,
        provider: row.try_get("provider")?,
        provider_reference: row.try_get("provider_reference")?,
        status: Status::parse(&status).ok_or(StoreError::Corrupt {
            table: "verifications",
            column: "status",
        })?,
        reason: from_json(row.try_get("reason")?, "reason")?,
        verification_url: row.try_get("verification_url")?,
        expires_at: parse_ts(row.try_get("expires_at")?, "expires_at")?,
        decision: from_json(row.try_get("decision")?, "decision")?,
        metadata: from_json(row.try_get("metadata")?, "metadata")?,
        created_at: parse_ts(Some(row.try_get("created_at")?), "created_at")?
            .expect("some in, some out"),
        updated_at: parse_ts(Some(row.try_get("updated_at")?), "updated_at")?
            .expect("some in, some out"),
        completed_at: parse_ts(row.try_get("completed_at")?, "completed_at")?,
    };
    Ok(StoredVerification {
        tenant: row.try_get("tenant")?,
        request_hash: row.try_get("request_hash")?,
        verification,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqlStore {
    async fn insert(&self, row: &StoredVerification) -> Result<Inserted, StoreError> {
        let v = &row.verification;
        let sql = format!(
            "INSERT INTO verifications ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        let result = sqlx::query(AssertSqlSafe(sql))
            .bind(&v.id)
            .bind(&row.tenant)
            .bind(&v.reference)
            .bind(&v.subject_id)
            .bind(&v.provider)
            .bind(&v.provider_reference)
            .bind(v.status.as_str())
            .bind(to_json(&v.reason))
            .bind(&v.verification_url)
            .bind(v.expires_at.map(ts))
            .bind(to_json(&v.decision))
            .bind(to_json(&v.metadata))
            .bind(&row.request_hash)
            .bind(ts(v.created_at))
            .bind(ts(v.updated_at))
            .bind(v.completed_at.map(ts))
            .execute(&self.pool)
            .await;
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
        self.fetch_one_where("tenant = $1 AND id = $2", &[tenant, id])
            .await
    }

    async fn find_by_reference(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError> {
        self.fetch_one_where("tenant = $1 AND reference = $2", &[tenant, reference])
            .await
    }

    async fn find_by_provider_reference(
        &self,
        provider: &str,
        provider_reference: &str,
    ) -> Result<Option<StoredVerification>, StoreError> {
        self.fetch_one_where(
            "provider = $1 AND provider_reference = $2",
            &[provider, provider_reference],
        )
        .await
    }

    async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredVerification>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM verifications WHERE tenant = $1");
        let mut binds = vec![tenant.to_string()];
        let mut add = |column: &str, op: &str, value: String| {
            binds.push(value);
            sql.push_str(&format!(" AND {column} {op} ${}", binds.len()));
        };
        if let Some(r) = &filter.reference {
            add("reference", "=", r.clone());
        }
        if let Some(s) = &filter.subject_id {
            add("subject_id", "=", s.clone());
        }
        if let Some(s) = filter.status {
            add("status", "=", s.as_str().to_string());
        }
        if let Some(c) = &filter.before_id {
            add("id", "<", c.clone());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(row_to_stored).collect()
    }

    async fn subject_history(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Option<Verification>, Option<Verification>), StoreError> {
        let latest = self
            .fetch_one_where(
                "tenant = $1 AND subject_id = $2 ORDER BY id DESC LIMIT 1",
                &[tenant, subject_id],
            )
            .await?;
        let approved = self
            .fetch_one_where(
                "tenant = $1 AND subject_id = $2 AND status = 'approved' \
                 ORDER BY completed_at DESC LIMIT 1",
                &[tenant, subject_id],
            )
            .await?;
        Ok((
            latest.map(|s| s.verification),
            approved.map(|s| s.verification),
        ))
    }

    async fn apply(
        &self,
        current: &StoredVerification,
        update: &ProviderVerification,
    ) -> Result<StoredVerification, StoreError> {
        let mut current = current.clone();
        // Two tries: if another writer changed the status between our read and our write, read
        // again and judge the update against what is there now.
        for _ in 0..2 {
            let old = &current.verification;
            let Some(next) = kyc_core::merge(old, update, now()) else {
                return Ok(current);
            };
            let done = sqlx::query(
                "UPDATE verifications SET status = $1, reason = $2, verification_url = $3, \
                 expires_at = $4, decision = $5, updated_at = $6, completed_at = $7 \
                 WHERE id = $8 AND status = $9",
            )
            .bind(next.status.as_str())
            .bind(to_json(&next.reason))
            .bind(&next.verification_url)
            .bind(next.expires_at.map(ts))
            .bind(to_json(&next.decision))
            .bind(ts(next.updated_at))
            .bind(next.completed_at.map(ts))
            .bind(&next.id)
            .bind(old.status.as_str())
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                current.verification = next;
                return Ok(current);
            }
            match self.get(&current.tenant, &current.verification.id).await? {
                Some(fresh) => current = fresh,
                None => return Ok(current),
            }
        }
        Ok(current)
    }

    async fn subject_ref(
        &self,
        tenant: &str,
        provider: &str,
        subject_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT subject_ref FROM subject_refs \
             WHERE tenant = $1 AND provider = $2 AND subject_id = $3",
        )
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<StoredVerification>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM verifications \
             WHERE status IN ('pending', 'in_progress', 'in_review') \
             ORDER BY updated_at ASC LIMIT {limit}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_stored).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

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
                created_at: t,
                updated_at: t,
                completed_at: None,
            },
        }
    }

    fn update(status: Status) -> ProviderVerification {
        ProviderVerification {
            provider_reference: String::new(),
            status,
            reason: Some(Reason {
                code: "c".into(),
                provider_code: Some("pc".into()),
                message: None,
            }),
            verification_url: None,
            expires_at: None,
            decision: Some(Decision::default()),
            subject_ref: None,
        }
    }

    async fn suite(store: &SqlStore) {
        let tenant = format!("t_{}", ulid::Ulid::generate());
        let other = format!("o_{}", ulid::Ulid::generate());
        let a = sample(&tenant, "ref-a", "sub-1");
        assert!(matches!(store.insert(&a).await.unwrap(), Inserted::Created));
        // The same reference again returns the first row, not a second one.
        let dup = sample(&tenant, "ref-a", "sub-1");
        match store.insert(&dup).await.unwrap() {
            Inserted::Exists(existing) => assert_eq!(*existing, a),
            Inserted::Created => panic!("a second row for one reference"),
        }
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

        // Status rule: forward moves apply, final statuses stick.
        let moved = store.apply(&a, &update(Status::InProgress)).await.unwrap();
        assert_eq!(moved.verification.status, Status::InProgress);
        let stale = store.apply(&a, &update(Status::Approved)).await.unwrap();
        assert_eq!(
            stale.verification.status,
            Status::Approved,
            "re-read after a lost race"
        );
        assert!(stale.verification.completed_at.is_some());
        let late = store
            .apply(&stale, &update(Status::Rejected))
            .await
            .unwrap();
        assert_eq!(late.verification.status, Status::Approved);
        let back = store
            .get(&tenant, &a.verification.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.verification.status, Status::Approved);
        assert_eq!(back.verification.decision, Some(Decision::default()));

        // Listing, filtering, paging, history.
        for i in 0..3 {
            store
                .insert(&sample(&tenant, &format!("ref-{i}"), "sub-2"))
                .await
                .unwrap();
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
        let unfinished = store.unfinished(10_000).await.unwrap();
        assert!(unfinished.iter().all(|s| !s.verification.status.is_final()));
        assert!(unfinished.iter().any(|s| s.tenant == tenant));

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

    #[tokio::test]
    async fn sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        suite(&store).await;
        // Reopening runs the migrations again harmlessly and keeps the data.
        drop(store);
        let again = SqlStore::connect(&url).await.unwrap();
        assert_eq!(again.unfinished(100).await.unwrap().len(), 3);
    }

    /// A PostgreSQL database to test against: `KYC_TEST_POSTGRES_URL`, which `.ci/run` sets.
    fn postgres_url() -> String {
        std::env::var("KYC_TEST_POSTGRES_URL")
            .expect("this test needs PostgreSQL: set KYC_TEST_POSTGRES_URL=postgres://user@host/db")
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
    async fn postgres_store() {
        let store = SqlStore::connect(&postgres_url()).await.unwrap();
        suite(&store).await;
    }
}
