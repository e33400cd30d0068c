//! Fault injection over real HTTP, and stopping a simulator by dropping it.

mod common;

use common::client;
use kyc_sandbox::{BetrustSim, BetrustSimConfig, Fault, FaultRule, Gu1Sim, Gu1SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn token_body() -> Value {
    json!({"client_id": "sandbox-client", "client_secret": "sandbox-secret", "grant_type": "client_credentials"})
}

async fn get_validation(sim: &Gu1Sim, id: &str) -> reqwest::Response {
    client()
        .get(format!("{}/api/kyc/validations/{id}", sim.base_url()))
        .bearer_auth("gk_sandbox_key")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_fault_once_then_normal_answers() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    sim.inject(FaultRule::once(Fault::Status(503)).on_path("/oauth/token"));
    let url = format!("{}/oauth/token/", sim.auth_base_url());

    let faulted = client()
        .post(&url)
        .json(&token_body())
        .send()
        .await
        .unwrap();
    assert_eq!(faulted.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = faulted.json().await.unwrap();
    assert_eq!(body["code"], 503);

    let ok = client()
        .post(&url)
        .json(&token_body())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(sim.token_requests(), 2, "the faulted call counts");
}

#[tokio::test]
async fn faults_only_hit_matching_paths_and_respect_times() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    sim.inject(
        FaultRule::always(Fault::Status(429))
            .on_path("/validations/")
            .times(2),
    );
    for _ in 0..2 {
        let limited = get_validation(&sim, "v1").await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()["retry-after"], "1");
    }
    assert_eq!(
        get_validation(&sim, "v1").await.status(),
        StatusCode::NOT_FOUND
    );

    // Other paths are untouched by a path rule.
    sim.inject(FaultRule::always(Fault::Status(500)).on_path("/entities"));
    assert_eq!(
        get_validation(&sim, "v1").await.status(),
        StatusCode::NOT_FOUND
    );
    sim.clear_faults();
    let entity = client()
        .post(format!("{}/api/entities", sim.base_url()))
        .bearer_auth("gk_sandbox_key")
        .json(&json!({"type": "person", "name": "X", "countryCode": "AR", "externalId": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(entity.status(), StatusCode::CREATED);
    assert_eq!(sim.requests_seen("/api/kyc/validations/v1"), 4);
}

#[tokio::test]
async fn malformed_fault_answers_200_with_a_body_that_is_not_json() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    sim.inject(FaultRule::once(Fault::Malformed));
    let response = get_validation(&sim, "v1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn latency_fault_delays_then_answers_normally() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    sim.inject(FaultRule::once(Fault::Latency(Duration::from_millis(400))));
    let started = Instant::now();
    let response = client()
        .post(format!("{}/oauth/token/", sim.auth_base_url()))
        .json(&token_body())
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn hang_fault_makes_a_client_time_out() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    sim.inject(FaultRule::always(Fault::Hang));
    let short = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = short
        .get(format!("{}/api/kyc/validations/v1", sim.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn faults_can_be_set_and_cleared_over_http_and_never_hit_control_routes() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let faults = format!("{}/_sandbox/faults", sim.base_url());
    let set = client()
        .post(&faults)
        .json(&json!({"path_contains": "/transactions", "status": 502}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let refused = client()
        .post(&faults)
        .json(&json!({"status": 502, "malformed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let api = client()
        .get(format!("{}/transactions/x", sim.api_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::BAD_GATEWAY);

    // An every-route rule leaves the page and the control routes alone.
    sim.inject(FaultRule::always(Fault::Status(500)));
    let page = client()
        .get(format!("{}/validate/x", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::NOT_FOUND,
        "the page is not faulted"
    );

    let cleared = client().delete(&faults).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    let api = client()
        .get(format!("{}/transactions/x", sim.api_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "no fault left");
}

#[tokio::test]
async fn dropping_a_sim_stops_its_server() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let url = format!("{}/api/kyc/validations/v1", sim.base_url());
    assert_eq!(
        client().get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    drop(sim);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A fresh client each time, so no pooled connection is reused.
        match client().get(&url).send().await {
            Err(err) if err.is_connect() => break,
            _ if Instant::now() > deadline => panic!("server still answers after drop"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_late_answer_does_the_work_and_answers_after_the_client_gave_up() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    sim.inject(
        FaultRule::once(Fault::LateAnswer(Duration::from_secs(5))).on_path("POST /api/entities"),
    );
    // A lookup on the same path is not a POST: untouched.
    let lookup = client()
        .get(format!("{}/api/entities?type=person", sim.base_url()))
        .bearer_auth("gk_sandbox_key")
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), StatusCode::OK);

    let started = Instant::now();
    let cut_off = client()
        .post(format!("{}/api/entities", sim.base_url()))
        .bearer_auth("gk_sandbox_key")
        .timeout(Duration::from_millis(300))
        .json(&json!({"type": "person", "name": "X", "countryCode": "AR", "externalId": "s"}))
        .send()
        .await;
    assert!(cut_off.unwrap_err().is_timeout());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        sim.entities_created(),
        1,
        "the entity was made all the same"
    );
}

#[tokio::test]
async fn a_status_after_the_work_and_a_cut_connection_both_leave_the_work_done() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let create = |external: &str| {
        client()
            .post(format!("{}/api/entities", sim.base_url()))
            .bearer_auth("gk_sandbox_key")
            .json(&json!({"type": "person", "name": "X", "countryCode": "AR", "externalId": external}))
            .send()
    };
    sim.inject(FaultRule::once(Fault::StatusAfterWork(500)).on_path("POST /api/entities"));
    let failed = create("after-work").await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(sim.entities_created(), 1, "made before the 500");

    sim.inject(FaultRule::once(Fault::Cut).on_path("POST /api/entities"));
    // The head may arrive; a whole answer never does.
    let cut = match create("cut").await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(cut.is_err(), "the answer was cut");
    assert_eq!(sim.entities_created(), 2, "made before the cut");

    let whole = create("whole").await.unwrap();
    assert_eq!(whole.status(), StatusCode::CREATED);
    assert_eq!(sim.entities_created(), 3);
}
