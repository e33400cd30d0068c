//! The gu1 simulator: person entities (create, and the lookup by `taxId` or `externalId`), KYC
//! validations (create, get, sync, cancel, current, status) and the HMAC-signed webhook.

use crate::{
    ApiTraffic, FaultRule, Outcome, Piloted, SandboxError, SentWebhooks, ServerTask,
    fault_control_routes, fault_middleware, finish_response, lock, now_rfc3339, pages,
    read_finish_request, webhook_client,
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::{
    fmt,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

/// Largest accepted validation `metadata`, serialized (gu1 documents 10 KB).
const MAX_METADATA_BYTES: usize = 10 * 1024;

/// Statuses after which a validation never changes (cancel answers INVALID_STATUS).
const FINAL_STATUSES: [&str; 5] = ["approved", "rejected", "expired", "abandoned", "cancelled"];

/// Credentials the gu1 simulator accepts and signs with, so a test can configure an adapter with
/// the same values.
#[derive(Clone)]
pub struct Gu1SimConfig {
    /// The API key accepted in `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// The HMAC-SHA256 key webhooks are signed with (`X-Webhook-Signature`).
    pub webhook_secret: String,
    /// The `organizationId` put in validations and webhooks.
    pub organization_id: String,
}

impl Default for Gu1SimConfig {
    fn default() -> Self {
        Gu1SimConfig {
            api_key: "gk_sandbox_key".into(),
            webhook_secret: "gu1-sandbox-webhook-secret".into(),
            organization_id: "org_sandbox".into(),
        }
    }
}

impl fmt::Debug for Gu1SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gu1SimConfig")
            .field("api_key", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("organization_id", &self.organization_id)
            .finish()
    }
}

/// A running gu1 simulator on `127.0.0.1`. Dropping it stops the server.
pub struct Gu1Sim {
    shared: Arc<Shared>,
    _server: ServerTask,
}

impl fmt::Debug for Gu1Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gu1Sim")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: Gu1SimConfig,
    base_url: String,
    traffic: ApiTraffic,
    http: reqwest::Client,
    state: Mutex<State_>,
    webhooks: SentWebhooks,
}

#[derive(Default)]
struct State_ {
    entities: Vec<EntityRecord>,
    validations: Vec<ValidationRecord>,
}

struct EntityRecord {
    id: String,
    tax_id: Option<String>,
    /// The entity as stored: the create body plus id and createdAt.
    data: Map<String, Value>,
}

impl EntityRecord {
    /// A field of `entityData.person`, or a sandbox default.
    fn person(&self, key: &str, default: &str) -> String {
        self.data
            .get("entityData")
            .and_then(|d| d.get("person"))
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    }
}

struct ValidationRecord {
    data: Map<String, Value>,
}

impl ValidationRecord {
    fn id(&self) -> &str {
        self.data.get("id").and_then(Value::as_str).unwrap_or("")
    }
    fn entity_id(&self) -> &str {
        self.data
            .get("entityId")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    fn status(&self) -> &str {
        self.data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("pending")
    }
}

impl State_ {
    fn validation_mut(&mut self, id: &str) -> Option<&mut ValidationRecord> {
        self.validations.iter_mut().find(|v| v.id() == id)
    }
}

impl Gu1Sim {
    /// Starts the simulator on `127.0.0.1:0`.
    pub async fn start(config: Gu1SimConfig) -> std::io::Result<Gu1Sim> {
        let (listener, base_url) = ServerTask::bind().await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            config,
            base_url,
            traffic: ApiTraffic::new(shutdown_rx),
            http: webhook_client()?,
            state: Mutex::default(),
            webhooks: SentWebhooks::default(),
        });
        let api = Router::new()
            .route("/api/entities", post(create_entity).get(find_entities))
            .route("/api/kyc/validations", post(create_validation))
            .route("/api/kyc/validations/{id}", get(get_validation))
            .route("/api/kyc/validations/{id}/sync", post(sync_validation))
            .route("/api/kyc/validations/{id}/cancel", post(cancel_validation))
            .route(
                "/api/kyc/validations/{id}/approve",
                post(approve_validation),
            )
            .route("/api/kyc/validations/{id}/reject", post(reject_validation))
            .route("/api/kyc/entities/{id}/current", get(current_validation))
            .route("/api/kyc/entities/{id}/status", get(entity_status))
            .route_layer(middleware::from_fn_with_state(
                shared.clone(),
                require_api_key,
            ))
            .layer(middleware::from_fn_with_state(
                shared.traffic.clone(),
                fault_middleware,
            ));
        let control = Router::new()
            .route("/session/{id}", get(session_page).post(finish_route))
            .route("/_sandbox/finish/{id}", post(finish_route));
        let router = api
            .merge(control)
            .with_state(shared.clone())
            .merge(fault_control_routes(shared.traffic.clone()));
        let server = ServerTask::spawn(listener, router, shutdown_tx, "gu1");
        Ok(Gu1Sim {
            shared,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`, gu1's `base_url` (routes live under `/api`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Validations actually created.
    pub fn validations_created(&self) -> usize {
        lock(&self.shared.state).validations.len()
    }

    /// Entities actually created (a 409 on a repeated taxId creates none).
    pub fn entities_created(&self) -> usize {
        lock(&self.shared.state).entities.len()
    }

    /// The stored validation (what GET returns), to inspect what a client sent.
    pub fn validation(&self, id: &str) -> Option<Value> {
        lock(&self.shared.state)
            .validation_mut(id)
            .map(|v| Value::Object(v.data.clone()))
    }

    /// The ids of the validations created, oldest first.
    pub fn validation_ids(&self) -> Vec<String> {
        lock(&self.shared.state)
            .validations
            .iter()
            .map(|v| v.id().to_owned())
            .collect()
    }

    /// The ids of the entities created, oldest first.
    pub fn entity_ids(&self) -> Vec<String> {
        lock(&self.shared.state)
            .entities
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    /// The stored entity (create body plus `id` and `createdAt`), to inspect what a client sent.
    pub fn entity(&self, id: &str) -> Option<Value> {
        lock(&self.shared.state)
            .entities
            .iter()
            .find(|e| e.id == id)
            .map(|e| Value::Object(e.data.clone()))
    }

    /// Sets the validation's status to `outcome` (with a decision for approved/rejected), then
    /// POSTs the signed webhook to its `webhookUrl` if it has one and waits for that attempt (a
    /// failed delivery is only logged).
    pub async fn finish(&self, id: &str, outcome: Outcome) -> Result<(), SandboxError> {
        finish(&self.shared, id, outcome).await
    }

    /// Sends again a webhook already sent about a validation: `back` 0 is the latest one (a
    /// duplicate), 1 the one before it (arriving after a newer one), and so on.
    pub async fn send_webhook_again(&self, id: &str, back: usize) -> Result<(), SandboxError> {
        self.shared
            .webhooks
            .send_again(&self.shared.http, "gu1", id, back)
            .await
    }

    /// Adds a fault to the `/api` routes; rules apply in insertion order.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.traffic.inject(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.traffic.clear_faults();
    }

    /// Ends new validations by themselves, or (with `None`) stops doing so.
    pub fn set_autopilot(&self, autopilot: Option<crate::Autopilot>) {
        self.shared.traffic.set_autopilot(autopilot);
    }

    /// API requests (faulted ones included) whose request line, `METHOD /path?query`, contains
    /// `path_contains`.
    pub fn requests_seen(&self, path_contains: &str) -> usize {
        self.shared.traffic.requests_seen(path_contains)
    }

    /// The W3C `traceparent` headers of API requests whose request line contains
    /// `path_contains`, to check that a caller's trace reaches the provider.
    pub fn traceparents(&self, path_contains: &str) -> Vec<String> {
        self.shared.traffic.traceparents(path_contains)
    }
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`, as sent in `X-Webhook-Signature`.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A fresh, unguessable-looking image URL, as gu1 hands out (they expire; sync renews them).
fn image_url(base_url: &str, validation_id: &str, name: &str) -> String {
    format!(
        "{base_url}/_sandbox/images/{validation_id}/{name}.jpg?sig={}",
        uuid::Uuid::new_v4().simple()
    )
}

/// The decision object (Didit's shape, as gu1 passes it on) for an approved or rejected check.
fn decision(base_url: &str, validation_id: &str, entity: &EntityRecord, approved: bool) -> Value {
    let verdict = if approved { "Approved" } else { "Declined" };
    let face_match = if approved {
        json!({"status": "Approved", "score": 95})
    } else {
        json!({"status": "Declined", "score": 12})
    };
    json!({
        "status": verdict,
        "features": ["id_verification", "liveness", "face_match"],
        "id_verification": {
            "status": "Approved",
            "document_type": "Identity Card",
            "first_name": entity.person("firstName", "SANDBOX"),
            "last_name": entity.person("lastName", "PERSON"),
            "date_of_birth": entity.person("dateOfBirth", "1990-05-20"),
            "nationality": entity.person("nationality", "AR"),
            "front_image": image_url(base_url, validation_id, "front"),
            "portrait_image": image_url(base_url, validation_id, "portrait"),
        },
        "liveness": {
            "status": "Approved",
            "score": 98,
            "method": "PASSIVE",
            "reference_image": image_url(base_url, validation_id, "reference"),
        },
        "face_match": face_match,
    })
}

/// Sets the validation's status and sends the signed webhook.
async fn finish(shared: &Shared, id: &str, outcome: Outcome) -> Result<(), SandboxError> {
    let (webhook_url, body) = {
        let mut guard = lock(&shared.state);
        let state = &mut *guard;
        let validation = state
            .validations
            .iter_mut()
            .find(|v| v.id() == id)
            .ok_or(SandboxError::NotFound)?;
        let entity = state
            .entities
            .iter()
            .find(|e| e.id == validation.entity_id());
        let now = now_rfc3339();
        let data = &mut validation.data;
        data.insert("status".into(), outcome.as_str().into());
        data.insert("updatedAt".into(), now.clone().into());
        match (outcome, entity) {
            (Outcome::Approved | Outcome::Rejected, Some(entity)) => {
                let approved = outcome == Outcome::Approved;
                data.insert(
                    "decision".into(),
                    decision(&shared.base_url, id, entity, approved),
                );
                data.insert(
                    "extractedData".into(),
                    json!({
                        "firstName": entity.person("firstName", "SANDBOX"),
                        "lastName": entity.person("lastName", "PERSON"),
                        "dateOfBirth": entity.person("dateOfBirth", "1990-05-20"),
                        "nationality": entity.person("nationality", "AR"),
                        "documentNumber": entity.tax_id.clone().unwrap_or_else(|| "A1234567".into()),
                        "documentType": "Identity Card",
                    }),
                );
                let verified_at = if approved { json!(now) } else { Value::Null };
                data.insert("verifiedAt".into(), verified_at);
            }
            _ => {
                data.remove("decision");
                data.remove("extractedData");
                data.insert("verifiedAt".into(), Value::Null);
            }
        }
        let envelope = json!({
            "event": format!("kyc.validation_{}", outcome.as_str()),
            "timestamp": now,
            "organizationId": shared.config.organization_id,
            "payload": Value::Object(data.clone()),
        });
        let webhook_url = data
            .get("webhookUrl")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(str::to_owned);
        (webhook_url, envelope)
    };
    tracing::info!(provider = "gu1", validation = %id, outcome = %outcome, "sandbox: validation finished");
    if let Some(url) = webhook_url {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let signature = sign(&shared.config.webhook_secret, &body);
        shared
            .webhooks
            .send(
                &shared.http,
                "gu1",
                id,
                &url,
                body,
                vec![("X-Webhook-Signature", signature)],
            )
            .await;
    }
    Ok(())
}

/// gu1's error body, `{error: CODE, message}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "Validation not found")
}

/// The 401 for a missing or wrong API key, or `None` when the key is good.
/// gu1's auth on every API route: `Authorization: Bearer <api key>`, else 401 `UNAUTHORIZED`.
async fn require_api_key(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let good = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key.trim() == shared.config.api_key);
    if !good {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Invalid API key");
    }
    next.run(request).await
}

fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn invalid_body() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "Body must be a JSON object",
    )
}

/// `POST /api/entities`: creates a person entity.
async fn create_entity(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut request = match json_object(&body) {
        Some(request) => request,
        None => return invalid_body(),
    };
    if request.get("type").and_then(Value::as_str) != Some("person") {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ENTITY_TYPE",
            "KYC validation is only available for person entities",
        );
    }
    let tax_id = request
        .get("taxId")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let mut state = lock(&shared.state);
    if tax_id.is_some() && state.entities.iter().any(|e| e.tax_id == tax_id) {
        return error(
            StatusCode::CONFLICT,
            "ENTITY_ALREADY_EXISTS",
            "An entity with this taxId already exists",
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    request.insert("id".into(), id.clone().into());
    request.insert("createdAt".into(), now_rfc3339().into());
    let answer = json!({
        "success": true,
        "entity": {
            "id": id,
            "type": "person",
            "name": request.get("name").cloned().unwrap_or(Value::Null),
            "countryCode": request.get("countryCode").cloned().unwrap_or(Value::Null),
            "externalId": request.get("externalId").cloned().unwrap_or(Value::Null),
            "taxId": request.get("taxId").cloned().unwrap_or(Value::Null),
            "createdAt": request["createdAt"].clone(),
        },
    });
    tracing::info!(provider = "gu1", entity = %id, "sandbox: entity created");
    state.entities.push(EntityRecord {
        id,
        tax_id,
        data: request,
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Filters of `GET /api/entities` (gu1 documents `type`, `taxId` and `externalId`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntityFilter {
    #[serde(rename = "type")]
    entity_type: Option<String>,
    tax_id: Option<String>,
    external_id: Option<String>,
}

/// `GET /api/entities?type=person&taxId=...&externalId=...`: the entities matching every filter
/// given, oldest first, at most 100, as `{entities: [...]}`.
async fn find_entities(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<EntityFilter>,
) -> Response {
    let state = lock(&shared.state);
    let field =
        |e: &EntityRecord, key: &str| e.data.get(key).and_then(Value::as_str).map(str::to_owned);
    let entities: Vec<Value> = state
        .entities
        .iter()
        .filter(|e| {
            filter
                .entity_type
                .as_ref()
                .is_none_or(|t| field(e, "type").as_ref() == Some(t))
                && filter
                    .tax_id
                    .as_ref()
                    .is_none_or(|t| e.tax_id.as_ref() == Some(t))
                && filter
                    .external_id
                    .as_ref()
                    .is_none_or(|x| field(e, "externalId").as_ref() == Some(x))
        })
        .take(100)
        .map(|e| {
            json!({
                "id": e.id,
                "type": field(e, "type"),
                "name": field(e, "name"),
                "countryCode": field(e, "countryCode"),
                "externalId": field(e, "externalId"),
                "taxId": e.tax_id,
                "kycVerified": false,
                "createdAt": field(e, "createdAt"),
            })
        })
        .collect();
    Json(json!({ "entities": entities })).into_response()
}

/// `POST /api/kyc/validations`: opens a validation for an entity.
async fn create_validation(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match json_object(&body) {
        Some(request) => request,
        None => return invalid_body(),
    };
    let Some(entity_id) = request.get("entityId").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "entityId is required",
        );
    };
    let metadata = request.get("metadata").cloned().unwrap_or(Value::Null);
    let metadata_ok = match &metadata {
        Value::Null => true,
        Value::Object(_) => {
            serde_json::to_vec(&metadata).map_or(0, |b| b.len()) <= MAX_METADATA_BYTES
        }
        _ => false,
    };
    if !metadata_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_METADATA",
            "metadata must be an object of at most 10KB",
        );
    }
    let piloted = shared.traffic.pilot_create();
    if piloted == Piloted::Fail {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service temporarily unavailable",
        );
    }
    let mut state = lock(&shared.state);
    if !state.entities.iter().any(|e| e.id == entity_id) {
        return error(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Entity not found",
        );
    }
    for earlier in state
        .validations
        .iter_mut()
        .filter(|v| v.entity_id() == entity_id)
    {
        earlier.data.insert("isCurrent".into(), false.into());
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_rfc3339();
    let text = |key: &str| request.get(key).cloned().unwrap_or(Value::Null);
    let data = json!({
        "id": id,
        "entityId": entity_id,
        "organizationId": shared.config.organization_id,
        "sessionId": format!("session_{}", uuid::Uuid::new_v4().simple()),
        "status": "pending",
        "provider": "sandbox_kyc",
        "providerSessionUrl": format!("{}/session/{id}", shared.base_url),
        "isCurrent": true,
        "metadata": metadata,
        "workflowId": text("workflowId"),
        "integrationCode": text("integrationCode"),
        "webhookUrl": text("webhookUrl"),
        "verifiedAt": null,
        "createdAt": now,
        "updatedAt": now,
    });
    let Value::Object(data) = data else {
        unreachable!("json! of an object literal is an object")
    };
    tracing::info!(provider = "gu1", validation = %id, "sandbox: validation created");
    let answer = Value::Object(data.clone());
    state.validations.push(ValidationRecord { data });
    if let Piloted::EndAfter(delay, outcome) = piloted {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = finish(&shared, &id, outcome).await;
        });
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// `GET /api/kyc/validations/{id}`.
async fn get_validation(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match lock(&shared.state).validation_mut(&id) {
        Some(v) => Json(Value::Object(v.data.clone())).into_response(),
        None => not_found(),
    }
}

/// `POST /api/kyc/validations/{id}/sync`: the validation with freshly signed image URLs.
async fn sync_validation(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = lock(&shared.state);
    let Some(validation) = state.validation_mut(&id) else {
        return not_found();
    };
    if let Some(decision) = validation.data.get_mut("decision") {
        let images = [
            ("id_verification", "front_image", "front"),
            ("id_verification", "portrait_image", "portrait"),
            ("liveness", "reference_image", "reference"),
        ];
        for (section, field, name) in images {
            if let Some(slot) = decision.get_mut(section).and_then(|s| s.get_mut(field)) {
                *slot = image_url(&shared.base_url, &id, name).into();
            }
        }
    }
    Json(Value::Object(validation.data.clone())).into_response()
}

/// `POST /api/kyc/validations/{id}/cancel`: cancels a validation that is not final yet.
async fn cancel_validation(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = lock(&shared.state);
    let Some(validation) = state.validation_mut(&id) else {
        return not_found();
    };
    if FINAL_STATUSES.contains(&validation.status()) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_STATUS",
            "Validation is already in a final status",
        );
    }
    validation.data.insert("status".into(), "cancelled".into());
    validation
        .data
        .insert("updatedAt".into(), now_rfc3339().into());
    Json(Value::Object(validation.data.clone())).into_response()
}

/// `POST /api/kyc/validations/{id}/approve` with `{reason}`: a manual approval.
async fn approve_validation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(&shared, &id, Outcome::Approved, &body).await
}

/// `POST /api/kyc/validations/{id}/reject` with `{reason}`: a manual rejection.
async fn reject_validation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(&shared, &id, Outcome::Rejected, &body).await
}

/// A manual decision: only `in_review`, with a reason of 5 characters or more; the validation
/// then ends as `outcome` (and the webhook goes out) and keeps that through later syncs.
async fn decide(shared: &Shared, id: &str, outcome: Outcome, body: &[u8]) -> Response {
    let reason_ok = json_object(body)
        .and_then(|b| b.get("reason").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|r| r.chars().count() >= 5);
    if !reason_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "reason is required (5 characters or more)",
        );
    }
    let status = match lock(&shared.state).validation_mut(id) {
        Some(v) => v.status().to_owned(),
        None => return not_found(),
    };
    if status != "in_review" {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_STATUS",
            "Validation is not in review",
        );
    }
    if finish(shared, id, outcome).await.is_err() {
        return not_found();
    }
    let mut state = lock(&shared.state);
    match state.validation_mut(id) {
        Some(v) => {
            v.data.insert("manualDecision".into(), Value::Bool(true));
            Json(Value::Object(v.data.clone())).into_response()
        }
        None => not_found(),
    }
}

/// `GET /api/kyc/entities/{entityId}/current`.
async fn current_validation(
    State(shared): State<Arc<Shared>>,
    Path(entity_id): Path<String>,
) -> Response {
    let state = lock(&shared.state);
    let current = state.validations.iter().find(|v| {
        v.entity_id() == entity_id && v.data.get("isCurrent") == Some(&Value::Bool(true))
    });
    match current {
        Some(v) => Json(Value::Object(v.data.clone())).into_response(),
        None => not_found(),
    }
}

/// `GET /api/kyc/entities/{entityId}/status`: the entity's KYC summary.
async fn entity_status(
    State(shared): State<Arc<Shared>>,
    Path(entity_id): Path<String>,
) -> Response {
    let state = lock(&shared.state);
    if !state.entities.iter().any(|e| e.id == entity_id) {
        return error(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Entity not found",
        );
    }
    let of_entity: Vec<&ValidationRecord> = state
        .validations
        .iter()
        .filter(|v| v.entity_id() == entity_id)
        .collect();
    let current = of_entity
        .iter()
        .find(|v| v.data.get("isCurrent") == Some(&Value::Bool(true)));
    let last_verified = of_entity
        .iter()
        .filter_map(|v| v.data.get("verifiedAt").and_then(Value::as_str))
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .max();
    let expires = last_verified.map(|t| t + chrono::Duration::days(365));
    let still_valid = expires.is_some_and(|e| e > chrono::Utc::now());
    let fmt = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    Json(json!({
        "entityId": entity_id,
        "hasKyc": !of_entity.is_empty(),
        "isVerified": still_valid,
        "currentValidation": current.map(|v| json!({
            "id": v.id(),
            "status": v.status(),
            "verifiedAt": v.data.get("verifiedAt").cloned().unwrap_or(Value::Null),
        })),
        "lastVerifiedAt": last_verified.map(fmt),
        "expiresAt": expires.map(fmt),
        "needsReverification": last_verified.is_some() && !still_valid,
    }))
    .into_response()
}

/// `GET /session/{id}`: the page behind `providerSessionUrl`.
async fn session_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let status = match lock(&shared.state).validation_mut(&id) {
        Some(v) => v.status().to_owned(),
        None => {
            return (
                StatusCode::NOT_FOUND,
                Html(pages::message_page(
                    "Not found",
                    "No gu1 validation has this id in the sandbox.",
                )),
            )
                .into_response();
        }
    };
    let outcomes = [
        Outcome::Approved,
        Outcome::Rejected,
        Outcome::InReview,
        Outcome::Expired,
    ];
    Html(pages::verification_page("gu1", &id, &status, &outcomes)).into_response()
}

/// `POST /_sandbox/finish/{id}`: the page's buttons, or JSON from a script.
async fn finish_route(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (body, from) = match read_finish_request(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let result = match body.outcome.parse::<Outcome>() {
        Ok(outcome) => finish(&shared, &id, outcome).await.map(|()| outcome),
        Err(err) => Err(err),
    };
    finish_response(from, &id, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
