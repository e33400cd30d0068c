//! Which provider instance gets a new verification.
//!
//! Order: an explicit `provider` in the request (only where the tenant's policy sets
//! `allow_override`), then the first country rule that matches, then the weighted split (sticky: the
//! same subject always lands on the same provider), then the default. The fallback list follows the
//! choice, for when it is unavailable; an explicit choice gets no fallback.

use crate::policy::Routing;
use kyc_core::RoutingReason;
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
}

/// The provider instances to try, in order, and why the first.
pub fn candidates(
    routing: &Routing,
    tenant: &str,
    subject_id: &str,
    country: &str,
    requested: Option<&str>,
    exists: impl Fn(&str) -> bool,
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
        });
    }
    let (chosen, reason) = if let Some(rule) = routing.rules.iter().find(|r| r.country == country) {
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
    })
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
    use crate::policy::CountryRule;

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
        }
    }

    #[test]
    fn country_rule_beats_default_and_fallback_follows() {
        let r = routing();
        let ar = candidates(&r, "t", "s", "AR", None, |_| true).unwrap();
        assert_eq!(ar.candidates, ["gu1"]);
        assert_eq!(ar.reason, RoutingReason::Rule);
        let cl = candidates(&r, "t", "s", "CL", None, |_| true).unwrap();
        assert_eq!(cl.candidates, ["betrust", "gu1"]);
        assert_eq!(cl.reason, RoutingReason::Default);
    }

    #[test]
    fn override_needs_permission() {
        let mut r = routing();
        assert_eq!(
            candidates(&r, "t", "s", "CL", Some("gu1"), |_| true),
            Err(RoutingError::OverrideNotAllowed)
        );
        r.allow_override = true;
        let chosen = candidates(&r, "t", "s", "CL", Some("gu1"), |_| true).unwrap();
        assert_eq!(chosen.candidates, ["gu1"]);
        assert_eq!(chosen.reason, RoutingReason::Override);
        assert_eq!(
            candidates(&r, "t", "s", "CL", Some("nope"), |n| n != "nope"),
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
            let first = candidates(&r, "t", &subject, "CL", None, |_| true).unwrap();
            let again = candidates(&r, "t", &subject, "CL", None, |_| true).unwrap();
            assert_eq!(first, again);
            assert_eq!(first.reason, RoutingReason::Split);
            if first.candidates[0] == "a" {
                a += 1;
            }
        }
        assert!((700..900).contains(&a), "{a} of 1000 went to a");
    }
}
