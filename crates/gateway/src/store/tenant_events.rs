//! The tenant's view of its events: list, read one with its attempts, redeliver one, and recover
//! every event since a time. The delivery worker's queries are in [`super::outbox`].

use super::outbox::{EARLIER_PENDING, EventState, corrupt, lock_line, promote_head};
use super::*;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Attempt {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Time to the answer (or to the failure), milliseconds.
    pub latency_ms: u64,
    /// Why it failed without an answer (refused target, timeout, connection), when it did.
    pub error: Option<String>,
}

/// An event as the tenant sees it in the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventRecord {
    /// `evt_` + ULID; sent as `webhook-id`, the same on every attempt.
    pub id: String,
    /// `verification.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The verification it reports on.
    pub verification_id: String,
    /// Where it stands.
    pub state: EventState,
    /// When the change it reports happened.
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Filters and paging of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this verification's events.
    pub verification_id: Option<String>,
    /// Only events in this state.
    pub state: Option<EventState>,
    /// Only ids before this one (newest first paging).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: u32,
}

pub(super) const EVENT_COLUMNS: &str =
    "id, event_type, verification_id, state, created_at, next_attempt_at";

/// The SQL and binds of a page of a tenant's events (also read by the query-plan test).
pub(super) fn list_events_query(tenant: &str, filter: &EventFilter) -> (String, Vec<String>) {
    TenantPage::new(EVENT_COLUMNS, "events", tenant)
        .and("verification_id", "=", filter.verification_id.clone())
        .and("state", "=", filter.state.map(|s| s.as_str().to_string()))
        .and("id", "<", filter.before_id.clone())
        .finish(true, filter.limit)
}

/// What a tenant may do with its events through the API.
#[async_trait]
pub trait TenantEventStore: Send + Sync {
    /// Sends again every event of the tenant that failed since `since`, in order, and enables
    /// its `url` again (if given): one transaction. Answers how many events were queued.
    async fn recover_events(
        &self,
        tenant: &str,
        url: Option<&str>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// A page of a tenant's events, newest first, with their attempts.
    async fn list_events(
        &self,
        tenant: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// One of a tenant's events.
    async fn get_event(&self, tenant: &str, id: &str) -> Result<Option<EventRecord>, StoreError>;

    /// Makes one of a tenant's events due again now, with a fresh retry schedule.
    async fn redeliver(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}

#[async_trait]
impl TenantEventStore for SqlStore {
    async fn recover_events(
        &self,
        tenant: &str,
        url: Option<&str>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        super::retrying_conflicts(|| self.recover_events_once(tenant, url, since, now)).await
    }

    async fn list_events(
        &self,
        tenant: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (sql, binds) = list_events_query(tenant, filter);
        let rows = bound(sql, binds).fetch_all(&self.pool).await?;
        self.with_attempts(rows).await
    }

    async fn get_event(&self, tenant: &str, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND id = $2");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(self.with_attempts(rows).await?.pop())
    }

    async fn redeliver(
        &self,
        tenant: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let args = args![ts(now), tenant, id];
        let tenant = tenant.to_owned();
        self.write(move |tx| {
            Box::pin(async move {
                let line = tx
                    .fetch_optional(
                        "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                         claimed_until = NULL, claim = NULL, parked = 0, \
                         generation = generation + 1 \
                         WHERE tenant = $2 AND id = $3 RETURNING verification_id",
                        &args,
                    )
                    .await?;
                let Some(line) = line else {
                    return Ok(false);
                };
                let line = line.text(0, "verification_id")?;
                // It may now come before the line's head: the head is chosen again.
                lock_line(tx, &tenant, &line).await?;
                tx.execute(
                    "UPDATE events SET due_at = NULL WHERE tenant = $1 AND verification_id = $2 \
                     AND state = 'pending' AND due_at IS NOT NULL AND claim IS NULL",
                    &args![&tenant, &line],
                )
                .await?;
                promote_head(tx, &tenant, &line).await?;
                Ok(true)
            })
        })
        .await
    }
}

impl SqlStore {
    /// One try of [`EventStore::recover_events`], in one transaction.
    pub(super) async fn recover_events_once(
        &self,
        tenant: &str,
        url: Option<&str>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (tenant, url) = (tenant.to_owned(), url.map(str::to_owned));
        self.write(move |tx| {
            Box::pin(async move {
                if let Some(url) = &url {
                    for table in ["disabled_endpoints", "failing_endpoints"] {
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE tenant = $1 AND url = $2"),
                            &args![&tenant, url],
                        )
                        .await?;
                    }
                }
                let recovered = tx
                    .execute(
                        "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                         claimed_until = NULL, claim = NULL, parked = 0, due_at = NULL, \
                         generation = generation + 1 \
                         WHERE tenant = $2 AND state = 'failed' AND created_at >= $3",
                        &args![ts(now), &tenant, ts(since)],
                    )
                    .await?;
                // The heads of the tenant's lines, chosen again: recovered events take their
                // places by sequence, and parked ones go out now that the URL is enabled.
                tx.execute(
                    &format!(
                        "UPDATE events SET parked = 0, due_at = next_attempt_at \
                         WHERE tenant = $1 AND state = 'pending' AND claim IS NULL \
                         AND NOT EXISTS ({EARLIER_PENDING})"
                    ),
                    &args![&tenant],
                )
                .await?;
                tx.execute(
                    &format!(
                        "UPDATE events SET due_at = NULL WHERE tenant = $1 AND state = 'pending' \
                         AND due_at IS NOT NULL AND claim IS NULL AND EXISTS ({EARLIER_PENDING})"
                    ),
                    &args![&tenant],
                )
                .await?;
                Ok(recovered)
            })
        })
        .await
    }

    /// Reads event rows and their attempts: the attempts of the whole page in one query.
    pub(super) async fn with_attempts(
        &self,
        rows: Vec<sqlx::any::AnyRow>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let ids = rows
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempts: HashMap<String, Vec<Attempt>> = HashMap::new();
        if !ids.is_empty() {
            let marks = (1..=ids.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT event_id, at, status_code, latency_ms, error FROM event_attempts \
                 WHERE event_id IN ({marks}) ORDER BY event_id, attempt"
            );
            for a in bound(sql, ids.clone()).fetch_all(&self.pool).await? {
                let status_code: Option<i64> = a.try_get("status_code")?;
                let latency_ms: i64 = a.try_get("latency_ms")?;
                attempts
                    .entry(a.try_get("event_id")?)
                    .or_default()
                    .push(Attempt {
                        at: parse_ts(Some(a.try_get("at")?), "at")?.expect("some in, some out"),
                        status_code: status_code.and_then(|c| u16::try_from(c).ok()),
                        latency_ms: u64::try_from(latency_ms).unwrap_or_default(),
                        error: a.try_get("error")?,
                    });
            }
        }
        rows.into_iter()
            .zip(ids)
            .map(|(row, id)| {
                let state: String = row.try_get("state")?;
                Ok(EventRecord {
                    attempts: attempts.remove(&id).unwrap_or_default(),
                    id,
                    event_type: row.try_get("event_type")?,
                    verification_id: row.try_get("verification_id")?,
                    state: EventState::parse(&state).ok_or(corrupt("state"))?,
                    created_at: parse_ts(Some(row.try_get("created_at")?), "created_at")?
                        .expect("some in, some out"),
                    next_attempt_at: parse_ts(row.try_get("next_attempt_at")?, "next_attempt_at")?,
                })
            })
            .collect()
    }
}
