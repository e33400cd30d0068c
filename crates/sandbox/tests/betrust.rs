//! The BeTrust simulator over real HTTP: tokens, transactions, credential data, webhooks, the page.

mod common;

use common::{WebhookReceiver, client};
use kyc_sandbox::{BetrustSim, BetrustSimConfig, Outcome, SandboxError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn token(sim: &BetrustSim) -> String {
    let response = client()
        .post(format!("{}/oauth/token/", sim.auth_base_url()))
        .json(&json!({
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "grant_type": "client_credentials",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn create_body(transaction_id: &str) -> Value {
    json!({
        "transaction_id": transaction_id,
        "company_id": "201",
        "authorization_method": "kyc_register",
        "metadata": {"country": "CHILE", "nin": "22222222-2", "fraud_check": true},
    })
}

async fn create(sim: &BetrustSim, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{}/transactions", sim.api_base_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn get(sim: &BetrustSim, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}{path}", sim.api_base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn token_endpoint_issues_bearer_tokens_and_refuses_wrong_credentials() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    assert_eq!(sim.auth_base_url(), sim.base_url());
    assert!(sim.api_base_url().ends_with("/transaction-engine/v1"));

    let refused = client()
        .post(format!("{}/oauth/token/", sim.auth_base_url()))
        .json(&json!({"client_id": "sandbox-client", "client_secret": "nope", "grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"error": "invalid_client"})
    );

    let response = client()
        .post(format!("{}/oauth/token/", sim.auth_base_url()))
        .json(&json!({"client_id": "sandbox-client", "client_secret": "sandbox-secret", "grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "");
    assert!(body["created_at"].as_i64().unwrap() > 1_700_000_000);
    let first = body["access_token"].as_str().unwrap().to_owned();
    assert!(first.len() >= 32);
    assert_ne!(first, token(&sim).await, "every token is new");
    assert_eq!(sim.token_requests(), 3, "refused calls count too");
}

#[tokio::test]
async fn revoked_tokens_answer_401_in_the_envelope() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let (status, _) = create(&sim, &token, &create_body("order-1")).await;
    assert_eq!(status, StatusCode::OK);

    sim.revoke_tokens();
    let (status, body) = get(&sim, &token, "/transactions/order-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"code": 401, "resource": "Auth", "data": null, "message": "Unauthorized"})
    );

    let fresh = self::token(&sim).await;
    let (status, _) = get(&sim, &fresh, "/transactions/order-1").await;
    assert_eq!(status, StatusCode::OK, "a new token works after a revoke");

    let (status, _) = get(&sim, "made-up", "/transactions/order-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_expire_after_expires_in() {
    let config = BetrustSimConfig {
        token_expires_in: 1,
        ..BetrustSimConfig::default()
    };
    let sim = BetrustSim::start(config).await.unwrap();
    let token = token(&sim).await;
    let (status, _) = create(&sim, &token, &create_body("order-1")).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = get(&sim, &token, "/transactions/order-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn create_echoes_the_request_and_fills_the_transaction() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let mut body = create_body("order-42");
    body["webhook"] = json!("https://gateway.example/hooks/betrust/abc");
    body["tries"] = json!(5);
    let (status, answer) = create(&sim, &token, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["code"], 200);
    assert_eq!(answer["resource"], "Transaction");
    let data = &answer["data"];
    let uuid = data["uuid"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
    assert!(data["id"].is_u64());
    assert_eq!(data["transaction_id"], "order-42");
    assert_eq!(data["company_id"], "201");
    assert_eq!(data["authorization_method"], "kyc_register");
    assert_eq!(data["webhook"], "https://gateway.example/hooks/betrust/abc");
    assert_eq!(data["metadata"]["nin"], "22222222-2");
    assert_eq!(data["metadata"]["fraud_check"], true);
    assert_eq!(data["tries"], 5);
    assert_eq!(data["expiration"], 600);
    assert_eq!(data["active"], true);
    assert_eq!(data["complete"], false);
    assert_eq!(data["failed"], false);
    assert_eq!(data["step"], "Session_start");
    assert_eq!(data["issue_description"], Value::Null);
    assert_eq!(data["verification_result"], Value::Null);
    assert_eq!(
        data["validator_url"],
        format!("{}/validate/{uuid}", sim.base_url())
    );
    for field in ["created_at", "updated_at"] {
        chrono::DateTime::parse_from_rfc3339(data[field].as_str().unwrap()).unwrap();
    }
    assert_eq!(sim.transaction(uuid).unwrap(), *data);
    assert_eq!(sim.transaction("order-42").unwrap(), *data);

    // GET by uuid and by transaction_id, and an unknown one.
    for id in [uuid, "order-42"] {
        let (status, found) = get(&sim, &token, &format!("/transactions/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found["message"], "Found");
        assert_eq!(found["data"], *data);
    }
    let (status, missing) = get(&sim, &token, "/transactions/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing,
        json!({"code": 404, "resource": "Transaction", "data": null, "message": "Not found"})
    );
}

#[tokio::test]
async fn repeated_transaction_id_is_409_and_creates_nothing() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let (status, first) = create(&sim, &token, &create_body("order-7")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = create(&sim, &token, &create_body("order-7")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        again,
        json!({"code": 409, "resource": "Transaction", "data": null, "message": "Duplicated"})
    );
    assert_eq!(sim.transactions_created(), 1);
    assert_eq!(
        sim.transaction("order-7").unwrap()["uuid"],
        first["data"]["uuid"]
    );
}

#[tokio::test]
async fn bad_create_requests_name_the_field() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let cases = [
        ("transaction_id", Value::Null, "transaction_id"),
        ("company_id", json!("999"), "company_id"),
        (
            "authorization_method",
            json!("telepathy"),
            "authorization_method",
        ),
        ("authorization_method", Value::Null, "authorization_method"),
        ("tries", json!(0), "tries"),
    ];
    for (field, value, named) in cases {
        let mut body = create_body("order-x");
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        let (status, answer) = create(&sim, &token, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(answer["code"], 400);
        assert_eq!(answer["data"], Value::Null);
        assert!(answer["message"].as_str().unwrap().contains(named));
    }
    assert_eq!(sim.transactions_created(), 0);
}

#[tokio::test]
async fn credential_information_only_after_approval() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let (_, created) = create(&sim, &token, &create_body("order-9")).await;
    let uuid = created["data"]["uuid"].as_str().unwrap().to_owned();
    let path = format!("/transactions/{uuid}/credential_information");

    let (status, body) = get(&sim, &token, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Credential not available");
    assert_eq!(body["data"], Value::Null);

    sim.finish(&uuid, Outcome::Approved).await.unwrap();
    let (status, body) = get(&sim, &token, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resource"], "User Credential");
    assert_eq!(body["message"], "Ok");
    let data = &body["data"];
    assert_eq!(data["name"], "SANDBOX");
    assert_eq!(data["last_name"], "PERSON");
    assert_eq!(
        data["nin"], "22222222-2",
        "nin comes from the create metadata"
    );
    assert_eq!(data["document_number"], "A1234567");
    assert_eq!(data["identity_verification_score"], 99.5);
    let birth = data["date_birth"].as_str().unwrap();
    chrono::NaiveDate::parse_from_str(birth, "%d/%m/%Y").expect("dd/mm/yyyy");
    assert_eq!(birth, "20/05/1990");

    // Told other names, it answers with them.
    let (_, other) = create(&sim, &token, &create_body("order-10")).await;
    let other_uuid = other["data"]["uuid"].as_str().unwrap().to_owned();
    sim.finish_with_names(&other_uuid, Outcome::Approved, "ANA", "ROJAS")
        .await
        .unwrap();
    let (_, body) = get(
        &sim,
        &token,
        &format!("/transactions/{other_uuid}/credential_information"),
    )
    .await;
    assert_eq!(body["data"]["name"], "ANA");
    assert_eq!(body["data"]["last_name"], "ROJAS");
}

#[tokio::test]
async fn finish_sets_the_state_of_each_outcome() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    let expected = [
        (Outcome::InProgress, true, false, false, "Document_capture"),
        (Outcome::InReview, true, false, false, "Manual_review"),
        (Outcome::Approved, false, true, false, "Finished"),
        (Outcome::Rejected, false, false, true, "Finished"),
        (Outcome::Expired, false, false, false, "Expired"),
        (Outcome::Abandoned, false, false, false, "Abandoned"),
        (Outcome::Cancelled, false, false, false, "Cancelled"),
    ];
    for (i, (outcome, active, complete, failed, step)) in expected.into_iter().enumerate() {
        let transaction_id = format!("order-{i}");
        create(&sim, &token, &create_body(&transaction_id)).await;
        sim.finish(&transaction_id, outcome).await.unwrap();
        let (_, body) = get(&sim, &token, &format!("/transactions/{transaction_id}")).await;
        let data = &body["data"];
        assert_eq!(data["active"], active, "{outcome}");
        assert_eq!(data["complete"], complete, "{outcome}");
        assert_eq!(data["failed"], failed, "{outcome}");
        assert_eq!(data["step"], step, "{outcome}");
        match outcome {
            Outcome::Approved => {
                assert_eq!(data["verification_result"]["selfie_document_match"], 96.05)
            }
            Outcome::Rejected => assert_eq!(data["issue_description"], "Face_mismatch"),
            _ => assert_eq!(data["issue_description"], Value::Null),
        }
    }
    assert_eq!(
        sim.finish("no-such", Outcome::Approved).await,
        Err(SandboxError::NotFound)
    );
}

#[tokio::test]
async fn finish_posts_the_compact_webhook() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let mut receiver = WebhookReceiver::start().await;
    let token = token(&sim).await;
    let mut body = create_body("order-hook");
    body["webhook"] = json!(receiver.url);
    let (_, created) = create(&sim, &token, &body).await;
    let uuid = created["data"]["uuid"].as_str().unwrap().to_owned();

    sim.finish("order-hook", Outcome::Approved).await.unwrap();
    assert!(receiver.has_pending(), "finish returns after the delivery");
    let hook = receiver.next().await;
    assert!(hook.headers.get("x-webhook-signature").is_none());
    let payload: Value = serde_json::from_slice(&hook.body).unwrap();
    let mut keys: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "active",
            "authorization_method",
            "company_id",
            "complete",
            "failed",
            "transaction_id",
            "updated_at",
            "uuid",
            "verification_result"
        ]
    );
    assert_eq!(payload["uuid"], uuid.as_str());
    assert_eq!(payload["transaction_id"], "order-hook");
    assert_eq!(payload["complete"], true);
    assert_eq!(
        payload["verification_result"]["selfie_document_match"],
        96.05
    );
}

#[tokio::test]
async fn finish_survives_an_unreachable_webhook() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let token = token(&sim).await;
    // A port nobody listens on: bind one, then free it.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let mut body = create_body("order-dead");
    body["webhook"] = json!(dead_url);
    create(&sim, &token, &body).await;
    sim.finish("order-dead", Outcome::Rejected).await.unwrap();
    assert_eq!(sim.transaction("order-dead").unwrap()["failed"], true);
}

#[tokio::test]
async fn validator_page_finishes_with_a_form() {
    let sim = BetrustSim::start(BetrustSimConfig::default())
        .await
        .unwrap();
    let mut receiver = WebhookReceiver::start().await;
    let token = token(&sim).await;
    let mut body = create_body("order-page");
    body["webhook"] = json!(receiver.url);
    let (_, created) = create(&sim, &token, &body).await;
    let validator_url = created["data"]["validator_url"].as_str().unwrap();
    let uuid = created["data"]["uuid"].as_str().unwrap();

    let page = client().get(validator_url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Sandbox BeTrust verification"));
    let action = format!("action=\"/_sandbox/finish/{uuid}\"");
    assert!(html.contains(&action));
    for value in ["approved", "rejected", "expired"] {
        assert!(html.contains(&format!("name=\"outcome\" value=\"{value}\"")));
    }

    // What the browser sends when the person clicks Approve.
    let done = client()
        .post(format!("{}/_sandbox/finish/{uuid}", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=approved")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Done: approved"));
    assert_eq!(sim.transaction(uuid).unwrap()["complete"], true);
    let hook: Value = serde_json::from_slice(&receiver.next().await.body).unwrap();
    assert_eq!(hook["uuid"], uuid);

    let missing = client()
        .get(format!("{}/validate/unknown", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // JSON from a script works too, and a bad outcome is refused.
    let json_done = client()
        .post(format!("{}/_sandbox/finish/order-page", sim.base_url()))
        .json(&json!({"outcome": "rejected"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_done.status(), StatusCode::OK);
    assert_eq!(sim.transaction(uuid).unwrap()["failed"], true);
    let bad = client()
        .post(format!("{}/_sandbox/finish/order-page", sim.base_url()))
        .json(&json!({"outcome": "maybe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
