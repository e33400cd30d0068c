//! The outbox's queries: events waiting for delivery, their claims and their attempts, and the
//! endpoints. Events are written by [`super::VerificationStore::save_change`], in the change's own
//! transaction. The tenant's view of its events is [`super::tenant_events`].

use super::{Attempt, NewEvent, SqlStore, StoreError, WriteTx, args, parse_ts, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};
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
}

/// The heads of lines (the earliest pending event of each tenant's verification, or of a
/// tenant-level line such as `experiment:<name>`, by sequence) due by `$1` and not claimed: the
/// only events the scan reads, however many wait behind them or are parked.
pub(super) const DUE_EVENTS: &str = "SELECT id, tenant, payload, attempts, generation \
     FROM events WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at";

/// An earlier pending event of the line of the `events` row being updated: while there is one,
/// that row is not its line's head.
pub(super) const EARLIER_PENDING: &str = "SELECT 1 FROM events p WHERE p.tenant = events.tenant \
     AND p.verification_id = events.verification_id AND p.state = 'pending' \
     AND p.seq < events.seq";

/// A line's head after a change to it: its earliest pending event, unless parked. `$1` tenant,
/// `$2` line.
pub(super) const LINE_HEAD: &str = "SELECT id FROM events WHERE tenant = $1 AND verification_id = $2 \
     AND state = 'pending' ORDER BY seq LIMIT 1";

/// Makes the line's head due at its `next_attempt_at`, unless it is parked or already due.
pub(super) async fn promote_head(
    tx: &mut dyn WriteTx,
    tenant: &str,
    line: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "UPDATE events SET due_at = next_attempt_at WHERE id = ({LINE_HEAD}) \
             AND due_at IS NULL AND parked = 0"
        ),
        &args![tenant, line],
    )
    .await?;
    Ok(())
}

pub(super) fn corrupt(column: &'static str) -> StoreError {
    StoreError::Corrupt {
        table: "events",
        column,
    }
}

/// Takes the lock a change of the line's verification takes (its row), so that choosing the
/// line's next head and a change adding an event to the line take turns: otherwise, on
/// PostgreSQL, an event added while the head is being delivered could see the head still pending
/// (and wait behind it) while the delivery does not yet see it (and promotes nothing), leaving it
/// waiting for good. A tenant-level line has no such row, and holds one event at most (an
/// experiment stops once). SQLite has one writer at a time.
pub(super) async fn lock_line(
    tx: &mut dyn WriteTx,
    tenant: &str,
    line: &str,
) -> Result<(), StoreError> {
    if tx.postgres() {
        tx.fetch_optional(
            "SELECT 1 FROM verifications WHERE tenant = $1 AND id = $2 FOR UPDATE",
            &args![tenant, line],
        )
        .await?;
    }
    Ok(())
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
        let args = args![ts(until), token, &event.id, event.generation, ts(now)];
        let done = self
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE events SET claimed_until = $1, claim = $2, due_at = $1 \
                         WHERE id = $3 AND state = 'pending' AND generation = $4 AND due_at <= $5",
                        &args,
                    )
                    .await
                })
            })
            .await?;
        Ok(done == 1)
    }

    async fn park_event(&self, id: &str, token: &str) -> Result<(), StoreError> {
        let args = args![id, token];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE events SET claimed_until = NULL, claim = NULL, due_at = NULL, \
                     parked = 1 WHERE id = $1 AND claim = $2",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn defer_event(
        &self,
        id: &str,
        token: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let args = args![ts(until), id, token];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE events SET claimed_until = NULL, claim = NULL, due_at = $1, \
                     next_attempt_at = $1 WHERE id = $2 AND claim = $3",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn resume_parked(&self, tenant: &str) -> Result<u64, StoreError> {
        super::retrying_conflicts(|| {
            let args = args![tenant];
            self.write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE events SET parked = 0, due_at = next_attempt_at \
                         WHERE tenant = $1 AND parked = 1",
                        &args,
                    )
                    .await
                })
            })
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
            done += self
                .write(move |tx| {
                    Box::pin(async move {
                        lock_line(tx, &tenant, &line).await?;
                        let done = tx
                            .execute(
                                "UPDATE events SET seq = (SELECT COALESCE(MAX(p.seq), 0) + 1 \
                                 FROM events p WHERE p.tenant = $1 AND p.verification_id = $2), \
                                 tries = CASE WHEN attempts > tries THEN attempts ELSE tries END \
                                 WHERE id = $3 AND seq = 0",
                                &args![&tenant, &line, &id],
                            )
                            .await?;
                        promote_head(tx, &tenant, &line).await?;
                        Ok(done)
                    })
                })
                .await?;
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
        let (id, generation, token, url) = (
            event.id.clone(),
            event.generation,
            token.to_owned(),
            url.to_owned(),
        );
        let attempt = attempt.clone();
        self.write(move |tx| {
            Box::pin(async move {
                // Numbered from a counter on the event's row, which the update also locks: two
                // attempts never take one number. Past the attempts already recorded, too: a
                // replica of a release before migration 0013 numbers its attempts by `attempts`
                // alone.
                let row = tx
                    .fetch_optional(
                        "UPDATE events SET tries = (SELECT CASE WHEN COALESCE(MAX(a.attempt), 0) \
                         > events.tries THEN MAX(a.attempt) ELSE events.tries END \
                         FROM event_attempts a WHERE a.event_id = events.id) + 1 WHERE id = $1 \
                         RETURNING tries, tenant, verification_id",
                        &args![&id],
                    )
                    .await?
                    .ok_or(corrupt("id"))?;
                let number = row.int(0, "tries")?;
                let tenant = row.text(1, "tenant")?;
                let line = row.text(2, "verification_id")?;
                tx.execute(
                    "INSERT INTO event_attempts (event_id, attempt, at, status_code, latency_ms, \
                     error) VALUES ($1, $2, $3, $4, $5, $6)",
                    &args![
                        &id,
                        number,
                        ts(attempt.at),
                        attempt.status_code.map(i64::from),
                        i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
                        &attempt.error,
                    ],
                )
                .await?;
                let written = match outcome {
                    // A delivery is a fact: it stands unless the event was redelivered since.
                    AttemptOutcome::Delivered => {
                        tx.execute(
                            "UPDATE events SET state = 'delivered', attempts = attempts + 1, \
                             next_attempt_at = NULL, claimed_until = NULL, claim = NULL, \
                             due_at = NULL WHERE id = $1 AND generation = $2 AND state = 'pending'",
                            &args![&id, generation],
                        )
                        .await?
                    }
                    AttemptOutcome::Failed => {
                        tx.execute(
                            "UPDATE events SET state = 'failed', attempts = attempts + 1, \
                             next_attempt_at = NULL, claimed_until = NULL, claim = NULL, \
                             due_at = NULL WHERE id = $1 AND claim = $2",
                            &args![&id, &token],
                        )
                        .await?
                    }
                    // Due again, if still its line's head (a redeliver of an earlier event may
                    // have taken that place meanwhile).
                    AttemptOutcome::RetryAt(at) => {
                        tx.execute(
                            &format!(
                                "UPDATE events SET attempts = attempts + 1, next_attempt_at = $1, \
                                 claimed_until = NULL, claim = NULL, \
                                 due_at = CASE WHEN EXISTS ({EARLIER_PENDING}) THEN NULL ELSE $1 END \
                                 WHERE id = $2 AND claim = $3"
                            ),
                            &args![ts(at), &id, &token],
                        )
                        .await?
                    }
                };
                let stood = written == 1;
                if stood && !matches!(outcome, AttemptOutcome::RetryAt(_)) {
                    lock_line(tx, &tenant, &line).await?;
                    promote_head(tx, &tenant, &line).await?;
                }
                let failing_since = if matches!(outcome, AttemptOutcome::Delivered) {
                    tx.execute(
                        "DELETE FROM failing_endpoints WHERE tenant = $1 AND url = $2",
                        &args![&tenant, &url],
                    )
                    .await?;
                    None
                } else {
                    tx.execute(
                        "INSERT INTO failing_endpoints (tenant, url, failing_since) \
                         VALUES ($1, $2, $3) ON CONFLICT (tenant, url) DO NOTHING",
                        &args![&tenant, &url, ts(attempt.at)],
                    )
                    .await?;
                    let since = tx
                        .fetch_optional(
                            "SELECT failing_since FROM failing_endpoints \
                             WHERE tenant = $1 AND url = $2",
                            &args![&tenant, &url],
                        )
                        .await?
                        .ok_or(corrupt("failing_since"))?
                        .text(0, "failing_since")?;
                    parse_ts(Some(since), "failing_since")?
                };
                Ok(Recorded {
                    stood,
                    failing_since,
                })
            })
        })
        .await
    }

    async fn disable_endpoint(
        &self,
        tenant: &str,
        url: &str,
        at: DateTime<Utc>,
        reason: &str,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let args = args![tenant, url, ts(at), reason];
        let event = event.cloned();
        self.write(move |tx| {
            Box::pin(async move {
                let new = tx
                    .execute(
                        "INSERT INTO disabled_endpoints (tenant, url, disabled_at, reason) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, url) DO NOTHING",
                        &args,
                    )
                    .await?
                    == 1;
                if new && let Some(event) = &event {
                    super::insert_event(tx, event).await?;
                }
                Ok(new)
            })
        })
        .await
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
}
