//! Rate limits as callers meet them: a tenant's inbound limit (429, `Retry-After`, the IETF
//! `RateLimit` headers) that leaves other tenants alone and follows a reload, a provider
//! instance's outbound limit, and the per-instance budget of unverified webhooks.

use crate::harness::*;
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};

/// Adds `line` to the section that starts with `header`, and waits for the reload.
async fn add_to_section(w: &World, header: &str, line: &str, reloads: usize) {
    w.edit_policy(|p| p.replacen(header, &format!("{header}\n{line}"), 1));
    w.wait_log("policy reloaded", reloads, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_tenant_over_its_limit_gets_429_and_another_tenant_is_unaffected() {
    let w = World::start().await;
    add_to_section(
        &w,
        "[tenants.alpha]",
        "rate_limit = { per_second = 1, burst = 3 }",
        1,
    )
    .await;
    for left in [2, 1, 0] {
        let (status, headers, _) = w
            .call(Method::GET, "/v1/verifications", Some(ALPHA_KEY), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-policy"], "\"tenant\";q=3;w=3");
        let state = headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"tenant\";r={left};t=")),
            "{state}"
        );
    }
    let (status, headers, problem) = w
        .call(Method::GET, "/v1/verifications", Some(ALPHA_KEY), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(headers["retry-after"], "1");
    assert!(headers["ratelimit"].to_str().unwrap().contains(";r=0;"));

    // Beta has no limit and is not slowed by alpha's.
    for _ in 0..10 {
        let (status, headers, _) = w
            .call(Method::GET, "/v1/verifications", Some(BETA_KEY), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("ratelimit").is_none());
    }

    // After the wait, alpha is served again; and a reload to a larger limit applies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = w.get("/v1/verifications", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK);
    w.edit_policy(|p| p.replacen("per_second = 1, burst = 3", "per_second = 1, burst = 50", 1));
    w.wait_log("policy reloaded", 2, Duration::from_secs(5))
        .await;
    for _ in 0..20 {
        let (status, headers, _) = w
            .call(Method::GET, "/v1/verifications", Some(ALPHA_KEY), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-policy"], "\"tenant\";q=50;w=50");
    }
}

#[tokio::test]
async fn a_provider_instance_outbound_limit_is_honoured() {
    let w = World::start().await;
    add_to_section(
        &w,
        "[providers.betrust-cl]",
        "rate_limit = { per_second = 2, burst = 2 }",
        1,
    )
    .await;
    let started = Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..12 {
        let request = w
            .http
            .post(format!("{}/v1/verifications", w.base))
            .bearer_auth(ALPHA_KEY)
            .json(&person(&format!("out-{i}"), &format!("sub-out-{i}"), "CL"));
        creates.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap())
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(done) = creates.join_next().await {
        let (status, body) = done.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], "provider_unavailable", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}\n{}", w.log()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = w.betrust.transactions_created();
    assert_eq!(sent, created);
    // The burst, then two a second: never more.
    assert!(
        (sent as f64) <= 2.0 + 2.0 * elapsed + 0.5,
        "{sent} transactions in {elapsed:.2} s"
    );
    assert!(created >= 2, "{created}");
    assert!(refused > 0, "nobody waited past the bound");
}

#[tokio::test]
async fn unverified_webhooks_are_budgeted_per_instance() {
    let w = World::start().await;
    let mut limited_at = None;
    for i in 0..300 {
        let (status, _, _) = w
            .call(
                Method::POST,
                "/hooks/gu1/not-the-token",
                None,
                Some(serde_json::json!({})),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited_at = Some(i);
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let limited_at = limited_at.expect("300 forged webhooks went through");
    assert!((200..260).contains(&limited_at), "{limited_at}");
    // Another instance's hook is untouched.
    let (status, _, _) = w
        .call(
            Method::POST,
            "/hooks/betrust-cl/not-the-token",
            None,
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhooks_to_unknown_names_share_one_small_budget_and_log_little() {
    let w = World::start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.log().lines().count();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600 {
        let (status, _, _) = w
            .call(
                Method::POST,
                &format!("/hooks/no-such-name-{i}/x"),
                None,
                Some(serde_json::json!({})),
            )
            .await;
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 500,
        "{statuses:?}"
    );
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [404, 429]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = w.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("webhooks refused"))
        .count();
    assert!((1..=4).contains(&lines), "{lines} refusal lines:\n{log}");
    let added: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| !l.contains(" DEBUG "))
        .collect();
    assert!(
        added.len() <= 5,
        "{} lines for 600 webhooks:\n{added:#?}",
        added.len()
    );
    assert!(
        !log.contains("no-such-name"),
        "the names sent are not logged"
    );
    // A known instance's own budget is untouched.
    let (status, _, _) = w
        .call(
            Method::POST,
            "/hooks/gu1/not-the-token",
            None,
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
