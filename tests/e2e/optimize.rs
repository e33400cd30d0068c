//! Adaptive routing over HTTP: the simulators' autopilots approve different shares, the policy
//! prices both instances, and the tenant's Chilean subjects move towards the one that buys more
//! approvals per dollar, within the bounds, until a policy edit pins the routing back.

use crate::harness::*;
use crate::policy_view::explained;
use kyc_sandbox::Autopilot;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Tenant alpha's adaptive routing of Chile, outcomes read at `horizon`.
fn optimize_line(horizon: &str) -> String {
    format!(
        "optimize = {{ countries = [\"CL\"], among = [\"betrust-cl\", \"gu1\"], \
         objective = \"approvals_per_cost\", min_share = 10, max_share = 90, horizon = \"{horizon}\" }}\n"
    )
}

/// BeTrust approves 30 % at 1.00 USD (0.30 approvals per dollar), gu1 90 % at 1.20 (0.75), each
/// 200 ms after the create; tenant alpha's Chilean subjects are routed adaptively between them
/// (a live policy edit).
pub(crate) async fn start_optimizing(w: &World, horizon: &str) {
    let pilot = |approve_percent| {
        Some(Autopilot {
            approve_percent,
            decision_ms: 200,
            approve_ms: None,
            error_percent: 0,
        })
    };
    w.betrust.set_autopilot(pilot(30));
    w.gu1.set_autopilot(pilot(90));
    w.edit_policy(|p| {
        p.replace(
            "company_id = \"201\"\n",
            "company_id = \"201\"\nprice_per_verification = { amount = 1.00, currency = \"USD\" }\n",
        )
        .replace(
            "webhook_secret = \"${GU1_WEBHOOK_SECRET}\"\n",
            "webhook_secret = \"${GU1_WEBHOOK_SECRET}\"\n\
             price_per_verification = { amount = 1.20, currency = \"USD\" }\n",
        )
        .replace(
            "allow_override = true\n",
            &format!("allow_override = true\n{}", optimize_line(horizon)),
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(10))
        .await;
}

/// Creates a verification for each subject and waits until each is final; answers them as
/// stored.
pub(crate) async fn run_subjects(w: &World, subjects: &[String]) -> Vec<Value> {
    let mut made = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        let reference = format!("{subject}-{i}-{}", ulid::Ulid::generate());
        made.push(w.create(person(&reference, subject, "CL")).await);
    }
    w.wait_decided(&made).await
}

/// How many of `stored` each instance ran, and approved.
fn tally(stored: &[Value]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for v in stored {
        let entry = out
            .entry(v["provider"].as_str().unwrap().into())
            .or_default();
        entry.0 += 1;
        entry.1 += u64::from(v["status"] == "approved");
    }
    out
}

/// The allocation `GET /v1/stats` answers once `ready` holds of it.
async fn allocation(w: &World, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, stats) = w.get("/v1/stats?group_by=provider", ALPHA_KEY).await;
        assert_eq!(status, 200, "{stats}");
        if ready(&stats["allocation"]) {
            return stats["allocation"].clone();
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The share (percent) an allocation gives `provider` now.
fn share(allocation: &Value, provider: &str) -> f64 {
    allocation["now"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == provider)
        .unwrap()["share"]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn adaptive_routing_moves_subjects_to_more_approvals_per_dollar_within_bounds() {
    let w = World::start_with(Options {
        reconcile_every: 2,
        ..Options::default()
    })
    .await;
    start_optimizing(&w, "3s").await;

    // With no evidence yet, both instances get Chilean subjects, each recording the shares.
    let first: Vec<String> = (0..40).map(|i| format!("opt-first-{i}")).collect();
    let stored = run_subjects(&w, &first).await;
    for v in &stored {
        assert_eq!(v["routing"]["reason"], "optimize", "{v}");
        let shares = v["routing"]["shares"].as_object().unwrap();
        let total: f64 = shares.values().map(|s| s.as_f64().unwrap()).sum();
        assert!((total - 100.0).abs() < 0.2, "{v}");
        assert!(
            shares
                .values()
                .all(|s| (10.0..=90.0).contains(&s.as_f64().unwrap())),
            "{v}"
        );
    }
    let first_tally = tally(&stored);
    assert!(
        first_tally.len() == 2,
        "both instances get subjects: {first_tally:?}"
    );

    // Once those are a horizon old, the evidence is theirs and gu1 takes the most allowed.
    let allocation = allocation(&w, |a| {
        a["now"]["instances"].as_array().is_some_and(|i| {
            i.iter()
                .map(|i| i["started"].as_u64().unwrap())
                .sum::<u64>()
                == 40
        })
    })
    .await;
    for instance in allocation["now"]["instances"].as_array().unwrap() {
        let (started, approved) = first_tally[instance["provider"].as_str().unwrap()];
        assert_eq!(instance["started"], started, "{allocation}");
        assert_eq!(instance["approved"], approved, "{allocation}");
    }
    let allocation = self::allocation(&w, |a| a["now"]["instances"][1]["share"] == 90.0).await;
    assert_eq!(share(&allocation, "gu1"), 90.0, "{allocation}");
    assert_eq!(share(&allocation, "betrust-cl"), 10.0, "{allocation}");
    assert_eq!(allocation["now"]["horizon"], "3s");

    // New subjects now go to gu1 nine times in ten; each records the shares it was drawn by.
    let second: Vec<String> = (0..60).map(|i| format!("opt-second-{i}")).collect();
    let stored_second = run_subjects(&w, &second).await;
    let second_tally = tally(&stored_second);
    let gu1 = second_tally.get("gu1").map_or(0, |t| t.0);
    assert!(gu1 >= 45, "{second_tally:?}");
    for v in &stored_second {
        assert_eq!(v["routing"]["reason"], "optimize", "{v}");
        assert_eq!(v["routing"]["shares"]["gu1"], 90.0, "{v}");
    }
    // The day's allocation counts every one of them.
    let allocation = self::allocation(&w, |_| true).await;
    let today = allocation["days"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let counted: u64 = today["started"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 100, "{allocation}");

    // A subject adaptive routing sent to BeTrust before stays there (sticky), whatever the
    // shares; explain says the same, with the shares.
    let at_betrust = stored
        .iter()
        .find(|v| v["provider"] == "betrust-cl")
        .expect("some first subject went to BeTrust");
    let subject = at_betrust["subject_id"].as_str().unwrap().to_string();
    let again = run_subjects(&w, std::slice::from_ref(&subject)).await;
    assert_eq!(again[0]["provider"], "betrust-cl", "{}", again[0]);
    assert_eq!(again[0]["routing"]["reason"], "optimize");
    let (provider, reason, text) = explained(&w, "CL", &subject);
    assert_eq!(
        (provider.as_str(), reason.as_str()),
        ("betrust-cl", "optimize"),
        "{text}"
    );
    assert!(
        text.contains("gu1 90.0 %") && text.contains("stays"),
        "{text}"
    );
    let (_, reason, text) = explained(&w, "CL", "a-new-subject");
    assert_eq!(reason, "optimize", "{text}");
    assert!(text.contains("drawn by the shares"), "{text}");

    // A product manager pins Chile back to fixed shares: a policy edit, live.
    w.edit_policy(|p| {
        p.replace(
            &optimize_line("3s"),
            "split = { \"betrust-cl\" = 50, gu1 = 50 }\n",
        )
    });
    w.wait_log("policy reloaded", 2, Duration::from_secs(10))
        .await;
    let pinned = w.create(person("opt-pinned", "opt-pinned", "CL")).await;
    assert_eq!(pinned["routing"]["reason"], "split", "{pinned}");
    assert!(pinned["routing"].get("shares").is_none(), "{pinned}");
    let (_, stats) = w.get("/v1/stats?group_by=provider", ALPHA_KEY).await;
    assert!(stats.get("allocation").is_none(), "{stats}");
}
