//! Which provider instance gets a new verification.
//!
//! Order: an explicit `provider` in the request (only where the tenant's policy sets
//! `allow_override`), then the experiment for the countries it names (sticky: a share of subjects
//! goes to the challenger; once its guardrail has stopped it, all go to the champion), then
//! adaptive routing (`optimize`) for the countries it names (a subject it routed before goes where
//! it went; a new one by the current [`Shares`], even shares until they are computed), then the
//! first country rule that matches, then the weighted split (sticky: the same subject always lands
//! on the same provider), then the default. The fallback list follows the choice, for when it is
//! unavailable; an explicit choice gets no fallback.

use crate::config::Routing;
use kyc_core::{Arm, RoutingReason};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Why no provider instance could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    /// The request names a provider, and the tenant's policy does not allow that.
    #[error("this tenant's policy does not allow choosing the provider (allow_override = false)")]
    OverrideNotAllowed,
    /// The request names a provider instance the policy does not have.
    #[error("must name a provider instance of the policy")]
    UnknownProvider,
    /// Nothing in the tenant's routing applies (no rule, no split, no default).
    #[error("the tenant has no default provider")]
    NoDefault,
}

/// Where a create goes: the chosen instance and why, then the fallbacks in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The instances to try, in order; the first is the choice.
    pub candidates: Vec<String>,
    /// Why the first was chosen (the others are fallbacks).
    pub reason: RoutingReason,
    /// For reason `experiment`: the experiment's name and the subject's arm.
    pub experiment: Option<(String, Arm)>,
    /// For reason `optimize`: the shares (percent per instance) it chose by.
    pub shares: Option<BTreeMap<String, f64>>,
}

/// Each instance's share of an adaptive routing's new subjects, as last computed from the
/// store (see [`crate::analytics::optimize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// The instances, in the policy's `among` order, each with its share (0 to 1, summing to 1).
    pub shares: Vec<(String, f64)>,
}

impl Shares {
    /// Even shares among `among`, within any bounds a valid policy sets.
    pub fn even(among: &[String]) -> Shares {
        let each = 1.0 / among.len().max(1) as f64;
        Shares {
            shares: among.iter().map(|name| (name.clone(), each)).collect(),
        }
    }

    /// Whether these are shares among exactly `among`, in that order.
    pub fn among(&self, among: &[String]) -> bool {
        self.shares.len() == among.len() && self.shares.iter().zip(among).all(|(s, a)| &s.0 == a)
    }

    /// Percent per instance, to one decimal, as recorded with a verification.
    pub fn percent(&self) -> BTreeMap<String, f64> {
        let names = self.shares.iter().map(|(n, _)| n.clone());
        names.zip(self.percent_in_order()).collect()
    }

    /// Percent per instance, to one decimal, in order.
    pub fn percent_in_order(&self) -> Vec<f64> {
        let percent = |share: f64| (share * 1000.0).round() / 10.0;
        self.shares.iter().map(|(_, s)| percent(*s)).collect()
    }
}

/// A tenant's adaptive routing as last computed: the evidence, and the shares routing draws new
/// subjects by (the computation is `analytics::optimize`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Allocation {
    /// The countries it routes (empty: all).
    pub countries: Vec<String>,
    /// What it maximises.
    pub objective: crate::config::Objective,
    /// The least share each instance keeps, percent.
    pub min_share: u32,
    /// The most share one instance takes, percent.
    pub max_share: u32,
    /// The age at which an outcome is read, as the policy writes it.
    #[schema(example = "48h")]
    pub horizon: String,
    /// The evidence is the verifications created from this time...
    pub evidence_since: chrono::DateTime<chrono::Utc>,
    /// ...to this one, a horizon ago.
    pub evidence_until: chrono::DateTime<chrono::Utc>,
    /// Each instance, in the policy's `among` order.
    pub instances: Vec<InstanceAllocation>,
    /// The same shares, exact, as routing reads them.
    #[serde(skip)]
    pub shares: Shares,
}

/// One instance's evidence and share.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceAllocation {
    /// The instance.
    pub provider: String,
    /// Its share of new subjects now, percent.
    pub share: f64,
    /// The posterior probability that it is the best by the objective, percent, before the
    /// bounds.
    pub best_probability: f64,
    /// Its verifications in the evidence.
    pub started: u64,
    /// Of those, approved by the horizon.
    pub approved: u64,
    /// Failed calls to it in the evidence's days (counted as not approved).
    pub provider_errors: u64,
    /// The posterior mean approval rate.
    pub approval_rate: f64,
    /// Its price per verification.
    pub price: f64,
    /// The price's currency.
    pub currency: String,
    /// approval_rate / price.
    pub approvals_per_cost: f64,
}

/// What routing reads besides the policy: what the gateway has learnt while running.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live<'a> {
    /// Whether the routing's experiment has been stopped by its guardrail.
    pub experiment_stopped: bool,
    /// The adaptive routing's current shares, if computed.
    pub shares: Option<&'a Shares>,
    /// Where adaptive routing sent this subject before, if it did.
    pub optimized_before: Option<&'a str>,
}

/// The provider instances to try, in order, and why the first.
pub fn candidates(
    routing: &Routing,
    tenant: &str,
    subject_id: &str,
    country: &str,
    requested: Option<&str>,
    exists: impl Fn(&str) -> bool,
    live: Live<'_>,
) -> Result<Route, RoutingError> {
    if let Some(requested) = requested {
        if !routing.allow_override {
            return Err(RoutingError::OverrideNotAllowed);
        }
        if !exists(requested) {
            return Err(RoutingError::UnknownProvider);
        }
        return Ok(Route {
            candidates: vec![requested.to_string()],
            reason: RoutingReason::Override,
            experiment: None,
            shares: None,
        });
    }
    let mut experiment = None;
    let mut shares = None;
    let (chosen, reason) = if let Some(trial) =
        routing.experiment.as_ref().filter(|e| e.covers(country))
    {
        let arm = if !live.experiment_stopped && in_challenger_share(trial, tenant, subject_id) {
            Arm::Challenger
        } else {
            Arm::Champion
        };
        experiment = Some((trial.name.clone(), arm));
        let chosen = match arm {
            Arm::Champion => trial.champion.clone(),
            Arm::Challenger => trial.challenger.clone(),
        };
        (chosen, RoutingReason::Experiment)
    } else if let Some(optimize) = routing.optimize.as_ref().filter(|o| o.covers(country)) {
        let now = live
            .shares
            .filter(|s| s.among(&optimize.among))
            .cloned()
            .unwrap_or_else(|| Shares::even(&optimize.among));
        let before = live
            .optimized_before
            .filter(|p| optimize.among.iter().any(|a| a == p));
        let chosen = match before {
            Some(before) => before.to_string(),
            None => optimized_pick(&now, tenant, subject_id),
        };
        shares = Some(now.percent());
        (chosen, RoutingReason::Optimize)
    } else if let Some(rule) = routing.rules.iter().find(|r| r.country == country) {
        (rule.provider.clone(), RoutingReason::Rule)
    } else if let Some(pick) = sticky_pick(&routing.split, tenant, subject_id) {
        (pick, RoutingReason::Split)
    } else {
        (
            routing.default.clone().ok_or(RoutingError::NoDefault)?,
            RoutingReason::Default,
        )
    };
    let mut out = vec![chosen];
    for f in &routing.fallback {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    Ok(Route {
        candidates: out,
        reason,
        experiment,
        shares,
    })
}

/// An instance drawn by `shares` for a new subject: a point that depends only on (tenant,
/// subject), so a retry before its first verification is stored lands on the same instance while
/// the shares stand.
fn optimized_pick(shares: &Shares, tenant: &str, subject_id: &str) -> String {
    let digest = Sha256::digest(format!("{tenant}\noptimize\n{subject_id}").as_bytes());
    let point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as f64 / 2f64.powi(64);
    let mut below = 0.0;
    for (name, share) in &shares.shares {
        below += share;
        if point < below {
            return name.clone();
        }
    }
    shares
        .shares
        .last()
        .map(|(n, _)| n.clone())
        .unwrap_or_default()
}

/// Whether the subject is among the `share` percent of the experiment's subjects sent to the
/// challenger; depends only on (tenant, experiment, subject), so a retry keeps its arm, and the
/// experiment's arms do not line up with the split's picks.
fn in_challenger_share(trial: &crate::config::Experiment, tenant: &str, subject_id: &str) -> bool {
    let digest = Sha256::digest(format!("{tenant}\n{}\n{subject_id}", trial.name).as_bytes());
    let point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 100;
    point < u64::from(trial.share)
}

/// A weighted pick that depends only on (tenant, subject): a retry lands on the same provider.
fn sticky_pick(
    split: &std::collections::BTreeMap<String, u32>,
    tenant: &str,
    subject_id: &str,
) -> Option<String> {
    let total: u64 = split.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let digest = Sha256::digest(format!("{tenant}\n{subject_id}").as_bytes());
    let mut point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % total;
    for (name, weight) in split {
        let weight = u64::from(*weight);
        if point < weight {
            return Some(name.clone());
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CountryRule;

    fn routing() -> Routing {
        Routing {
            default: Some("betrust".into()),
            rules: vec![CountryRule {
                country: "AR".into(),
                provider: "gu1".into(),
            }],
            split: Default::default(),
            fallback: vec!["gu1".into()],
            allow_override: false,
            experiment: None,
            optimize: None,
        }
    }

    fn stopped() -> Live<'static> {
        Live {
            experiment_stopped: true,
            ..Live::default()
        }
    }

    #[test]
    fn country_rule_beats_default_and_fallback_follows() {
        let r = routing();
        let ar = candidates(&r, "t", "s", "AR", None, |_| true, Live::default()).unwrap();
        assert_eq!(ar.candidates, ["gu1"]);
        assert_eq!(ar.reason, RoutingReason::Rule);
        let cl = candidates(&r, "t", "s", "CL", None, |_| true, Live::default()).unwrap();
        assert_eq!(cl.candidates, ["betrust", "gu1"]);
        assert_eq!(cl.reason, RoutingReason::Default);
    }

    #[test]
    fn override_needs_permission() {
        let mut r = routing();
        assert_eq!(
            candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, Live::default()),
            Err(RoutingError::OverrideNotAllowed)
        );
        r.allow_override = true;
        let chosen =
            candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, Live::default()).unwrap();
        assert_eq!(chosen.candidates, ["gu1"]);
        assert_eq!(chosen.reason, RoutingReason::Override);
        assert_eq!(
            candidates(
                &r,
                "t",
                "s",
                "CL",
                Some("nope"),
                |n| n != "nope",
                Live::default()
            ),
            Err(RoutingError::UnknownProvider)
        );
    }

    #[test]
    fn split_is_sticky_and_roughly_weighted() {
        let mut r = routing();
        r.split = [("a".to_string(), 80), ("b".to_string(), 20)].into();
        let mut a = 0;
        for i in 0..1000 {
            let subject = format!("sub_{i}");
            let first =
                candidates(&r, "t", &subject, "CL", None, |_| true, Live::default()).unwrap();
            let again =
                candidates(&r, "t", &subject, "CL", None, |_| true, Live::default()).unwrap();
            assert_eq!(first, again);
            assert_eq!(first.reason, RoutingReason::Split);
            if first.candidates[0] == "a" {
                a += 1;
            }
        }
        assert!((700..900).contains(&a), "{a} of 1000 went to a");
    }

    #[test]
    fn an_experiment_takes_its_countries_before_the_rules_sticky_per_subject() {
        let mut r = routing();
        r.rules.push(CountryRule {
            country: "CL".into(),
            provider: "betrust".into(),
        });
        r.experiment = Some(crate::config::Experiment {
            name: "gu1-in-cl".into(),
            champion: "betrust".into(),
            challenger: "gu1".into(),
            share: 20,
            countries: vec!["CL".into()],
            metric: Default::default(),
            min_sample: 200,
            guardrail_pp: None,
            horizon: "48h".into(),
        });
        let mut challenger = 0;
        for i in 0..1000 {
            let subject = format!("sub_{i}");
            let first =
                candidates(&r, "t", &subject, "CL", None, |_| true, Live::default()).unwrap();
            assert_eq!(
                first,
                candidates(&r, "t", &subject, "CL", None, |_| true, Live::default()).unwrap()
            );
            assert_eq!(first.reason, RoutingReason::Experiment);
            let (name, arm) = first.experiment.clone().unwrap();
            assert_eq!(name, "gu1-in-cl");
            let expected = if arm == Arm::Challenger {
                "gu1"
            } else {
                "betrust"
            };
            assert_eq!(first.candidates[0], expected);
            if arm == Arm::Challenger {
                challenger += 1;
            }
            // Once stopped, every subject goes to the champion.
            let stopped = candidates(&r, "t", &subject, "CL", None, |_| true, stopped()).unwrap();
            assert_eq!(stopped.candidates[0], "betrust");
            assert_eq!(
                stopped.experiment,
                Some(("gu1-in-cl".into(), Arm::Champion))
            );
        }
        assert!(
            (150..250).contains(&challenger),
            "{challenger} of 1000 in the challenger arm"
        );
        // Other countries are not in it; an override still wins.
        let ar = candidates(&r, "t", "s", "AR", None, |_| true, Live::default()).unwrap();
        assert_eq!((ar.reason, ar.experiment), (RoutingReason::Rule, None));
        r.allow_override = true;
        let chosen =
            candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, Live::default()).unwrap();
        assert_eq!(chosen.reason, RoutingReason::Override);
    }

    #[test]
    fn optimize_draws_new_subjects_by_the_shares_and_keeps_a_subject_where_it_went() {
        let mut r = routing();
        r.optimize = Some(crate::config::Optimize {
            countries: vec!["CL".into()],
            among: vec!["betrust".into(), "gu1".into()],
            objective: Default::default(),
            min_share: 10,
            max_share: 90,
            horizon: "48h".into(),
        });
        let shares = Shares {
            shares: vec![("betrust".into(), 0.25), ("gu1".into(), 0.75)],
        };
        let live = Live {
            shares: Some(&shares),
            ..Live::default()
        };
        let mut gu1 = 0;
        for i in 0..1000 {
            let subject = format!("sub_{i}");
            let first = candidates(&r, "t", &subject, "CL", None, |_| true, live).unwrap();
            assert_eq!(
                first,
                candidates(&r, "t", &subject, "CL", None, |_| true, live).unwrap()
            );
            assert_eq!(first.reason, RoutingReason::Optimize);
            assert_eq!(
                first.shares,
                Some([("betrust".into(), 25.0), ("gu1".into(), 75.0)].into())
            );
            // The fallback list follows the choice.
            assert_eq!(first.candidates.last().unwrap(), "gu1");
            if first.candidates[0] == "gu1" {
                gu1 += 1;
            }
        }
        assert!((700..800).contains(&gu1), "{gu1} of 1000 went to gu1");
        // A subject it routed before stays, whatever the shares say.
        let stays = Live {
            optimized_before: Some("betrust"),
            ..live
        };
        for i in 0..50 {
            let subject = format!("sub_{i}");
            let again = candidates(&r, "t", &subject, "CL", None, |_| true, stays).unwrap();
            assert_eq!(again.candidates[0], "betrust");
        }
        // Before the shares are computed, or when the policy's instances changed: even.
        let even = candidates(&r, "t", "s", "CL", None, |_| true, Live::default()).unwrap();
        assert_eq!(
            even.shares,
            Some([("betrust".into(), 50.0), ("gu1".into(), 50.0)].into())
        );
        let other = Shares {
            shares: vec![("x".into(), 1.0)],
        };
        let stale = Live {
            shares: Some(&other),
            ..Live::default()
        };
        let chosen = candidates(&r, "t", "s", "CL", None, |_| true, stale).unwrap();
        assert_eq!(chosen.shares, even.shares);
        // Other countries follow the rules.
        let ar = candidates(&r, "t", "s", "AR", None, |_| true, live).unwrap();
        assert_eq!((ar.reason, ar.shares), (RoutingReason::Rule, None));
    }
}
