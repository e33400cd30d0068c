//! Seeing the policy: `explain` prints what the gateway does for the same input, and
//! `GET /v1/policy` shows a tenant its routing and limits without any secret.

use crate::harness::*;
use reqwest::StatusCode;
use std::time::Duration;

/// `explain`'s provider and reason for tenant alpha, and its whole text.
pub(crate) fn explained(w: &World, country: &str, subject: &str) -> (String, String, String) {
    let out = w.command(&[
        "explain",
        "--config",
        w.policy_path().to_str().unwrap(),
        "--tenant",
        "alpha",
        "--country",
        country,
        "--subject",
        subject,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    (field("provider: "), field("reason: "), text.clone())
}

#[tokio::test]
async fn explain_prints_what_the_gateway_does_for_the_same_input() {
    let w = World::start().await;
    w.edit_policy(|p| {
        p.replacen(
            "[tenants.alpha.routing]",
            "[tenants.alpha.routing]\nsplit = { \"betrust-cl\" = 50, \"gu1\" = 50 }",
            1,
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(5))
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for (n, country) in (0..12).map(|n| (n, if n == 11 { "AR" } else { "CL" })) {
        let subject = format!("sub-explain-{n}");
        let v = w
            .create(person(&format!("explain-{n}"), &subject, country))
            .await;
        let (provider, reason, _) = explained(&w, country, &subject);
        assert_eq!(v["provider"], provider.as_str(), "{subject}");
        assert_eq!(v["routing"]["reason"], reason.as_str(), "{subject}");
        seen.insert((provider, reason));
    }
    // The split sent subjects both ways, and the country rule still came first.
    assert!(
        seen.contains(&("betrust-cl".into(), "split".into())),
        "{seen:?}"
    );
    assert!(seen.contains(&("gu1".into(), "split".into())), "{seen:?}");
    assert!(seen.contains(&("gu1".into(), "rule".into())), "{seen:?}");

    // An experiment in Chile: explain names the arm each subject is in, as the create records.
    w.edit_policy(|p| {
        p.replace(
            "allow_override = true\n",
            "allow_override = true\nexperiment = { name = \"gu1-in-cl\", champion = \"betrust-cl\", \
             challenger = \"gu1\", share = 50, countries = [\"CL\"] }\n",
        )
    });
    w.wait_log("policy reloaded", 2, Duration::from_secs(5))
        .await;
    for n in 0..6 {
        let subject = format!("sub-explain-arm-{n}");
        let v = w
            .create(person(&format!("explain-arm-{n}"), &subject, "CL"))
            .await;
        let (provider, reason, text) = explained(&w, "CL", &subject);
        assert_eq!(v["provider"], provider.as_str(), "{subject}");
        assert_eq!(reason, "experiment");
        let arm = v["routing"]["arm"].as_str().unwrap();
        assert!(
            text.contains(&format!("experiment gu1-in-cl, {arm} arm")),
            "{text}"
        );
    }

    let unknown = w.command(&[
        "explain",
        "--config",
        w.policy_path().to_str().unwrap(),
        "--tenant",
        "nobody",
        "--country",
        "CL",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[tokio::test]
async fn a_tenant_sees_its_policy_without_secrets() {
    let w = World::start().await;
    let (status, policy) = w.get("/v1/policy", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["tenant"], "alpha");
    assert_eq!(policy["routing"]["default"], "betrust-cl");
    assert_eq!(policy["routing"]["rules"][0]["country"], "AR");
    assert_eq!(policy["routing"]["allow_override"], true);
    assert_eq!(policy["providers"]["betrust-cl"]["kind"], "betrust");
    assert_eq!(policy["providers"]["gu1"]["circuit"], "closed");
    let names: Vec<&str> = policy["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alpha-ci") && names.contains(&"old"),
        "{names:?}"
    );
    let text = policy.to_string();
    for secret in [
        BETRUST_SECRET,
        GU1_API_KEY,
        GU1_WEBHOOK_SECRET,
        ALPHA_KEY,
        &kyc_gateway::config::hash_api_key(ALPHA_CI_KEY),
    ] {
        assert!(!text.contains(secret), "{text}");
    }
    // Each tenant sees its own.
    let (_, beta) = w.get("/v1/policy", BETA_KEY).await;
    assert_eq!(beta["tenant"], "beta");
    assert_eq!(beta["routing"]["fallback"][0], "betrust-cl");
}
