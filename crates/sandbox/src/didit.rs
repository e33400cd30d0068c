//! The Didit simulator (API v3): sessions (create, with Didit's `vendor_data` reuse rule; the
//! decision; update-status; delete; list) and the webhooks Didit signs four ways and retries.
//! The facts it follows, with their sources, are in `crates/adapters-didit/SOURCES.md`.

mod decision;
mod request;
mod webhook;

use crate::{
    ApiTraffic, FaultRule, Outcome, Piloted, SandboxError, SentWebhooks, ServerTask,
    fault_control_routes, fault_middleware, finish_response, lock, pages, read_finish_request,
    webhook_client,
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{delete, get, patch, post},
};
use decision::{REUSABLE, Session, UPDATABLE};
use rand::{Rng, distr::Alphanumeric};
use request::{NewSession, Refusal, error, invalid, not_found, parse_error};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering},
};
use tokio::sync::watch;

/// The first `session_number`; each new session takes the next.
const FIRST_SESSION_NUMBER: u64 = 1000;

/// Credentials and ids the Didit simulator accepts and signs with, so a test can configure an
/// adapter with the same values.
#[derive(Clone)]
pub struct DiditSimConfig {
    /// The API key accepted in `x-api-key`.
    pub api_key: String,
    /// The HMAC-SHA256 key of the three webhook signatures.
    pub webhook_secret: String,
    /// The one published workflow; a create naming another answers 404 `workflow_not_found`.
    pub workflow_id: String,
    /// The application the key belongs to, as webhooks name it in `application_id`.
    pub application_id: String,
}

impl Default for DiditSimConfig {
    fn default() -> Self {
        DiditSimConfig {
            api_key: "didit_sandbox_key".into(),
            webhook_secret: "didit-sandbox-webhook-secret".into(),
            workflow_id: "5f1c0d2e-8b3a-4c6d-9e7f-0a1b2c3d4e5f".into(),
            application_id: "0d1d17a0-0000-4000-8000-000000000001".into(),
        }
    }
}

impl fmt::Debug for DiditSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiditSimConfig")
            .field("api_key", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("workflow_id", &self.workflow_id)
            .field("application_id", &self.application_id)
            .finish()
    }
}

/// A running Didit simulator on `127.0.0.1`. Dropping it stops the server.
pub struct DiditSim {
    shared: Arc<Shared>,
    _server: ServerTask,
}

impl fmt::Debug for DiditSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiditSim")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: DiditSimConfig,
    base_url: String,
    traffic: ApiTraffic,
    http: reqwest::Client,
    state: Mutex<State_>,
    webhooks: SentWebhooks,
    /// The application's webhook destination: Didit sets it per application in its console,
    /// not per session.
    webhook_url: Mutex<Option<String>>,
    /// Delivery attempts made, retries and re-sends included.
    attempts: AtomicUsize,
}

#[derive(Default)]
struct State_ {
    /// Oldest first, deleted ones included.
    sessions: Vec<Session>,
    /// Every create body that was JSON, in order, refused ones included.
    create_bodies: Vec<Value>,
}

impl State_ {
    /// The session with this id, unless it is unknown or deleted.
    fn live(&self, id: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == id && !s.deleted)
    }

    fn live_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.id == id && !s.deleted)
    }
}

impl DiditSim {
    /// Starts the simulator on `127.0.0.1:0`.
    pub async fn start(config: DiditSimConfig) -> std::io::Result<DiditSim> {
        let (listener, base_url) = ServerTask::bind().await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            config,
            base_url,
            traffic: ApiTraffic::new(shutdown_rx),
            http: webhook_client()?,
            state: Mutex::default(),
            webhooks: SentWebhooks::default(),
            webhook_url: Mutex::default(),
            attempts: AtomicUsize::new(0),
        });
        let api = Router::new()
            .route("/v3/session/", post(create_session))
            .route("/v3/session/{id}/decision/", get(get_decision))
            .route("/v3/session/{id}/update-status/", patch(update_status))
            .route("/v3/session/{id}/delete/", delete(delete_session))
            .route("/v3/sessions/", get(list_sessions))
            .route_layer(middleware::from_fn_with_state(
                shared.clone(),
                require_api_key,
            ))
            .layer(middleware::from_fn_with_state(
                shared.traffic.clone(),
                fault_middleware,
            ));
        let control = Router::new()
            .route("/session/{token}", get(session_page).post(finish_by_token))
            .route("/_sandbox/finish/{id}", post(finish_route))
            .route("/_sandbox/media/{id}/{name}", get(media));
        let router = api
            .merge(control)
            .with_state(shared.clone())
            .merge(fault_control_routes(shared.traffic.clone()));
        let server = ServerTask::spawn(listener, router, shutdown_tx, "didit");
        Ok(DiditSim {
            shared,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`, Didit's API host (routes live under `/v3/`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Sets the application's webhook destination (Didit sets it per application, in its
    /// console); `None` sends no webhooks.
    pub fn set_webhook_url(&self, url: Option<String>) {
        *lock(&self.shared.webhook_url) = url;
    }

    /// Sessions actually created (one answered again under the reuse rule is not counted again).
    pub fn sessions_created(&self) -> usize {
        lock(&self.shared.state).sessions.len()
    }

    /// The ids of the sessions created, oldest first, deleted ones included.
    pub fn session_ids(&self) -> Vec<String> {
        lock(&self.shared.state)
            .sessions
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// The session's decision, as `GET /v3/session/{id}/decision/` returns it; `None` if the id
    /// is unknown or the session deleted.
    pub fn session(&self, id: &str) -> Option<Value> {
        lock(&self.shared.state)
            .live(id)
            .map(|s| s.decision(&self.shared.config.workflow_id))
    }

    /// Every create body received that was JSON, in order (refused ones included), to inspect
    /// what a client sent.
    pub fn create_bodies(&self) -> Vec<Value> {
        lock(&self.shared.state).create_bodies.clone()
    }

    /// Sets the session's status for `outcome` (in_progress "In Progress", in_review "In Review",
    /// approved "Approved", rejected "Declined", expired "Expired", abandoned "Abandoned"), fills
    /// the decision as Didit would, then sends the `status.updated` webhook and waits for its
    /// first attempt (a failed one is retried in the background). Didit has no cancel, so
    /// [`Outcome::Cancelled`] is [`SandboxError::Unsupported`].
    pub async fn finish(&self, id: &str, outcome: Outcome) -> Result<(), SandboxError> {
        change_status(&self.shared, id, status_for(outcome)?).await
    }

    /// Sets any of Didit's ten statuses by its exact string (`"Awaiting User"`, `"Resubmitted"`,
    /// `"Kyc Expired"`...), with the decision as for the nearest outcome, and sends the webhook
    /// as [`DiditSim::finish`] does. Another string is [`SandboxError::Unsupported`].
    pub async fn set_status(&self, id: &str, didit_status: &str) -> Result<(), SandboxError> {
        let status = decision::didit_status(didit_status).ok_or(SandboxError::Unsupported(
            "not one of Didit's ten session statuses",
        ))?;
        change_status(&self.shared, id, status).await
    }

    /// Sends again a webhook already sent about a session: `back` 0 is the latest one (a
    /// duplicate), 1 the one before it (arriving after a newer one), and so on. It is the same
    /// event (`event_id`) stamped and signed now, so that it stays inside a receiver's 5-minute
    /// window.
    pub async fn send_webhook_again(&self, id: &str, back: usize) -> Result<(), SandboxError> {
        if lock(&self.shared.state).live(id).is_none() {
            return Err(SandboxError::NotFound);
        }
        let recorded = self.shared.webhooks.recorded(id, back)?;
        webhook::send_again(&self.shared, recorded).await
    }

    /// Sends a `data.updated` webhook about the session, as Didit does when a reviewer edits its
    /// data, and waits for its first attempt. The status stays as it is.
    pub async fn send_data_updated(&self, id: &str) -> Result<(), SandboxError> {
        let payload = {
            let state = lock(&self.shared.state);
            let session = state.live(id).ok_or(SandboxError::NotFound)?;
            webhook::payload(&self.shared, session, "data.updated")
        };
        webhook::send(&self.shared, id, payload).await;
        Ok(())
    }

    /// Adds a fault to the `/v3/` routes; rules apply in insertion order.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.traffic.inject(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.traffic.clear_faults();
    }

    /// Ends new sessions by themselves, or (with `None`) stops doing so. A session answered
    /// again under the reuse rule is not new.
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

    /// Webhook delivery attempts made, retries and re-sends included.
    pub fn webhooks_attempted(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Didit's canonical JSON, as its webhook bodies are written (`ensure_ascii` true: the body
    /// and `X-Signature`) or re-encoded for `X-Signature-V2` (`ensure_ascii` false): keys sorted
    /// by code point, no whitespace, integral floats as ints. Public so that tests can check it
    /// against Didit's published signature vectors.
    pub fn canonical_json(value: &Value, ensure_ascii: bool) -> String {
        webhook::canonical_json(value, ensure_ascii)
    }
}

/// Didit's status for an outcome; it has none for a cancel.
fn status_for(outcome: Outcome) -> Result<&'static str, SandboxError> {
    Ok(match outcome {
        Outcome::InProgress => "In Progress",
        Outcome::InReview => "In Review",
        Outcome::Approved => "Approved",
        Outcome::Rejected => "Declined",
        Outcome::Expired => "Expired",
        Outcome::Abandoned => "Abandoned",
        Outcome::Cancelled => {
            return Err(SandboxError::Unsupported(
                "Didit has no cancel: a session expires, or is deleted",
            ));
        }
    })
}

/// Sets the session's status, then sends the `status.updated` webhook and waits for its first
/// attempt.
async fn change_status(
    shared: &Arc<Shared>,
    id: &str,
    status: &'static str,
) -> Result<(), SandboxError> {
    let payload = {
        let mut state = lock(&shared.state);
        let session = state.live_mut(id).ok_or(SandboxError::NotFound)?;
        session.set_status(&shared.base_url, status);
        webhook::payload(shared, session, "status.updated")
    };
    tracing::info!(provider = "didit", session = %id, status, "sandbox: session status changed");
    webhook::send(shared, id, payload).await;
    Ok(())
}

/// A session token: 12 random letters and digits, as in Didit's links.
fn session_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

/// Didit's auth on every API route: `x-api-key`, else 401.
async fn require_api_key(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let good = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|key| key == shared.config.api_key);
    if !good {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": "Invalid or missing API key"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// `POST /v3/session/`: creates a session, or, under Didit's reuse rule, answers with the
/// unfinished session of the same `vendor_data` (its `callback` and `metadata` replaced by the
/// ones sent, absent ones included), still 201.
async fn create_session(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return parse_error();
    };
    let mut state = lock(&shared.state);
    state.create_bodies.push(request.clone());
    let Value::Object(request) = request else {
        return invalid(
            &["non_field_errors"],
            "Invalid data. Expected a dictionary.",
        );
    };
    let workflow_id = shared.config.workflow_id.as_str();
    let new = match NewSession::read(&request, workflow_id) {
        Ok(new) => new,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(vendor_data) = &new.vendor_data {
        let unfinished = state.sessions.iter_mut().rev().find(|s| {
            !s.deleted
                && s.vendor_data.as_ref() == Some(vendor_data)
                && REUSABLE.contains(&s.status)
        });
        if let Some(session) = unfinished {
            session.callback = new.callback;
            session.metadata = new.metadata;
            tracing::info!(provider = "didit", session = %session.id, "sandbox: unfinished session answered again");
            let answer = session.create_answer(workflow_id);
            return (StatusCode::CREATED, Json(answer)).into_response();
        }
    }
    let piloted = shared.traffic.pilot_create();
    if piloted == Piloted::Fail {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service temporarily unavailable.",
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let number = FIRST_SESSION_NUMBER + state.sessions.len() as u64;
    let token = loop {
        let token = session_token();
        if !state.sessions.iter().any(|s| s.token == token) {
            break token;
        }
    };
    let url = format!("{}/session/{token}", shared.base_url);
    let session = Session::new(
        id.clone(),
        number,
        token,
        url,
        new.vendor_data,
        new.metadata,
        new.callback,
        new.contact_details,
        new.expected_details,
    );
    let answer = session.create_answer(workflow_id);
    state.sessions.push(session);
    drop(state);
    tracing::info!(provider = "didit", session = %id, "sandbox: session created");
    if let Piloted::EndAfter(delay, outcome) = piloted {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(status) = status_for(outcome) {
                let _ = change_status(&shared, &id, status).await;
            }
        });
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// `GET /v3/session/{id}/decision/`.
async fn get_decision(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match lock(&shared.state).live(&id) {
        Some(session) => Json(session.decision(&shared.config.workflow_id)).into_response(),
        None => not_found(),
    }
}

/// Whether `nodes_to_resubmit` is a non-empty list of nodes, each naming its `node_id`.
fn nodes_given(nodes: Option<&Value>) -> bool {
    nodes.and_then(Value::as_array).is_some_and(|nodes| {
        !nodes.is_empty()
            && nodes.iter().all(|node| {
                node.get("node_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !id.is_empty())
            })
    })
}

/// `PATCH /v3/session/{id}/update-status/` with `{new_status, comment?, nodes_to_resubmit?}`:
/// a manual decision on a session that has ended (or awaits a resubmission). Setting the status
/// it already has is a no-op (no webhook) for Approved and Declined, a 400 for Resubmitted. A
/// real change sends `status.updated` in the background, as Didit queues its webhooks.
async fn update_status(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return parse_error();
    };
    let payload = {
        let mut state = lock(&shared.state);
        let Some(session) = state.live_mut(&id) else {
            return not_found();
        };
        let new_status = match request.get("new_status").and_then(Value::as_str) {
            Some("Approved") => "Approved",
            Some("Declined") => "Declined",
            Some("Resubmitted") => "Resubmitted",
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_new_status",
                    "new_status must be one of Approved, Declined, Resubmitted.",
                );
            }
        };
        if request
            .get("comment")
            .is_some_and(|c| !c.is_null() && !c.is_string())
        {
            return invalid(&["comment"], "Not a valid string.");
        }
        if !UPDATABLE.contains(&session.status) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_status_transition",
                "Only a session in Approved, Declined, In Review, Kyc Expired, Abandoned or \
                 Resubmitted can have its status updated.",
            );
        }
        if session.status == new_status {
            if new_status == "Resubmitted" {
                return error(
                    StatusCode::BAD_REQUEST,
                    "same_status",
                    "The new status is the same as the current status.",
                );
            }
            return Json(json!({"session_id": id})).into_response();
        }
        if new_status == "Resubmitted" && !nodes_given(request.get("nodes_to_resubmit")) {
            return invalid(
                &["nodes_to_resubmit"],
                "A non-empty list of nodes, each with its node_id, is required to resubmit.",
            );
        }
        session.set_status(&shared.base_url, new_status);
        webhook::payload(&shared, session, "status.updated")
    };
    tracing::info!(provider = "didit", session = %id, "sandbox: session status updated through the API");
    let sender = shared.clone();
    let session_id = id.clone();
    tokio::spawn(async move { webhook::send(&sender, &session_id, payload).await });
    Json(json!({"session_id": id})).into_response()
}

/// `DELETE /v3/session/{id}/delete/`: 204, then the session is gone (404) everywhere.
async fn delete_session(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match lock(&shared.state).live_mut(&id) {
        Some(session) => {
            session.deleted = true;
            tracing::info!(provider = "didit", session = %id, "sandbox: session deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(),
    }
}

/// `GET /v3/sessions/?vendor_data=&status=&limit=&offset=`: newest first, DRF-paginated
/// (`next` and `previous` are always null here).
async fn list_sessions(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let number = |key: &'static str, default: usize| match query.get(key) {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| Refusal::Field(vec![key], "A valid integer is required.")),
    };
    let limit = match number("limit", 50) {
        Ok(0) => 50,
        Ok(limit) => limit.min(100),
        Err(refusal) => return refusal.into_response(),
    };
    let offset = match number("offset", 0) {
        Ok(offset) => offset,
        Err(refusal) => return refusal.into_response(),
    };
    let statuses: Option<Vec<&str>> = query
        .get("status")
        .map(|s| s.split(',').map(str::trim).collect());
    let vendor_data = query.get("vendor_data");
    let state = lock(&shared.state);
    let matching: Vec<&Session> = state
        .sessions
        .iter()
        .rev()
        .filter(|s| {
            !s.deleted
                && vendor_data.is_none_or(|v| s.vendor_data.as_ref() == Some(v))
                && statuses
                    .as_ref()
                    .is_none_or(|wanted| wanted.contains(&s.status))
        })
        .collect();
    let results: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|s| s.list_row())
        .collect();
    Json(json!({
        "count": matching.len(),
        "next": null,
        "previous": null,
        "results": results,
    }))
    .into_response()
}

/// The id of the live session behind a link's token.
fn id_for_token(shared: &Shared, token: &str) -> Option<String> {
    lock(&shared.state)
        .sessions
        .iter()
        .find(|s| s.token == token && !s.deleted)
        .map(|s| s.id.clone())
}

/// `GET /session/{token}`: the page behind the session's `url`.
async fn session_page(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let status = id_for_token(&shared, &token).and_then(|id| {
        let state = lock(&shared.state);
        state.live(&id).map(|s| (id.clone(), s.status))
    });
    let Some((id, status)) = status else {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::message_page(
                "Not found",
                "No Didit session has this link in the sandbox.",
            )),
        )
            .into_response();
    };
    // No cancel: Didit has none.
    let outcomes = [
        Outcome::Approved,
        Outcome::Rejected,
        Outcome::InReview,
        Outcome::InProgress,
        Outcome::Abandoned,
        Outcome::Expired,
    ];
    Html(pages::verification_page("Didit", &id, status, &outcomes)).into_response()
}

/// `POST /session/{token}`: finishes the session behind a link, for a script holding only it.
async fn finish_by_token(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let id = id_for_token(&shared, &token).unwrap_or(token);
    finish_request(&shared, &id, request).await
}

/// `POST /_sandbox/finish/{id}`: the page's buttons, or JSON from a script.
async fn finish_route(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    finish_request(&shared, &id, request).await
}

async fn finish_request(shared: &Arc<Shared>, id: &str, request: Request) -> Response {
    let (body, from) = match read_finish_request(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let result = match body
        .outcome
        .parse::<Outcome>()
        .and_then(|o| Ok((o, status_for(o)?)))
    {
        Ok((outcome, status)) => change_status(shared, id, status).await.map(|()| outcome),
        Err(err) => Err(err),
    };
    finish_response(from, id, result)
}

/// `GET /_sandbox/media/{id}/{name}`: what every image URL in a decision points to, a
/// placeholder (the smallest JPEG markers), so that a client fetching media gets an image type.
async fn media() -> Response {
    const PLACEHOLDER: &[u8] = &[0xFF, 0xD8, 0xFF, 0xD9];
    ([(header::CONTENT_TYPE, "image/jpeg")], PLACEHOLDER).into_response()
}
