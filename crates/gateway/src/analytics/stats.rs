//! The product managers' figures: how each provider (or country) did with the verifications a
//! tenant started in a period.
//!
//! Counted from the store's daily rollups (`stats_daily`: counts and decision-time buckets per
//! day, instance and country, kept in the transaction of each change), not from process memory,
//! so every replica answers the same, in time that grows with the days asked for, not with the
//! verifications stored. A verification counts on the UTC day it was created, by where it has
//! got to since: the figures of a period say what became of the verifications started in it.
use crate::analytics::AnalyticsError;
use crate::analytics::optimize;
use crate::app::App;
use crate::config::{Policy, Price};
use crate::providers::routing::{Allocation, Shares};
use crate::store::{DecisionCount, StatsRow, bucket_seconds};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The checked period (whole UTC days, both included) and grouping of a stats request.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsPeriod {
    /// The first day.
    pub from: chrono::NaiveDate,
    /// The last day; before `from` when the request's `from` is after its `to` (no day at all).
    pub to: chrono::NaiveDate,
    /// What the counts are summed per.
    pub by: StatsGroup,
}

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
    /// The first day of the period with a verification started; absent when none was. A
    /// dashboard fits its default period to the data with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_day: Option<NaiveDate>,
    /// One per provider instance, country, or both, as grouped; ordered by them.
    pub groups: Vec<StatsGroupFigures>,
    /// Where the tenant's routing has adaptive routing (`optimize`): its shares now, and how it
    /// shared the period's subjects day by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationOverTime>,
}

/// Adaptive routing's shares now, and the verifications each of its instances started in its
/// countries on each day of the period (all reasons: fallbacks and overrides included).
#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationOverTime {
    /// The shares this replica routes by now, with the evidence they were computed from
    /// (recomputed every `[experiments] every_seconds`).
    pub now: Allocation,
    /// Each day of the period with any, in order.
    pub days: Vec<AllocationDay>,
}

/// One day's verifications per instance of the adaptive routing.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationDay {
    /// The UTC day.
    pub day: NaiveDate,
    /// Verifications started at each instance in the routing's countries.
    pub started: BTreeMap<String, u64>,
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
    /// approved ÷ decided, decided being approved + rejected (an expired, abandoned or
    /// cancelled session was never decided); absent while none is decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// The approval rate's 95 % interval (Wilson), `[low, high]`: two groups whose intervals
    /// overlap are not shown to approve differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ci: Option<[f64; 2]>,
    /// finished ÷ started: the share that reached any final status; absent when none started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_rate: Option<f64>,
    /// approved ÷ started; absent when none started.
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
    /// Of those started, how many re-verified a subject whose newest approval had lapsed (by
    /// the tenant's `verification_valid_days`) when it started.
    pub reverifications: u64,
    /// Failed calls to the provider for the tenant's verifications on the period's days
    /// (unavailable: connection, timeout, 5xx, 429, circuit open, outbound limit spent; an
    /// unreadable answer; our credentials refused), counted on the day they failed.
    pub provider_errors: u64,
    /// Seconds of the period during which the instance's circuit breaker was open on at least one
    /// replica (grouped by provider only: a circuit is the instance's, not a country's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_open_s: Option<f64>,
    /// What the verifications started cost, at each instance's `price_per_verification` in the
    /// policy now; absent when an instance of the group has no price, or prices differ in
    /// currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// Estimated cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cost {
    /// ISO 4217.
    pub currency: String,
    /// Of all the verifications started.
    pub total: f64,
    /// total / started.
    pub per_started: f64,
    /// total / approved; absent while none is approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_approved: Option<f64>,
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

impl Finished {
    /// All of them: what a completion rate counts.
    pub fn total(&self) -> u64 {
        self.approved + self.rejected + self.expired + self.abandoned + self.cancelled
    }

    /// Those a provider decided, approved or rejected: what an approval rate is out of (an
    /// expired, abandoned or cancelled session was never decided).
    pub fn decided(&self) -> u64 {
        self.approved + self.rejected
    }
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
) -> Result<Stats, AnalyticsError> {
    let (from, to) = (period.from.to_string(), period.to.to_string());
    let rows = app.store.stats(tenant, &from, &to).await?;
    let first_day = rows
        .iter()
        .filter_map(|r| r.first_day.as_deref()?.parse::<NaiveDate>().ok())
        .min();
    let times = app.store.decision_times(tenant, &from, &to).await?;
    let mut groups = grouped(period.by, rows, times, &prices(&app.runtime().policy));
    if period.by == StatsGroup::Provider {
        let start = period.from.and_time(NaiveTime::MIN).and_utc();
        // An opening lasts until its probe time, which may be still to come: count up to now.
        let end = (period.to + chrono::Days::new(1))
            .and_time(NaiveTime::MIN)
            .and_utc()
            .min(crate::store::now());
        let openings = app.store.circuit_openings(start, end).await?;
        for group in &mut groups {
            let provider = group.provider.as_deref().unwrap_or_default();
            let spans = openings
                .iter()
                .filter(|(p, _, _)| p == provider)
                .map(|(_, opened, closes)| ((*opened).max(start), (*closes).min(end)));
            group.circuit_open_s = Some(covered_seconds(spans.collect()));
        }
    }
    Ok(Stats {
        from: period.from,
        to: period.to,
        first_day,
        groups,
        allocation: allocation(app, tenant, &from, &to).await?,
    })
}

/// The tenant's adaptive routing now and over the period's days, where it has one.
async fn allocation(
    app: &App,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Option<AllocationOverTime>, AnalyticsError> {
    let runtime = app.runtime();
    let Some(optimize) = runtime
        .policy
        .tenants
        .get(tenant)
        .and_then(|t| t.routing.optimize.as_ref())
    else {
        return Ok(None);
    };
    // What the experiments job computed last, which routing draws by; before its first
    // computation for this policy, routing shares evenly, and the evidence is read now.
    let learnt = app
        .allocation(tenant)
        .filter(|a| a.shares.among(&optimize.among));
    let now = match learnt {
        Some(learnt) => (*learnt).clone(),
        None => {
            let store = app.store.as_ref();
            let at = crate::store::now();
            let mut fresh =
                optimize::allocate(store, &runtime.policy, tenant, optimize, at).await?;
            fresh.shares = Shares::even(&optimize.among);
            for (instance, share) in fresh
                .instances
                .iter_mut()
                .zip(fresh.shares.percent_in_order())
            {
                instance.share = share;
            }
            fresh
        }
    };
    let mut days: BTreeMap<NaiveDate, BTreeMap<String, u64>> = BTreeMap::new();
    for (day, provider, country, started) in app.store.started_per_day(tenant, from, to).await? {
        let Ok(day) = day.parse::<NaiveDate>() else {
            continue;
        };
        if optimize.among.contains(&provider) && optimize.covers(&country) {
            *days.entry(day).or_default().entry(provider).or_default() += started;
        }
    }
    let days = days
        .into_iter()
        .map(|(day, started)| AllocationDay { day, started })
        .collect();
    Ok(Some(AllocationOverTime { now, days }))
}

/// Each priced instance's `price_per_verification`.
pub(crate) fn prices(policy: &Policy) -> BTreeMap<String, Price> {
    policy
        .providers
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), p.price_per_verification.clone()?)))
        .collect()
}

/// Seconds covered by at least one of the spans (overlaps counted once).
fn covered_seconds(mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> f64 {
    spans.sort();
    let mut total = chrono::Duration::zero();
    let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (start, end) in spans.into_iter().filter(|(s, e)| s < e) {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total.as_seconds_f64()
}

/// A group's cost so far: the total in one currency, or nothing once an instance without a price
/// or in another currency is met.
#[derive(Debug, Clone)]
enum CostSum {
    Priced { currency: String, total: f64 },
    Unknown,
}

/// Sums the rows per group, and reads each group's percentiles from its buckets.
pub(crate) fn grouped(
    by: StatsGroup,
    rows: Vec<StatsRow>,
    times: Vec<DecisionCount>,
    prices: &BTreeMap<String, Price>,
) -> Vec<StatsGroupFigures> {
    let mut sums: BTreeMap<_, StatsRow> = BTreeMap::new();
    let mut costs: BTreeMap<_, CostSum> = BTreeMap::new();
    for row in rows {
        let key = by.key(&row.provider, &row.country);
        let cost = match (costs.remove(&key), prices.get(&row.provider)) {
            (Some(CostSum::Unknown), _) | (_, None) => CostSum::Unknown,
            (None, Some(price)) => CostSum::Priced {
                currency: price.currency.clone(),
                total: row.started as f64 * price.amount,
            },
            (Some(CostSum::Priced { currency, total }), Some(price)) => {
                if currency == price.currency {
                    CostSum::Priced {
                        currency,
                        total: total + row.started as f64 * price.amount,
                    }
                } else {
                    CostSum::Unknown
                }
            }
        };
        costs.insert(key.clone(), cost);
        let sum = sums.entry(key).or_default();
        sum.started += row.started;
        sum.fallbacks += row.fallbacks;
        sum.reverifications += row.reverifications;
        sum.provider_errors += row.provider_errors;
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
            let cost = match costs.remove(&key) {
                Some(CostSum::Priced { currency, total }) if row.started > 0 => Some(Cost {
                    currency,
                    total,
                    per_started: total / row.started as f64,
                    per_approved: (row.approved > 0).then(|| total / row.approved as f64),
                }),
                _ => None,
            };
            let (provider, country) = key;
            let finished = Finished {
                approved: row.approved,
                rejected: row.rejected,
                expired: row.expired,
                abandoned: row.abandoned,
                cancelled: row.cancelled,
            };
            let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
            StatsGroupFigures {
                provider,
                country,
                started: row.started,
                approval_rate: rate(row.approved, finished.decided()),
                approval_ci: crate::analytics::significance::Proportion {
                    successes: row.approved,
                    sample: finished.decided(),
                }
                .wilson()
                .map(|w| [w.low, w.high]),
                completion_rate: rate(finished.total(), row.started),
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
                reverifications: row.reverifications,
                provider_errors: row.provider_errors,
                circuit_open_s: None,
                cost,
                finished,
            }
        })
        .collect()
}

/// The `q` quantile (nearest rank: the smallest time with at least `q` of the counts at or below
/// it) of counts per bucket, in seconds; `None` without counts.
pub(crate) fn percentile(buckets: &BTreeMap<u32, u64>, q: f64) -> Option<f64> {
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

    fn row(provider: &str, country: &str, started: u64, approved: u64) -> StatsRow {
        StatsRow {
            provider: provider.into(),
            country: country.into(),
            started,
            approved,
            ..StatsRow::default()
        }
    }

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
        let none = BTreeMap::new();
        let by_country = grouped(StatsGroup::Country, rows.clone(), times.clone(), &none);
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
        let by_provider = grouped(StatsGroup::Provider, rows, times, &none);
        assert_eq!(
            by_provider
                .iter()
                .map(|g| (g.provider.clone().unwrap(), g.started))
                .collect::<Vec<_>>(),
            [("a".to_string(), 3), ("b".to_string(), 3)]
        );
    }

    #[test]
    fn cost_is_the_started_at_each_price_and_needs_every_price_in_one_currency() {
        let rows = vec![
            row("a", "CL", 4, 2),
            row("b", "CL", 2, 1),
            row("c", "AR", 1, 0),
        ];
        let price = |amount, currency: &str| Price {
            amount,
            currency: currency.into(),
        };
        let prices: BTreeMap<String, Price> = [
            ("a".to_string(), price(1.5, "USD")),
            ("b".to_string(), price(0.5, "USD")),
        ]
        .into();
        let by_country = grouped(StatsGroup::Country, rows.clone(), Vec::new(), &prices);
        // AR's only instance has no price: no cost.
        assert!(by_country[0].cost.is_none());
        let chile = by_country[1].cost.as_ref().unwrap();
        assert_eq!(chile.currency, "USD");
        assert_eq!(chile.total, 4.0 * 1.5 + 2.0 * 0.5);
        assert_eq!(chile.per_started, 7.0 / 6.0);
        assert_eq!(chile.per_approved, Some(7.0 / 3.0));
        // Another currency in the group: no sum is given.
        let mixed: BTreeMap<String, Price> = [
            ("a".to_string(), price(1.5, "USD")),
            ("b".to_string(), price(0.5, "CLP")),
        ]
        .into();
        let by_country = grouped(StatsGroup::Country, rows.clone(), Vec::new(), &mixed);
        assert!(by_country[1].cost.is_none());
        let by_provider = grouped(StatsGroup::Provider, rows, Vec::new(), &mixed);
        assert_eq!(by_provider[1].cost.as_ref().unwrap().currency, "CLP");
    }

    #[test]
    fn circuit_time_counts_overlapping_openings_once() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        assert_eq!(covered_seconds(Vec::new()), 0.0);
        // 0-30 and 10-40 overlap (40 s), 100-130 is apart (30 s), an empty span adds nothing.
        let spans = vec![
            (t(100), t(130)),
            (t(10), t(40)),
            (t(0), t(30)),
            (t(50), t(50)),
        ];
        assert_eq!(covered_seconds(spans), 70.0);
    }
}
