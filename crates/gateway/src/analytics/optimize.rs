//! Adaptive routing (`optimize` in a tenant's routing): new subjects of some countries are shared
//! among a few instances by how many approvals each buys per unit of money, learnt from the
//! tenant's own verifications.
//!
//! Each instance's evidence is what it did with the tenant's verifications of those countries
//! created in the last [`WINDOW_DAYS`] up to a horizon ago, each as it stood at the horizon (as
//! for an experiment, so a slow approver is not judged early): approved within the horizon, or
//! not. Only the instance's own doing counts against it: a verification the tenant cancelled is
//! left out, and a failed call to the instance (unavailable, unreadable answer; the subject went
//! to a fallback) counts as not approved.
//!
//! The shares are Thompson sampling's, taken over many draws (probability matching): each
//! instance's approval rate has a Beta posterior (a uniform prior, plus its approvals and the
//! rest); a draw takes one rate from each, divides it by the instance's price, and the highest
//! wins. An instance's share is the fraction of draws it wins: the posterior probability that
//! it is the best by approvals per cost. So an instance the evidence cannot yet tell apart keeps
//! a large share, and one that is clearly worse a small one. The shares are then brought within
//! `min_share` and `max_share` (each instance keeps at least the least, so learning never
//! stops). The draws are seeded, so every replica computes the same shares from the same
//! evidence. [`crate::jobs::experiments`] recomputes them every `[experiments] every_seconds`.

use crate::analytics::AnalyticsError;
use crate::config::{Optimize, Policy};
use crate::providers::routing::{Allocation, InstanceAllocation, Shares};
use crate::store::{InstanceOutcomes, Store};
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};

/// How far back the evidence goes: long enough to learn from a slow trickle of subjects, short
/// enough to follow a provider that changes.
pub const WINDOW_DAYS: i64 = 30;

/// Draws per computation: the shares are then within about half a point of the posterior
/// probabilities.
const DRAWS: u32 = 20_000;

/// One instance's evidence and price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Approved by the horizon.
    pub approved: u64,
    /// Not approved by the horizon, and failed calls.
    pub not_approved: u64,
    /// Price per verification (above 0).
    pub price: f64,
}

impl Evidence {
    /// From the store's counts.
    pub fn from_outcomes(outcomes: &InstanceOutcomes, price: f64) -> Evidence {
        let decided = outcomes.started.saturating_sub(outcomes.cancelled);
        Evidence {
            approved: outcomes.approved,
            not_approved: decided.saturating_sub(outcomes.approved) + outcomes.provider_errors,
            price,
        }
    }

    /// The posterior mean approval rate.
    fn mean_rate(self) -> f64 {
        (self.approved as f64 + 1.0) / ((self.approved + self.not_approved) as f64 + 2.0)
    }
}

/// Each instance's posterior probability of being the best by approvals per cost, estimated
/// from `draws` seeded draws.
pub fn best_probabilities(evidence: &[Evidence], draws: u32, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let posteriors: Vec<Option<Beta<f64>>> = evidence
        .iter()
        .map(|e| Beta::new(e.approved as f64 + 1.0, e.not_approved as f64 + 1.0).ok())
        .collect();
    let mut wins = vec![0u32; evidence.len()];
    for _ in 0..draws {
        let mut best = (0, f64::MIN);
        for (i, (posterior, e)) in posteriors.iter().zip(evidence).enumerate() {
            let rate = posterior.map_or(0.5, |p| p.sample(&mut rng));
            let value = rate / e.price;
            if value > best.1 {
                best = (i, value);
            }
        }
        wins[best.0] += 1;
    }
    wins.iter()
        .map(|w| f64::from(*w) / f64::from(draws.max(1)))
        .collect()
}

/// The shares closest in proportion to `wanted` that keep each between `min` and `max`
/// (fractions) and sum to 1: each is `wanted` scaled by one factor, then held within the bounds,
/// the factor found by bisection. A valid policy's bounds always leave such shares (`min` times the
/// instances at most 1, `max` times them at least 1).
pub fn bounded(wanted: &[f64], min: f64, max: f64) -> Vec<f64> {
    // A little for every instance, so that one with no draws can still be raised to `max`.
    let wanted: Vec<f64> = wanted.iter().map(|w| w.max(0.0) + 1e-9).collect();
    let total = |factor: f64| -> f64 { wanted.iter().map(|w| (w * factor).clamp(min, max)).sum() };
    let (mut low, mut high) = (0.0, 1e12);
    for _ in 0..200 {
        let middle = (low + high) / 2.0;
        if total(middle) < 1.0 {
            low = middle;
        } else {
            high = middle;
        }
    }
    let shares: Vec<f64> = wanted.iter().map(|w| (w * high).clamp(min, max)).collect();
    let sum: f64 = shares.iter().sum();
    shares.iter().map(|s| s / sum).collect()
}

/// The draws' seed: any fixed number, the same on every replica.
const SEED: u64 = 0x6b79_632d_6f70_7469;

/// The tenant's adaptive routing now, from the store.
pub async fn allocate(
    store: &dyn Store,
    policy: &Policy,
    tenant: &str,
    optimize: &Optimize,
    now: DateTime<Utc>,
) -> Result<Allocation, AnalyticsError> {
    let horizon = optimize.horizon();
    let until = now - chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::zero());
    let since = now - chrono::Duration::days(WINDOW_DAYS);
    let mut outcomes = Vec::new();
    let mut evidence = Vec::new();
    for provider in &optimize.among {
        let price = policy
            .providers
            .get(provider)
            .and_then(|p| p.price_per_verification.clone());
        let (amount, currency) = price.map_or((1.0, String::new()), |p| (p.amount, p.currency));
        let counted = if until > since {
            store
                .instance_outcomes(tenant, provider, &optimize.countries, since, until, horizon)
                .await?
        } else {
            InstanceOutcomes::default()
        };
        evidence.push(Evidence::from_outcomes(&counted, amount));
        outcomes.push((counted, currency));
    }
    let best = best_probabilities(&evidence, DRAWS, SEED);
    let shares = bounded(
        &best,
        f64::from(optimize.min_share) / 100.0,
        f64::from(optimize.max_share) / 100.0,
    );
    let percent = |x: f64| (x * 1000.0).round() / 10.0;
    let instances = optimize
        .among
        .iter()
        .zip(outcomes)
        .zip(evidence.iter().zip(best.iter().zip(&shares)))
        .map(
            |((provider, (counted, currency)), (e, (best, share)))| InstanceAllocation {
                provider: provider.clone(),
                share: percent(*share),
                best_probability: percent(*best),
                started: counted.started,
                approved: counted.approved,
                provider_errors: counted.provider_errors,
                approval_rate: e.mean_rate(),
                price: e.price,
                currency,
                approvals_per_cost: e.mean_rate() / e.price,
            },
        )
        .collect();
    let shares = Shares {
        shares: optimize.among.iter().cloned().zip(shares).collect(),
    };
    Ok(Allocation {
        countries: optimize.countries.clone(),
        objective: optimize.objective,
        min_share: optimize.min_share,
        max_share: optimize.max_share,
        horizon: optimize.horizon.clone(),
        evidence_since: since,
        evidence_until: until,
        instances,
        shares,
    })
}

#[cfg(test)]
#[path = "optimize_tests.rs"]
mod tests;
