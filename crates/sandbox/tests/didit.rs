//! The Didit simulator over real HTTP: sessions (create and its reuse rule, the decision,
//! update-status, delete, list), the four webhook signatures and Didit's retries, the page.

mod common;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use common::{ReceivedWebhook, WebhookReceiver, client};
use hmac::{Hmac, KeyInit, Mac};
use kyc_sandbox::{Autopilot, DiditSim, DiditSimConfig, Fault, FaultRule, Outcome, SandboxError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{net::TcpListener, sync::mpsc};

const KEY: &str = "didit_sandbox_key";
const WORKFLOW: &str = "5f1c0d2e-8b3a-4c6d-9e7f-0a1b2c3d4e5f";
const SECRET: &str = "didit-sandbox-webhook-secret";

async fn call(
    sim: &DiditSim,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", sim.base_url());
    let request = match method {
        "GET" => client().get(url),
        "PATCH" => client().patch(url),
        "DELETE" => client().delete(url),
        _ => client().post(url),
    };
    let request = request.header("x-api-key", KEY);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

/// Creates a session (201) and returns the answer.
async fn create(sim: &DiditSim, body: Value) -> Value {
    let (status, answer) = call(sim, "POST", "/v3/session/", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

async fn new_session(sim: &DiditSim, vendor_data: &str) -> String {
    create(
        sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": vendor_data}),
    )
    .await["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn decision(sim: &DiditSim, id: &str) -> (StatusCode, Value) {
    call(sim, "GET", &format!("/v3/session/{id}/decision/"), None).await
}

async fn update(sim: &DiditSim, id: &str, body: Value) -> (StatusCode, Value) {
    call(
        sim,
        "PATCH",
        &format!("/v3/session/{id}/update-status/"),
        Some(body),
    )
    .await
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn header(hook: &ReceivedWebhook, name: &str) -> String {
    hook.headers[name].to_str().unwrap().to_owned()
}

/// Checks the four signature headers of a webhook as a receiver would, and returns its body.
fn verified(hook: &ReceivedWebhook) -> Value {
    assert_eq!(header(hook, "content-type"), "application/json");
    assert_eq!(
        header(hook, "user-agent"),
        "DiditWebhook/2.0 +https://didit.me"
    );
    assert!(hook.body.is_ascii(), "the body escapes non-ASCII");
    assert_eq!(header(hook, "x-signature"), hmac_hex(SECRET, &hook.body));
    let payload: Value = serde_json::from_slice(&hook.body).unwrap();
    let canonical = DiditSim::canonical_json(&payload, true);
    assert_eq!(
        canonical.as_bytes(),
        &hook.body[..],
        "the body is canonical"
    );
    let unescaped = DiditSim::canonical_json(&payload, false);
    assert_eq!(
        header(hook, "x-signature-v2"),
        hmac_hex(SECRET, unescaped.as_bytes())
    );
    let timestamp = payload["timestamp"].as_i64().unwrap();
    let simple = format!(
        "{timestamp}:{}:{}:{}",
        payload["session_id"].as_str().unwrap(),
        payload["status"].as_str().unwrap(),
        payload["webhook_type"].as_str().unwrap()
    );
    assert_eq!(
        header(hook, "x-signature-simple"),
        hmac_hex(SECRET, simple.as_bytes())
    );
    assert_eq!(header(hook, "x-timestamp"), timestamp.to_string());
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() <= 5);
    payload
}

/// A receiver answering the given statuses in turn, then 200; it records every request.
async fn scripted_receiver(
    statuses: Vec<u16>,
) -> (String, mpsc::UnboundedReceiver<ReceivedWebhook>) {
    #[derive(Clone)]
    struct Script {
        statuses: Arc<Mutex<Vec<u16>>>,
        tx: mpsc::UnboundedSender<ReceivedWebhook>,
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Script {
        statuses: Arc::new(Mutex::new(statuses.into_iter().rev().collect())),
        tx,
    };
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(script): State<Script>, headers: HeaderMap, body: Bytes| async move {
                    let _ = script.tx.send(ReceivedWebhook { headers, body });
                    let status = script.statuses.lock().unwrap().pop().unwrap_or(200);
                    AxumStatus::from_u16(status).unwrap()
                },
            ),
        )
        .with_state(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next_hook(rx: &mut mpsc::UnboundedReceiver<ReceivedWebhook>) -> ReceivedWebhook {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a webhook within 5 s")
        .expect("receiver open")
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    for key in [None, Some("didit_wrong")] {
        let mut request = client().post(format!("{}/v3/session/", sim.base_url()));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request
            .json(&json!({"workflow_id": WORKFLOW}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"detail": "Invalid or missing API key"})
        );
    }
    // A bearer token (the legacy v1/v2 scheme) is not a v3 key.
    let response = client()
        .get(format!("{}/v3/sessions/", sim.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.sessions_created(), 0);
}

#[tokio::test]
async fn create_answers_201_in_didit_shape() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let body = json!({
        "workflow_id": WORKFLOW,
        "vendor_data": "user-1",
        "callback": "https://app.example/done",
        "metadata": "{\"gateway_id\": \"ver_1\"}",
        "language": "es",
        "contact_details": {"email": "a@example.com", "send_notification_emails": false},
        "expected_details": {"first_name": "Juan", "date_of_birth": "1990-05-15"},
        "unknown_field": [1, 2],
    });
    let answer = create(&sim, body.clone()).await;
    let id = answer["session_id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(answer["session_number"], 1000);
    let token = answer["session_token"].as_str().unwrap();
    assert_eq!(token.len(), 12);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        answer["url"],
        format!("{}/session/{token}", sim.base_url()).as_str()
    );
    assert_eq!(answer["vendor_data"], "user-1");
    assert_eq!(
        answer["metadata"],
        json!({"gateway_id": "ver_1"}),
        "a JSON string is echoed as an object"
    );
    assert_eq!(answer["status"], "Not Started");
    assert_eq!(answer["workflow_id"], WORKFLOW);
    assert_eq!(answer["workflow_version"], 1);
    assert_eq!(answer["callback"], "https://app.example/done");
    assert_eq!(answer["session_kind"], "user");
    assert_eq!(answer.as_object().unwrap().len(), 11);
    assert_eq!(sim.create_bodies(), vec![body]);
    assert_eq!(sim.session_ids(), vec![id.to_owned()]);

    let bare = create(&sim, json!({"workflow_id": WORKFLOW})).await;
    assert_eq!(bare["session_number"], 1001);
    for key in ["vendor_data", "metadata", "callback"] {
        assert_eq!(bare[key], Value::Null, "{key}");
    }
    assert_eq!(sim.sessions_created(), 2);
}

#[tokio::test]
async fn create_refusals_use_didit_codes_and_never_echo_values() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let not_json = client()
        .post(format!("{}/v3/session/", sim.base_url()))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        not_json.json::<Value>().await.unwrap()["code"],
        "parse_error"
    );

    let (status, body) = call(
        &sim,
        "POST",
        "/v3/session/",
        Some(json!({"vendor_data": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_request");
    assert_eq!(body["workflow_id"], json!(["This field is required."]));
    assert!(body["detail"].is_string());

    let (status, body) = call(
        &sim,
        "POST",
        "/v3/session/",
        Some(json!({"workflow_id": "00000000-0000-4000-8000-000000000000"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "workflow_not_found");

    let secret = "SECRET-VALUE-1234";
    let long = "v".repeat(257);
    let big = "x".repeat(11 * 1024);
    let refused = [
        (json!({"workflow_id": secret}), "workflow_id"),
        (
            json!({"workflow_id": WORKFLOW, "vendor_data": long}),
            "vendor_data",
        ),
        (
            json!({"workflow_id": WORKFLOW, "vendor_data": 7}),
            "vendor_data",
        ),
        (
            json!({"workflow_id": WORKFLOW, "callback": secret}),
            "callback",
        ),
        (
            json!({"workflow_id": WORKFLOW, "metadata": [secret]}),
            "metadata",
        ),
        (
            json!({"workflow_id": WORKFLOW, "metadata": {"note": big}}),
            "metadata",
        ),
        (
            json!({"workflow_id": WORKFLOW, "expected_details": secret}),
            "expected_details",
        ),
    ];
    for (request, field) in refused {
        let (status, body) = call(&sim, "POST", "/v3/session/", Some(request)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(body["code"], "invalid_request", "{field}");
        assert!(body[field].is_array(), "{field}: {body}");
        assert!(!body.to_string().contains(secret), "{body}");
    }
    let (status, body) = call(
        &sim,
        "POST",
        "/v3/session/",
        Some(json!({"workflow_id": WORKFLOW, "expected_details": {"date_of_birth": "15/05/1990"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["expected_details"]["date_of_birth"].is_array(),
        "{body}"
    );
    assert!(!body.to_string().contains("15/05/1990"));
    assert_eq!(sim.sessions_created(), 0);
    assert_eq!(
        sim.create_bodies().len(),
        10,
        "every JSON create body is kept"
    );
}

#[tokio::test]
async fn unfinished_session_is_answered_again_for_the_same_vendor_data() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let first = create(
        &sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": "user-7", "metadata": {"try": 1},
               "callback": "https://app.example/one"}),
    )
    .await;
    let again = create(
        &sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": "user-7", "metadata": {"try": 2},
               "callback": "https://app.example/two"}),
    )
    .await;
    assert_eq!(again["session_id"], first["session_id"]);
    assert_eq!(again["session_token"], first["session_token"]);
    assert_eq!(again["metadata"], json!({"try": 2}));
    assert_eq!(again["callback"], "https://app.example/two");
    assert_eq!(sim.sessions_created(), 1);
    let id = first["session_id"].as_str().unwrap();
    assert_eq!(sim.session(id).unwrap()["metadata"], json!({"try": 2}));

    // Still unfinished while in progress or awaiting the user.
    sim.finish(id, Outcome::InProgress).await.unwrap();
    let in_progress = new_session(&sim, "user-7").await;
    assert_eq!(in_progress, id);
    // Another vendor_data, or none, is another session.
    assert_ne!(new_session(&sim, "user-8").await, id);
    create(&sim, json!({"workflow_id": WORKFLOW})).await;
    assert_eq!(sim.sessions_created(), 3);

    // Once it has ended, a new one.
    sim.finish(id, Outcome::Approved).await.unwrap();
    let after = new_session(&sim, "user-7").await;
    assert_ne!(after, id);
    assert_eq!(sim.sessions_created(), 4);
    assert_eq!(sim.session_ids()[3], after);
}

#[tokio::test]
async fn decision_arrays_stay_null_until_their_check_has_run() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let id = create(
        &sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": "user-3",
               "expected_details": {"first_name": "Ana", "last_name": "Gómez",
                                    "date_of_birth": "1985-02-03", "nationality": "CHL",
                                    "identification_number": "12345678"}}),
    )
    .await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let arrays = [
        "id_verifications",
        "liveness_checks",
        "face_matches",
        "database_validations",
    ];
    let (status, fresh) = decision(&sim, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fresh["status"], "Not Started");
    assert_eq!(fresh["environment"], "sandbox");
    assert_eq!(fresh["session_kind"], "user");
    assert_eq!(fresh["session_number"], 1000);
    assert_eq!(fresh["workflow_id"], WORKFLOW);
    assert_eq!(fresh["vendor_data"], "user-3");
    assert_eq!(fresh["reviews"], json!([]));
    assert_eq!(
        fresh["features"],
        json!([
            "ID_VERIFICATION",
            "LIVENESS",
            "FACE_MATCH",
            "DATABASE_VALIDATION"
        ])
    );
    assert_eq!(fresh["expected_details"]["nationality"], "CHL");
    chrono::DateTime::parse_from_rfc3339(fresh["created_at"].as_str().unwrap()).unwrap();
    for array in arrays {
        assert_eq!(fresh[array], Value::Null, "{array}");
    }
    assert_eq!(sim.session(&id).unwrap(), fresh);

    sim.finish(&id, Outcome::InProgress).await.unwrap();
    let (_, started) = decision(&sim, &id).await;
    assert_eq!(started["status"], "In Progress");
    let doc = &started["id_verifications"][0];
    assert_eq!(doc["node_id"], "feature_ocr");
    assert_eq!(doc["status"], "Approved");
    assert_eq!(doc["document_type"], "Identity Card");
    assert_eq!(doc["document_number"], "12345678");
    assert_eq!(doc["first_name"], "Ana");
    assert_eq!(doc["full_name"], "Ana Gómez");
    assert_eq!(doc["date_of_birth"], "1985-02-03");
    assert!(doc["age"].as_u64().unwrap() >= 40);
    assert_eq!(doc["nationality"], "CHL");
    assert_eq!(doc["issuing_state"], "CHL");
    assert_eq!(doc["issuing_state_name"], "Chile");
    assert_eq!(doc["gender"], "U");
    assert_eq!(doc["address"], Value::Null);
    assert_eq!(doc["warnings"], json!([]));
    let front = doc["front_image"].as_str().unwrap();
    assert!(front.starts_with(&format!("{}/_sandbox/media/{id}/", sim.base_url())));
    let image = client().get(front).send().await.unwrap();
    assert_eq!(image.status(), StatusCode::OK);
    assert_eq!(image.headers()["content-type"], "image/jpeg");
    for array in &arrays[1..] {
        assert_eq!(started[*array], Value::Null, "{array}");
    }

    sim.finish(&id, Outcome::InReview).await.unwrap();
    let (_, review) = decision(&sim, &id).await;
    assert_eq!(review["status"], "In Review");
    for array in arrays {
        assert!(review[array].is_array(), "{array}");
    }
    let face = &review["face_matches"][0];
    assert_eq!(face["status"], "In Review");
    assert_eq!(face["score"], 62);
    assert_eq!(face["warnings"][0]["risk"], "LOW_FACE_MATCH_SIMILARITY");
    assert_eq!(face["warnings"][0]["log_type"], "warning");
    assert_eq!(face["warnings"][0]["feature"], "FACE_MATCH");
    assert_eq!(face["warnings"][0]["node_id"], "feature_face");

    sim.finish(&id, Outcome::Approved).await.unwrap();
    let (_, approved) = decision(&sim, &id).await;
    assert_eq!(approved["status"], "Approved");
    assert_eq!(approved["face_matches"][0]["status"], "Approved");
    assert_eq!(approved["face_matches"][0]["score"], 96.15);
    assert!(approved["face_matches"][0]["score"].is_f64());
    assert_eq!(approved["liveness_checks"][0]["score"], 98.5);
    assert_eq!(approved["liveness_checks"][0]["method"], "PASSIVE");
    assert_eq!(
        approved["database_validations"][0]["match_type"],
        "full_match"
    );
    assert_eq!(
        approved["database_validations"][0]["validation_type"],
        "1x1"
    );
    assert_ne!(
        approved["id_verifications"][0]["front_image"],
        started["id_verifications"][0]["front_image"],
        "media links are signed afresh"
    );

    sim.finish(&id, Outcome::Rejected).await.unwrap();
    let (_, declined) = decision(&sim, &id).await;
    assert_eq!(declined["status"], "Declined");
    assert_eq!(declined["id_verifications"][0]["status"], "Approved");
    assert_eq!(declined["liveness_checks"][0]["status"], "Approved");
    assert_eq!(declined["face_matches"][0]["status"], "Declined");
    assert_eq!(declined["face_matches"][0]["score"], 12);
    assert_eq!(
        declined["face_matches"][0]["warnings"][0]["log_type"],
        "error"
    );
    assert_eq!(declined["database_validations"][0]["status"], "Approved");

    sim.finish(&id, Outcome::Abandoned).await.unwrap();
    let (_, abandoned) = decision(&sim, &id).await;
    assert_eq!(abandoned["id_verifications"][0]["status"], "Not Finished");
    assert_eq!(abandoned["face_matches"], Value::Null);

    sim.set_status(&id, "Kyc Expired").await.unwrap();
    let (_, lapsed) = decision(&sim, &id).await;
    assert_eq!(lapsed["status"], "Kyc Expired");
    assert_eq!(lapsed["face_matches"][0]["status"], "Approved");

    sim.finish(&id, Outcome::Expired).await.unwrap();
    let (_, expired) = decision(&sim, &id).await;
    for array in arrays {
        assert_eq!(expired[array], Value::Null, "{array}");
    }

    let (status, body) = decision(&sim, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Not found.", "code": "not_found"}));
}

#[tokio::test]
async fn update_status_follows_didit_rules() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    sim.set_webhook_url(Some(receiver.url.clone()));
    let id = new_session(&sim, "user-5").await;

    // Not Started, In Progress, Expired and Awaiting User cannot be changed.
    for status in ["Not Started", "In Progress", "Expired", "Awaiting User"] {
        sim.set_status(&id, status).await.unwrap();
        receiver.next().await;
        let (code, body) = update(&sim, &id, json!({"new_status": "Approved"})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
        assert_eq!(body["code"], "invalid_status_transition", "{status}");
    }

    sim.finish(&id, Outcome::InReview).await.unwrap();
    receiver.next().await;
    for wrong in [
        json!({"new_status": "In Review"}),
        json!({"new_status": "approved"}),
        json!({}),
    ] {
        let (code, body) = update(&sim, &id, wrong.clone()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{wrong}");
        assert_eq!(body["code"], "invalid_new_status", "{wrong}");
    }
    let (code, body) = update(&sim, &id, json!({"new_status": "Resubmitted"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["nodes_to_resubmit"].is_array(), "{body}");
    let (code, _) = update(
        &sim,
        &id,
        json!({"new_status": "Resubmitted", "nodes_to_resubmit": []}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(sim.webhooks_attempted(), 5, "no refusal sends a webhook");

    // A real change: 200 with the id only, and a status.updated webhook.
    let (code, body) = update(
        &sim,
        &id,
        json!({"new_status": "Approved", "comment": "checked by hand"}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, json!({"session_id": id}));
    let hook = verified(&receiver.next().await);
    assert_eq!(hook["status"], "Approved");
    assert_eq!(hook["webhook_type"], "status.updated");
    assert_eq!(hook["decision"]["status"], "Approved");
    assert_eq!(sim.session(&id).unwrap()["status"], "Approved");

    // The same status again: nothing happens.
    let (code, body) = update(&sim, &id, json!({"new_status": "Approved"})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, json!({"session_id": id}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!receiver.has_pending());
    assert_eq!(sim.webhooks_attempted(), 6);

    let nodes = json!([{"node_id": "feature_face", "feature": "FACE_MATCH"}]);
    let (code, _) = update(
        &sim,
        &id,
        json!({"new_status": "Resubmitted", "nodes_to_resubmit": nodes}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(verified(&receiver.next().await)["status"], "Resubmitted");
    let (code, body) = update(
        &sim,
        &id,
        json!({"new_status": "Resubmitted", "nodes_to_resubmit": nodes}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "The new status is the same as the current status."
    );
    let (code, _) = update(&sim, &id, json!({"new_status": "Declined"})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(verified(&receiver.next().await)["status"], "Declined");

    let (code, body) = update(
        &sim,
        "00000000-0000-4000-8000-000000000000",
        json!({"new_status": "Approved"}),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn deleted_session_is_gone_everywhere() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let id = new_session(&sim, "user-9").await;
    sim.finish(&id, Outcome::Approved).await.unwrap();
    let path = format!("/v3/session/{id}/delete/");
    let (status, body) = call(&sim, "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null, "an empty body");
    let (status, body) = decision(&sim, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    let (status, _) = call(&sim, "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not idempotent");
    let (status, _) = update(&sim, &id, json!({"new_status": "Declined"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(&sim, "GET", "/v3/sessions/?vendor_data=user-9", None).await;
    assert_eq!(list["count"], 0);
    assert_eq!(sim.session(&id), None);
    assert_eq!(sim.session_ids(), vec![id.clone()]);
    assert_eq!(
        sim.finish(&id, Outcome::Rejected).await,
        Err(SandboxError::NotFound)
    );
    // A deleted session is never answered again under the reuse rule.
    assert_ne!(new_session(&sim, "user-9").await, id);
}

#[tokio::test]
async fn list_filters_by_vendor_data_newest_first() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let first = new_session(&sim, "user-1").await;
    sim.finish(&first, Outcome::Approved).await.unwrap();
    let other = new_session(&sim, "user-2").await;
    let second = new_session(&sim, "user-1").await;

    let (status, list) = call(&sim, "GET", "/v3/sessions/?vendor_data=user-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 2);
    assert_eq!(list["next"], Value::Null);
    assert_eq!(list["previous"], Value::Null);
    let ids: Vec<&str> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    let row = &list["results"][1];
    assert_eq!(row["session_number"], 1000);
    assert_eq!(row["status"], "Approved");
    assert_eq!(row["vendor_data"], "user-1");
    assert_eq!(row["session_kind"], "user");
    assert!(row["session_url"].as_str().unwrap().contains("/session/"));
    assert_eq!(
        row["features"][2],
        json!({"feature": "FACE_MATCH", "status": "Approved"})
    );
    assert_eq!(list["results"][0]["features"][0]["status"], "Not Started");

    let (_, all) = call(&sim, "GET", "/v3/sessions/", None).await;
    assert_eq!(all["count"], 3);
    assert_eq!(all["results"][0]["session_number"], 1002);
    assert_eq!(all["results"][1]["session_id"], other.as_str());
    let (_, page) = call(&sim, "GET", "/v3/sessions/?limit=1&offset=1", None).await;
    assert_eq!(page["count"], 3);
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    assert_eq!(page["results"][0]["session_id"], other.as_str());
    let (status, _) = call(&sim, "GET", "/v3/sessions/?limit=many", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn webhooks_carry_four_verifiable_signatures() {
    let config = DiditSimConfig::default();
    let application_id = config.application_id.clone();
    let sim = DiditSim::start(config).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    let id = create(
        &sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": "user-4", "metadata": {"gateway_id": "ver_4"},
               "expected_details": {"first_name": "José", "last_name": "北京"}}),
    )
    .await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without a destination, no webhook.
    sim.finish(&id, Outcome::InProgress).await.unwrap();
    assert_eq!(sim.webhooks_attempted(), 0);
    sim.set_webhook_url(Some(receiver.url.clone()));

    sim.finish(&id, Outcome::Approved).await.unwrap();
    assert!(receiver.has_pending(), "finish returns after the delivery");
    let hook = receiver.next().await;
    let body = verified(&hook);
    assert_ne!(
        header(&hook, "x-signature"),
        header(&hook, "x-signature-v2"),
        "the names are not ASCII"
    );
    assert!(
        std::str::from_utf8(&hook.body)
            .unwrap()
            .contains("Jos\\u00e9")
    );
    uuid::Uuid::parse_str(body["event_id"].as_str().unwrap()).unwrap();
    assert_eq!(body["webhook_type"], "status.updated");
    assert_eq!(body["application_id"], application_id.as_str());
    assert_eq!(body["environment"], "sandbox");
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["status"], "Approved");
    assert_eq!(body["workflow_id"], WORKFLOW);
    assert_eq!(body["workflow_version"], 1);
    assert_eq!(body["vendor_data"], "user-4");
    assert_eq!(body["metadata"], json!({"gateway_id": "ver_4"}));
    assert!(body["created_at"].as_i64().unwrap() <= body["timestamp"].as_i64().unwrap());
    assert_eq!(body["decision"], sim.session(&id).unwrap());
    assert_eq!(
        body["decision"]["id_verifications"][0]["first_name"],
        "José"
    );

    // In progress: no decision. A session without vendor_data or metadata has neither key.
    let bare = create(&sim, json!({"workflow_id": WORKFLOW})).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.finish(&bare, Outcome::InProgress).await.unwrap();
    let body = verified(&receiver.next().await);
    assert_eq!(body["status"], "In Progress");
    for key in ["decision", "vendor_data", "metadata"] {
        assert!(body.get(key).is_none(), "{key}");
    }
    assert!(!receiver.has_pending());

    // data.updated: a reviewer edited the data; the status stays.
    sim.send_data_updated(&id).await.unwrap();
    let body = verified(&receiver.next().await);
    assert_eq!(body["webhook_type"], "data.updated");
    assert_eq!(body["status"], "Approved");
    assert!(body["decision"].is_object());
    assert_eq!(sim.webhooks_attempted(), 3);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_fresh_signatures() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let (url, mut hooks) = scripted_receiver(vec![500, 503]).await;
    sim.set_webhook_url(Some(url));
    let id = new_session(&sim, "user-6").await;
    sim.finish(&id, Outcome::Approved).await.unwrap();
    assert_eq!(
        sim.webhooks_attempted(),
        1,
        "finish waits for the first attempt only"
    );
    let attempts: Vec<Value> = [
        next_hook(&mut hooks).await,
        next_hook(&mut hooks).await,
        next_hook(&mut hooks).await,
    ]
    .iter()
    .map(verified)
    .collect();
    for attempt in &attempts[1..] {
        assert_eq!(
            attempt["event_id"], attempts[0]["event_id"],
            "the same event"
        );
        assert_eq!(attempt["status"], "Approved");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sim.webhooks_attempted(), 3, "accepted at the third attempt");
    assert!(hooks.try_recv().is_err());

    // A 404 is retried too; a 400 is not.
    let (url, mut hooks) = scripted_receiver(vec![404, 400]).await;
    sim.set_webhook_url(Some(url));
    sim.finish(&id, Outcome::Rejected).await.unwrap();
    next_hook(&mut hooks).await;
    next_hook(&mut hooks).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sim.webhooks_attempted(), 5);
    assert!(hooks.try_recv().is_err());
}

#[tokio::test]
async fn retries_for_a_deleted_session_are_dropped() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let (url, mut hooks) = scripted_receiver(vec![500; 10]).await;
    sim.set_webhook_url(Some(url));
    let id = new_session(&sim, "user-10").await;
    sim.finish(&id, Outcome::Approved).await.unwrap();
    next_hook(&mut hooks).await;
    let (status, _) = call(&sim, "DELETE", &format!("/v3/session/{id}/delete/"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(sim.webhooks_attempted(), 1);
    assert!(hooks.try_recv().is_err());
    assert_eq!(
        sim.send_webhook_again(&id, 0).await,
        Err(SandboxError::NotFound)
    );
}

#[tokio::test]
async fn webhook_sent_again_arrives_after_a_newer_one_freshly_stamped() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    sim.set_webhook_url(Some(receiver.url.clone()));
    let id = new_session(&sim, "user-11").await;
    sim.finish(&id, Outcome::InReview).await.unwrap();
    let review = verified(&receiver.next().await);
    sim.finish(&id, Outcome::Approved).await.unwrap();
    let approved = verified(&receiver.next().await);

    // A duplicate of the latest, then the older one after it: same events, signed now.
    sim.send_webhook_again(&id, 0).await.unwrap();
    let duplicate = verified(&receiver.next().await);
    assert_eq!(duplicate["event_id"], approved["event_id"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.send_webhook_again(&id, 1).await.unwrap();
    let stale = verified(&receiver.next().await);
    assert_eq!(stale["status"], "In Review");
    assert_eq!(stale["event_id"], review["event_id"]);
    assert!(stale["timestamp"].as_i64() > review["timestamp"].as_i64());
    assert_eq!(stale["decision"], review["decision"]);
    assert_eq!(
        sim.send_webhook_again(&id, 2).await,
        Err(SandboxError::NotFound)
    );
    assert_eq!(sim.webhooks_attempted(), 4);
}

#[tokio::test]
async fn faults_apply_to_the_api_with_retry_after_on_429() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    sim.inject(FaultRule::once(Fault::Status(429)).on_path("POST /v3/session/"));
    let response = client()
        .post(format!("{}/v3/session/", sim.base_url()))
        .header("x-api-key", KEY)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"workflow_id": WORKFLOW}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(sim.sessions_created(), 0);
    assert_eq!(sim.requests_seen("POST /v3/session/"), 1);
    assert_eq!(
        sim.traceparents("/v3/session/"),
        vec!["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()]
    );
    new_session(&sim, "user-12").await;

    sim.inject(FaultRule::always(Fault::Status(503)).on_path("/decision/"));
    let id = sim.session_ids()[0].clone();
    let (status, _) = decision(&sim, &id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    sim.clear_faults();
    let (status, _) = decision(&sim, &id).await;
    assert_eq!(status, StatusCode::OK);

    // The control surface is never faulted.
    sim.inject(FaultRule::always(Fault::Status(500)));
    let page = client()
        .post(format!("{}/_sandbox/finish/{id}", sim.base_url()))
        .json(&json!({"outcome": "approved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

#[test]
fn canonical_encoder_matches_didit_published_vectors() {
    let vectors: Value = serde_json::from_str(include_str!(
        "../../adapters-didit/tests/fixtures/webhook-signatures.json"
    ))
    .unwrap();
    let secret = vectors["secret"].as_str().unwrap();
    let timestamp = vectors["timestamp"].as_i64().unwrap();
    let session_id = vectors["session_id"].as_str().unwrap();
    let cases = vectors["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 8);
    for (name, case) in cases {
        let body = case["body"].as_str().unwrap();
        let signatures = &case["signatures"];
        let payload: Value = serde_json::from_str(body).unwrap();
        let escaped = DiditSim::canonical_json(&payload, true);
        assert_eq!(escaped, body, "{name}: byte for byte");
        assert_eq!(
            hmac_hex(secret, escaped.as_bytes()),
            signatures["raw"],
            "{name}"
        );
        let unescaped = DiditSim::canonical_json(&payload, false);
        assert_eq!(
            hmac_hex(secret, unescaped.as_bytes()),
            signatures["v2"],
            "{name}"
        );
        let simple = format!(
            "{timestamp}:{session_id}:{}:{}",
            payload["status"].as_str().unwrap(),
            payload["webhook_type"].as_str().unwrap()
        );
        assert_eq!(
            hmac_hex(secret, simple.as_bytes()),
            signatures["simple"],
            "{name}"
        );
    }
    // The generator's source had the floats 100.0 and 0.0, which Didit writes as ints.
    let mut floats: Value =
        serde_json::from_str(cases["float_scores"]["body"].as_str().unwrap()).unwrap();
    floats["decision"]["liveness_checks"][0]["threshold"] = json!(100.0);
    floats["decision"]["face_matches"][0]["threshold"] = json!(0.0);
    assert!(floats["decision"]["liveness_checks"][0]["threshold"].is_f64());
    assert_eq!(
        DiditSim::canonical_json(&floats, true),
        cases["float_scores"]["body"].as_str().unwrap()
    );
    let unicode: Value =
        serde_json::from_str(cases["unicode_names"]["body"].as_str().unwrap()).unwrap();
    assert!(DiditSim::canonical_json(&unicode, false).contains("\"first_name\":\"José\""));
}

#[tokio::test]
async fn autopilot_ends_a_new_session_by_itself() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    sim.set_webhook_url(Some(receiver.url.clone()));
    sim.set_autopilot(Some(Autopilot {
        approve_percent: 100,
        decision_ms: 300,
        approve_ms: None,
        error_percent: 0,
    }));
    let id = new_session(&sim, "user-13").await;
    // Answered again while unfinished: not a new session for the autopilot.
    assert_eq!(new_session(&sim, "user-13").await, id);
    let hook = verified(&receiver.next().await);
    assert_eq!(hook["session_id"], id.as_str());
    assert_eq!(hook["status"], "Approved");
    assert_eq!(sim.session(&id).unwrap()["status"], "Approved");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!receiver.has_pending(), "one session, one ending");

    sim.set_autopilot(Some(Autopilot {
        approve_percent: 0,
        decision_ms: 10,
        approve_ms: None,
        error_percent: 100,
    }));
    let (status, body) = call(
        &sim,
        "POST",
        "/v3/session/",
        Some(json!({"workflow_id": WORKFLOW, "vendor_data": "user-14"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(sim.sessions_created(), 1);
}

#[tokio::test]
async fn cancel_and_unknown_statuses_are_unsupported() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let id = new_session(&sim, "user-15").await;
    assert!(matches!(
        sim.finish(&id, Outcome::Cancelled).await,
        Err(SandboxError::Unsupported(_))
    ));
    assert!(matches!(
        sim.set_status(&id, "Cancelled").await,
        Err(SandboxError::Unsupported(_))
    ));
    assert!(matches!(
        sim.set_status(&id, "approved").await,
        Err(SandboxError::Unsupported(_)),
    ));
    assert_eq!(sim.session(&id).unwrap()["status"], "Not Started");
    assert_eq!(
        sim.finish("nope", Outcome::Approved).await,
        Err(SandboxError::NotFound)
    );
    let refused = client()
        .post(format!("{}/_sandbox/finish/{id}", sim.base_url()))
        .json(&json!({"outcome": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn session_link_opens_the_page_and_finishes_by_token() {
    let sim = DiditSim::start(DiditSimConfig::default()).await.unwrap();
    let mut receiver = WebhookReceiver::start().await;
    sim.set_webhook_url(Some(receiver.url.clone()));
    let created = create(
        &sim,
        json!({"workflow_id": WORKFLOW, "vendor_data": "user-16"}),
    )
    .await;
    let id = created["session_id"].as_str().unwrap();
    let link = created["url"].as_str().unwrap();

    let html = client()
        .get(link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sandbox Didit verification"));
    assert!(html.contains("Not Started"));
    assert!(html.contains(&format!("action=\"/_sandbox/finish/{id}\"")));
    for value in [
        "approved",
        "rejected",
        "in_review",
        "in_progress",
        "abandoned",
        "expired",
    ] {
        assert!(
            html.contains(&format!("name=\"outcome\" value=\"{value}\"")),
            "{value}"
        );
    }
    assert!(!html.contains("value=\"cancelled\""), "Didit has no cancel");

    let done = client()
        .post(link)
        .json(&json!({"outcome": "rejected"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(
        done.json::<Value>().await.unwrap(),
        json!({"id": id, "outcome": "rejected"})
    );
    assert_eq!(verified(&receiver.next().await)["status"], "Declined");

    let form = client()
        .post(format!("{}/_sandbox/finish/{id}", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=in_review")
        .send()
        .await
        .unwrap();
    assert!(form.text().await.unwrap().contains("Done: in_review"));
    assert_eq!(sim.session(id).unwrap()["status"], "In Review");

    let missing = client()
        .get(format!("{}/session/NOSUCHTOKEN1", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
