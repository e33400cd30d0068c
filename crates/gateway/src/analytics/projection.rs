//! What a replayed draft would do to the approval rate and the cost per approved: today's
//! figures of the replayed verifications beside the draft's projection, each with its 95 %
//! interval, so that a product manager sees whether a switch is worth it before making it.

use crate::analytics::significance::{Proportion, Z_95};
use crate::analytics::stats::StatsGroupFigures;
use crate::config::Price;
use crate::store::Routed;
use kyc_core::Status;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Approval rate and cost per approved of a set of verifications, with their 95 % intervals.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Outlook {
    /// The verifications decided (approved or rejected).
    pub decided: u64,
    /// Of those, approved (projected: expected, so not a whole number); absent when it cannot
    /// be projected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<f64>,
    /// approved ÷ decided; absent when none was decided, or when the draft sends decided ones
    /// to an instance with no decided verification in the period to estimate from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_rate: Option<f64>,
    /// Its 95 % interval, `[low, high]`: today's is Wilson's; a projection's adds the
    /// uncertainty of each destination's estimated rate to that of the verifications kept (a
    /// normal approximation of the weighted sum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ci: Option<[f64; 2]>,
    /// What the verifications cost (each at its instance's price now) ÷ approved; absent
    /// without approvals, or when an instance has no price or prices differ in currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_approved: Option<f64>,
    /// Its 95 % interval: the cost over the approval rate's interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_approved_ci: Option<[f64; 2]>,
    /// The currency of the cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Projected only: the moved decided verifications whose destination's overall rate was
    /// used, for want of [`MIN_OBSERVATIONS`] decided in their country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_from_overall: Option<u64>,
}

/// A sum of prices in one currency; unknown once an instance has no price or another currency.
#[derive(Debug, Default)]
struct CostSum {
    amount: f64,
    currency: Option<String>,
    unknown: bool,
}

impl CostSum {
    fn add(&mut self, price: Option<&Price>) {
        match price {
            Some(p) if self.currency.as_deref().is_none_or(|c| c == p.currency) => {
                self.amount += p.amount;
                self.currency = Some(p.currency.clone());
            }
            _ => self.unknown = true,
        }
    }

    /// The sum, and its currency, when known.
    fn known(&self) -> Option<(f64, &str)> {
        (!self.unknown)
            .then_some(())
            .and(self.currency.as_deref().map(|c| (self.amount, c)))
    }
}

/// The replayed verifications' outcomes and costs, today and under the draft, gathered one
/// verification at a time.
#[derive(Debug, Default)]
pub struct Projection {
    decided: u64,
    approved: u64,
    /// Decided and approved among those the draft leaves where they ran.
    kept: Proportion,
    /// Decided ones the draft moves: per (destination, country), how many.
    moved_decided: BTreeMap<(String, String), u64>,
    cost_today: CostSum,
    cost_projected: CostSum,
}

impl Projection {
    /// Counts `routed`, which the draft sends to `to` (moving it when that is not where it ran).
    pub fn add(&mut self, routed: &Routed, to: &str, prices: &BTreeMap<String, Price>) {
        let decided = matches!(routed.status, Status::Approved | Status::Rejected);
        let approved = routed.status == Status::Approved;
        self.decided += u64::from(decided);
        self.approved += u64::from(approved);
        self.cost_today.add(prices.get(&routed.provider));
        // A verification the draft routes as routing did keeps its outcome, even one that fell
        // back: its instance would be as unavailable again.
        let moved = to != routed.chosen;
        let lands = if moved { to } else { &routed.provider };
        self.cost_projected.add(prices.get(lands));
        if moved && decided {
            let country = routed.country.clone().unwrap_or_default();
            *self
                .moved_decided
                .entry((to.to_string(), country))
                .or_default() += 1;
        } else if decided {
            self.kept.sample += 1;
            self.kept.successes += u64::from(approved);
        }
    }

    /// Today's figures and the draft's, given the period's stats per instance (`by_provider`)
    /// and per instance and country (`by_country`).
    pub fn outlooks(
        self,
        by_provider: &[StatsGroupFigures],
        by_country: &[StatsGroupFigures],
        min_observations: u64,
    ) -> (Outlook, Outlook) {
        let replayed = Proportion {
            successes: self.approved,
            sample: self.decided,
        };
        let today = outlook(
            self.decided,
            self.approved as f64,
            replayed.wilson().map(|w| [w.low, w.high]),
            self.cost_today.known(),
        );
        if self.moved_decided.is_empty() {
            let mut projected = outlook(
                self.decided,
                self.approved as f64,
                today.approval_ci,
                self.cost_projected.known(),
            );
            projected.estimated_from_overall = Some(0);
            return (today, projected);
        }
        let find = |groups: &[StatsGroupFigures], provider: &str, country: Option<&str>| {
            let group = groups.iter().find(|g| {
                g.provider.as_deref() == Some(provider)
                    && country.is_none_or(|c| g.country.as_deref().unwrap_or("") == c)
            });
            observed(group)
        };
        // The kept ones' binomial variance, then each moved group's: its count squared times
        // the variance of its destination's estimated rate.
        let kept_rate = self.kept.value().unwrap_or(0.0);
        let mut approved = self.kept.successes as f64;
        let mut variance = self.kept.sample as f64 * kept_rate * (1.0 - kept_rate);
        let mut from_overall = 0;
        for ((to, country), count) in &self.moved_decided {
            let mut rate = find(by_country, to, Some(country));
            if rate.sample < min_observations {
                rate = find(by_provider, to, None);
                from_overall += count;
            }
            let Some(p) = rate.value() else {
                // Nothing to estimate from: no projection.
                let projected = Outlook {
                    decided: self.decided,
                    ..Outlook::default()
                };
                return (today, projected);
            };
            let n = *count as f64;
            approved += n * p;
            variance += n * n * p * (1.0 - p) / rate.sample as f64;
        }
        let decided = self.decided as f64;
        let (rate, half) = (approved / decided, Z_95 * variance.sqrt() / decided);
        let ci = [(rate - half).max(0.0), (rate + half).min(1.0)];
        let mut projected = outlook(
            self.decided,
            approved,
            Some(ci),
            self.cost_projected.known(),
        );
        projected.estimated_from_overall = Some(from_overall);
        (today, projected)
    }
}

/// An instance's decided and approved verifications in a stats group: the approval rate's
/// observations.
pub fn observed(group: Option<&StatsGroupFigures>) -> Proportion {
    group.map_or(Proportion::default(), |g| Proportion {
        successes: g.finished.approved,
        sample: g.finished.decided(),
    })
}

/// An outlook from its counts: the rate is approved ÷ decided, the cost per approved is the
/// cost over approved, and its interval the cost over the rate interval's approvals.
fn outlook(
    decided: u64,
    approved: f64,
    approval_ci: Option<[f64; 2]>,
    cost: Option<(f64, &str)>,
) -> Outlook {
    let n = decided as f64;
    let per = |approved: f64| {
        cost.filter(|_| approved > 0.0)
            .map(|(amount, _)| amount / approved)
    };
    let cost_per_approved_ci = approval_ci
        .and_then(|[low, high]| Some([per(high * n)?, per(low * n).unwrap_or(f64::INFINITY)]));
    Outlook {
        decided,
        approved: Some(approved),
        approval_rate: (decided > 0).then(|| approved / n),
        approval_ci: approval_ci.filter(|_| decided > 0),
        cost_per_approved: per(approved),
        // JSON has no infinity: an interval that reaches no approval is left out.
        cost_per_approved_ci: cost_per_approved_ci.filter(|[_, high]| high.is_finite()),
        currency: cost.filter(|_| approved > 0.0).map(|(_, c)| c.to_string()),
        estimated_from_overall: None,
    }
}
