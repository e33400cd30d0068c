//! The live policy: an edit to the policy file applies without a restart and without failing a
//! request; a broken edit keeps the last good policy; SIGHUP reloads; an instance that still runs
//! verifications cannot be removed.

use crate::harness::*;
use kyc_sandbox::Outcome;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tenant alpha's default instance, as the e2e policy writes it.
const ALPHA_DEFAULT: &str = "default = \"betrust-cl\"";

fn to_gu1(policy: &str) -> String {
    policy.replacen(ALPHA_DEFAULT, "default = \"gu1\"", 1)
}

#[tokio::test]
async fn a_policy_edit_switches_new_creates_within_two_seconds_without_a_failed_request() {
    let w = Arc::new(World::start().await);
    let before = w.create(person("pre-switch", "sub-pre", "CL")).await;
    assert_eq!(before["provider"], "betrust-cl");

    // A stream of creates runs through the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn({
        let (w, stop) = (w.clone(), stop.clone());
        async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, v) = w
                    .post(
                        "/v1/verifications",
                        ALPHA_KEY,
                        person(&format!("stream-{n}"), &format!("sub-stream-{n}"), "CL"),
                    )
                    .await;
                answers.push((status, v));
                n += 1;
            }
            answers
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let edited = Instant::now();
    w.edit_policy(to_gu1);
    let mut n = 0;
    loop {
        let v = w
            .create(person(
                &format!("probe-{n}"),
                &format!("sub-probe-{n}"),
                "CL",
            ))
            .await;
        if v["provider"] == "gu1" {
            break;
        }
        assert!(edited.elapsed() < Duration::from_secs(2), "still {v}");
        n += 1;
    }
    let switched_after = edited.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = stream.await.unwrap();
    assert!(answers.len() > 5, "the stream barely ran");
    for (status, v) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{v}");
    }
    let providers: Vec<&str> = answers
        .iter()
        .map(|(_, v)| v["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers.first(), Some(&"betrust-cl"));
    assert_eq!(providers.last(), Some(&"gu1"), "{providers:?}");
    assert!(switched_after < Duration::from_secs(2));
    assert!(w.log().contains("policy reloaded"), "{}", w.log());

    // The verification started before the switch stays with BeTrust: it refreshes there, and its
    // webhook still lands.
    let (status, refreshed) = w.act(&before, "refresh", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["provider"], "betrust-cl");
    w.finish(&before, Outcome::Approved).await;
    w.wait_status(&before, ALPHA_KEY, "approved").await;
}

/// The provider a create for tenant alpha in CL goes to now.
async fn alpha_cl_goes_to(w: &World, reference: &str) -> Value {
    w.create(person(reference, &format!("sub-{reference}"), "CL"))
        .await["provider"]
        .clone()
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_policy_and_sighup_reloads() {
    let w = World::start().await;
    w.edit_policy(|p| p.replacen(ALPHA_DEFAULT, "default = \"nope\"", 1));
    w.wait_log("policy refused", 1, Duration::from_secs(5))
        .await;
    let log = w.log();
    let line = log.lines().find(|l| l.contains("policy refused")).unwrap();
    assert!(line.contains("tenants.alpha.routing.default"), "{line}");
    assert_eq!(alpha_cl_goes_to(&w, "kept-1").await, "betrust-cl");

    // SIGHUP reads the file again (still broken), and does not end the process.
    w.hangup();
    w.wait_log("policy refused", 2, Duration::from_secs(5))
        .await;
    assert_eq!(alpha_cl_goes_to(&w, "kept-2").await, "betrust-cl");

    // Mended, it applies; SIGHUP applies it again, as a reload of its own.
    w.edit_policy(|p| p.replacen("default = \"nope\"", "default = \"gu1\"", 1));
    w.wait_log("policy reloaded", 1, Duration::from_secs(5))
        .await;
    assert_eq!(alpha_cl_goes_to(&w, "mended").await, "gu1");
    w.hangup();
    w.wait_log("trigger=Hangup", 2, Duration::from_secs(5))
        .await;
    assert_eq!(w.log().matches("policy reloaded").count(), 2, "{}", w.log());
}

#[tokio::test]
async fn an_instance_with_open_verifications_cannot_be_removed() {
    let w = World::start().await;
    let open = w.create(person("open-1", "sub-open-1", "CL")).await;
    assert_eq!(open["provider"], "betrust-cl");
    // Everything that names betrust-cl goes, and so does its section.
    w.edit_policy(|p| {
        let start = p.find("[providers.betrust-cl]").unwrap();
        let end = p.find("[providers.gu1]").unwrap();
        let without = format!("{}{}", &p[..start], &p[end..]);
        to_gu1(&without).replacen("fallback = [\"betrust-cl\"]", "fallback = []", 1)
    });
    w.wait_log("policy refused", 1, Duration::from_secs(5))
        .await;
    let log = w.log();
    let line = log.lines().find(|l| l.contains("policy refused")).unwrap();
    assert!(
        line.contains("providers.betrust-cl: 1 verifications on it are not final"),
        "{line}"
    );
    // The last good policy serves: the open verification still reaches BeTrust.
    let (status, refreshed) = w.act(&open, "refresh", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(alpha_cl_goes_to(&w, "still-betrust").await, "betrust-cl");
}

#[tokio::test]
async fn a_change_that_needs_a_restart_is_named_in_the_log() {
    let w = World::start().await;
    w.edit_policy(|p| to_gu1(p).replacen("kyc.db\"", "other.db\"", 1));
    w.wait_log("policy reloaded", 1, Duration::from_secs(5))
        .await;
    w.wait_log("applies only after a restart", 1, Duration::from_secs(5))
        .await;
    let log = w.log();
    let line = log
        .lines()
        .find(|l| l.contains("applies only after a restart"))
        .unwrap();
    assert!(line.contains("store.url"), "{line}");
    // The rest applied, on the store it started with.
    assert_eq!(alpha_cl_goes_to(&w, "after-restart-note").await, "gu1");
}

#[tokio::test]
async fn a_key_table_with_an_unknown_field_is_refused_by_a_reload() {
    let w = World::start().await;
    w.edit_policy(|p| {
        p.replacen(
            "{ name = \"alpha-ci\", hash",
            "{ name = \"alpha-ci\", scopes = \"read\", hash",
            1,
        )
    });
    w.wait_log("policy refused", 1, Duration::from_secs(5))
        .await;
    let log = w.log();
    let line = log.lines().find(|l| l.contains("policy refused")).unwrap();
    assert!(line.contains("tenants.alpha.api_keys[1].scopes"), "{line}");
    // The last good policy serves, that key included.
    let (status, _) = w.get("/v1/verifications", ALPHA_CI_KEY).await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

/// A reload meets an unknown field in any inline table as `check-config` does: refused, named,
/// and the last good policy keeps serving.
#[tokio::test]
async fn an_unknown_field_in_any_table_is_refused_by_a_reload() {
    let w = World::start().await;
    let original = std::fs::read_to_string(w.policy_path()).unwrap();
    let cases = [
        (
            "connect_timeout_ms = 1000",
            "connect_timeout_ms = 1000\nrate_limit = { per_second = 5, burst = 5, bogus = 1 }",
            "providers.betrust-cl.rate_limit.bogus",
        ),
        (
            "connect_timeout_ms = 1000",
            "connect_timeout_ms = 1000\ncircuit_breaker = { failures = 3, bogus = 1 }",
            "providers.betrust-cl.circuit_breaker.bogus",
        ),
        (
            "rules = [{ country = \"AR\", provider = \"gu1\" }]",
            "rules = [{ country = \"AR\", provider = \"gu1\", bogus = 1 }]",
            "tenants.alpha.routing.rules[0].bogus",
        ),
        (
            "[reconciler]",
            "[reconciler]\nbogus = 1",
            "reconciler.bogus",
        ),
    ];
    for (n, (from, to, key)) in cases.iter().enumerate() {
        w.edit_policy(|p| p.replacen(from, to, 1));
        w.wait_log("policy refused", n + 1, Duration::from_secs(5))
            .await;
        let log = w.log();
        let line = log
            .lines()
            .filter(|l| l.contains("policy refused"))
            .nth(n)
            .unwrap();
        assert!(line.contains(key), "{key}: {line}");
        w.edit_policy(|_| original.clone());
    }
    let (status, _) = w.get("/v1/verifications", ALPHA_KEY).await;
    assert_eq!(status, reqwest::StatusCode::OK);
}
