//! Verifications: insert, read, list, and each change written with its history row and event.

use super::*;

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

pub(super) const COLUMNS: &str = "id, tenant, reference, subject_id, provider, provider_reference, status, \
     reason, verification_url, expires_at, decision, metadata, request_hash, created_at, updated_at, completed_at, \
     routing, country";

pub(super) fn row_to_stored(row: &AnyRow) -> Result<StoredVerification, StoreError> {
    stored_from(|i| Ok(row.try_get::<Option<String>, _>(i)?))
}

/// A verification from its row: `text(i)` is column `i` of [`COLUMNS`] (all of them are text).
pub(super) fn stored_from(
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

/// The SQL and binds of a list of a tenant's verifications (also read by the query-plan test).
pub(super) fn list_query(tenant: &str, filter: &ListFilter) -> (String, Vec<String>) {
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
pub(super) const BY_ID: &str = "tenant = $1 AND id = $2";
/// A tenant's verification by the caller's reference.
pub(super) const BY_REFERENCE: &str = "tenant = $1 AND reference = $2";
/// A provider instance's verification by the provider's id (webhooks).
pub(super) const BY_PROVIDER_REFERENCE: &str = "provider = $1 AND provider_reference = $2";
/// The subject's newest verification.
pub(super) const SUBJECT_LATEST: &str = "tenant = $1 AND subject_id = $2 ORDER BY id DESC LIMIT 1";
/// The subject's newest approval.
pub(super) const SUBJECT_APPROVED: &str = "tenant = $1 AND subject_id = $2 AND status = 'approved' \
     ORDER BY completed_at DESC LIMIT 1";
/// A provider instance's unfinished verifications due for the reconciler by `$3`, a page after an
/// id.
pub(super) const UNFINISHED: &str = "provider = $1 AND status IN ('pending', 'in_progress', 'in_review') \
     AND id > $2 AND (reconcile_at IS NULL OR reconcile_at <= $3) ORDER BY id";
/// The reconciler's claim: one statement, so the rows it picks are the rows it marks. The CTE is
/// materialized so that PostgreSQL runs the locking select once. SQLite has no row locks to skip;
/// its one writer at a time makes the statement atomic.
pub(super) fn claim_unfinished_sql(postgres: bool, limit: u32) -> String {
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

/// A verification's history.
pub(super) const HISTORY: &str = "SELECT from_status, to_status, source, actor, at, kind, note \
     FROM status_changes WHERE tenant = $1 AND verification_id = $2 \
     AND kind IN ('change', 'decision') ORDER BY id";

/// A new verification ($1 to $18, the [`COLUMNS`], then $19 and $20, its experiment and arm),
/// its first history row ($21 to $28: id, tenant, verification id, from, to, source, actor, at),
/// its count in `stats_daily` ($29: 1 when it went to a fallback) and the settling of its
/// reservation, all or nothing: on PostgreSQL one statement (one round trip), on SQLite four
/// statements run by the writer in the write's transaction. Built once per backend. It is a
/// re-verification when the subject's newest approval completed before $30 (it had lapsed).
pub(super) fn insert_statements(postgres: bool) -> &'static [String] {
    static STATEMENTS: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    &STATEMENTS.get_or_init(|| [insert_sql(false), insert_sql(true)])[usize::from(postgres)]
}

fn insert_sql(postgres: bool) -> Vec<String> {
    let lapsed = "CASE WHEN (SELECT MAX(completed_at) FROM verifications \
         WHERE tenant = $2 AND subject_id = $4 AND status = 'approved') < $30 THEN 1 ELSE 0 END";
    let verification = format!(
        "INSERT INTO verifications ({COLUMNS}, experiment, arm, reverification) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, {lapsed})"
    );
    let change = "INSERT INTO status_changes (id, tenant, verification_id, from_status, \
         to_status, source, actor, at)";
    let counted = |status: &str| format!("CASE WHEN $7 = '{status}' THEN 1 ELSE 0 END");
    let stats = "INSERT INTO stats_daily (tenant, day, provider, country, started, fallbacks, \
         approved, rejected, expired, abandoned, cancelled, decided_at_once, reverifications)";
    // On PostgreSQL the statement sees the table as it was before it: the flag is `created`'s.
    let reverification = if postgres {
        "created.reverification"
    } else {
        "(SELECT reverification FROM verifications WHERE id = $1)"
    };
    // Final already at creation: decided in no time.
    let final_now = "CASE WHEN $7 IN ('approved', 'rejected', 'expired', 'abandoned', \
         'cancelled') THEN 1 ELSE 0 END";
    let counts = format!(
        "$2, substr($14, 1, 10), $5, COALESCE($18, ''), 1, $29, {}, {}, {}, {}, {}, {final_now}, \
         {reverification}",
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
         decided_at_once = stats_daily.decided_at_once + excluded.decided_at_once, \
         reverifications = stats_daily.reverifications + excluded.reverifications";
    // The create's reservation is settled by the verification: it goes with the same write.
    let settled = "DELETE FROM create_attempts WHERE tenant = $2 AND reference = $3";
    if postgres {
        // Selected from `created`, so nothing is counted when the verification is not written.
        vec![format!(
            "WITH created AS ({verification} RETURNING id, reverification), \
             history AS ({change} SELECT $21, $22, $23, $24, $25, $26, $27, $28 FROM created), \
             settled AS ({settled} AND EXISTS (SELECT 1 FROM created)) \
             {stats} SELECT {counts} FROM created {add}"
        )]
    } else {
        vec![
            verification,
            format!("{change} VALUES ($21, $22, $23, $24, $25, $26, $27, $28)"),
            settled.to_owned(),
            format!("{stats} VALUES ({counts}) {add}"),
        ]
    }
}

/// Writes one history row inside a transaction. Its id is a ULID, so history reads in time order.
pub(super) async fn insert_change(tx: &mut dyn WriteTx, c: &NewChange) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO status_changes (id, tenant, verification_id, from_status, to_status, source, \
         actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &args![
            format!("chg_{}", ulid::Ulid::generate()),
            &c.tenant,
            &c.verification_id,
            c.change.from.map(Status::as_str),
            c.change.to.as_str(),
            c.change.source.as_str(),
            &c.change.actor,
            ts(c.change.at),
        ],
    )
    .await?;
    Ok(())
}

/// Verifications and their history: every status change is written here, with its event.
#[async_trait]
pub trait VerificationStore: Send + Sync {
    /// Inserts a new verification with its first history row, or returns the one that already
    /// holds (tenant, reference). It counts as a re-verification when the subject's newest
    /// approval completed before `lapsed_before` (creation less the tenant's validity).
    async fn insert(
        &self,
        row: &StoredVerification,
        created: &NewChange,
        lapsed_before: DateTime<Utc>,
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

    /// Records a manual decision that brought a verification to `to`: who made it and why, as a
    /// history row of its own (kind `decision`). The change itself may have been recorded by a
    /// provider read (webhook, refresh, reconciler) that saw the decision first: the history
    /// shows that change as the decision's.
    async fn record_decision(
        &self,
        tenant: &str,
        verification_id: &str,
        to: Status,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError>;

    /// A verification's status changes, oldest first.
    async fn history(
        &self,
        tenant: &str,
        verification_id: &str,
    ) -> Result<Vec<StatusChange>, StoreError>;
}

#[async_trait]
impl VerificationStore for SqlStore {
    async fn insert(
        &self,
        row: &StoredVerification,
        created: &NewChange,
        lapsed_before: DateTime<Utc>,
    ) -> Result<Inserted, StoreError> {
        let v = &row.verification;
        let c = &created.change;
        let args = args![
            &v.id,
            &row.tenant,
            &v.reference,
            &v.subject_id,
            &v.provider,
            &v.provider_reference,
            v.status.as_str(),
            to_json(&v.reason),
            &v.verification_url,
            v.expires_at.map(ts),
            to_json(&v.decision),
            to_json(&v.metadata),
            &row.request_hash,
            ts(v.created_at),
            ts(v.updated_at),
            v.completed_at.map(ts),
            to_json(&v.routing),
            &row.country,
            v.routing.as_ref().and_then(|r| r.experiment.clone()),
            v.routing
                .as_ref()
                .and_then(|r| r.arm)
                .map(kyc_core::Arm::as_str),
            format!("chg_{}", ulid::Ulid::generate()),
            &created.tenant,
            &created.verification_id,
            c.from.map(Status::as_str),
            c.to.as_str(),
            c.source.as_str(),
            &c.actor,
            ts(c.at),
            i64::from(
                v.routing
                    .as_ref()
                    .is_some_and(|r| r.reason == kyc_core::RoutingReason::Fallback),
            ),
            ts(lapsed_before),
        ];
        let written = self
            .write(move |tx| {
                Box::pin(async move {
                    for statement in insert_statements(tx.postgres()) {
                        tx.execute(statement, &args).await?;
                    }
                    Ok(())
                })
            })
            .await;
        match written {
            Ok(()) => Ok(Inserted::Created),
            Err(e) if e.is_unique_violation() => {
                match self.find_by_reference(&row.tenant, &v.reference).await? {
                    Some(existing) => Ok(Inserted::Exists(Box::new(existing))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
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

    async fn save_change(
        &self,
        tenant: &str,
        expected: Status,
        next: &Verification,
        change: Option<&NewChange>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (tenant, next) = (tenant.to_owned(), next.clone());
        let (change, event) = (change.cloned(), event.cloned());
        self.write(move |tx| {
            Box::pin(async move {
                let done = tx
                    .execute(
                        "UPDATE verifications SET status = $1, reason = $2, \
                         verification_url = $3, expires_at = $4, decision = $5, updated_at = $6, \
                         completed_at = $7 WHERE tenant = $8 AND id = $9 AND status = $10",
                        &args![
                            next.status.as_str(),
                            to_json(&next.reason),
                            &next.verification_url,
                            next.expires_at.map(ts),
                            to_json(&next.decision),
                            ts(next.updated_at),
                            next.completed_at.map(ts),
                            &tenant,
                            &next.id,
                            expected.as_str(),
                        ],
                    )
                    .await?;
                if done != 1 {
                    return Ok(false);
                }
                if let Some(change) = &change {
                    insert_change(tx, change).await?;
                }
                if next.status.is_final() && !expected.is_final() {
                    count_decision(tx, &tenant, &next).await?;
                }
                if let Some(event) = &event {
                    insert_event(tx, event).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn record_decision(
        &self,
        tenant: &str,
        verification_id: &str,
        to: Status,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let args = args![
            format!("chg_{}", ulid::Ulid::generate()),
            tenant,
            verification_id,
            to.as_str(),
            actor,
            note,
            ts(now()),
        ];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO status_changes (id, tenant, verification_id, from_status, \
                     to_status, source, actor, note, at, kind) \
                     VALUES ($1, $2, $3, $4, $4, 'decision', $5, $6, $7, 'decision')",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
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
        let mut history: Vec<StatusChange> = Vec::with_capacity(rows.len());
        for row in &rows {
            let from: Option<String> = row.try_get("from_status")?;
            let to: String = row.try_get("to_status")?;
            let source: String = row.try_get("source")?;
            let kind: String = row.try_get("kind")?;
            let change = StatusChange {
                from: from
                    .map(|f| Status::parse(&f).ok_or(corrupt("from_status")))
                    .transpose()?,
                to: Status::parse(&to).ok_or(corrupt("to_status"))?,
                source: Source::parse(&source).ok_or(corrupt("source"))?,
                actor: row.try_get("actor")?,
                note: row.try_get("note")?,
                at: parse_ts(Some(row.try_get("at")?), "at")?.expect("some in, some out"),
            };
            // A decision row names who made the change to its status, and why.
            let decided = (kind == "decision")
                .then(|| history.iter_mut().rev().find(|c| c.to == change.to))
                .flatten();
            match decided {
                Some(decided) => {
                    decided.source = Source::Decision;
                    decided.actor = change.actor;
                    decided.note = change.note;
                }
                None => history.push(change),
            }
        }
        Ok(history)
    }
}

impl SqlStore {
    pub(super) async fn fetch_one_where(
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
        let row = match &self.held_reads {
            Some(held) => held.fetch_optional(&sql, binds).await?,
            None => {
                bound(sql, binds.iter().map(|b| b.to_string()).collect())
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.map(|r| row_to_stored(&r)).transpose()
    }
}
