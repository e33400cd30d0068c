//! One person, one verification, one provider object, whatever the timing: a create reserves its
//! reference before calling, a late or lost provider answer is resolved at that provider and
//! never fallen past blind, and a create cut off by `kill -9` is finished by a retry or by the
//! reconciler. Late answers are the simulators doing the work and then holding the answer past
//! the gateway's timeout (`LateAnswer`), or holding the request and then doing the work
//! (`LateWork`).

use crate::harness::*;
use kyc_sandbox::{Fault, FaultRule};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The verifications a tenant has under `reference`.
async fn by_reference(w: &World, key: &str, reference: &str) -> Vec<Value> {
    let (status, page) = w
        .get(&format!("/v1/verifications?reference={reference}"), key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// A create for tenant alpha (no fallback) that goes to gu1.
fn on_gu1(reference: &str, subject: &str) -> Value {
    let mut body = person(reference, subject, "AR");
    body["provider"] = json!("gu1");
    body
}

/// BeTrust's national id of a transaction, as the simulator holds it.
fn betrust_nin(w: &World, provider_reference: &str) -> Value {
    w.betrust.transaction(provider_reference).unwrap()["metadata"]["nin"].clone()
}

#[tokio::test]
async fn a_reference_reused_for_another_person_after_a_late_answer_is_a_conflict() {
    let w = World::start_with(Options {
        timeout_ms: 1_000,
        ..Default::default()
    })
    .await;
    // Warm the token, so the late answer falls on the create itself.
    w.create(person("warm", "sub-warm", "CL")).await;
    for (fault, reference) in [
        // The work is done at once and the answer held: the gateway finds it by its key.
        (Fault::LateAnswer(Duration::from_secs(3)), "reused-late"),
        // The request is held and the work done after the gateway gave up.
        (Fault::LateWork(Duration::from_secs(2)), "reused-slow"),
    ] {
        let created = w.betrust.transactions_created();
        w.betrust
            .inject(FaultRule::once(fault.clone()).on_path("POST /transaction-engine"));
        let x = person(reference, "person-x", "CL");
        let (status, _, first) = post_at(&w.http, &w.base, ALPHA_KEY, &x).await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::SERVICE_UNAVAILABLE,
            "{fault:?}: {status} {first}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Three seconds later, the same reference for another person.
        let y = person(reference, "person-y", "CL");
        let (status, _, problem) = post_at(&w.http, &w.base, ALPHA_KEY, &y).await;
        assert_eq!(status, StatusCode::CONFLICT, "{fault:?}: {problem}");
        assert_eq!(problem["code"], "conflict");
        assert_eq!(w.betrust.transactions_created(), created + 1, "{fault:?}");

        // The first person's retry gets the first person's transaction; nobody else ever does.
        let (v, _) =
            create_retrying(&w.http, &w.base, ALPHA_KEY, &x, Duration::from_secs(10)).await;
        assert_eq!(v["subject_id"], "person-x");
        let nin = betrust_nin(&w, v["provider_reference"].as_str().unwrap());
        assert_eq!(nin, national_id("person-x"), "{fault:?}");
        assert!(
            !problem
                .to_string()
                .contains(v["provider_reference"].as_str().unwrap())
        );
        assert_eq!(w.betrust.transactions_created(), created + 1, "{fault:?}");
        assert_eq!(by_reference(&w, ALPHA_KEY, reference).await.len(), 1);
    }
}

#[tokio::test]
async fn two_bodies_racing_on_one_reference_make_one_transaction_for_one_person() {
    let w = World::start().await;
    w.create(person("warm", "sub-warm", "CL")).await;
    for n in 0..5 {
        let reference = format!("race-{n}");
        // Slow creates, so the two overlap at the provider if nothing stops the second.
        w.betrust.inject(
            FaultRule::once(Fault::Latency(Duration::from_millis(300)))
                .on_path("POST /transaction-engine"),
        );
        let x = person(&reference, "racer-x", "CL");
        let y = person(&reference, "racer-y", "CL");
        let (a, b) = tokio::join!(
            post_at(&w.http, &w.base, ALPHA_KEY, &x),
            post_at(&w.http, &w.base, ALPHA_KEY, &y)
        );
        let answers = [a, b];
        let won: Vec<_> = answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::CREATED)
            .collect();
        let lost: Vec<_> = answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::CONFLICT)
            .collect();
        assert_eq!((won.len(), lost.len()), (1, 1), "{answers:?}");
        assert_eq!(lost[0].2["code"], "conflict");
        let v = &won[0].2;
        let nin = betrust_nin(&w, v["provider_reference"].as_str().unwrap());
        assert_eq!(
            nin,
            national_id(v["subject_id"].as_str().unwrap()),
            "the transaction is the winner's person's"
        );
        assert_eq!(w.betrust.transactions_created(), n + 2);
    }
}

#[tokio::test]
async fn an_ambiguous_timeout_is_resolved_at_its_provider_not_fallen_past() {
    let w = World::start_with(Options {
        timeout_ms: 1_000,
        ..Default::default()
    })
    .await;
    // Tenant beta: gu1, falling back to betrust-cl. gu1 takes the validation create and does it
    // two seconds later, after the gateway gave up.
    w.gu1.inject(
        FaultRule::once(Fault::LateWork(Duration::from_secs(2)))
            .on_path("POST /api/kyc/validations"),
    );
    let body = person("ambiguous-1", "sub-ambiguous-1", "AR");
    let (status, retry_after, problem) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "provider_unavailable");
    assert!(retry_after.is_some());
    assert_eq!(w.betrust.transactions_created(), 0, "no blind fallback");

    // gu1 has done it by now; the caller's one retry finds it there and stores it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _, v) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["provider"], "gu1");
    assert_eq!(w.gu1.validations_created(), 1);
    assert_eq!(w.betrust.transactions_created(), 0);
    assert!(
        w.gu1
            .validation(v["provider_reference"].as_str().unwrap())
            .is_some()
    );
    assert_eq!(by_reference(&w, BETA_KEY, "ambiguous-1").await.len(), 1);
}

#[tokio::test]
async fn a_lookup_that_finds_nothing_lets_the_fallback_run_only_after_the_grace() {
    let w = World::start_with(Options {
        timeout_ms: 500,
        ..Default::default()
    })
    .await;
    w.edit_policy(|p| {
        p.replacen(
            "[providers.gu1]\n",
            "[providers.gu1]\nlookup_grace_seconds = 3\n",
            1,
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(10))
        .await;
    // The validation create never comes back, and gu1 never makes it.
    w.gu1
        .inject(FaultRule::once(Fault::Hang).on_path("POST /api/kyc/validations"));
    let body = person("grace-1", "sub-grace-1", "AR");
    let asked = Instant::now();
    let (status, _, problem) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    // gu1 refuses validations from now on (its lookups still answer); within the grace the
    // retry still waits for gu1.
    w.gu1
        .inject(FaultRule::always(Fault::Status(503)).on_path("POST /api/kyc/validations"));
    let (status, _, problem) = post_at(&w.http, &w.base, BETA_KEY, &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(
        w.betrust.transactions_created(),
        0,
        "no fallback within the grace"
    );

    let (v, _) = create_retrying(&w.http, &w.base, BETA_KEY, &body, Duration::from_secs(15)).await;
    assert!(asked.elapsed() >= Duration::from_secs(3));
    assert_eq!(v["provider"], "betrust-cl");
    assert_eq!(v["routing"]["reason"], "fallback");
    assert_eq!(w.betrust.transactions_created(), 1);
    assert_eq!(w.gu1.validations_created(), 0);
}

#[tokio::test]
async fn a_refused_connection_falls_back_at_once() {
    let w = World::start().await;
    // gu1 at an address where nothing listens: the connection is refused, nothing was sent.
    w.edit_policy(|p| {
        let start = 1 + p.find("\nbase_url = \"http://127.0.0.1:").unwrap();
        let end = start + p[start..].find('\n').unwrap();
        format!(
            "{}base_url = \"http://127.0.0.1:9\"{}",
            &p[..start],
            &p[end..]
        )
    });
    w.wait_log("policy reloaded", 1, Duration::from_secs(10))
        .await;
    let (status, _, v) = post_at(
        &w.http,
        &w.base,
        BETA_KEY,
        &person("refused-1", "sub-refused-1", "AR"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["provider"], "betrust-cl");
    assert_eq!(
        v["routing"],
        json!({"reason": "fallback", "tried": ["gu1"]})
    );
    assert_eq!(w.betrust.transactions_created(), 1);
    assert_eq!(w.gu1.requests_seen("/api"), 0);
}

#[tokio::test]
async fn a_create_in_flight_answers_a_second_identical_one_in_progress_then_the_same_verification()
{
    let w = World::start_with(Options {
        timeout_ms: 10_000,
        ..Default::default()
    })
    .await;
    w.create(person("warm", "sub-warm", "CL")).await;
    w.betrust.inject(
        FaultRule::once(Fault::Latency(Duration::from_secs(6))).on_path("POST /transaction-engine"),
    );
    let body = person("in-flight-1", "sub-in-flight-1", "CL");
    let first = {
        let (http, base, body) = (w.http.clone(), w.base.clone(), body.clone());
        tokio::spawn(async move { post_at(&http, &base, ALPHA_KEY, &body).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, retry_after, problem) = post_at(&w.http, &w.base, ALPHA_KEY, &body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "in_progress");
    assert_eq!(retry_after, Some(1));
    let (status, _, first) = first.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, _, again) = post_at(&w.http, &w.base, ALPHA_KEY, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(w.betrust.transactions_created(), 2);
}

/// Starts a create whose provider does the work and holds its answer, kills the gateway with
/// `kill -9` once the provider has made the object (between its answer and the store write),
/// and restarts it. Answers the provider reference the simulator made.
async fn cut_off_by_kill_9(w: &mut World, body: &Value) -> String {
    let instance = body["provider"]
        .as_str()
        .unwrap_or("betrust-cl")
        .to_string();
    let made = |w: &World| w.sim(&instance).created();
    let before = made(w);
    let sim = w.sim(&instance);
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(60))).on_path(sim.create_call()),
    );
    let send = w
        .http
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .json(body)
        .send();
    let in_flight = tokio::spawn(send);
    let deadline = Instant::now() + Duration::from_secs(10);
    while made(w) == before {
        assert!(
            Instant::now() < deadline,
            "the create never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.kill_and_restart();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the caller lost its answer"
    );
    assert_eq!(made(w), before + 1);
    let reference = body["reference"].as_str().unwrap();
    assert!(
        by_reference(w, ALPHA_KEY, reference).await.is_empty(),
        "nothing was stored before the kill"
    );
    w.sim(&instance).last_created().unwrap()
}

async fn kill_9_then_retry(store_url: Option<String>) {
    let mut w = World::start_with(Options {
        store_url,
        ..Default::default()
    })
    .await;
    w.create(person("warm", "sub-warm", "CL")).await;
    let run = ulid::Ulid::generate().to_string();
    for body in [
        person(&format!("killed-b-{run}"), "sub-killed-b", "CL"),
        on_gu1(&format!("killed-g-{run}"), "sub-killed-g"),
        person_on("didit", &format!("killed-d-{run}"), "sub-killed-d"),
    ] {
        let made = cut_off_by_kill_9(&mut w, &body).await;
        let (v, seen) =
            create_retrying(&w.http, &w.base, ALPHA_KEY, &body, Duration::from_secs(15)).await;
        assert_eq!(v["provider_reference"], made, "{seen:?}");
        let reference = body["reference"].as_str().unwrap();
        assert_eq!(by_reference(&w, ALPHA_KEY, reference).await.len(), 1);
    }
    assert_eq!(w.betrust.transactions_created(), 2, "one per verification");
    assert_eq!(w.gu1.validations_created(), 1);
    assert_eq!(w.didit.sessions_created(), 1);
}

#[tokio::test]
async fn a_create_killed_between_the_answer_and_the_store_write_is_finished_by_its_retry() {
    kill_9_then_retry(None).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn a_create_killed_between_the_answer_and_the_store_write_is_finished_by_its_retry_on_postgresql()
 {
    let db = PgSchema::create().await;
    kill_9_then_retry(Some(db.url.clone())).await;
    db.drop().await;
}

#[tokio::test]
async fn the_reconciler_finishes_a_create_killed_mid_call_without_any_retry() {
    let mut w = World::start_with(Options {
        reconcile_every: 1,
        ..Default::default()
    })
    .await;
    w.create(person("warm", "sub-warm", "CL")).await;
    let bodies = [
        person("orphan-b", "sub-orphan-b", "CL"),
        // Without a national id gu1's entity is found by the tenant's subject id alone, as the
        // reconciler, holding no personal data, looks it up.
        {
            let mut body = on_gu1("orphan-g", "sub-orphan-g");
            body["subject"]
                .as_object_mut()
                .unwrap()
                .remove("national_id");
            body
        },
        // Didit's session is found by the attempt's key alone.
        person_on("didit", "orphan-d", "sub-orphan-d"),
    ];
    let mut made = Vec::new();
    for body in &bodies {
        made.push(cut_off_by_kill_9(&mut w, body).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (body, made) in bodies.iter().zip(made) {
        let reference = body["reference"].as_str().unwrap();
        let stored = loop {
            let found = by_reference(&w, ALPHA_KEY, reference).await;
            if let Some(v) = found.first() {
                break v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the reconciler did not store {reference}:\n{}",
                w.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(stored["provider_reference"], made);
        assert_eq!(stored["subject_id"], body["subject"]["id"]);
        // The caller's retry now gets what the reconciler stored.
        let (status, _, again) = post_at(&w.http, &w.base, ALPHA_KEY, body).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["id"], stored["id"]);
    }
    assert_eq!(w.betrust.transactions_created(), 2);
    assert_eq!(w.gu1.validations_created(), 1);
    assert_eq!(w.didit.sessions_created(), 1);
}

#[tokio::test]
#[ignore = "needs PostgreSQL (KYC_TEST_POSTGRES_URL); .ci/run runs it"]
async fn five_identical_gu1_creates_on_two_replicas_make_one_validation() {
    let db = PgSchema::create().await;
    let w = World::start_with(Options {
        store_url: Some(db.url.clone()),
        ..Default::default()
    })
    .await;
    let replica = w.start_replica();
    for round in 0..3 {
        let body = on_gu1(&format!("five-{round}"), &format!("sub-five-{round}"));
        // A slow validation create, so the five overlap.
        w.gu1.inject(
            FaultRule::once(Fault::Latency(Duration::from_millis(800)))
                .on_path("POST /api/kyc/validations"),
        );
        let within = Duration::from_secs(20);
        let (main, other) = (w.base.as_str(), replica.base.as_str());
        let create = |base| create_retrying(&w.http, base, ALPHA_KEY, &body, within);
        let (a, b, c, d, e) = tokio::join!(
            create(main),
            create(other),
            create(main),
            create(other),
            create(main)
        );
        let answers = [a, b, c, d, e];
        let ids: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|(v, _)| v["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 1, "one verification: {answers:?}");
        assert_eq!(w.gu1.validations_created(), round + 1, "one validation");
        assert_eq!(
            answers
                .iter()
                .filter(|(_, seen)| seen.last() == Some(&StatusCode::CREATED))
                .count(),
            1
        );
    }
    drop(replica);
    drop(w);
    db.drop().await;
}

#[tokio::test]
async fn a_caller_that_hangs_up_mid_create_does_not_cut_the_attempt_off() {
    let w = World::start().await;
    w.create(person("warm", "sub-warm", "CL")).await;
    w.betrust.inject(
        FaultRule::once(Fault::Latency(Duration::from_millis(1500)))
            .on_path("POST /transaction-engine"),
    );
    let body = person("hung-up-1", "sub-hung-up-1", "CL");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/verifications", w.base))
        .bearer_auth(ALPHA_KEY)
        .json(&body)
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up before the answer");
    // The attempt goes on without its caller and stores what BeTrust made.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        if let Some(v) = by_reference(&w, ALPHA_KEY, "hung-up-1").await.first() {
            break v.clone();
        }
        assert!(Instant::now() < deadline, "nothing stored:\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, _, again) = post_at(&w.http, &w.base, ALPHA_KEY, &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], stored["id"]);
    let someone_else = person("hung-up-1", "sub-someone-else", "CL");
    let (status, _, problem) = post_at(&w.http, &w.base, ALPHA_KEY, &someone_else).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(w.betrust.transactions_created(), 2);
}

/// Found by the fault campaign (seed 10 on PostgreSQL): a create that reserved its reference
/// just after another attempt stored the verification left its reservation behind when it found
/// the verification there, and every reconciler round then resolved that reservation again,
/// calling the provider each time, for ever. A reservation of a reference whose verification is
/// stored is now removed by whoever meets it: here the reconciler, once the stale holder's lease
/// runs out, without a second provider object.
#[tokio::test]
async fn a_reservation_left_beside_a_stored_verification_is_removed_not_resolved_for_ever() {
    let w = World::start_with(Options {
        reconcile_every: 1,
        ..Options::webhooks_lost()
    })
    .await;
    let v = w.create(person("stale-1", "sub-stale-1", "CL")).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&w.db_url).await.unwrap();
    sqlx::query(
        "INSERT INTO create_attempts (tenant, reference, request_hash, state, provider, routing, \
         beat, subject_id, country, metadata, ambiguous_at, created_at, updated_at) \
         SELECT tenant, reference, request_hash, 'calling', provider, routing, 7, subject_id, \
         country, NULL, NULL, created_at, created_at FROM verifications WHERE id = $1",
    )
    .bind(v["id"].as_str().unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let left = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM create_attempts")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while left().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation is still there:\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.betrust.transactions_created(), 1);
    let (_, again) = w
        .post(
            "/v1/verifications",
            ALPHA_KEY,
            person("stale-1", "sub-stale-1", "CL"),
        )
        .await;
    assert_eq!(again["id"], v["id"]);
}
