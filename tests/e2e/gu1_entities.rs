//! gu1 person entities through the gateway: a create cut off by a timeout or by `kill -9` completes
//! when retried, tenants share one person's entity, and concurrent creates make one entity per
//! subject.

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A create for tenant alpha that goes to gu1.
fn on_gu1(reference: &str, subject: &str, national_id: bool) -> Value {
    let mut body = person(reference, subject, "AR");
    body["provider"] = json!("gu1");
    if !national_id {
        body["subject"]
            .as_object_mut()
            .unwrap()
            .remove("national_id");
    }
    body
}

#[tokio::test]
async fn a_create_whose_entity_answer_came_too_late_succeeds_when_retried() {
    let w = World::start_with(Options {
        timeout_ms: 500,
        ..Default::default()
    })
    .await;
    for national_id in [true, false] {
        let subject = format!("sub-late-{national_id}");
        let reference = format!("late-{national_id}");
        let entities = w.gu1.entities_created();
        w.gu1.inject(
            FaultRule::once(Fault::LateAnswer(Duration::from_secs(3)))
                .on_path("POST /api/entities"),
        );
        let (status, problem) = w
            .post(
                "/v1/verifications",
                ALPHA_KEY,
                on_gu1(&reference, &subject, national_id),
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert_eq!(w.gu1.entities_created(), entities + 1);

        // The caller retries as told, with the same reference and no provider reference.
        let v = w.create(on_gu1(&reference, &subject, national_id)).await;
        assert_eq!(w.gu1.entities_created(), entities + 1, "no second entity");
        assert_eq!(
            w.gu1
                .validation(v["provider_reference"].as_str().unwrap())
                .unwrap()["entityId"],
            w.gu1.entity_ids().last().unwrap().as_str()
        );
    }
    assert_eq!(
        w.gu1.validations_created(),
        2,
        "one validation per verification"
    );
}

#[tokio::test]
async fn a_create_cut_off_by_kill_9_mid_call_succeeds_when_retried() {
    // The retry cannot tell how far the killed attempt got: it waits out the grace in which a
    // validation sent by that attempt could still land at gu1.
    let mut w = World::start_with(Options {
        lookup_grace_seconds: Some(2),
        ..Default::default()
    })
    .await;
    for national_id in [true, false] {
        let subject = format!("sub-kill-{national_id}");
        let reference = format!("kill-{national_id}");
        let entities = w.gu1.entities_created();
        // gu1 makes the entity and holds its answer while the gateway dies.
        w.gu1.inject(
            FaultRule::once(Fault::LateAnswer(Duration::from_secs(60)))
                .on_path("POST /api/entities"),
        );
        let cut_off = w
            .http
            .post(format!("{}/v1/verifications", w.base))
            .bearer_auth(ALPHA_KEY)
            .json(&on_gu1(&reference, &subject, national_id))
            .send();
        let in_flight = tokio::spawn(cut_off);
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.gu1.entities_created() == entities {
            assert!(
                Instant::now() < deadline,
                "the entity create never reached gu1"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.kill_and_restart();
        assert!(
            in_flight.await.unwrap().is_err(),
            "the caller lost its answer"
        );

        let body = on_gu1(&reference, &subject, national_id);
        let (v, _) =
            create_retrying(&w.http, &w.base, ALPHA_KEY, &body, Duration::from_secs(15)).await;
        assert_eq!(v["status"], "pending");
        assert_eq!(w.gu1.entities_created(), entities + 1, "no second entity");
    }
    assert_eq!(
        w.gu1.validations_created(),
        2,
        "one validation per verification"
    );
}

#[tokio::test]
async fn two_tenants_verify_one_national_id_on_one_gu1() {
    let w = World::start().await;
    let alpha = w.create(on_gu1("shared-a", "alpha-person", true)).await;
    // Tenant beta's own subject id for the same person (beta routes to gu1 by default).
    let mut body = person("shared-b", "beta-person", "AR");
    body["subject"]["national_id"] = json!(national_id("alpha-person"));
    let (status, beta) = w.post("/v1/verifications", BETA_KEY, body).await;
    assert_eq!(status, StatusCode::CREATED, "{beta}");
    assert_eq!(beta["provider"], "gu1");
    assert_eq!(w.gu1.entities_created(), 1);
    assert_eq!(w.gu1.validations_created(), 2);
    let entity_of = |v: &Value| {
        w.gu1
            .validation(v["provider_reference"].as_str().unwrap())
            .unwrap()["entityId"]
            .clone()
    };
    assert_eq!(entity_of(&alpha), entity_of(&beta));
    // Nothing of the national id is in the gateway's store (the database and its WAL).
    let needle = national_id("alpha-person");
    let db = w.db_url.trim_start_matches("sqlite://").to_string();
    for file in [db.clone(), format!("{db}-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(needle.len()).any(|b| b == needle.as_bytes()),
            "{file}"
        );
    }
}

#[tokio::test]
async fn three_concurrent_creates_per_subject_make_one_entity_each() {
    let w = World::start().await;
    for national_id in [false, true] {
        let before = w.gu1.entities_created();
        let mut creates = tokio::task::JoinSet::new();
        for n in 0..100 {
            for attempt in 0..3 {
                let request = w
                    .http
                    .post(format!("{}/v1/verifications", w.base))
                    .bearer_auth(ALPHA_KEY)
                    .json(&on_gu1(
                        &format!("conc-{national_id}-{n}-{attempt}"),
                        &format!("sub-conc-{national_id}-{n}"),
                        national_id,
                    ));
                creates.spawn(async move {
                    let response = request.send().await.unwrap();
                    (response.status(), response.text().await.unwrap())
                });
            }
        }
        while let Some(done) = creates.join_next().await {
            let (status, body) = done.unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        assert_eq!(
            w.gu1.entities_created() - before,
            100,
            "national ids: {national_id}"
        );
    }
    assert_eq!(w.gu1.validations_created(), 600);
}
