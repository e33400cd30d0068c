//! A subject's verifications over time, and the ids providers gave the subject.

use super::*;

/// The count behind [`SubjectStore::subject_reverifications`] (also read by the query-plan test).
pub(super) const SUBJECT_REVERIFICATIONS: &str = "SELECT COUNT(*) AS n FROM verifications \
     WHERE tenant = $1 AND subject_id = $2 AND reverification = 1";

/// What the store knows of a subject across verifications.
#[async_trait]
pub trait SubjectStore: Send + Sync {
    /// The subject's newest verification.
    async fn subject_latest(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<Verification>, StoreError>;

    /// The subject's newest verification, and its newest approved one.
    async fn subject_history(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Option<Verification>, Option<Verification>), StoreError>;

    /// How many of the subject's verifications were started when its newest approval had
    /// lapsed.
    async fn subject_reverifications(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<u64, StoreError>;

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
}

#[async_trait]
impl SubjectStore for SqlStore {
    async fn subject_latest(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<Verification>, StoreError> {
        let latest = self
            .fetch_one_where(SUBJECT_LATEST, &[tenant, subject_id])
            .await?;
        Ok(latest.map(|s| s.verification))
    }

    async fn subject_history(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Option<Verification>, Option<Verification>), StoreError> {
        let latest = self.subject_latest(tenant, subject_id).await?;
        let approved = self
            .fetch_one_where(SUBJECT_APPROVED, &[tenant, subject_id])
            .await?;
        Ok((latest, approved.map(|s| s.verification)))
    }

    async fn subject_reverifications(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(SUBJECT_REVERIFICATIONS)
            .bind(tenant)
            .bind(subject_id)
            .fetch_one(&self.pool)
            .await?;
        count(&row, "n")
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
        let args = args![tenant, provider, subject_id, subject_ref, ts(Utc::now())];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO subject_refs (tenant, provider, subject_id, subject_ref, \
                     created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant, provider, subject_id) DO NOTHING",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}
