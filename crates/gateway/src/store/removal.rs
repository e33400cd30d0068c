//! Removing what the gateway holds: a tenant's final verifications past its retention, and a
//! subject's data on request (erasure). Both leave the history's rows in place (they hold no
//! personal data: statuses, sources, times; a reviewer's note is blanked) and add a tombstone row
//! for each verification, sealed into the chain like any other, so the chain stays whole and
//! says what was removed, when and why.

use super::*;

/// The statuses retention may remove: every final one.
const FINAL: &str = "'approved', 'rejected', 'expired', 'abandoned', 'cancelled'";

/// What stands in an erased verification's subject id (no subject id is empty).
pub const ERASED_SUBJECT: &str = "";

/// A tenant's final verifications last changed before $2 with no event waiting, oldest first
/// (also read by the query-plan test).
pub(super) fn past_retention_sql(limit: u32, postgres: bool) -> String {
    let lock = if postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    format!(
        "SELECT v.id, v.status, v.subject_id FROM verifications v WHERE v.tenant = $1 \
         AND v.status IN ({FINAL}) AND v.updated_at < $2 \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.tenant = v.tenant \
         AND e.verification_id = v.id AND e.state = 'pending') \
         ORDER BY v.updated_at LIMIT {limit}{lock}"
    )
}

/// What a provider instance holds on a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    /// The verification.
    pub verification_id: String,
    /// Where it stands.
    pub status: Status,
    /// The provider instance.
    pub provider: String,
    /// The provider's reference of it.
    pub provider_reference: String,
}

/// Retention and erasure.
#[async_trait]
pub trait RemovalStore: Send + Sync {
    /// Removes up to `limit` of the tenant's final verifications last changed before `cutoff`
    /// (none with an event still to deliver), each with its events, leaving a tombstone in its
    /// history; how many. Replicas may run it at once: each row is removed once.
    async fn remove_past(
        &self,
        tenant: &str,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// The subject's verifications at their providers, oldest first, and the ids providers gave
    /// the subject itself (provider, id).
    async fn holdings(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Vec<Holding>, Vec<(String, String)>), StoreError>;

    /// Erases the subject: its verifications keep their status, provider, country, routing and
    /// times (they still count in the stats) and lose the subject id, the references, metadata,
    /// link, reason, decision, request hash and salt; their events and the subject's provider
    /// ids and reservations go; each verification's history gets a tombstone. `event` goes out
    /// with it. Done only when the subject's verifications are still exactly `expected` (ids, as
    /// [`RemovalStore::holdings`] read them) and all final; otherwise nothing is written and the
    /// answer is `false`: one was created or is in flight since.
    async fn erase_subject(
        &self,
        tenant: &str,
        subject_id: &str,
        expected: &[String],
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;

    /// Folds the SQLite write-ahead log into the file, so that what was erased is gone from
    /// both (best effort: a reader holding an old snapshot delays it). Nothing on PostgreSQL.
    async fn compact(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl RemovalStore for SqlStore {
    async fn remove_past(
        &self,
        tenant: &str,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let (tenant, cutoff) = (tenant.to_owned(), ts(cutoff));
        super::retrying_conflicts(|| {
            let (tenant, cutoff) = (tenant.clone(), cutoff.clone());
            self.write(move |tx| {
                Box::pin(async move {
                    let sql = past_retention_sql(limit, tx.postgres());
                    let rows = tx.fetch_all(&sql, &args![&tenant, &cutoff]).await?;
                    let mut removed = 0u64;
                    for row in rows {
                        let (id, status) = (row.text(0, "id")?, row.text(1, "status")?);
                        let subject = row.text(2, "subject_id")?;
                        let gone = tx
                            .execute(
                                &format!(
                                    "DELETE FROM verifications WHERE tenant = $1 AND id = $2 \
                                     AND status IN ({FINAL}) AND updated_at < $3"
                                ),
                                &args![&tenant, &id, &cutoff],
                            )
                            .await?;
                        if gone != 1 {
                            continue;
                        }
                        forget(tx, &tenant, &id, &status, "retention", "removed").await?;
                        // The provider's id for the subject goes with its last verification.
                        tx.execute(
                            "DELETE FROM subject_refs WHERE tenant = $1 AND subject_id = $2 \
                             AND NOT EXISTS (SELECT 1 FROM verifications v \
                             WHERE v.tenant = $1 AND v.subject_id = $2)",
                            &args![&tenant, &subject],
                        )
                        .await?;
                        removed += 1;
                    }
                    Ok(removed)
                })
            })
        })
        .await
    }

    async fn holdings(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<(Vec<Holding>, Vec<(String, String)>), StoreError> {
        let rows = sqlx::query(
            "SELECT id, status, provider, provider_reference FROM verifications \
             WHERE tenant = $1 AND subject_id = $2 ORDER BY id",
        )
        .bind(tenant)
        .bind(subject_id)
        .fetch_all(&self.pool)
        .await?;
        let holdings = rows
            .iter()
            .map(|row| {
                let status: String = row.try_get(1)?;
                Ok(Holding {
                    verification_id: row.try_get(0)?,
                    status: Status::parse(&status).ok_or(StoreError::Corrupt {
                        table: "verifications",
                        column: "status",
                    })?,
                    provider: row.try_get(2)?,
                    provider_reference: row.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let refs = sqlx::query(
            "SELECT provider, subject_ref FROM subject_refs WHERE tenant = $1 AND subject_id = $2 \
             ORDER BY provider",
        )
        .bind(tenant)
        .bind(subject_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((holdings, refs))
    }

    async fn erase_subject(
        &self,
        tenant: &str,
        subject_id: &str,
        expected: &[String],
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (tenant, subject, event) = (tenant.to_owned(), subject_id.to_owned(), event.cloned());
        let expected = expected.to_vec();
        super::retrying_conflicts(|| {
            let (tenant, subject, event) = (tenant.clone(), subject.clone(), event.clone());
            let expected = expected.clone();
            self.write(move |tx| {
                Box::pin(
                    async move { erase_in(tx, &tenant, &subject, &expected, event.as_ref()).await },
                )
            })
        })
        .await
    }

    async fn compact(&self) -> Result<(), StoreError> {
        if matches!(self.writer, Writer::Sqlite(_)) {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

/// One erasure, inside a write.
async fn erase_in(
    tx: &mut dyn WriteTx,
    tenant: &str,
    subject: &str,
    expected: &[String],
    event: Option<&NewEvent>,
) -> Result<bool, StoreError> {
    let lock = if tx.postgres() { " FOR UPDATE" } else { "" };
    let rows = tx
        .fetch_all(
            &format!(
                "SELECT id, status FROM verifications WHERE tenant = $1 AND subject_id = $2 \
                 ORDER BY id{lock}"
            ),
            &args![tenant, subject],
        )
        .await?;
    let mut held = Vec::with_capacity(rows.len());
    for row in &rows {
        let status = row.text(1, "status")?;
        if !Status::parse(&status).is_some_and(Status::is_final) {
            return Ok(false);
        }
        held.push(row.text(0, "id")?);
    }
    if held != expected {
        return Ok(false);
    }
    if rows.is_empty() {
        return Ok(true);
    }
    for row in &rows {
        let (id, status) = (row.text(0, "id")?, row.text(1, "status")?);
        forget(tx, tenant, &id, &status, "erasure", "erased").await?;
    }
    tx.execute(
        "UPDATE verifications SET subject_id = $3, reference = 'erased:' || id, \
         provider_reference = 'erased:' || id, metadata = NULL, verification_url = NULL, \
         reason = NULL, decision = NULL, request_hash = 'erased', audit_salt = NULL \
         WHERE tenant = $1 AND subject_id = $2",
        &args![tenant, subject, ERASED_SUBJECT],
    )
    .await?;
    for table in ["subject_refs", "create_attempts"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE tenant = $1 AND subject_id = $2"),
            &args![tenant, subject],
        )
        .await?;
    }
    if let Some(event) = event {
        insert_event(tx, event).await?;
    }
    Ok(true)
}

/// What removing or erasing one verification does to the tables around it: its events and
/// their attempts go (their payloads carry the verification), its history keeps its rows but
/// no reviewer's note, and gains a tombstone of `kind` from `source`.
async fn forget(
    tx: &mut dyn WriteTx,
    tenant: &str,
    id: &str,
    status: &str,
    source: &str,
    kind: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM event_attempts WHERE event_id IN \
         (SELECT e.id FROM events e WHERE e.tenant = $1 AND e.verification_id = $2)",
        &args![tenant, id],
    )
    .await?;
    tx.execute(
        "DELETE FROM events WHERE tenant = $1 AND verification_id = $2",
        &args![tenant, id],
    )
    .await?;
    tx.execute(
        "UPDATE status_changes SET note = NULL WHERE tenant = $1 AND verification_id = $2 \
         AND note IS NOT NULL",
        &args![tenant, id],
    )
    .await?;
    tx.execute(
        "INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, \
         source, at, kind) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
        &args![
            format!("chg_{}", ulid::Ulid::generate()),
            tenant,
            id,
            status,
            source,
            ts(now()),
            kind,
        ],
    )
    .await?;
    Ok(())
}
