//! The BeTrust simulator: OAuth2 client-credentials tokens, the transaction engine
//! (create, get, credential_information) and the unsigned compact webhook.

use crate::{
    ApiTraffic, FaultRule, Outcome, Piloted, SandboxError, SentWebhooks, ServerTask,
    fault_control_routes, fault_middleware, finish_response, lock, now_rfc3339, pages,
    read_finish_request, webhook_client,
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// The methods BeTrust accepts in `authorization_method`.
const AUTHORIZATION_METHODS: [&str; 6] = [
    "kyc_register",
    "kyc_register_simple",
    "sms",
    "email",
    "fido2",
    "bioidentity",
];

/// Credentials and settings the BeTrust simulator accepts, so a test can point an adapter
/// configured with the same values at it.
#[derive(Clone)]
pub struct BetrustSimConfig {
    /// The OAuth2 client id the token endpoint accepts.
    pub client_id: String,
    /// The OAuth2 client secret the token endpoint accepts.
    pub client_secret: String,
    /// The only `company_id` transactions may be created for.
    pub company_id: String,
    /// Lifetime of issued tokens in seconds (BeTrust's is 7200); short values test token refresh.
    pub token_expires_in: u64,
}

impl Default for BetrustSimConfig {
    fn default() -> Self {
        BetrustSimConfig {
            client_id: "sandbox-client".into(),
            client_secret: "sandbox-secret".into(),
            company_id: "201".into(),
            token_expires_in: 7200,
        }
    }
}

impl fmt::Debug for BetrustSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BetrustSimConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("company_id", &self.company_id)
            .field("token_expires_in", &self.token_expires_in)
            .finish()
    }
}

/// A running BeTrust simulator on `127.0.0.1`. Dropping it stops the server.
pub struct BetrustSim {
    shared: Arc<Shared>,
    _server: ServerTask,
}

impl fmt::Debug for BetrustSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BetrustSim")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: BetrustSimConfig,
    base_url: String,
    traffic: ApiTraffic,
    http: reqwest::Client,
    state: Mutex<State_>,
    webhooks: SentWebhooks,
}

#[derive(Default)]
struct State_ {
    /// Access token -> the instant it stops being accepted.
    tokens: HashMap<String, Instant>,
    /// In creation order (a transaction's `id` is its position plus one).
    transactions: Vec<TransactionRecord>,
    /// `uuid` -> index in `transactions`, so a look-up costs the same after a million creates.
    by_uuid: HashMap<String, usize>,
    /// `transaction_id` -> index of the first transaction holding it (a duplicate is refused, so
    /// there is only ever one).
    by_transaction_id: HashMap<String, usize>,
}

struct TransactionRecord {
    data: Map<String, Value>,
    /// Names credential_information answers with, when finish was told them.
    names: Option<(String, String)>,
}

impl State_ {
    /// The index of the transaction `id` names: the uuid wins over a transaction_id that
    /// happens to look the same.
    fn find_index(&self, id: &str) -> Option<usize> {
        self.by_uuid
            .get(id)
            .or_else(|| self.by_transaction_id.get(id))
            .copied()
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut TransactionRecord> {
        let index = self.find_index(id)?;
        self.transactions.get_mut(index)
    }

    /// The first transaction, in creation order, whose uuid or transaction_id is `id`.
    fn first_with_id(&self, id: &str) -> Option<&TransactionRecord> {
        let index = match (self.by_uuid.get(id), self.by_transaction_id.get(id)) {
            (Some(a), Some(b)) => *a.min(b),
            (Some(a), None) | (None, Some(a)) => *a,
            (None, None) => return None,
        };
        self.transactions.get(index)
    }

    /// Stores a new transaction and indexes it.
    fn push(&mut self, record: TransactionRecord) {
        let index = self.transactions.len();
        let text = |key: &str| {
            record
                .data
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(uuid) = text("uuid") {
            self.by_uuid.entry(uuid).or_insert(index);
        }
        if let Some(transaction_id) = text("transaction_id") {
            self.by_transaction_id
                .entry(transaction_id)
                .or_insert(index);
        }
        self.transactions.push(record);
    }
}

impl BetrustSim {
    /// Starts the simulator on `127.0.0.1:0`.
    pub async fn start(config: BetrustSimConfig) -> std::io::Result<BetrustSim> {
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
            .route("/oauth/token/", post(token))
            .route("/oauth/token", post(token))
            .route(
                "/transaction-engine/v1/transactions",
                post(create_transaction),
            )
            .route(
                "/transaction-engine/v1/transactions/{id}",
                get(get_transaction),
            )
            .route(
                "/transaction-engine/v1/transactions/{id}/credential_information",
                get(credential_information),
            )
            .layer(middleware::from_fn_with_state(
                shared.traffic.clone(),
                fault_middleware,
            ));
        let control = Router::new()
            .route("/validate/{id}", get(validate_page).post(finish_route))
            .route("/_sandbox/finish/{id}", post(finish_route));
        let router = api
            .merge(control)
            .with_state(shared.clone())
            .merge(fault_control_routes(shared.traffic.clone()));
        let server = ServerTask::spawn(listener, router, shutdown_tx, "betrust");
        Ok(BetrustSim {
            shared,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`, the root of every route.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Where the token endpoint lives (`{auth_base_url}/oauth/token/`): the same as [`Self::base_url`].
    pub fn auth_base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The transaction engine root, `{base_url}/transaction-engine/v1`.
    pub fn api_base_url(&self) -> String {
        format!("{}/transaction-engine/v1", self.shared.base_url)
    }

    /// Calls to the token endpoint so far, successful, refused or faulted, to check token caching.
    pub fn token_requests(&self) -> usize {
        self.shared.traffic.requests_seen("/oauth/token")
    }

    /// Transactions actually created (a 409 duplicate creates none).
    pub fn transactions_created(&self) -> usize {
        lock(&self.shared.state).transactions.len()
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

    /// Makes every token issued so far answer 401, as when BeTrust rotates or revokes them.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.state).tokens.clear();
    }

    /// The uuids of the transactions created, oldest first.
    pub fn transaction_uuids(&self) -> Vec<String> {
        lock(&self.shared.state)
            .transactions
            .iter()
            .filter_map(|t| {
                t.data
                    .get("uuid")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The stored Transaction (the `data` a GET returns), to inspect what a client sent.
    pub fn transaction(&self, uuid_or_transaction_id: &str) -> Option<Value> {
        lock(&self.shared.state)
            .find_mut(uuid_or_transaction_id)
            .map(|t| Value::Object(t.data.clone()))
    }

    /// Ends (or advances) a transaction as `outcome`, then POSTs the compact webhook to its
    /// `webhook` URL if it has one and waits for that attempt (a failed delivery is only logged).
    pub async fn finish(
        &self,
        uuid_or_transaction_id: &str,
        outcome: Outcome,
    ) -> Result<(), SandboxError> {
        finish(&self.shared, uuid_or_transaction_id, outcome, None).await
    }

    /// Like [`Self::finish`], with the name and last name credential_information will answer.
    pub async fn finish_with_names(
        &self,
        uuid_or_transaction_id: &str,
        outcome: Outcome,
        name: &str,
        last_name: &str,
    ) -> Result<(), SandboxError> {
        let names = Some((name.to_owned(), last_name.to_owned()));
        finish(&self.shared, uuid_or_transaction_id, outcome, names).await
    }

    /// Sends again a webhook already sent about a transaction (by uuid): `back` 0 is the latest one (a
    /// duplicate), 1 the one before it (arriving after a newer one), and so on.
    pub async fn send_webhook_again(&self, id: &str, back: usize) -> Result<(), SandboxError> {
        self.shared
            .webhooks
            .send_again(&self.shared.http, "betrust", id, back)
            .await
    }

    /// Adds a fault to the API routes (token endpoint included); rules apply in insertion order.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.traffic.inject(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.traffic.clear_faults();
    }

    /// Ends new transactions by themselves, or (with `None`) stops doing so.
    pub fn set_autopilot(&self, autopilot: Option<crate::Autopilot>) {
        self.shared.traffic.set_autopilot(autopilot);
    }
}

/// Sets the transaction's state for `outcome` and sends the webhook.
async fn finish(
    shared: &Shared,
    id: &str,
    outcome: Outcome,
    names: Option<(String, String)>,
) -> Result<(), SandboxError> {
    let (uuid, webhook, body) = {
        let mut state = lock(&shared.state);
        let record = state.find_mut(id).ok_or(SandboxError::NotFound)?;
        if names.is_some() {
            record.names = names;
        }
        let data = &mut record.data;
        let (active, complete, failed, step) = match outcome {
            Outcome::InProgress => (true, false, false, "Document_capture"),
            Outcome::InReview => (true, false, false, "Manual_review"),
            Outcome::Approved => (false, true, false, "Finished"),
            Outcome::Rejected => (false, false, true, "Finished"),
            Outcome::Expired => (false, false, false, "Expired"),
            Outcome::Abandoned => (false, false, false, "Abandoned"),
            Outcome::Cancelled => (false, false, false, "Cancelled"),
        };
        data.insert("active".into(), active.into());
        data.insert("complete".into(), complete.into());
        data.insert("failed".into(), failed.into());
        data.insert("step".into(), step.into());
        let issue = match outcome {
            Outcome::Rejected => json!("Face_mismatch"),
            _ => Value::Null,
        };
        data.insert("issue_description".into(), issue);
        let result = match outcome {
            Outcome::Approved => json!({"selfie_document_match": 96.05}),
            _ => Value::Null,
        };
        data.insert("verification_result".into(), result);
        data.insert("updated_at".into(), now_rfc3339().into());

        let compact: Map<String, Value> = [
            "uuid",
            "transaction_id",
            "company_id",
            "authorization_method",
            "active",
            "complete",
            "failed",
            "updated_at",
            "verification_result",
        ]
        .iter()
        .map(|key| {
            (
                key.to_string(),
                data.get(*key).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
        let uuid = data["uuid"].as_str().unwrap_or_default().to_owned();
        let webhook = data
            .get("webhook")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(str::to_owned);
        (uuid, webhook, Value::Object(compact))
    };
    tracing::info!(provider = "betrust", transaction = %uuid, outcome = %outcome, "sandbox: transaction finished");
    if let Some(url) = webhook {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        shared
            .webhooks
            .send(&shared.http, "betrust", &uuid, &url, body, Vec::new())
            .await;
    }
    Ok(())
}

/// The `{code, resource, data, message}` envelope of every BeTrust API answer.
fn wrapped(status: StatusCode, resource: &str, data: Value, message: &str) -> Response {
    let body = json!({
        "code": status.as_u16(),
        "resource": resource,
        "data": data,
        "message": message,
    });
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    wrapped(
        StatusCode::UNAUTHORIZED,
        "Auth",
        Value::Null,
        "Unauthorized",
    )
}

fn bad_request(message: &str) -> Response {
    wrapped(StatusCode::BAD_REQUEST, "Transaction", Value::Null, message)
}

fn not_found(resource: &str, message: &str) -> Response {
    wrapped(StatusCode::NOT_FOUND, resource, Value::Null, message)
}

/// Whether the request carries a live bearer token.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let mut state = lock(&shared.state);
    match state.tokens.get(token.trim()) {
        Some(expires) if *expires > Instant::now() => true,
        Some(_) => {
            state.tokens.remove(token.trim());
            false
        }
        None => false,
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
}

/// `POST /oauth/token/`: JSON (or form) client credentials -> a bearer token.
async fn token(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        axum::Form::<TokenRequest>::from_request(request, &())
            .await
            .map(|axum::Form(b)| b)
            .ok()
    } else {
        match Bytes::from_request(request, &()).await {
            Ok(bytes) => serde_json::from_slice::<TokenRequest>(&bytes).ok(),
            Err(_) => None,
        }
    };
    let Some(body) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    };
    if body.grant_type.as_deref() != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if body.client_id.as_deref() != Some(shared.config.client_id.as_str())
        || body.client_secret.as_deref() != Some(shared.config.client_secret.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let access_token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let expires_in = shared.config.token_expires_in;
    lock(&shared.state).tokens.insert(
        access_token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "",
        "created_at": chrono::Utc::now().timestamp(),
    }))
    .into_response()
}

/// Checks a create body and builds the stored Transaction, or names the bad field.
fn new_transaction(
    shared: &Shared,
    request: Map<String, Value>,
    id: u64,
) -> Result<Map<String, Value>, &'static str> {
    let text = |key: &str| {
        request
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    if text("transaction_id").is_none() {
        return Err("transaction_id is required");
    }
    match text("company_id") {
        None => return Err("company_id is required"),
        Some(company) if company != shared.config.company_id => {
            return Err("company_id is invalid");
        }
        Some(_) => {}
    }
    match text("authorization_method") {
        None => return Err("authorization_method is required"),
        Some(method) if !AUTHORIZATION_METHODS.contains(&method) => {
            return Err("authorization_method is invalid");
        }
        Some(_) => {}
    }
    if let Some(tries) = request.get("tries")
        && tries.as_u64().is_none_or(|n| n < 1)
    {
        return Err("tries must be an integer >= 1");
    }
    if let Some(expiration) = request.get("expiration")
        && expiration.as_u64().is_none_or(|n| n < 1)
    {
        return Err("expiration must be a positive integer");
    }
    if let Some(webhook) = request.get("webhook")
        && !webhook
            .as_str()
            .is_some_and(|w| w.starts_with("http://") || w.starts_with("https://"))
    {
        return Err("webhook must be an http(s) URL");
    }
    if let Some(metadata) = request.get("metadata")
        && !(metadata.is_object() || metadata.is_null())
    {
        return Err("metadata must be an object");
    }

    let uuid = uuid::Uuid::new_v4().to_string();
    let now = now_rfc3339();
    let wants_nanoid = request.get("nanoid").and_then(Value::as_bool) == Some(true);
    let mut data = Map::new();
    for key in [
        "user_id",
        "code",
        "scope",
        "allowed_clients",
        "nanoid",
        "metadata",
        "client_id",
        "webhook",
        "description",
        "creator_user_id",
    ] {
        data.insert(key.into(), Value::Null);
    }
    for (key, value) in request {
        if key != "nanoid" {
            data.insert(key, value);
        }
    }
    let nanoid = if wants_nanoid {
        json!(uuid.replace('-', "")[..6].to_owned())
    } else {
        Value::Null
    };
    let fixed = json!({
        "id": id,
        "uuid": uuid,
        "nanoid": nanoid,
        "active": true,
        "complete": false,
        "failed": false,
        "step": "Session_start",
        "issue_description": null,
        "verification_result": null,
        "created_at": now,
        "updated_at": now,
        "deleted_at": null,
        "validator_url": format!("{}/validate/{uuid}", shared.base_url),
        "extra_check_details": {},
    });
    if let Value::Object(fixed) = fixed {
        data.extend(fixed);
    }
    data.entry("expiration").or_insert(json!(600));
    data.entry("tries").or_insert(json!(3));
    Ok(data)
}

/// `POST /transaction-engine/v1/transactions`.
async fn create_transaction(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body must be a JSON object");
    };
    let piloted = shared.traffic.pilot_create();
    if piloted == Piloted::Fail {
        return wrapped(
            StatusCode::SERVICE_UNAVAILABLE,
            "Transaction",
            Value::Null,
            "Service temporarily unavailable",
        );
    }
    let mut state = lock(&shared.state);
    let transaction_id = request.get("transaction_id").and_then(Value::as_str);
    let duplicated = transaction_id
        .and_then(|id| state.by_transaction_id.get(id))
        .and_then(|index| state.transactions.get(*index))
        .is_some_and(|t| t.data.get("company_id") == request.get("company_id"));
    if duplicated {
        return wrapped(
            StatusCode::CONFLICT,
            "Transaction",
            Value::Null,
            "Duplicated",
        );
    }
    let id = state.transactions.len() as u64 + 1;
    let data = match new_transaction(&shared, request, id) {
        Ok(data) => data,
        Err(message) => return bad_request(message),
    };
    tracing::info!(provider = "betrust", transaction = %data["uuid"].as_str().unwrap_or_default(), "sandbox: transaction created");
    let answer = Value::Object(data.clone());
    state.push(TransactionRecord { data, names: None });
    if let Piloted::EndAfter(delay, outcome) = piloted
        && let Some(uuid) = answer["uuid"].as_str()
    {
        let (shared, uuid) = (shared.clone(), uuid.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = finish(&shared, &uuid, outcome, None).await;
        });
    }
    wrapped(StatusCode::OK, "Transaction", answer, "Created")
}

/// `GET /transaction-engine/v1/transactions/{uuid_or_transaction_id}`.
async fn get_transaction(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match lock(&shared.state).find_mut(&id) {
        Some(t) => wrapped(
            StatusCode::OK,
            "Transaction",
            Value::Object(t.data.clone()),
            "Found",
        ),
        None => not_found("Transaction", "Not found"),
    }
}

/// `GET /transaction-engine/v1/transactions/{uuid}/credential_information`.
async fn credential_information(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let mut state = lock(&shared.state);
    let Some(record) = state.find_mut(&id) else {
        return not_found("Transaction", "Not found");
    };
    if record.data.get("complete").and_then(Value::as_bool) != Some(true) {
        return not_found("User Credential", "Credential not available");
    }
    let (name, last_name) = record
        .names
        .clone()
        .unwrap_or_else(|| ("SANDBOX".into(), "PERSON".into()));
    let nin = record
        .data
        .get("metadata")
        .and_then(|m| m.get("nin"))
        .and_then(Value::as_str)
        .unwrap_or("11111111-1")
        .to_owned();
    let data = json!({
        "name": name,
        "last_name": last_name,
        "date_birth": "20/05/1990",
        "nin": nin,
        "document_number": "A1234567",
        "identity_verification_score": 99.5,
    });
    wrapped(StatusCode::OK, "User Credential", data, "Ok")
}

/// `GET /validate/{uuid}`: the page behind `validator_url`.
async fn validate_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = lock(&shared.state);
    let Some(record) = state.first_with_id(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::message_page(
                "Not found",
                "No BeTrust transaction has this id in the sandbox.",
            )),
        )
            .into_response();
    };
    let flag = |key: &str| record.data.get(key).and_then(Value::as_bool) == Some(true);
    let step = record
        .data
        .get("step")
        .and_then(Value::as_str)
        .unwrap_or("Session_start");
    let status = if flag("complete") {
        "approved".to_owned()
    } else if flag("failed") {
        "rejected".to_owned()
    } else {
        format!(
            "{} ({step})",
            if flag("active") { "active" } else { "closed" }
        )
    };
    let outcomes = [Outcome::Approved, Outcome::Rejected, Outcome::Expired];
    Html(pages::verification_page("BeTrust", &id, &status, &outcomes)).into_response()
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
        Ok(outcome) => {
            let names = body.name.zip(body.last_name);
            finish(&shared, &id, outcome, names).await.map(|()| outcome)
        }
        Err(err) => Err(err),
    };
    finish_response(from, &id, result)
}
