//! The gu1 simulator over real HTTP: entities, the validation lifecycle, signed webhooks, the page.

mod common;

use common::{WebhookReceiver, client};
use hmac::{Hmac, KeyInit, Mac};
use kyc_sandbox::{Gu1Sim, Gu1SimConfig, Outcome, SandboxError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

const KEY: &str = "gk_sandbox_key";

async fn call(sim: &Gu1Sim, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = format!("{}{path}", sim.base_url());
    let request = match method {
        "GET" => client().get(url),
        _ => client().post(url),
    };
    let request = request.bearer_auth(KEY);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn person(tax_id: Option<&str>) -> Value {
    json!({
        "type": "person",
        "name": "Juan Perez",
        "countryCode": "AR",
        "externalId": "subject-1",
        "taxId": tax_id,
        "entityData": {"person": {
            "firstName": "Juan", "lastName": "Perez", "dateOfBirth": "1990-05-15", "nationality": "AR"
        }},
    })
}

async fn entity(sim: &Gu1Sim, tax_id: Option<&str>) -> String {
    let (status, body) = call(sim, "POST", "/api/entities", Some(person(tax_id))).await;
    assert_eq!(status, StatusCode::CREATED);
    body["entity"]["id"].as_str().unwrap().to_owned()
}

async fn validation(sim: &Gu1Sim, entity_id: &str, webhook_url: Option<&str>) -> Value {
    let (status, body) = call(
        sim,
        "POST",
        "/api/kyc/validations",
        Some(json!({
            "entityId": entity_id,
            "webhookUrl": webhook_url,
            "integrationCode": "global_gueno_validation_kyc",
            "metadata": {"gatewayVerificationId": "ver_1"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    body
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    for auth in [None, Some("Bearer gk_wrong")] {
        let mut request = client().post(format!("{}/api/entities", sim.base_url()));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.json(&person(None)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "UNAUTHORIZED", "message": "Invalid API key"})
        );
    }
    assert_eq!(sim.entities_created(), 0);
}

#[tokio::test]
async fn entities_are_created_once_per_tax_id() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let (status, body) = call(&sim, "POST", "/api/entities", Some(person(Some("20-1")))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["success"], true);
    let created = &body["entity"];
    uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    assert_eq!(created["type"], "person");
    assert_eq!(created["name"], "Juan Perez");
    assert_eq!(created["countryCode"], "AR");
    assert_eq!(created["externalId"], "subject-1");
    assert_eq!(created["taxId"], "20-1");
    assert!(created["createdAt"].is_string());
    let stored = sim.entity(created["id"].as_str().unwrap()).unwrap();
    assert_eq!(stored["entityData"]["person"]["firstName"], "Juan");

    let (status, again) = call(&sim, "POST", "/api/entities", Some(person(Some("20-1")))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        again,
        json!({"error": "ENTITY_ALREADY_EXISTS", "message": "An entity with this taxId already exists"})
    );
    assert_eq!(sim.entities_created(), 1);

    // Without a taxId there is nothing to collide on.
    entity(&sim, None).await;
    entity(&sim, None).await;
    assert_eq!(sim.entities_created(), 3);

    let mut company = person(Some("30-9"));
    company["type"] = json!("company");
    let (status, body) = call(&sim, "POST", "/api/entities", Some(company)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "INVALID_ENTITY_TYPE");
    assert_eq!(sim.entities_created(), 3);
}

#[tokio::test]
async fn validation_lifecycle_and_entity_status() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let entity_id = entity(&sim, Some("20-2")).await;

    let (status, body) = call(
        &sim,
        "GET",
        &format!("/api/kyc/entities/{entity_id}/status"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hasKyc"], false);
    assert_eq!(body["isVerified"], false);
    assert_eq!(body["currentValidation"], Value::Null);

    let first = validation(&sim, &entity_id, None).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["entityId"], entity_id.as_str());
    assert_eq!(first["organizationId"], "org_sandbox");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["provider"], "sandbox_kyc");
    assert_eq!(first["isCurrent"], true);
    assert_eq!(first["metadata"]["gatewayVerificationId"], "ver_1");
    assert!(first["sessionId"].is_string());
    assert_eq!(
        first["providerSessionUrl"],
        format!("{}/session/{first_id}", sim.base_url())
    );
    assert_eq!(
        sim.validation(&first_id).unwrap()["integrationCode"],
        "global_gueno_validation_kyc"
    );

    let second = validation(&sim, &entity_id, None).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.validations_created(), 2);
    let (_, old) = call(
        &sim,
        "GET",
        &format!("/api/kyc/validations/{first_id}"),
        None,
    )
    .await;
    assert_eq!(
        old["isCurrent"], false,
        "a new validation replaces the current one"
    );
    let (status, current) = call(
        &sim,
        "GET",
        &format!("/api/kyc/entities/{entity_id}/current"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["id"], second_id.as_str());

    // Cancel the old pending one; cancelling again is refused.
    let (status, cancelled) = call(
        &sim,
        "POST",
        &format!("/api/kyc/validations/{first_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, refused) = call(
        &sim,
        "POST",
        &format!("/api/kyc/validations/{first_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "INVALID_STATUS");

    // Approve the current one.
    sim.finish(&second_id, Outcome::Approved).await.unwrap();
    let (_, approved) = call(
        &sim,
        "GET",
        &format!("/api/kyc/validations/{second_id}"),
        None,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    assert!(approved["verifiedAt"].is_string());
    assert_eq!(approved["decision"]["status"], "Approved");
    assert_eq!(approved["decision"]["face_match"]["status"], "Approved");
    assert_eq!(
        approved["decision"]["id_verification"]["first_name"],
        "Juan"
    );
    assert_eq!(approved["extractedData"]["lastName"], "Perez");
    assert_eq!(approved["extractedData"]["dateOfBirth"], "1990-05-15");
    assert_eq!(approved["extractedData"]["documentType"], "Identity Card");

    let (_, status_body) = call(
        &sim,
        "GET",
        &format!("/api/kyc/entities/{entity_id}/status"),
        None,
    )
    .await;
    assert_eq!(status_body["hasKyc"], true);
    assert_eq!(status_body["isVerified"], true);
    assert_eq!(status_body["needsReverification"], false);
    assert_eq!(status_body["currentValidation"]["id"], second_id.as_str());
    assert_eq!(status_body["currentValidation"]["status"], "approved");
    let verified =
        chrono::DateTime::parse_from_rfc3339(status_body["lastVerifiedAt"].as_str().unwrap())
            .unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(status_body["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(expires - verified, chrono::Duration::days(365));

    // A final validation cannot be cancelled.
    let (status, _) = call(
        &sim,
        "POST",
        &format!("/api/kyc/validations/{second_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn validation_errors_use_gu1_codes() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let (status, body) = call(
        &sim,
        "POST",
        "/api/kyc/validations",
        Some(json!({"entityId": "00000000-0000-4000-8000-000000000000"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "ENTITY_NOT_FOUND");

    let entity_id = entity(&sim, None).await;
    let big = "x".repeat(11 * 1024);
    let (status, body) = call(
        &sim,
        "POST",
        "/api/kyc/validations",
        Some(json!({"entityId": entity_id, "metadata": {"note": big}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "INVALID_METADATA");
    assert_eq!(sim.validations_created(), 0);

    for path in [
        "/api/kyc/validations/nope".to_owned(),
        format!("/api/kyc/entities/{entity_id}/current"),
    ] {
        let (status, body) = call(&sim, "GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"], "NOT_FOUND");
    }
    assert_eq!(
        sim.finish("nope", Outcome::Approved).await,
        Err(SandboxError::NotFound)
    );
}

#[tokio::test]
async fn sync_returns_the_validation_with_fresh_image_urls() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let entity_id = entity(&sim, None).await;
    let id = validation(&sim, &entity_id, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.finish(&id, Outcome::Rejected).await.unwrap();
    let (_, before) = call(&sim, "GET", &format!("/api/kyc/validations/{id}"), None).await;
    assert_eq!(before["status"], "rejected");
    assert_eq!(before["decision"]["status"], "Declined");
    assert_eq!(
        before["decision"]["face_match"],
        json!({"status": "Declined", "score": 12})
    );
    assert_eq!(before["verifiedAt"], Value::Null);

    let (status, synced) = call(
        &sim,
        "POST",
        &format!("/api/kyc/validations/{id}/sync"),
        Some(json!({"force": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(synced["status"], "rejected");
    let image = |v: &Value| v["decision"]["id_verification"]["front_image"].clone();
    assert!(image(&synced).is_string());
    assert_ne!(image(&synced), image(&before));
    assert_eq!(sim.requests_seen("/sync"), 1);
}

#[tokio::test]
async fn finish_sends_a_signed_webhook() {
    let config = Gu1SimConfig::default();
    let secret = config.webhook_secret.clone();
    let sim = Gu1Sim::start(config).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    let entity_id = entity(&sim, None).await;
    let id = validation(&sim, &entity_id, Some(&receiver.url)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    sim.finish(&id, Outcome::Approved).await.unwrap();
    assert!(receiver.has_pending(), "finish returns after the delivery");
    let hook = receiver.next().await;
    let signature = hook.headers["x-webhook-signature"].to_str().unwrap();
    assert_eq!(signature, signature.to_lowercase());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(signature).unwrap())
        .expect("signature is HMAC-SHA256 of the raw body");

    let envelope: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(envelope["event"], "kyc.validation_approved");
    assert_eq!(envelope["organizationId"], "org_sandbox");
    chrono::DateTime::parse_from_rfc3339(envelope["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["payload"]["id"], id.as_str());
    assert_eq!(envelope["payload"]["status"], "approved");
    assert_eq!(envelope["payload"], sim.validation(&id).unwrap());

    // Another secret does not verify the same body.
    let mut wrong = <Hmac<Sha256> as KeyInit>::new_from_slice(b"other").unwrap();
    wrong.update(&hook.body);
    assert!(
        wrong
            .verify_slice(&hex::decode(signature).unwrap())
            .is_err()
    );

    sim.finish(&id, Outcome::InReview).await.unwrap();
    let hook: Value = serde_json::from_slice(&receiver.next().await.body).unwrap();
    assert_eq!(hook["event"], "kyc.validation_in_review");

    // Sent again: the latest (a duplicate), then the one before (after a newer one), each with
    // its own signature; nothing older than the first.
    sim.send_webhook_again(&id, 0).await.unwrap();
    let again = receiver.next().await;
    let hook: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(hook["event"], "kyc.validation_in_review");
    sim.send_webhook_again(&id, 1).await.unwrap();
    let stale = receiver.next().await;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&stale.body);
    let signature = stale.headers["x-webhook-signature"].to_str().unwrap();
    mac.verify_slice(&hex::decode(signature).unwrap()).unwrap();
    let hook: Value = serde_json::from_slice(&stale.body).unwrap();
    assert_eq!(hook["event"], "kyc.validation_approved");
    assert_eq!(
        sim.send_webhook_again(&id, 2).await,
        Err(kyc_sandbox::SandboxError::NotFound)
    );
}

#[tokio::test]
async fn session_page_finishes_with_a_form() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    let entity_id = entity(&sim, None).await;
    let created = validation(&sim, &entity_id, Some(&receiver.url)).await;
    let id = created["id"].as_str().unwrap();

    let html = client()
        .get(created["providerSessionUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sandbox gu1 verification"));
    assert!(html.contains(&format!("action=\"/_sandbox/finish/{id}\"")));
    for value in ["approved", "rejected", "in_review", "expired"] {
        assert!(html.contains(&format!("name=\"outcome\" value=\"{value}\"")));
    }

    let done = client()
        .post(format!("{}/_sandbox/finish/{id}", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=rejected")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Done: rejected"));
    assert_eq!(sim.validation(id).unwrap()["status"], "rejected");
    let hook: Value = serde_json::from_slice(&receiver.next().await.body).unwrap();
    assert_eq!(hook["event"], "kyc.validation_rejected");

    let missing = client()
        .post(format!("{}/_sandbox/finish/unknown", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=approved")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn entities_are_found_by_tax_id_or_external_id() {
    let sim = Gu1Sim::start(Gu1SimConfig::default()).await.unwrap();
    let with_tax_id = entity(&sim, Some("20-1-9")).await;
    let without = entity(&sim, None).await;

    let (status, found) = call(&sim, "GET", "/api/entities?type=person&taxId=20-1-9", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = found["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [with_tax_id.as_str()]);
    assert_eq!(found["entities"][0]["taxId"], "20-1-9");

    let (_, found) = call(
        &sim,
        "GET",
        "/api/entities?type=person&externalId=subject-1",
        None,
    )
    .await;
    assert_eq!(found["entities"].as_array().unwrap().len(), 2);
    assert_eq!(found["entities"][1]["id"], without.as_str());

    let (_, none) = call(&sim, "GET", "/api/entities?type=person&taxId=other", None).await;
    assert_eq!(none["entities"], json!([]));
    let (_, none) = call(
        &sim,
        "GET",
        "/api/entities?type=company&externalId=subject-1",
        None,
    )
    .await;
    assert_eq!(none["entities"], json!([]));
}
