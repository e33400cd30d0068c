//! The figures kept beside the verifications: daily counts, decision times, provider errors,
//! circuit openings, and the routing of past creates (for replay).

use super::*;

/// What routing read for one stored verification, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The verification's id.
    pub id: String,
    /// The subject id (the sticky key).
    pub subject_id: String,
    /// The subject's country, when stored.
    pub country: Option<String>,
    /// The instance that ran it.
    pub provider: String,
    /// The instance routing chose for it: the one that ran it, or for a fallback the first one
    /// tried (which was unavailable then).
    pub chosen: String,
    /// Why it went there, when stored.
    pub reason: Option<kyc_core::RoutingReason>,
    /// Its status now.
    pub status: kyc_core::Status,
}

/// How many verifications of one provider instance and country took a time in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCount {
    /// The provider instance.
    pub provider: String,
    /// The country (`""` when unknown).
    pub country: String,
    /// The [`decision_bucket`].
    pub bucket: u32,
    /// How many.
    pub decided: u64,
}

/// Growth of each decision-time bucket over the one before: 5 %.
pub(super) const BUCKET_GROWTH: f64 = 1.05;

/// The bucket a decision time of `ms` milliseconds is counted in: 0 for at most 1 ms, then `b`
/// for times from 1.05^(b-1) to 1.05^b ms. Counts, not times, are stored, so that percentiles
/// come from a few rows per day; their resolution is the buckets' 5 %.
pub fn decision_bucket(ms: i64) -> u32 {
    if ms <= 1 {
        0
    } else {
        // At most 896, for i64::MAX ms.
        (ms as f64).ln().div_euclid(BUCKET_GROWTH.ln()) as u32 + 1
    }
}

/// A time that stands for bucket `b`, in seconds: the geometric middle of its range, so within
/// 2.5 % of any time counted in it.
pub fn bucket_seconds(bucket: u32) -> f64 {
    if bucket == 0 {
        0.0
    } else {
        BUCKET_GROWTH.powf(f64::from(bucket) - 0.5) / 1000.0
    }
}

/// Counts of the verifications of one provider instance and country.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsRow {
    /// The provider instance.
    pub provider: String,
    /// The country (`""` for verifications stored before countries were).
    pub country: String,
    /// Created.
    pub started: u64,
    /// Created at a fallback instance.
    pub fallbacks: u64,
    /// Created for a subject whose newest approval had lapsed.
    pub reverifications: u64,
    /// Failed calls to the instance on these days (not by creation day).
    pub provider_errors: u64,
    /// Of those created, how many are approved, rejected, expired, abandoned, cancelled.
    pub approved: u64,
    /// See `approved`.
    pub rejected: u64,
    /// See `approved`.
    pub expired: u64,
    /// See `approved`.
    pub abandoned: u64,
    /// See `approved`.
    pub cancelled: u64,
    /// The first of the days read with a verification created (`YYYY-MM-DD`); none when none.
    pub first_day: Option<String>,
}

/// What routing reads of a tenant's verifications created in a period, in id order: ids between
/// two ULID bounds ($2, $3) and after the last page's ($6), times between $4 and $5.
pub(super) const ROUTED_SINCE: &str = "SELECT subject_id, country, provider, routing, id, status FROM verifications \
     WHERE tenant = $1 AND id >= $2 AND id < $3 AND created_at >= $4 AND created_at < $5 \
     AND id > $6 ORDER BY id";

/// The decision times of a tenant's day rows from $2 to $3.
pub(super) const DECISION_DAYS: &str = "SELECT provider, country, decided_at_once, decision_times \
     FROM stats_daily WHERE tenant = $1 AND day >= $2 AND day <= $3";

/// The decision times of a day's row (`stats_daily.decision_times`): `bucket:count` pairs, comma
/// separated, one per [`decision_bucket`] that has any. A pair that does not read is skipped.
pub(super) fn decision_times_of(text: &str) -> impl Iterator<Item = (u32, u64)> + '_ {
    text.split(',').filter_map(|pair| {
        let (bucket, count) = pair.split_once(':')?;
        Some((bucket.parse().ok()?, count.parse().ok()?))
    })
}

/// `text` with one more time in `bucket`, buckets in ascending order.
pub(super) fn with_decision_time(text: &str, bucket: u32) -> String {
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for (b, count) in decision_times_of(text) {
        *counts.entry(b).or_default() += count;
    }
    *counts.entry(bucket).or_default() += 1;
    counts
        .iter()
        .map(|(b, count)| format!("{b}:{count}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The counts the stats, the dashboard and replay read, kept as verifications change.
#[async_trait]
pub trait FigureStore: Send + Sync {
    /// A tenant's counts of verifications created on the UTC days `from` to `to` (`YYYY-MM-DD`,
    /// both included), per provider instance and country.
    async fn stats(&self, tenant: &str, from: &str, to: &str) -> Result<Vec<StatsRow>, StoreError>;

    /// A tenant's verifications created on each UTC day `from` to `to`, per provider instance
    /// and country: (day, provider, country, started).
    async fn started_per_day(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError>;

    /// How long those of them that reached a final status took, as counts per provider instance,
    /// country and [`decision_bucket`].
    async fn decision_times(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DecisionCount>, StoreError>;

    /// Counts a failed call to instance `provider` for a tenant's verification of a subject of
    /// `country`, on the UTC day of `at`.
    async fn count_provider_error(
        &self,
        tenant: &str,
        provider: &str,
        country: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records that this replica's circuit for `provider` opened at `opened_at` until `closes_at`.
    async fn record_circuit_opening(
        &self,
        provider: &str,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The circuit openings of any instance that overlap `start..end`: (provider, opened,
    /// closes).
    async fn circuit_openings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, StoreError>;

    /// What routing read for a page of a tenant's verifications created from `since` to
    /// `until` (for a replay): up to `limit` of them, in id order after `after_id` (keyset
    /// paging, so a replay of any period holds one page at a time).
    async fn routed_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Routed>, StoreError>;
}

#[async_trait]
impl FigureStore for SqlStore {
    async fn started_per_day(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let sql = "SELECT day, provider, country, started FROM stats_daily \
                   WHERE tenant = $1 AND day >= $2 AND day <= $3 AND started > 0";
        let rows = self.days_of(sql.into(), [tenant, from, to]).await?;
        rows.iter()
            .map(|row| {
                let started: i64 = row.try_get(3)?;
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    u64::try_from(started).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn stats(&self, tenant: &str, from: &str, to: &str) -> Result<Vec<StatsRow>, StoreError> {
        let sum = |column: &str| format!("CAST(SUM({column}) AS BIGINT) AS {column}");
        let sums = [
            "started",
            "fallbacks",
            "reverifications",
            "provider_errors",
            "approved",
            "rejected",
            "expired",
            "abandoned",
            "cancelled",
        ]
        .map(sum)
        .join(", ");
        let rows = self
            .days_of(
                format!(
                    "SELECT provider, country, {sums}, \
                     MIN(CASE WHEN started > 0 THEN day END) AS first_day FROM stats_daily \
                     WHERE tenant = $1 AND day >= $2 AND day <= $3 \
                     GROUP BY provider, country ORDER BY provider, country"
                ),
                [tenant, from, to],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StatsRow {
                    provider: row.try_get("provider")?,
                    country: row.try_get("country")?,
                    started: count(row, "started")?,
                    fallbacks: count(row, "fallbacks")?,
                    reverifications: count(row, "reverifications")?,
                    provider_errors: count(row, "provider_errors")?,
                    approved: count(row, "approved")?,
                    rejected: count(row, "rejected")?,
                    expired: count(row, "expired")?,
                    abandoned: count(row, "abandoned")?,
                    cancelled: count(row, "cancelled")?,
                    first_day: row.try_get("first_day")?,
                })
            })
            .collect()
    }

    async fn decision_times(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DecisionCount>, StoreError> {
        // The same day rows as `stats` reads, in a query of their own: summing the counts in SQL
        // and fetching only these four columns is faster than fetching every column of every
        // row once (sqlx decodes column by column; measured with kyc-bench (e)).
        let rows = self
            .days_of(DECISION_DAYS.to_string(), [tenant, from, to])
            .await?;
        // A day's row holds its own counts: summed here per instance and country, a few rows per
        // day of the period.
        let mut sums: BTreeMap<(String, String), BTreeMap<u32, u64>> = BTreeMap::new();
        for row in &rows {
            let buckets = sums.entry((row.try_get(0)?, row.try_get(1)?)).or_default();
            let at_once = count(row, "decided_at_once")?;
            let times: String = row.try_get(3)?;
            let counts = std::iter::once((0, at_once)).chain(decision_times_of(&times));
            for (bucket, decided) in counts.filter(|(_, n)| *n > 0) {
                *buckets.entry(bucket).or_default() += decided;
            }
        }
        Ok(sums
            .into_iter()
            .flat_map(|((provider, country), buckets)| {
                buckets
                    .into_iter()
                    .map(move |(bucket, decided)| DecisionCount {
                        provider: provider.clone(),
                        country: country.clone(),
                        bucket,
                        decided,
                    })
            })
            .collect())
    }

    async fn count_provider_error(
        &self,
        tenant: &str,
        provider: &str,
        country: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let args = args![tenant, at.date_naive().to_string(), provider, country];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO stats_daily (tenant, day, provider, country, provider_errors) \
                     VALUES ($1, $2, $3, $4, 1) ON CONFLICT (tenant, day, provider, country) \
                     DO UPDATE SET provider_errors = stats_daily.provider_errors + 1",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn record_circuit_opening(
        &self,
        provider: &str,
        opened_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let args = args![provider, ts(opened_at), ts(closes_at)];
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO circuit_openings (provider, opened_at, closes_at) \
                     VALUES ($1, $2, $3)",
                    &args,
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn circuit_openings(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, opened_at, closes_at FROM circuit_openings \
             WHERE opened_at < $1 AND closes_at > $2",
        )
        .bind(ts(end))
        .bind(ts(start))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let at = |i, column| {
                    parse_ts(row.try_get(i)?, column)?.ok_or(StoreError::Corrupt {
                        table: "circuit_openings",
                        column,
                    })
                };
                Ok((row.try_get(0)?, at(1, "opened_at")?, at(2, "closes_at")?))
            })
            .collect()
    }

    async fn routed_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<Routed>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("{ROUTED_SINCE} LIMIT {limit}")))
            .bind(tenant)
            .bind(first_id_at(since))
            .bind(first_id_at(until + chrono::Duration::milliseconds(1)))
            .bind(ts(since))
            .bind(ts(until))
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let routing: Option<kyc_core::RoutingRecord> =
                    from_json(row.try_get(3)?, "routing")?;
                let provider: String = row.try_get(2)?;
                let status: String = row.try_get(5)?;
                let chosen = routing
                    .as_ref()
                    .filter(|r| r.reason == kyc_core::RoutingReason::Fallback)
                    .and_then(|r| r.tried.first().cloned())
                    .unwrap_or_else(|| provider.clone());
                Ok(Routed {
                    subject_id: row.try_get(0)?,
                    country: row.try_get(1)?,
                    provider,
                    chosen,
                    reason: routing.map(|r| r.reason),
                    status: kyc_core::Status::parse(&status).ok_or(StoreError::Corrupt {
                        table: "verifications",
                        column: "status",
                    })?,
                    id: row.try_get(4)?,
                })
            })
            .collect()
    }
}

/// Counts a verification that reached a final status in its creation day's row: the status,
/// and its decision time merged into the row's `decision_times` (read, then written, with the row
/// locked on PostgreSQL, so replicas finishing verifications of one day at once take turns).
pub(super) async fn count_decision(
    tx: &mut dyn WriteTx,
    tenant: &str,
    next: &Verification,
) -> Result<(), StoreError> {
    // One of the five final statuses' names.
    let column = next.status.as_str();
    let took = next.completed_at.unwrap_or(next.updated_at) - next.created_at;
    let bucket = decision_bucket(took.num_milliseconds());
    let lock = if tx.postgres() {
        " FOR UPDATE OF s"
    } else {
        ""
    };
    let day = tx
        .fetch_optional(
            &format!(
                "SELECT s.day, s.provider, s.country, s.decision_times FROM verifications v \
                 JOIN stats_daily s ON s.tenant = v.tenant AND s.day = substr(v.created_at, 1, 10) \
                 AND s.provider = v.provider AND s.country = COALESCE(v.country, '') \
                 WHERE v.tenant = $1 AND v.id = $2{lock}"
            ),
            &args![tenant, &next.id],
        )
        .await?;
    if let Some(day) = day {
        let times = day.text(3, "decision_times")?;
        tx.execute(
            &format!(
                "UPDATE stats_daily SET {column} = {column} + 1, decision_times = $5 \
                 WHERE tenant = $1 AND day = $2 AND provider = $3 AND country = $4"
            ),
            &args![
                tenant,
                day.text(0, "day")?,
                day.text(1, "provider")?,
                day.text(2, "country")?,
                with_decision_time(&times, bucket),
            ],
        )
        .await?;
    } else {
        // The day's row is made with the verification; one missing (a store restored in part,
        // say) is made now.
        tx.execute(
            &format!(
                "INSERT INTO stats_daily (tenant, day, provider, country, {column}, \
                 decision_times) \
                 SELECT tenant, substr(created_at, 1, 10), provider, COALESCE(country, ''), 1, $3 \
                 FROM verifications WHERE tenant = $1 AND id = $2 \
                 ON CONFLICT (tenant, day, provider, country) DO UPDATE SET \
                 {column} = stats_daily.{column} + 1"
            ),
            &args![tenant, &next.id, with_decision_time("", bucket)],
        )
        .await?;
    }
    Ok(())
}

impl SqlStore {
    /// The rows of a rollup query over a tenant's days: `[tenant, from, to]` bind `$1` to `$3`.
    pub(super) async fn days_of(
        &self,
        sql: String,
        binds: [&str; 3],
    ) -> Result<Vec<AnyRow>, StoreError> {
        Ok(bound(sql, binds.map(str::to_string).to_vec())
            .fetch_all(&self.pool)
            .await?)
    }
}
