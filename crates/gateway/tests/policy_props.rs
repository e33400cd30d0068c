//! Property tests over the policy parser: the pinned example damaged at random (lines dropped,
//! repeated or cut, values replaced) and arbitrary text never panic, and a refusal never repeats
//! the value that was written. Cases: `PROPTEST_CASES` (256 by default).

use kyc_gateway::config::Policy;
use kyc_gateway::jobs::reconciler::wait_before_next_read;
use kyc_gateway::providers::circuit::Breakers;
use kyc_gateway::providers::limits::Limiter;
use proptest::prelude::*;
use std::time::Duration;

const PINNED: &str = include_str!("../../../deploy/policy.example.toml");
const MARKER: &str = "Zq7-not-to-be-echoed";

fn env(name: &str) -> Option<String> {
    Some(match name {
        "PAYMENTS_WEBHOOK_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        _ => format!("value-of-{name}"),
    })
}

/// The pinned policy with its lines damaged as `choices` say.
fn damaged(choices: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in PINNED.lines().enumerate() {
        let pick = choices.get(i).copied().unwrap_or(u8::MAX);
        match pick % 32 {
            0 => {}
            1 => {
                out.push_str(line);
                out.push('\n');
                out.push_str(line);
            }
            2 => out.push_str(&line[..line.len() / 2]),
            3 | 4 => match line.split_once('=') {
                Some((key, _)) => out.push_str(&format!("{key}= \"{MARKER}\"")),
                None => out.push_str(line),
            },
            5 => match line.split_once('=') {
                Some((key, _)) => out.push_str(&format!("{key}= [\"{MARKER}\", 7]")),
                None => out.push_str(line),
            },
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

proptest! {
    // A failure is reported in the output, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_policy_is_refused_by_key_and_never_echoed(choices in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Err(error) = Policy::parse(&damaged(&choices), env) {
            let text = error.to_string();
            prop_assert!(!text.contains(MARKER), "{}", text);
        }
    }

    #[test]
    fn arbitrary_text_is_refused_without_panic(text in "\\PC{0,400}") {
        let _ = Policy::parse(&text, env);
    }

    /// Any numbers in the policy's numeric keys: either refused by the policy check, or taken
    /// through the parts that compute with them (the circuit breaker, the rate limiters and the
    /// reconciler's share of them, the reconciler's schedule, the standing's expiry) without a
    /// panic.
    #[test]
    fn any_policy_numbers_are_refused_or_used_without_panic(
        numbers in proptest::collection::vec(
            // Mostly numbers every key takes, so that many policies are accepted and used;
            // now and then zero, the largest and anything at all.
            prop_oneof![
                30 => 1u64..50,
                1 => Just(0u64),
                1 => Just(u64::MAX),
                1 => any::<u64>(),
            ],
            18,
        )
    ) {
        let n = |i: usize| numbers[i];
        // Public address literals instead of host names: no name lookup per case.
        let text = ["atenea-tst.trust.lat", "api-tst.trust.lat", "api.gu1.ai", "payments.internal.example"]
            .iter()
            .fold(PINNED.to_string(), |text, host| text.replace(host, "1.1.1.1"))
            .replacen(
                "rate_limit = { per_second = 20, burst = 40 }",
                &format!(
                    "rate_limit = {{ per_second = {}, burst = {} }}\n\
                     circuit_breaker = {{ failures = {}, open_seconds = {} }}\n\
                     lookup_grace_seconds = {}",
                    n(0), n(1), n(2), n(3), n(4)
                ),
                1,
            )
            .replacen(
                "rate_limit = { per_second = 50, burst = 100 }",
                &format!(
                    "rate_limit = {{ per_second = {}, burst = {} }}\n\
                     verification_valid_days = {}\nwebhook_rate_limit = {{ per_second = {} }}\n\
                     reverification_notice_days = {}",
                    n(5), n(6), n(7), n(8), n(15)
                ),
                1,
            )
            .replacen(
                "every_seconds = 60",
                &format!(
                    "every_seconds = {}\nmax_interval_seconds = {}\nrate_limit_share = {}\n\
                     lapse_margin_seconds = {}\n\n[compliance]\nevery_seconds = {}",
                    n(9), n(12), n(13), n(14), n(16)
                ),
                1,
            )
            .replacen("retention_days = 1825", &format!("retention_days = {}", n(17)), 1)
            .replacen("min_sample = 200", &format!("min_sample = {}", n(10)), 1)
            .replacen("share = 20,", &format!("share = {},", n(11)), 1);
        let Ok(policy) = Policy::parse(&text, env) else {
            return Ok(());
        };
        let breakers = Breakers::default();
        for (name, provider) in &policy.providers {
            let settings = &provider.circuit_breaker;
            for _ in 0..3 {
                breakers.allow(name, settings);
                breakers.record(name, settings, true);
            }
            breakers.state(name);
            if let Some(limit) = &provider.rate_limit {
                Limiter::new(limit).admit();
                Limiter::new(&limit.share(policy.reconciler.rate_limit_share)).admit();
            }
        }
        let reconciler = &policy.reconciler;
        let every = Duration::from_secs(reconciler.every_seconds);
        let longest = Duration::from_secs(reconciler.max_interval_seconds);
        for age in [0, 1, 86_400, i64::MAX / 1000] {
            let wait = wait_before_next_read(chrono::Duration::seconds(age), every, longest);
            prop_assert!(kyc_gateway::store::now().checked_add_signed(wait).is_some());
        }
        for tenant in policy.tenants.values() {
            if let Some(limit) = &tenant.rate_limit {
                Limiter::new(limit).admit();
            }
            if let Some(rate) = &tenant.webhook_rate_limit {
                Limiter::new(&rate.as_limit()).admit();
            }
            let days = chrono::Duration::days(i64::from(tenant.verification_valid_days));
            prop_assert!(chrono::Utc::now().checked_add_signed(days).is_some());
            // The expiry job's scan: a validity back, less the notice.
            let notice = chrono::Duration::days(i64::from(tenant.notice_days()));
            prop_assert!(notice < days);
            prop_assert!(chrono::Utc::now().checked_sub_signed(days - notice).is_some());
            // The retention job's cutoff.
            if let Some(kept) = tenant.retention_days {
                let kept = chrono::Duration::days(i64::from(kept));
                prop_assert!(kyc_gateway::store::now().checked_sub_signed(kept).is_some());
            }
        }
    }
}
