//! Approvals reaching their lapse: the expiry job reads each tenant's approvals in order of
//! completion from where it last stopped (its cursor), and records the notices it sends together
//! with the cursor's move, compare-and-set, so that replicas running the job at once send each
//! notice once.

use super::outbox::lock_line;
use super::*;

/// Which notice: `expiring` (the tenant's notice days before the lapse) or `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapseNotice {
    /// Before the approval lapses.
    Expiring,
    /// When it has lapsed.
    Expired,
}

impl LapseNotice {
    /// How it is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            LapseNotice::Expiring => "expiring",
            LapseNotice::Expired => "expired",
        }
    }
}

/// Where a tenant's scan stands: the last approval passed, by completion time then id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapseCursor {
    /// Its completion time.
    pub completed_at: DateTime<Utc>,
    /// Its id (`""` before the first).
    pub verification_id: String,
}

/// An approval the scan passed.
#[derive(Debug, Clone)]
pub struct ApprovalPassed {
    /// The approved verification.
    pub verification: Verification,
    /// Whether the subject has a newer approval: it gets no notice.
    pub superseded: bool,
}

/// The approvals after `cursor`, completed at or before `through`, oldest first (also read by
/// the query-plan test): $1 tenant, $2 and $3 the cursor, $4 `through`.
pub(super) fn approvals_after_sql(limit: u32) -> String {
    format!(
        "SELECT {COLUMNS}, CAST(CASE WHEN EXISTS (SELECT 1 FROM verifications n \
         WHERE n.tenant = v.tenant AND n.subject_id = v.subject_id AND n.status = 'approved' \
         AND n.completed_at > v.completed_at) THEN 1 ELSE 0 END AS BIGINT) AS superseded \
         FROM verifications v WHERE v.tenant = $1 AND v.status = 'approved' \
         AND v.subject_id <> '' \
         AND v.completed_at >= $2 AND v.completed_at <= $4 \
         AND (v.completed_at > $2 OR v.id > $3) \
         ORDER BY v.completed_at, v.id LIMIT {limit}"
    )
}

/// The expiry job's reads and writes.
#[async_trait]
pub trait LapseStore: Send + Sync {
    /// The tenant's cursor for `notice`, if the job has recorded one.
    async fn lapse_cursor(
        &self,
        tenant: &str,
        notice: LapseNotice,
    ) -> Result<Option<LapseCursor>, StoreError>;

    /// Up to `limit` of the tenant's approvals after `cursor` completed at or before `through`,
    /// oldest first.
    async fn approvals_after(
        &self,
        tenant: &str,
        cursor: &LapseCursor,
        through: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ApprovalPassed>, StoreError>;

    /// Moves the tenant's cursor from `from` (none: the job has none yet) to `to` and writes
    /// `events`, in one transaction; `false`, writing nothing, when the cursor is no longer at
    /// `from` (another replica moved it first).
    async fn record_lapses(
        &self,
        tenant: &str,
        notice: LapseNotice,
        from: Option<&LapseCursor>,
        to: &LapseCursor,
        events: &[NewEvent],
    ) -> Result<bool, StoreError>;
}

#[async_trait]
impl LapseStore for SqlStore {
    async fn lapse_cursor(
        &self,
        tenant: &str,
        notice: LapseNotice,
    ) -> Result<Option<LapseCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT completed_at, verification_id FROM lapse_cursors \
             WHERE tenant = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(notice.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(LapseCursor {
                completed_at: parse_ts(Some(row.try_get(0)?), "completed_at")?
                    .expect("some in, some out"),
                verification_id: row.try_get(1)?,
            })
        })
        .transpose()
    }

    async fn approvals_after(
        &self,
        tenant: &str,
        cursor: &LapseCursor,
        through: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ApprovalPassed>, StoreError> {
        let binds = vec![
            tenant.to_owned(),
            ts(cursor.completed_at),
            cursor.verification_id.clone(),
            ts(through),
        ];
        let rows = bound(approvals_after_sql(limit), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ApprovalPassed {
                    verification: row_to_stored(row)?.verification,
                    superseded: count(row, "superseded")? > 0,
                })
            })
            .collect()
    }

    async fn record_lapses(
        &self,
        tenant: &str,
        notice: LapseNotice,
        from: Option<&LapseCursor>,
        to: &LapseCursor,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let moved = match from {
            None => (
                "INSERT INTO lapse_cursors (tenant, kind, completed_at, verification_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, kind) DO NOTHING",
                args![
                    tenant,
                    notice.as_str(),
                    ts(to.completed_at),
                    &to.verification_id
                ]
                .to_vec(),
            ),
            Some(from) => (
                "UPDATE lapse_cursors SET completed_at = $3, verification_id = $4 \
                 WHERE tenant = $1 AND kind = $2 AND completed_at = $5 AND verification_id = $6",
                args![
                    tenant,
                    notice.as_str(),
                    ts(to.completed_at),
                    &to.verification_id,
                    ts(from.completed_at),
                    &from.verification_id,
                ]
                .to_vec(),
            ),
        };
        let (tenant, events) = (tenant.to_owned(), events.to_vec());
        self.write(move |tx| {
            Box::pin(async move {
                if tx.execute(moved.0, &moved.1).await? != 1 {
                    return Ok(false);
                }
                for event in &events {
                    lock_line(tx, &tenant, &event.verification_id).await?;
                    insert_event(tx, event).await?;
                }
                Ok(true)
            })
        })
        .await
    }
}
