//! Experiments' arm counts and the stops their guardrail makes, and what adaptive routing reads:
//! each instance's outcomes at the horizon.

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
    let age_at_end = age_at_end(postgres);
    format!(
        "SELECT arm, status, COUNT(*), SUM(CASE WHEN created_at > $3 THEN 1 ELSE 0 END), \
         SUM(CASE WHEN created_at <= $3 AND completed_at IS NOT NULL \
         AND {age_at_end} <= CAST($4 AS DOUBLE PRECISION) THEN 1 ELSE 0 END) \
         FROM verifications WHERE tenant = $1 AND experiment = $2 AND arm IS NOT NULL \
         GROUP BY arm, status"
    )
}

/// Seconds from a verification's creation to its final status: the only arithmetic on stored
/// times, which the backends write differently.
fn age_at_end(postgres: bool) -> &'static str {
    if postgres {
        "EXTRACT(EPOCH FROM (CAST(completed_at AS timestamptz) - CAST(created_at AS timestamptz)))"
    } else {
        "(julianday(completed_at) - julianday(created_at)) * 86400.0"
    }
}

/// Seconds from creation to approval or rejection of each decided verification in an arm of an
/// experiment (`$1` tenant, `$2` experiment, `$3` arm), found by the partial index on experiment;
/// read as a stream and counted in [`decision_bucket`]s, so no row is sorted or kept.
pub(super) fn arm_decision_times_sql(postgres: bool) -> String {
    format!(
        "SELECT CAST({} AS DOUBLE PRECISION) FROM verifications \
         WHERE tenant = $1 AND experiment = $2 AND arm = $3 \
         AND status IN ('approved', 'rejected') AND completed_at IS NOT NULL",
        age_at_end(postgres)
    )
}

/// What one instance did with a tenant's verifications of some countries created in a period
/// that ended a horizon ago, each as it stood at the horizon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceOutcomes {
    /// Verifications created in the period.
    pub started: u64,
    /// Of those, approved within the horizon of their creation.
    pub approved: u64,
    /// Of those, cancelled by the tenant within the horizon: not the instance's doing.
    pub cancelled: u64,
    /// Failed calls to the instance for the tenant's subjects of those countries on the days of
    /// the period.
    pub provider_errors: u64,
}

/// `country IN ($first, ...)` for `count` countries, or nothing for all.
fn countries_in(first: usize, count: usize) -> String {
    if count == 0 {
        return String::new();
    }
    let binds: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!(" AND country IN ({})", binds.join(", "))
}

/// One instance's verifications of a tenant created in a period (ids from `$2` to `$3`, the
/// ULID's time; times from `$4` to `$5`, found on the (tenant, id) index), with those approved
/// and those cancelled within `$6` seconds of their creation; countries from `$8`.
pub(super) fn instance_outcomes_sql(postgres: bool, countries: usize) -> String {
    let age = age_at_end(postgres);
    let within = format!("completed_at IS NOT NULL AND {age} <= CAST($6 AS DOUBLE PRECISION)");
    format!(
        "SELECT COUNT(*), \
         CAST(COALESCE(SUM(CASE WHEN status = 'approved' AND {within} THEN 1 ELSE 0 END), 0) \
         AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN status = 'cancelled' AND {within} THEN 1 ELSE 0 END), 0) \
         AS BIGINT) \
         FROM verifications WHERE tenant = $1 AND id >= $2 AND id < $3 AND created_at >= $4 \
         AND created_at < $5 AND provider = $7{}",
        countries_in(8, countries)
    )
}

/// One instance's failed calls for a tenant on the days from `$2` to `$3`; countries from `$5`.
pub(super) fn instance_errors_sql(countries: usize) -> String {
    format!(
        "SELECT CAST(COALESCE(SUM(provider_errors), 0) AS BIGINT) FROM stats_daily \
         WHERE tenant = $1 AND day >= $2 AND day <= $3 AND provider = $4{}",
        countries_in(5, countries)
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

    /// How long the decided (approved or rejected) verifications of an experiment's arm took,
    /// as counts per [`decision_bucket`].
    async fn arm_decision_times(
        &self,
        tenant: &str,
        experiment: &str,
        arm: kyc_core::Arm,
    ) -> Result<std::collections::BTreeMap<u32, u64>, StoreError>;

    /// Every stopped experiment: (tenant, experiment, when).
    async fn stopped_experiments(&self)
    -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError>;

    /// What instance `provider` did with the tenant's verifications of `countries` (empty: all)
    /// created from `since` to `until`, each as it stood `horizon` after its creation.
    async fn instance_outcomes(
        &self,
        tenant: &str,
        provider: &str,
        countries: &[String],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        horizon: Duration,
    ) -> Result<InstanceOutcomes, StoreError>;
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

    async fn arm_decision_times(
        &self,
        tenant: &str,
        experiment: &str,
        arm: kyc_core::Arm,
    ) -> Result<std::collections::BTreeMap<u32, u64>, StoreError> {
        use futures_util::TryStreamExt;
        let sql = arm_decision_times_sql(matches!(self.writer, Writer::Postgres));
        let mut rows = sqlx::query_scalar::<_, f64>(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(experiment)
            .bind(arm.as_str())
            .fetch(&self.pool);
        let mut buckets = std::collections::BTreeMap::new();
        while let Some(seconds) = rows.try_next().await? {
            *buckets
                .entry(decision_bucket((seconds * 1000.0) as i64))
                .or_default() += 1;
        }
        Ok(buckets)
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

    async fn instance_outcomes(
        &self,
        tenant: &str,
        provider: &str,
        countries: &[String],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        horizon: Duration,
    ) -> Result<InstanceOutcomes, StoreError> {
        let postgres = matches!(self.writer, Writer::Postgres);
        let sql = instance_outcomes_sql(postgres, countries.len());
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(first_id_at(since))
            .bind(first_id_at(until + chrono::Duration::milliseconds(1)))
            .bind(ts(since))
            .bind(ts(until))
            .bind(horizon.as_secs_f64())
            .bind(provider);
        for country in countries {
            query = query.bind(country);
        }
        let row = query.fetch_one(&self.pool).await?;
        let count = |i| {
            row.try_get::<i64, _>(i)
                .map(|n| u64::try_from(n).unwrap_or(0))
        };
        let (started, approved, cancelled) = (count(0)?, count(1)?, count(2)?);
        let mut query = sqlx::query(AssertSqlSafe(instance_errors_sql(countries.len())))
            .bind(tenant)
            .bind(since.date_naive().to_string())
            .bind(until.date_naive().to_string())
            .bind(provider);
        for country in countries {
            query = query.bind(country);
        }
        let errors: i64 = query.fetch_one(&self.pool).await?.try_get(0)?;
        Ok(InstanceOutcomes {
            started,
            approved,
            cancelled,
            provider_errors: u64::try_from(errors).unwrap_or(0),
        })
    }
}
