//! The reconciler's claims on unfinished verifications, and when each is read next.

use super::*;

/// The reconciler's work list: unfinished verifications, claimed by one replica at a time.
#[async_trait]
pub trait ReconcileStore: Send + Sync {
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
}

#[async_trait]
impl ReconcileStore for SqlStore {
    async fn claim_unfinished(
        &self,
        provider: &str,
        after_id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredVerification>, StoreError> {
        let args = args![provider, after_id, ts(now), ts(until)];
        let rows = self
            .write(move |tx| {
                Box::pin(async move {
                    let sql = claim_unfinished_sql(tx.postgres(), limit);
                    tx.fetch_all(&sql, &args).await
                })
            })
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| stored_from(|i| row.opt_text(i, "a verification's column")))
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING keeps no order; the caller pages on the last id.
        claimed.sort_by(|a, b| a.verification.id.cmp(&b.verification.id));
        Ok(claimed)
    }

    async fn schedule_reads(&self, next: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        if next.is_empty() {
            return Ok(());
        }
        let next = next.to_vec();
        self.write(move |tx| {
            Box::pin(async move {
                for (id, at) in &next {
                    tx.execute(
                        "UPDATE verifications SET reconcile_at = $1 WHERE id = $2",
                        &args![ts(*at), id],
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
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
}
