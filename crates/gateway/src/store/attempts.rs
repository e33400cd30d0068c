//! Create reservations: `(tenant, reference)` with the request's hash and where its provider
//! attempt stands, written before any provider call and removed by the insert of the
//! verification (see [`super::Store::insert`]). Every change after the first write is
//! compare-and-set on `beat`, a counter the holder of the reservation bumps while it calls: the
//! fence that lets one attempt at a time act, and the pulse by which others see that its holder
//! died (a beat that stops moving), without comparing replicas' clocks.

use super::{SqlStore, StoreError, args, from_json, parse_ts, ts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kyc_core::RoutingRecord;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Where a create's reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// An attempt holds it and may be calling `provider`.
    Calling,
    /// The last call to `provider` may have started a verification there: it is resolved at
    /// that instance (looked up, or sent again with the same key) before any other is tried.
    Ambiguous,
    /// Nothing was started at any provider: a retry of the same body starts afresh.
    Open,
}

impl AttemptState {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Calling => "calling",
            AttemptState::Ambiguous => "ambiguous",
            AttemptState::Open => "open",
        }
    }

    fn parse(s: &str) -> Option<AttemptState> {
        [
            AttemptState::Calling,
            AttemptState::Ambiguous,
            AttemptState::Open,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A create's reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateAttempt {
    /// The owning tenant.
    pub tenant: String,
    /// The caller's reference.
    pub reference: String,
    /// SHA-256 of the canonical request: the body the reference is bound to.
    pub request_hash: String,
    /// Where it stands.
    pub state: AttemptState,
    /// The instance of the attempt under way or to resolve (for `open`, the last one tried).
    pub provider: String,
    /// How that attempt was routed, as the verification will record it.
    pub routing: RoutingRecord,
    /// The fence: bumped by every write, and by the holder while it calls.
    pub beat: i64,
    /// The subject's id.
    pub subject_id: String,
    /// The subject's country.
    pub country: String,
    /// The caller's metadata, for the verification.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the attempt at `provider` first ended ambiguously: the grace for a lookup that finds
    /// nothing runs from here.
    pub ambiguous_at: Option<DateTime<Utc>>,
    /// When it was reserved.
    pub created_at: DateTime<Utc>,
    /// When it last changed state (beats aside).
    pub updated_at: DateTime<Utc>,
}

/// What a reservation found.
#[derive(Debug)]
pub enum Reserved {
    /// The reservation is new, and the caller holds it at beat 0.
    Fresh,
    /// The tenant's reference is reserved already: here is that reservation.
    Existing(Box<CreateAttempt>),
    /// The tenant's reference was reserved, and its verification stored since.
    Settled,
}

/// The storage operations of create reservations.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Writes `attempt` (state `calling`, beat 0) unless the tenant's reference is reserved,
    /// in which case that reservation is returned.
    async fn reserve(&self, attempt: &CreateAttempt) -> Result<Reserved, StoreError>;
    /// The reservation of a tenant's reference, if one is left.
    async fn attempt(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<CreateAttempt>, StoreError>;
    /// Writes `next`'s state, provider, routing and `ambiguous_at` with beat `expected + 1`, if
    /// the stored beat is still `expected`; `false` (nothing written) when another writer moved
    /// it, or the reservation is gone.
    async fn update_attempt(&self, next: &CreateAttempt, expected: i64)
    -> Result<bool, StoreError>;
    /// Reservations that may hold a provider object to resolve (`calling` or `ambiguous`),
    /// least recently changed first, up to `limit`.
    async fn unsettled_attempts(&self, limit: u32) -> Result<Vec<CreateAttempt>, StoreError>;
    /// Removes the reservation of a reference whose verification is stored already, if its beat
    /// is still `beat` (its holder's); `false` when another writer moved it or it is gone.
    async fn drop_attempt(
        &self,
        tenant: &str,
        reference: &str,
        beat: i64,
    ) -> Result<bool, StoreError>;
}

const ATTEMPT_COLUMNS: &str = "tenant, reference, request_hash, state, provider, routing, beat, \
     subject_id, country, metadata, ambiguous_at, created_at, updated_at";

fn attempt_from(row: &AnyRow) -> Result<CreateAttempt, StoreError> {
    let corrupt = |column| StoreError::Corrupt {
        table: "create_attempts",
        column,
    };
    let text = |i: usize| row.try_get::<String, _>(i);
    let state = text(3)?;
    Ok(CreateAttempt {
        tenant: text(0)?,
        reference: text(1)?,
        request_hash: text(2)?,
        state: AttemptState::parse(&state).ok_or(corrupt("state"))?,
        provider: text(4)?,
        routing: serde_json::from_str(&text(5)?).map_err(|_| corrupt("routing"))?,
        beat: row.try_get::<i64, _>(6)?,
        subject_id: text(7)?,
        country: text(8)?,
        metadata: from_json(row.try_get::<Option<String>, _>(9)?, "metadata")?,
        ambiguous_at: parse_ts(row.try_get::<Option<String>, _>(10)?, "ambiguous_at")?,
        created_at: parse_ts(Some(text(11)?), "created_at")?.ok_or(corrupt("created_at"))?,
        updated_at: parse_ts(Some(text(12)?), "updated_at")?.ok_or(corrupt("updated_at"))?,
    })
}

fn routing_json(routing: &RoutingRecord) -> String {
    serde_json::to_string(routing).expect("a routing record serializes")
}

#[async_trait]
impl AttemptStore for SqlStore {
    async fn reserve(&self, attempt: &CreateAttempt) -> Result<Reserved, StoreError> {
        let args = args![
            &attempt.tenant,
            &attempt.reference,
            &attempt.request_hash,
            &attempt.provider,
            routing_json(&attempt.routing),
            &attempt.subject_id,
            &attempt.country,
            attempt
                .metadata
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("a JSON object serializes")),
            ts(attempt.created_at),
        ];
        let written = self
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO create_attempts (tenant, reference, request_hash, state, \
                         provider, routing, beat, subject_id, country, metadata, ambiguous_at, \
                         created_at, updated_at) \
                         VALUES ($1, $2, $3, 'calling', $4, $5, 0, $6, $7, $8, NULL, $9, $9) \
                         ON CONFLICT (tenant, reference) DO NOTHING",
                        &args,
                    )
                    .await
                })
            })
            .await?;
        if written == 1 {
            return Ok(Reserved::Fresh);
        }
        match self.attempt(&attempt.tenant, &attempt.reference).await? {
            Some(existing) => Ok(Reserved::Existing(Box::new(existing))),
            None => Ok(Reserved::Settled),
        }
    }

    async fn drop_attempt(
        &self,
        tenant: &str,
        reference: &str,
        beat: i64,
    ) -> Result<bool, StoreError> {
        let args = args![tenant, reference, beat];
        let done = self
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "DELETE FROM create_attempts WHERE tenant = $1 AND reference = $2 \
                         AND beat = $3",
                        &args,
                    )
                    .await
                })
            })
            .await?;
        Ok(done == 1)
    }

    async fn attempt(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<CreateAttempt>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM create_attempts WHERE tenant = $1 AND reference = $2"
        )))
        .bind(tenant)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| attempt_from(&row))
        .transpose()
    }

    async fn update_attempt(
        &self,
        next: &CreateAttempt,
        expected: i64,
    ) -> Result<bool, StoreError> {
        let args = args![
            &next.tenant,
            &next.reference,
            next.state.as_str(),
            &next.provider,
            routing_json(&next.routing),
            next.ambiguous_at.map(ts),
            ts(next.updated_at),
            expected,
        ];
        let written = self
            .write(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE create_attempts SET state = $3, provider = $4, routing = $5, \
                         ambiguous_at = $6, updated_at = $7, beat = beat + 1 \
                         WHERE tenant = $1 AND reference = $2 AND beat = $8",
                        &args,
                    )
                    .await
                })
            })
            .await?;
        Ok(written == 1)
    }

    async fn unsettled_attempts(&self, limit: u32) -> Result<Vec<CreateAttempt>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM create_attempts \
             WHERE state IN ('calling', 'ambiguous') ORDER BY updated_at LIMIT {limit}"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(attempt_from)
        .collect()
    }
}
