//! The outbox's queries: events waiting for delivery, their attempts, and the tenant's view of
//! them. Events are written by [`super::Store::save_change`], in the change's own transaction.

use super::{NewEvent, SqlStore, StoreError, TenantPage, bound, parse_ts, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Not yet delivered; attempts go on.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every scheduled attempt failed.
    Failed,
}

impl EventState {
    /// Every state.
    pub const ALL: [EventState; 3] = [
        EventState::Pending,
        EventState::Delivered,
        EventState::Failed,
    ];

    /// The wire name, also the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Failed => "failed",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<EventState> {
        EventState::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

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

/// An event due for an attempt.
#[derive(Debug, Clone)]
pub struct DueEvent {
    /// The event id.
    pub id: String,
    /// Its generation (bumped by each redeliver): an attempt records its delivery only while
    /// the event is still in the generation it claimed.
    pub generation: i64,
    /// The owning tenant.
    pub tenant: String,
    /// The body to send.
    pub payload: String,
    /// Attempts made since it was written (or last redelivered).
    pub attempts: u32,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Its outcome was applied to the event (see [`EventStore::record_attempt`]).
    pub stood: bool,
    /// Since when the endpoint has failed every attempt, if it is failing now.
    pub failing_since: Option<DateTime<Utc>>,
}

/// A tenant URL the outbox no longer sends to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DisabledEndpoint {
    /// When it was disabled.
    pub disabled_at: DateTime<Utc>,
    /// `gone` (it answered 410 Gone) or `failing` (every attempt failed for
    /// `[webhooks] disable_after_seconds`).
    pub reason: String,
}

/// What an attempt leads to.
#[derive(Debug, Clone, Copy)]
pub enum AttemptOutcome {
    /// Delivered: no more attempts.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// That was the last attempt.
    Failed,
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

/// The outbox's storage operations.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Pending events due by `now` and not claimed, oldest first; never an event while an older
    /// one of the same verification is still pending, so each verification's events go in order.
    async fn due_events(&self, now: DateTime<Utc>, limit: u32)
    -> Result<Vec<DueEvent>, StoreError>;
    /// Claims a due event for the attempt holding `token`, until `until`, so that one replica
    /// delivers it; `false` if another did, or if it is no longer due (delivered, rescheduled by
    /// another replica's attempt, or redelivered since it was read).
    async fn claim_event(
        &self,
        event: &DueEvent,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Parks a claimed event (its tenant has no working URL) if `token` still holds it: it waits,
    /// unread by the due scan, until [`EventStore::resume_parked`].
    async fn park_event(&self, id: &str, token: &str) -> Result<(), StoreError>;
    /// Puts a claimed event off until `until` without an attempt (its endpoint is being paced),
    /// if `token` still holds it.
    async fn defer_event(
        &self,
        id: &str,
        token: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Makes a tenant's parked events due again (its policy names a working URL); how many.
    async fn resume_parked(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Gives events that a replica of a release before migration 0013 wrote after it ran (no
    /// sequence, no due time, attempts counted only in `attempts`) the next sequence of their
    /// line, oldest first, and makes each line's head due: at most `limit` of them; how many.
    async fn sequence_strays(&self, limit: u32) -> Result<u64, StoreError>;
    /// Records an attempt of the claim `token` and what follows from it, in one transaction.
    /// The attempt's row is always written (it happened); the event changes only if the write
    /// still stands: a delivery while the event is in the generation claimed, a retry or a
    /// failure while `token` still holds it. `false` when it no longer stood (another replica
    /// claimed the event after this claim's lease ran out, or it was redelivered meanwhile).
    ///
    /// The attempt also tells how the tenant's `url` is doing: a delivery ends its failing
    /// spell, any other outcome starts one if none is under way. The answer says since when it
    /// has been failing, if it is.
    async fn record_attempt(
        &self,
        event: &DueEvent,
        token: &str,
        url: &str,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<Recorded, StoreError>;
    /// Stops sending to a tenant's URL, for `reason` (`gone`: it answered 410; `failing`: it
    /// failed for `[webhooks] disable_after_seconds`), with the tenant's event if any, in one
    /// transaction; `false` (nothing written) when it was disabled already.
    async fn disable_endpoint(
        &self,
        tenant: &str,
        url: &str,
        at: DateTime<Utc>,
        reason: &str,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;
    /// Whether, when and why a tenant's URL was disabled.
    async fn endpoint_disabled(
        &self,
        tenant: &str,
        url: &str,
    ) -> Result<Option<DisabledEndpoint>, StoreError>;
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

pub(super) const EVENT_COLUMNS: &str =
    "id, event_type, verification_id, state, created_at, next_attempt_at";

/// The heads of lines (the earliest pending event of each tenant's verification, or of a
/// tenant-level line such as `experiment:<name>`, by sequence) due by `$1` and not claimed: the
/// only events the scan reads, however many wait behind them or are parked.
pub(super) const DUE_EVENTS: &str = "SELECT id, tenant, payload, attempts, generation \
     FROM events WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at";

/// An earlier pending event of the line of the `events` row being updated: while there is one,
/// that row is not its line's head.
const EARLIER_PENDING: &str = "SELECT 1 FROM events p WHERE p.tenant = events.tenant \
     AND p.verification_id = events.verification_id AND p.state = 'pending' \
     AND p.seq < events.seq";

/// A line's head after a change to it: its earliest pending event, unless parked. `$1` tenant,
/// `$2` line.
pub(super) const LINE_HEAD: &str = "SELECT id FROM events WHERE tenant = $1 AND verification_id = $2 \
     AND state = 'pending' ORDER BY seq LIMIT 1";

/// The SQL and binds of a page of a tenant's events (also read by the query-plan test).
pub(super) fn list_events_query(tenant: &str, filter: &EventFilter) -> (String, Vec<String>) {
    TenantPage::new(EVENT_COLUMNS, "events", tenant)
        .and("verification_id", "=", filter.verification_id.clone())
        .and("state", "=", filter.state.map(|s| s.as_str().to_string()))
        .and("id", "<", filter.before_id.clone())
        .finish(true, filter.limit)
}

/// Makes the line's head due at its `next_attempt_at`, unless it is parked or already due.
async fn promote_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    line: &str,
) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE events SET due_at = next_attempt_at WHERE id = ({LINE_HEAD}) \
         AND due_at IS NULL AND parked = 0"
    )))
    .bind(tenant)
    .bind(line)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn corrupt(column: &'static str) -> StoreError {
    StoreError::Corrupt {
        table: "events",
        column,
    }
}

impl SqlStore {
    /// One try of [`EventStore::recover_events`], in one transaction.
    async fn recover_events_once(
        &self,
        tenant: &str,
        url: Option<&str>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writes.begin().await?;
        if let Some(url) = url {
            for table in ["disabled_endpoints", "failing_endpoints"] {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE tenant = $1 AND url = $2"
                )))
                .bind(tenant)
                .bind(url)
                .execute(&mut *tx)
                .await?;
            }
        }
        let recovered = sqlx::query(
            "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             claimed_until = NULL, claim = NULL, parked = 0, due_at = NULL, \
             generation = generation + 1 \
             WHERE tenant = $2 AND state = 'failed' AND created_at >= $3",
        )
        .bind(ts(now))
        .bind(tenant)
        .bind(ts(since))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // The heads of the tenant's lines, chosen again: recovered events take their places by
        // sequence, and parked ones go out now that the URL is enabled.
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE events SET parked = 0, due_at = next_attempt_at \
             WHERE tenant = $1 AND state = 'pending' AND claim IS NULL \
             AND NOT EXISTS ({EARLIER_PENDING})"
        )))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE events SET due_at = NULL WHERE tenant = $1 AND state = 'pending' \
             AND due_at IS NOT NULL AND claim IS NULL AND EXISTS ({EARLIER_PENDING})"
        )))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(recovered)
    }

    /// Takes the lock a change of the line's verification takes (its row), so that choosing the
    /// line's next head and a change adding an event to the line take turns: otherwise, on
    /// PostgreSQL, an event added while the head is being delivered could see the head still
    /// pending (and wait behind it) while the delivery does not yet see it (and promotes
    /// nothing), leaving it waiting for good. A tenant-level line has no such row, and holds one
    /// event at most (an experiment stops once). SQLite has one writer at a time.
    async fn lock_line(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant: &str,
        line: &str,
    ) -> Result<(), StoreError> {
        if self.postgres {
            sqlx::query("SELECT 1 FROM verifications WHERE tenant = $1 AND id = $2 FOR UPDATE")
                .bind(tenant)
                .bind(line)
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Reads event rows and their attempts: the attempts of the whole page in one query.
    async fn with_attempts(
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

#[async_trait]
impl EventStore for SqlStore {
    async fn due_events(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueEvent>, StoreError> {
        let sql = format!("{DUE_EVENTS} LIMIT {limit}");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ts(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get("attempts")?;
                Ok(DueEvent {
                    id: row.try_get("id")?,
                    generation: row.try_get("generation")?,
                    tenant: row.try_get("tenant")?,
                    payload: row.try_get("payload")?,
                    attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
                })
            })
            .collect()
    }

    async fn claim_event(
        &self,
        event: &DueEvent,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // While claimed, the head is due again when the claim runs out.
        let done = sqlx::query(
            "UPDATE events SET claimed_until = $1, claim = $2, due_at = $1 \
             WHERE id = $3 AND state = 'pending' AND generation = $4 AND due_at <= $5",
        )
        .bind(ts(until))
        .bind(token)
        .bind(&event.id)
        .bind(event.generation)
        .bind(ts(now))
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn park_event(&self, id: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE events SET claimed_until = NULL, claim = NULL, due_at = NULL, parked = 1 \
             WHERE id = $1 AND claim = $2",
        )
        .bind(id)
        .bind(token)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn defer_event(
        &self,
        id: &str,
        token: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE events SET claimed_until = NULL, claim = NULL, due_at = $1, \
             next_attempt_at = $1 WHERE id = $2 AND claim = $3",
        )
        .bind(ts(until))
        .bind(id)
        .bind(token)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    async fn resume_parked(&self, tenant: &str) -> Result<u64, StoreError> {
        super::retrying_conflicts(|| async {
            let done = sqlx::query(
                "UPDATE events SET parked = 0, due_at = next_attempt_at \
                 WHERE tenant = $1 AND parked = 1",
            )
            .bind(tenant)
            .execute(&self.writes)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn sequence_strays(&self, limit: u32) -> Result<u64, StoreError> {
        let strays = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, tenant, verification_id FROM events WHERE seq = 0 \
             ORDER BY created_at, id LIMIT {limit}"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for row in strays {
            let (id, tenant, line): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let mut tx = self.writes.begin().await?;
            self.lock_line(&mut tx, &tenant, &line).await?;
            done += sqlx::query(
                "UPDATE events SET seq = (SELECT COALESCE(MAX(p.seq), 0) + 1 FROM events p \
                 WHERE p.tenant = $1 AND p.verification_id = $2), \
                 tries = CASE WHEN attempts > tries THEN attempts ELSE tries END \
                 WHERE id = $3 AND seq = 0",
            )
            .bind(&tenant)
            .bind(&line)
            .bind(&id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            promote_head(&mut tx, &tenant, &line).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    async fn record_attempt(
        &self,
        event: &DueEvent,
        token: &str,
        url: &str,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.writes.begin().await?;
        // Numbered from a counter on the event's row, which the update also locks: two
        // attempts never take one number. Past the attempts already recorded, too: a replica of
        // a release before migration 0013 numbers its attempts by `attempts` alone.
        let row = sqlx::query(
            "UPDATE events SET tries = (SELECT CASE WHEN COALESCE(MAX(a.attempt), 0) > events.tries \
             THEN MAX(a.attempt) ELSE events.tries END FROM event_attempts a \
             WHERE a.event_id = events.id) + 1 WHERE id = $1 \
             RETURNING tries, tenant, verification_id",
        )
        .bind(&event.id)
        .fetch_one(&mut *tx)
        .await?;
        let (number, tenant, line): (i64, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        sqlx::query(
            "INSERT INTO event_attempts (event_id, attempt, at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&event.id)
        .bind(number)
        .bind(ts(attempt.at))
        .bind(attempt.status_code.map(i64::from))
        .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        let written = match outcome {
            // A delivery is a fact: it stands unless the event was redelivered since.
            AttemptOutcome::Delivered => {
                sqlx::query(
                    "UPDATE events SET state = 'delivered', attempts = attempts + 1, \
                     next_attempt_at = NULL, claimed_until = NULL, claim = NULL, due_at = NULL \
                     WHERE id = $1 AND generation = $2 AND state = 'pending'",
                )
                .bind(&event.id)
                .bind(event.generation)
                .execute(&mut *tx)
                .await?
            }
            AttemptOutcome::Failed => {
                sqlx::query(
                    "UPDATE events SET state = 'failed', attempts = attempts + 1, \
                     next_attempt_at = NULL, claimed_until = NULL, claim = NULL, due_at = NULL \
                     WHERE id = $1 AND claim = $2",
                )
                .bind(&event.id)
                .bind(token)
                .execute(&mut *tx)
                .await?
            }
            // Due again, if still its line's head (a redeliver of an earlier event may have
            // taken that place meanwhile).
            AttemptOutcome::RetryAt(at) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE events SET attempts = attempts + 1, next_attempt_at = $1, \
                     claimed_until = NULL, claim = NULL, \
                     due_at = CASE WHEN EXISTS ({EARLIER_PENDING}) THEN NULL ELSE $1 END \
                     WHERE id = $2 AND claim = $3"
                )))
                .bind(ts(at))
                .bind(&event.id)
                .bind(token)
                .execute(&mut *tx)
                .await?
            }
        };
        let stood = written.rows_affected() == 1;
        if stood && !matches!(outcome, AttemptOutcome::RetryAt(_)) {
            self.lock_line(&mut tx, &tenant, &line).await?;
            promote_head(&mut tx, &tenant, &line).await?;
        }
        let failing_since = if matches!(outcome, AttemptOutcome::Delivered) {
            sqlx::query("DELETE FROM failing_endpoints WHERE tenant = $1 AND url = $2")
                .bind(&tenant)
                .bind(url)
                .execute(&mut *tx)
                .await?;
            None
        } else {
            sqlx::query(
                "INSERT INTO failing_endpoints (tenant, url, failing_since) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, url) DO NOTHING",
            )
            .bind(&tenant)
            .bind(url)
            .bind(ts(attempt.at))
            .execute(&mut *tx)
            .await?;
            let since: String = sqlx::query(
                "SELECT failing_since FROM failing_endpoints WHERE tenant = $1 AND url = $2",
            )
            .bind(&tenant)
            .bind(url)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            parse_ts(Some(since), "failing_since")?
        };
        tx.commit().await?;
        Ok(Recorded {
            stood,
            failing_since,
        })
    }

    async fn disable_endpoint(
        &self,
        tenant: &str,
        url: &str,
        at: DateTime<Utc>,
        reason: &str,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writes.begin().await?;
        let written = sqlx::query(
            "INSERT INTO disabled_endpoints (tenant, url, disabled_at, reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, url) DO NOTHING",
        )
        .bind(tenant)
        .bind(url)
        .bind(ts(at))
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let new = written.rows_affected() == 1;
        if new && let Some(event) = event {
            super::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn endpoint_disabled(
        &self,
        tenant: &str,
        url: &str,
    ) -> Result<Option<DisabledEndpoint>, StoreError> {
        sqlx::query(
            "SELECT disabled_at, reason FROM disabled_endpoints WHERE tenant = $1 AND url = $2",
        )
        .bind(tenant)
        .bind(url)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| {
            Ok(DisabledEndpoint {
                disabled_at: parse_ts(Some(row.try_get(0)?), "disabled_at")?
                    .ok_or(corrupt("disabled_at"))?,
                reason: row.try_get(1)?,
            })
        })
        .transpose()
    }

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
        let mut tx = self.writes.begin().await?;
        let line: Option<String> = sqlx::query(
            "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             claimed_until = NULL, claim = NULL, parked = 0, generation = generation + 1 \
             WHERE tenant = $2 AND id = $3 RETURNING verification_id",
        )
        .bind(ts(now))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        let Some(line) = line else {
            return Ok(false);
        };
        // It may now come before the line's head: the head is chosen again.
        self.lock_line(&mut tx, tenant, &line).await?;
        sqlx::query(
            "UPDATE events SET due_at = NULL WHERE tenant = $1 AND verification_id = $2 \
             AND state = 'pending' AND due_at IS NOT NULL AND claim IS NULL",
        )
        .bind(tenant)
        .bind(&line)
        .execute(&mut *tx)
        .await?;
        promote_head(&mut tx, tenant, &line).await?;
        tx.commit().await?;
        Ok(true)
    }
}
