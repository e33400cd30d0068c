//! Experiments' arm counts, and the stops their guardrail makes.

use super::*;

/// How many of an experiment's verifications in one arm are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmCount {
    /// The arm.
    pub arm: kyc_core::Arm,
    /// The status.
    pub status: Status,
    /// How many.
    pub count: u64,
}

/// An experiment's verifications counted per arm and status (the partial index on experiment).
pub(super) const EXPERIMENT_COUNTS: &str = "SELECT arm, status, COUNT(*) FROM verifications \
     WHERE tenant = $1 AND experiment = $2 AND arm IS NOT NULL GROUP BY arm, status";

/// Experiments' arms and guardrail stops.
#[async_trait]
pub trait ExperimentStore: Send + Sync {
    /// How many of a tenant's verifications an experiment routed to each arm are in each status.
    async fn experiment_counts(
        &self,
        tenant: &str,
        experiment: &str,
    ) -> Result<Vec<ArmCount>, StoreError>;

    /// Records that an experiment's guardrail stopped it, with the tenant's event if any, in one
    /// transaction; `false` (nothing written) when it was already stopped.
    async fn stop_experiment(
        &self,
        tenant: &str,
        experiment: &str,
        at: DateTime<Utc>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;

    /// Every stopped experiment: (tenant, experiment, when).
    async fn stopped_experiments(&self)
    -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError>;
}

#[async_trait]
impl ExperimentStore for SqlStore {
    async fn experiment_counts(
        &self,
        tenant: &str,
        experiment: &str,
    ) -> Result<Vec<ArmCount>, StoreError> {
        let rows = sqlx::query(EXPERIMENT_COUNTS)
            .bind(tenant)
            .bind(experiment)
            .fetch_all(&self.pool)
            .await?;
        let corrupt = |column| StoreError::Corrupt {
            table: "verifications",
            column,
        };
        rows.iter()
            .map(|row| {
                let arm: String = row.try_get(0)?;
                let status: String = row.try_get(1)?;
                let count: i64 = row.try_get(2)?;
                Ok(ArmCount {
                    arm: kyc_core::Arm::parse(&arm).ok_or(corrupt("arm"))?,
                    status: Status::parse(&status).ok_or(corrupt("status"))?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn stop_experiment(
        &self,
        tenant: &str,
        experiment: &str,
        at: DateTime<Utc>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let args = args![tenant, experiment, ts(at)];
        let event = event.cloned();
        self.write(move |tx| {
            Box::pin(async move {
                let stopped = tx
                    .execute(
                        "INSERT INTO experiment_stops (tenant, name, stopped_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (tenant, name) DO NOTHING",
                        &args,
                    )
                    .await?;
                if stopped != 1 {
                    return Ok(false);
                }
                if let Some(event) = &event {
                    insert_event(tx, event).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn stopped_experiments(
        &self,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query("SELECT tenant, name, stopped_at FROM experiment_stops")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let at = parse_ts(row.try_get(2)?, "stopped_at")?.expect("some in, some out");
                Ok((row.try_get(0)?, row.try_get(1)?, at))
            })
            .collect()
    }
}
