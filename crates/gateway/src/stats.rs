//! The product managers' figures: how each provider (or country) did with the verifications a
//! tenant started in a period.
//!
//! Counted from the store's daily rollups (`stats_daily`, `stats_decisions`, kept in the
//! transaction of each change), not from process memory, so every replica answers the same, and
//! in time that grows with the days asked for, not with the verifications stored. A verification
//! counts on the UTC day it was created, by where it has got to since: the figures of a period
//! say what became of the verifications started in it.
use crate::app::App;
use crate::input::StatsPeriod;
use crate::service::ServiceError;
use crate::store::{DecisionCount, StatsRow, bucket_seconds};
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What the figures are summed per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGroup {
    /// Provider instance.
    Provider,
    /// Subject country.
    Country,
    /// Both.
    ProviderCountry,
}

impl StatsGroup {
    /// The key of a provider instance and country's figures in this grouping.
    fn key(self, provider: &str, country: &str) -> (Option<String>, Option<String>) {
        let provider = (self != StatsGroup::Country).then(|| provider.to_string());
        let country = (self != StatsGroup::Provider).then(|| country.to_string());
        (provider, country)
    }
}

/// Figures per group for a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The period's first UTC day.
    pub from: NaiveDate,
    /// Its last UTC day (included).
    pub to: NaiveDate,
    /// One per provider instance, country, or both, as grouped; ordered by them.
    pub groups: Vec<StatsGroupFigures>,
}

/// The figures of one provider instance, country, or both.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsGroupFigures {
    /// The provider instance (when grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The subject country (when grouped by it); `""` for verifications stored before the
    /// gateway kept countries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Verifications started.
    pub started: u64,
    /// Of those, how many reached each final status.
    pub finished: Finished,
    /// approved / finished; absent while none has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// approved / started; absent when none started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<f64>,
    /// abandoned / started (the person gave up); absent when none started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandonment_rate: Option<f64>,
    /// expired / started (the link ran out first); absent when none started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_rate: Option<f64>,
    /// Time from creation to a final status of those finished; absent while none has (and for
    /// verifications finished before the gateway kept these times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_decision_s: Option<Percentiles>,
    /// Of those started, how many went to this instance as a fallback (the one chosen first was
    /// unavailable).
    pub fallbacks: u64,
}

/// Counts per final status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Finished {
    /// Approved.
    pub approved: u64,
    /// Rejected.
    pub rejected: u64,
    /// Expired.
    pub expired: u64,
    /// Abandoned.
    pub abandoned: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// The median and the 90th percentile, in seconds, each within 2.5 % of the exact value (the
/// store keeps times in buckets 5 % wide).
#[derive(Debug, Serialize, ToSchema)]
pub struct Percentiles {
    /// Half took at most this long.
    pub p50: f64,
    /// Nine in ten took at most this long.
    pub p90: f64,
}

/// The tenant's figures for `period`.
pub async fn for_period(
    app: &App,
    tenant: &str,
    period: &StatsPeriod,
) -> Result<Stats, ServiceError> {
    let (from, to) = (period.from.to_string(), period.to.to_string());
    let rows = app.store.stats(tenant, &from, &to).await?;
    let times = app.store.decision_times(tenant, &from, &to).await?;
    Ok(Stats {
        from: period.from,
        to: period.to,
        groups: grouped(period.by, rows, times),
    })
}

/// Sums the rows per group, and reads each group's percentiles from its buckets.
fn grouped(
    by: StatsGroup,
    rows: Vec<StatsRow>,
    times: Vec<DecisionCount>,
) -> Vec<StatsGroupFigures> {
    let mut sums: BTreeMap<_, StatsRow> = BTreeMap::new();
    for row in rows {
        let sum = sums.entry(by.key(&row.provider, &row.country)).or_default();
        sum.started += row.started;
        sum.fallbacks += row.fallbacks;
        sum.approved += row.approved;
        sum.rejected += row.rejected;
        sum.expired += row.expired;
        sum.abandoned += row.abandoned;
        sum.cancelled += row.cancelled;
    }
    let mut buckets: BTreeMap<_, BTreeMap<u32, u64>> = BTreeMap::new();
    for time in times {
        *buckets
            .entry(by.key(&time.provider, &time.country))
            .or_default()
            .entry(time.bucket)
            .or_default() += time.decided;
    }
    sums.into_iter()
        .map(|(key, row)| {
            let decided = buckets.remove(&key);
            let (provider, country) = key;
            let finished =
                row.approved + row.rejected + row.expired + row.abandoned + row.cancelled;
            let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
            StatsGroupFigures {
                provider,
                country,
                started: row.started,
                approval_rate: rate(row.approved, finished),
                conversion: rate(row.approved, row.started),
                abandonment_rate: rate(row.abandoned, row.started),
                expiry_rate: rate(row.expired, row.started),
                time_to_decision_s: decided.and_then(|b| {
                    Some(Percentiles {
                        p50: percentile(&b, 0.5)?,
                        p90: percentile(&b, 0.9)?,
                    })
                }),
                fallbacks: row.fallbacks,
                finished: Finished {
                    approved: row.approved,
                    rejected: row.rejected,
                    expired: row.expired,
                    abandoned: row.abandoned,
                    cancelled: row.cancelled,
                },
            }
        })
        .collect()
}

/// The `q` quantile (nearest rank: the smallest time with at least `q` of the counts at or below
/// it) of counts per bucket, in seconds; `None` without counts.
fn percentile(buckets: &BTreeMap<u32, u64>, q: f64) -> Option<f64> {
    let total: u64 = buckets.values().sum();
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    buckets.iter().find_map(|(bucket, count)| {
        seen += count;
        (seen >= rank).then(|| bucket_seconds(*bucket))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::decision_bucket;

    fn times(ms: &[i64]) -> BTreeMap<u32, u64> {
        let mut buckets = BTreeMap::new();
        for t in ms {
            *buckets.entry(decision_bucket(*t)).or_default() += 1;
        }
        buckets
    }

    #[test]
    fn percentiles_are_nearest_rank_within_the_buckets_resolution() {
        // 1..=100 seconds: nearest-rank p50 is 50 s, p90 90 s.
        let all: Vec<i64> = (1..=100).map(|s| s * 1000).collect();
        let buckets = times(&all);
        for (q, exact) in [(0.5, 50.0), (0.9, 90.0), (1.0, 100.0), (0.01, 1.0)] {
            let got = percentile(&buckets, q).unwrap();
            assert!(
                (got - exact).abs() <= exact * 0.025,
                "q {q}: {got} vs {exact}"
            );
        }
        // Immediate decisions are 0 s; no decisions, no figure.
        assert_eq!(percentile(&times(&[0, 1]), 0.5), Some(0.0));
        assert_eq!(percentile(&BTreeMap::new(), 0.5), None);
        // A week is still within 2.5 %.
        let week = 7 * 24 * 3600 * 1000;
        let got = percentile(&times(&[week]), 0.5).unwrap();
        assert!((got - week as f64 / 1000.0).abs() <= week as f64 / 1000.0 * 0.025);
    }

    #[test]
    fn groups_sum_their_rows_and_merge_their_buckets() {
        let row = |provider: &str, country: &str, started, approved| StatsRow {
            provider: provider.into(),
            country: country.into(),
            started,
            approved,
            ..StatsRow::default()
        };
        let rows = vec![
            row("a", "CL", 3, 1),
            row("b", "CL", 2, 2),
            row("b", "AR", 1, 0),
        ];
        let time = |provider: &str, country: &str, bucket, decided| DecisionCount {
            provider: provider.into(),
            country: country.into(),
            bucket,
            decided,
        };
        let times = vec![time("a", "CL", 100, 1), time("b", "CL", 200, 2)];
        let by_country = grouped(StatsGroup::Country, rows.clone(), times.clone());
        assert_eq!(by_country.len(), 2);
        let chile = &by_country[1];
        assert_eq!(
            (chile.country.as_deref(), chile.provider.as_deref()),
            (Some("CL"), None)
        );
        assert_eq!((chile.started, chile.finished.approved), (5, 3));
        assert_eq!(chile.approval_rate, Some(1.0));
        assert_eq!(chile.conversion, Some(0.6));
        let decision = chile.time_to_decision_s.as_ref().unwrap();
        assert_eq!(
            (decision.p50, decision.p90),
            (bucket_seconds(200), bucket_seconds(200))
        );
        assert!(by_country[0].time_to_decision_s.is_none());
        let by_provider = grouped(StatsGroup::Provider, rows, times);
        assert_eq!(
            by_provider
                .iter()
                .map(|g| (g.provider.clone().unwrap(), g.started))
                .collect::<Vec<_>>(),
            [("a".to_string(), 3), ("b".to_string(), 3)]
        );
    }
}
