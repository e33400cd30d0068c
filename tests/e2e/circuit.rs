//! The circuit breaker of a provider instance, as a tenant with a fallback meets it: it opens
//! after repeated failures, creates then go straight to the fallback (once each), and a probe
//! after the open time closes it again. `/readyz` shows where it stands.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn beta_create(w: &World, n: usize) -> Value {
    let (status, v) = w
        .post(
            "/v1/verifications",
            BETA_KEY,
            person(&format!("cb-{n}"), &format!("sub-cb-{n}"), "AR"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

async fn gu1_circuit(w: &World) -> Value {
    let (status, ready) = w.get("/readyz", BETA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    ready["providers"]["gu1"]["circuit"].clone()
}

#[tokio::test]
async fn the_circuit_opens_sends_creates_to_the_fallback_once_each_then_probes_and_closes() {
    let w = World::start().await;
    w.edit_policy(|p| {
        p.replacen(
            "[providers.gu1]",
            "[providers.gu1]\ncircuit_breaker = { failures = 3, open_seconds = 1 }",
            1,
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(5))
        .await;
    assert_eq!(gu1_circuit(&w).await, "closed");

    // gu1 fails: each create tries it once, then lands on the fallback.
    w.gu1.inject(FaultRule::always(Fault::Status(503)));
    for n in 0..3 {
        assert_eq!(beta_create(&w, n).await["provider"], "betrust-cl");
        assert_eq!(w.gu1.requests_seen("/api"), n + 1);
    }
    assert_eq!(gu1_circuit(&w).await, "open");

    // Open: gu1 is not asked at all, and each create reaches the fallback exactly once.
    for n in 3..8 {
        assert_eq!(beta_create(&w, n).await["provider"], "betrust-cl");
    }
    assert_eq!(w.gu1.requests_seen("/api"), 3);
    assert_eq!(w.betrust.transactions_created(), 8);

    // gu1 recovers; after the open time one probe goes through and closes the circuit.
    w.gu1.clear_faults();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(gu1_circuit(&w).await, "half_open");
    assert_eq!(beta_create(&w, 8).await["provider"], "gu1");
    assert_eq!(gu1_circuit(&w).await, "closed");
    assert_eq!(beta_create(&w, 9).await["provider"], "gu1");
    assert_eq!(w.betrust.transactions_created(), 8);
}

#[tokio::test]
async fn refusals_do_not_open_the_circuit() {
    let w = World::start().await;
    w.gu1
        .inject(FaultRule::always(Fault::Status(400)).on_path("POST /api/kyc/validations"));
    for n in 0..8 {
        let (status, problem) = w
            .post(
                "/v1/verifications",
                BETA_KEY,
                person(&format!("rf-{n}"), &format!("sub-rf-{n}"), "AR"),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    }
    assert_eq!(gu1_circuit(&w).await, "closed");
    assert_eq!(w.betrust.transactions_created(), 0);
}

/// A breaker set to the largest open time the policy accepts (a day), opened: creates at that
/// instance answer a problem at once (its tenant has no fallback), other instances and `/readyz`
/// go on answering, and nothing is left poisoned.
#[tokio::test]
async fn a_breaker_open_for_the_longest_time_accepted_keeps_everything_answering() {
    let w = World::start_with(Options {
        betrust_extra: vec!["circuit_breaker = { failures = 1, open_seconds = 86400 }".into()],
        ..Default::default()
    })
    .await;
    w.betrust
        .inject(FaultRule::always(Fault::Status(503)).on_path("POST /transaction-engine"));
    for n in 0..3 {
        let (status, problem) = w
            .post(
                "/v1/verifications",
                ALPHA_KEY,
                person(&format!("max-{n}"), &format!("sub-max-{n}"), "CL"),
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert_eq!(problem["code"], "provider_unavailable", "{problem}");
    }
    assert_eq!(w.betrust.requests_seen("POST /transaction-engine"), 1);
    let (status, ready) = w.get("/readyz", ALPHA_KEY).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["providers"]["betrust-cl"]["circuit"], "open",
        "{ready}"
    );
    // The other instance works as before.
    let v = w.create(person("max-ar", "sub-max-ar", "AR")).await;
    assert_eq!(v["provider"], "gu1");
}
