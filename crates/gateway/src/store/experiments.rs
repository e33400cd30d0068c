//! Experiments' arm counts, and the stops their guardrail makes.

use super::*;

/// How many of an experiment's verifications in one arm are in one status, and where they stand
/// against the experiment's horizon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmCount {
    /// The arm.
    pub arm: kyc_core::Arm,
    /// The status now.
    pub status: Status,
    /// How many.
    pub count: u64,
    /// Of those, the ones created less than the horizon ago.
    pub maturing: u64,
    /// Of the others, the ones that reached their status within the horizon of their creation.
    pub final_by_horizon: u64,
}

/// An experiment's verifications counted per arm and status, found and grouped by the partial
/// index on experiment: all, those younger than the horizon (created after `$3`, the time a
/// horizon ago), and of the others those that ended within `$4` seconds of their creation. Only
/// the arithmetic on stored times differs between the backends.
pub(super) fn experiment_counts_sql(postgres: bool) -> String {
    let age_at_end = if postgres {
        "EXTRACT(EPOCH FROM (CAST(completed_at AS timestamptz) - CAST(created_at AS timestamptz)))"
    } else {
        "(julianday(completed_at) - julianday(created_at)) * 86400.0"
    };
    format!(
        "SELECT arm, status, COUNT(*), SUM(CASE WHEN created_at > $3 THEN 1 ELSE 0 END), \
         SUM(CASE WHEN created_at <= $3 AND completed_at IS NOT NULL \
         AND {age_at_end} <= CAST($4 AS DOUBLE PRECISION) THEN 1 ELSE 0 END) \
         FROM verifications WHERE tenant = $1 AND experiment = $2 AND arm IS NOT NULL \
         GROUP BY arm, status"
    )
}

/// Experiments' arms and guardrail stops.
#[async_trait]
pub trait ExperimentStore: Send + Sync {
    /// How many of a tenant's verifications an experiment routed to each arm are in each status,
    /// with how many are younger than `horizon` at `now`, and how many of the others ended within
    /// `horizon` of their creation.
    async fn experiment_counts(
        &self,
        tenant: &str,
        experiment: &str,
        horizon: Duration,
        now: DateTime<Utc>,
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
        horizon: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ArmCount>, StoreError> {
        let since = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
        let sql = experiment_counts_sql(matches!(self.writer, Writer::Postgres));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(experiment)
            .bind(ts(now.checked_sub_signed(since).unwrap_or(now)))
            .bind(horizon.as_secs_f64())
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
                let count = |i| {
                    row.try_get::<i64, _>(i)
                        .map(|n| u64::try_from(n).unwrap_or(0))
                };
                Ok(ArmCount {
                    arm: kyc_core::Arm::parse(&arm).ok_or(corrupt("arm"))?,
                    status: Status::parse(&status).ok_or(corrupt("status"))?,
                    count: count(2)?,
                    maturing: count(3)?,
                    final_by_horizon: count(4)?,
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
