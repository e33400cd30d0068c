//! Which provider instance gets a new verification.
//!
//! Order: an explicit `provider` in the request (only where the tenant's policy sets
//! `allow_override`), then the experiment for the countries it names (sticky: a share of subjects
//! goes to the challenger; once its guardrail has stopped it, all go to the champion), then the
//! first country rule that matches, then the weighted split (sticky: the same subject always lands
//! on the same provider), then the default. The fallback list follows the choice, for when it is
//! unavailable; an explicit choice gets no fallback.

use crate::config::Routing;
use kyc_core::{Arm, RoutingReason};
use sha2::{Digest, Sha256};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The instances to try, in order; the first is the choice.
    pub candidates: Vec<String>,
    /// Why the first was chosen (the others are fallbacks).
    pub reason: RoutingReason,
    /// For reason `experiment`: the experiment's name and the subject's arm.
    pub experiment: Option<(String, Arm)>,
}

/// The provider instances to try, in order, and why the first. `experiment_stopped`: whether the
/// routing's experiment has been stopped by its guardrail.
pub fn candidates(
    routing: &Routing,
    tenant: &str,
    subject_id: &str,
    country: &str,
    requested: Option<&str>,
    exists: impl Fn(&str) -> bool,
    experiment_stopped: bool,
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
        });
    }
    let mut experiment = None;
    let (chosen, reason) =
        if let Some(trial) = routing.experiment.as_ref().filter(|e| e.covers(country)) {
            let arm = if !experiment_stopped && in_challenger_share(trial, tenant, subject_id) {
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
    })
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
        }
    }

    #[test]
    fn country_rule_beats_default_and_fallback_follows() {
        let r = routing();
        let ar = candidates(&r, "t", "s", "AR", None, |_| true, false).unwrap();
        assert_eq!(ar.candidates, ["gu1"]);
        assert_eq!(ar.reason, RoutingReason::Rule);
        let cl = candidates(&r, "t", "s", "CL", None, |_| true, false).unwrap();
        assert_eq!(cl.candidates, ["betrust", "gu1"]);
        assert_eq!(cl.reason, RoutingReason::Default);
    }

    #[test]
    fn override_needs_permission() {
        let mut r = routing();
        assert_eq!(
            candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, false),
            Err(RoutingError::OverrideNotAllowed)
        );
        r.allow_override = true;
        let chosen = candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, false).unwrap();
        assert_eq!(chosen.candidates, ["gu1"]);
        assert_eq!(chosen.reason, RoutingReason::Override);
        assert_eq!(
            candidates(&r, "t", "s", "CL", Some("nope"), |n| n != "nope", false),
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
            let first = candidates(&r, "t", &subject, "CL", None, |_| true, false).unwrap();
            let again = candidates(&r, "t", &subject, "CL", None, |_| true, false).unwrap();
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
            let first = candidates(&r, "t", &subject, "CL", None, |_| true, false).unwrap();
            assert_eq!(
                first,
                candidates(&r, "t", &subject, "CL", None, |_| true, false).unwrap()
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
            let stopped = candidates(&r, "t", &subject, "CL", None, |_| true, true).unwrap();
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
        let ar = candidates(&r, "t", "s", "AR", None, |_| true, false).unwrap();
        assert_eq!((ar.reason, ar.experiment), (RoutingReason::Rule, None));
        r.allow_override = true;
        let chosen = candidates(&r, "t", "s", "CL", Some("gu1"), |_| true, false).unwrap();
        assert_eq!(chosen.reason, RoutingReason::Override);
    }
}
