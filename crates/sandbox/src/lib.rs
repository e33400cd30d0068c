//! In-process simulators of the BeTrust, gu1 and Didit identity-verification APIs.
//!
//! Each simulator is a real HTTP server on `127.0.0.1:0`, so adapters, the gateway's first run,
//! tests and benchmarks talk to it exactly as they would talk to the provider: same paths, same
//! bodies, same auth, same error shapes. A simulator can be told how a verification ends
//! ([`BetrustSim::finish`], [`Gu1Sim::finish`], [`DiditSim::finish`], or the HTML page a person
//! opens in a browser), and can inject faults ([`FaultRule`]) into its provider API routes.
//!
//! Control surface shared by the three simulators (never faulted):
//! - `POST /_sandbox/finish/{id}` with a form field or JSON `outcome`, and the same `POST` to the
//!   verification link itself (`/validate/{id}` for BeTrust, `/session/{id}` for gu1,
//!   `/session/{token}` for Didit), so a script holding only the link can finish it:
//!   `curl -X POST "$URL" -H 'Content-Type: application/json' -d '{"outcome": "approved"}'`;
//! - `POST /_sandbox/faults` with JSON `{"path_contains", "status" | "latency_ms" | "malformed" |
//!   "hang" | "late_answer_ms" | "late_work_ms" | "status_after_work" | "cut", "times"}` and
//!   `DELETE /_sandbox/faults`;
//! - `POST /_sandbox/autopilot` with JSON [`Autopilot`] `{"approve_percent", "decision_ms",
//!   "approve_ms", "error_percent"}`, and `DELETE /_sandbox/autopilot`: the simulator ends each new verification
//!   by itself (see [`Autopilot`]).
//!
//! Dropping a simulator stops its server.
//!
//! ```
//! use kyc_sandbox::{Fault, FaultRule, Gu1Sim, Gu1SimConfig, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let gu1 = Gu1Sim::start(Gu1SimConfig::default()).await?;
//! // Point a gu1 client at `gu1.base_url()` with the API key "gk_sandbox_key".
//! gu1.inject(FaultRule::once(Fault::Status(503)).on_path("/api/kyc/validations"));
//! assert!(gu1.base_url().starts_with("http://127.0.0.1:"));
//! # let _ = Outcome::Approved;
//! # Ok(())
//! # }
//! ```

mod betrust;
mod didit;
mod gu1;
mod pages;

pub use betrust::{BetrustSim, BetrustSimConfig};
pub use didit::{DiditSim, DiditSimConfig};
pub use gu1::{Gu1Sim, Gu1SimConfig};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// How a simulated verification ends (or where it stands), as told by a test or by the person on
/// the sandbox page. Each simulator turns it into its provider's own state fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The person is going through the flow.
    InProgress,
    /// The person finished; a manual review is pending at the provider.
    InReview,
    /// Identity confirmed.
    Approved,
    /// Identity not confirmed.
    Rejected,
    /// The link expired before the person finished.
    Expired,
    /// The person started and gave up.
    Abandoned,
    /// Cancelled at the provider (Didit has no cancel: its simulator refuses this one).
    Cancelled,
}

impl Outcome {
    /// Every outcome, for pages and parsers.
    pub const ALL: [Outcome; 7] = [
        Outcome::InProgress,
        Outcome::InReview,
        Outcome::Approved,
        Outcome::Rejected,
        Outcome::Expired,
        Outcome::Abandoned,
        Outcome::Cancelled,
    ];

    /// The snake_case wire name (`"in_review"`), the same as gu1's status value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::InReview => "in_review",
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Abandoned => "abandoned",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = SandboxError;

    /// Parses the snake_case name (`"approved"`), ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == wanted)
            .ok_or_else(|| SandboxError::UnknownOutcome(s.chars().take(40).collect()))
    }
}

/// A recorded JSON answer damaged the way a faulty provider might: some nodes replaced by other
/// types or odd values, some keys dropped, all chosen by `choices` (a fuzzer's bytes), so that
/// decoders can be shown to refuse it without panicking.
pub fn mutate_json(
    value: &serde_json::Value,
    choices: &mut impl Iterator<Item = u8>,
) -> serde_json::Value {
    // One node in eight is replaced; a short list of choices leaves the rest as recorded.
    let pick = choices.next().unwrap_or(u8::MAX);
    let replacement = match pick % 64 {
        0 => Some(serde_json::Value::Null),
        1 => Some(serde_json::Value::Bool(pick.is_multiple_of(2))),
        2 => Some(serde_json::Value::from(-1)),
        3 => Some(serde_json::Value::from(1e308)),
        4 => Some(serde_json::Value::from("")),
        5 => Some(serde_json::Value::from("\u{0}\u{202e}\u{fffd}")),
        6 => Some(serde_json::Value::Array(vec![serde_json::Value::Null])),
        7 => Some(serde_json::Value::Object(Default::default())),
        _ => None,
    };
    if let Some(replacement) = replacement {
        return replacement;
    }
    match value {
        serde_json::Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                // One key in sixteen is dropped.
                if !choices.next().unwrap_or(1).is_multiple_of(16) {
                    out.insert(k.clone(), mutate_json(v, choices));
                }
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| mutate_json(v, choices)).collect())
        }
        other => other.clone(),
    }
}

/// Errors of the simulators' Rust control API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    /// No transaction or validation has that id.
    #[error("no such verification in the sandbox")]
    NotFound,
    /// The text is not one of the [`Outcome`] names.
    #[error(
        "unknown outcome {0:?}; expected one of in_progress, in_review, approved, rejected, expired, abandoned, cancelled"
    )]
    UnknownOutcome(String),
    /// The provider has no such state or action (Didit has no cancel), or the text is not one
    /// of its states; the reason says which.
    #[error("not supported by this provider: {0}")]
    Unsupported(&'static str),
}

/// A misbehaviour the simulator shows on its provider API routes, so clients' error handling can
/// be tested against real HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status with a JSON error body (429 also sets `Retry-After: 1`).
    Status(u16),
    /// Wait this long, then answer normally.
    Latency(Duration),
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Never answer (until the simulator is dropped), for client timeouts.
    Hang,
    /// Do what was asked, then hold the answer this long: the work is done but a client with a
    /// shorter timeout (or one killed meanwhile) never learns of it.
    LateAnswer(Duration),
    /// Hold the request this long, then do what was asked and answer, whether or not the client
    /// is still there: a client that gave up meanwhile finds the work done later, as a provider
    /// still processing a request does.
    LateWork(Duration),
    /// Do what was asked, then answer this HTTP status instead of the result: a provider that
    /// failed after the work was done (a 500 from a proxy in front of it, say).
    StatusAfterWork(u16),
    /// Do what was asked, then cut the connection before the answer is whole: the client sees
    /// its request fail with no usable answer, though the work was done.
    Cut,
}

/// Which requests get a [`Fault`], and how many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// Applies only to API requests whose request line, `METHOD /path?query`, contains this text;
    /// `None` applies to every API route.
    pub path_contains: Option<String>,
    /// What to do to a matching request.
    pub fault: Fault,
    /// How many requests it applies to; `None` keeps it until the faults are cleared.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule for every API request until cleared.
    pub fn always(fault: Fault) -> Self {
        FaultRule {
            path_contains: None,
            fault,
            times: None,
        }
    }

    /// A rule for the next matching API request only.
    pub fn once(fault: Fault) -> Self {
        FaultRule {
            path_contains: None,
            fault,
            times: Some(1),
        }
    }

    /// Restricts the rule to API requests whose request line, `METHOD /path?query`, contains
    /// `path_contains` (e.g. `"/transactions"`, `"POST /api/entities"` for gu1's entity creation
    /// only, or `"taxId="` for its lookup by national id).
    pub fn on_path(mut self, path_contains: impl Into<String>) -> Self {
        self.path_contains = Some(path_contains.into());
        self
    }

    /// Makes the rule apply to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, path: &str) -> bool {
        self.times != Some(0)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|needle| path.contains(needle))
    }
}

/// Locks a std mutex, recovering the data if a panicking test thread poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now, in the RFC 3339 form both providers use (`2025-01-15T10:30:00.123Z`).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What the API routes of one simulator have seen, and the faults they must show.
#[derive(Clone)]
pub(crate) struct ApiTraffic {
    inner: Arc<Mutex<TrafficState>>,
    /// Changes (closes) when the simulator is dropped, to end hanging requests.
    shutdown: watch::Receiver<()>,
}

/// How a simulator ends verifications by itself, for demos and experiments: each new
/// verification ends `decision_ms` after its creation (`approve_ms` for the approved, where it is
/// set: a provider that rejects fast and approves slowly), approved or else rejected; and a share of
/// creates fail with 503 (the provider is briefly unavailable). Shares are spread evenly, not
/// drawn at random: of every 100 verifications exactly `approve_percent` are approved, so tests
/// and demos see the same figures on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autopilot {
    /// Percent of the verifications approved (the others are rejected), 0 to 100.
    pub approve_percent: u8,
    /// How long after its creation a verification ends, in milliseconds.
    pub decision_ms: u64,
    /// How long after its creation an approved one ends, where it differs from `decision_ms`.
    #[serde(default)]
    pub approve_ms: Option<u64>,
    /// Percent of the creates answered 503 instead, 0 to 100.
    #[serde(default)]
    pub error_percent: u8,
}

/// What the autopilot does with a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piloted {
    /// No autopilot: the create goes on, and nothing ends it.
    Off,
    /// Answer 503.
    Fail,
    /// Create it, then end it so after this long.
    EndAfter(Duration, Outcome),
}

/// Whether the `k`-th event (from 0) is among `percent` of all, spread evenly: of any 100 in a
/// row from 0, exactly `percent`.
pub fn in_share(k: u64, percent: u8) -> bool {
    let p = u64::from(percent.min(100));
    (k + 1) * p / 100 > k * p / 100
}

#[derive(Default)]
struct TrafficState {
    autopilot: Option<Autopilot>,
    /// Creates the autopilot has seen, and verifications it has ended.
    piloted: (u64, u64),
    rules: Vec<FaultRule>,
    paths_seen: Vec<String>,
    /// The `traceparent` header of each request that had one, with its request line.
    traceparents: Vec<(String, String)>,
}

impl ApiTraffic {
    pub(crate) fn new(shutdown: watch::Receiver<()>) -> Self {
        ApiTraffic {
            inner: Arc::default(),
            shutdown,
        }
    }

    pub(crate) fn inject(&self, rule: FaultRule) {
        lock(&self.inner).rules.push(rule);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.inner).rules.clear();
    }

    pub(crate) fn set_autopilot(&self, autopilot: Option<Autopilot>) {
        let mut state = lock(&self.inner);
        state.autopilot = autopilot;
        state.piloted = (0, 0);
    }

    /// What the autopilot does with the next create.
    pub(crate) fn pilot_create(&self) -> Piloted {
        let mut state = lock(&self.inner);
        let Some(autopilot) = state.autopilot else {
            return Piloted::Off;
        };
        let (created, ended) = state.piloted;
        state.piloted.0 += 1;
        if in_share(created, autopilot.error_percent) {
            return Piloted::Fail;
        }
        state.piloted.1 += 1;
        let (outcome, after_ms) = if in_share(ended, autopilot.approve_percent) {
            let after_ms = autopilot.approve_ms.unwrap_or(autopilot.decision_ms);
            (Outcome::Approved, after_ms)
        } else {
            (Outcome::Rejected, autopilot.decision_ms)
        };
        Piloted::EndAfter(Duration::from_millis(after_ms), outcome)
    }

    pub(crate) fn requests_seen(&self, path_contains: &str) -> usize {
        lock(&self.inner)
            .paths_seen
            .iter()
            .filter(|p| p.contains(path_contains))
            .count()
    }

    /// The `traceparent` headers of API requests whose request line contains `path_contains`.
    pub(crate) fn traceparents(&self, path_contains: &str) -> Vec<String> {
        lock(&self.inner)
            .traceparents
            .iter()
            .filter(|(path, _)| path.contains(path_contains))
            .map(|(_, traceparent)| traceparent.clone())
            .collect()
    }

    /// Records the request and picks the fault to apply, using up one of its times.
    fn take_fault(&self, path: &str, traceparent: Option<&str>) -> Option<Fault> {
        let mut state = lock(&self.inner);
        state.paths_seen.push(path.to_owned());
        if let Some(traceparent) = traceparent {
            state
                .traceparents
                .push((path.to_owned(), traceparent.to_owned()));
        }
        let index = state.rules.iter().position(|r| r.matches(path))?;
        let rule = &mut state.rules[index];
        let fault = rule.fault.clone();
        if let Some(left) = rule.times.as_mut() {
            *left -= 1;
            if *left == 0 {
                state.rules.remove(index);
            }
        }
        Some(fault)
    }
}

/// Middleware on the provider API routes: counts requests and applies injected faults.
pub(crate) async fn fault_middleware(
    State(traffic): State<ApiTraffic>,
    request: Request,
    next: Next,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path(), |p| p.as_str());
    let path = format!("{} {target}", request.method());
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let Some(fault) = traffic.take_fault(&path, traceparent) else {
        return next.run(request).await;
    };
    tracing::debug!(path = %path, fault = ?fault, "sandbox: injecting fault");
    match fault {
        Fault::Status(code) => fault_answer(code, "Injected fault"),
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Fault::Malformed => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("<html>oops"))
            .unwrap_or_else(|_| StatusCode::OK.into_response()),
        Fault::Hang => {
            let mut shutdown = traffic.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.changed() => {}
            }
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Fault::LateWork(delay) => {
            // A task of its own, so the client hanging up does not stop the work.
            let work = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                next.run(request).await
            });
            work.await
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Fault::StatusAfterWork(code) => {
            let _done = next.run(request).await;
            fault_answer(code, "Injected fault after the work")
        }
        Fault::Cut => {
            let done = next.run(request).await;
            // The head may go out; the body fails, and the server drops the connection.
            Response::builder()
                .status(done.status())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::new(CutBody))
                .unwrap_or_else(|_| StatusCode::OK.into_response())
        }
        Fault::LateAnswer(delay) => {
            let response = next.run(request).await;
            let mut shutdown = traffic.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
            response
        }
    }
}

/// An injected error status with a JSON error body (429 also sets `Retry-After: 1`).
fn fault_answer(code: u16, what: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "code": status.as_u16(),
        "resource": "Sandbox",
        "data": null,
        "error": "SANDBOX_FAULT",
        "message": format!("{what}: HTTP {}", status.as_u16()),
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A body that fails at once: the server gives up on the answer and closes the connection.
struct CutBody;

impl axum::body::HttpBody for CutBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox: connection cut",
        ))))
    }
}

/// Body of `POST /_sandbox/faults`: exactly one of `status`, `latency_ms`, `malformed`, `hang`,
/// `late_answer_ms`, `late_work_ms`, `status_after_work`, `cut`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    path_contains: Option<String>,
    status: Option<u16>,
    latency_ms: Option<u64>,
    malformed: Option<bool>,
    hang: Option<bool>,
    late_answer_ms: Option<u64>,
    late_work_ms: Option<u64>,
    status_after_work: Option<u16>,
    cut: Option<bool>,
    times: Option<u32>,
}

impl FaultRequest {
    fn into_rule(self) -> Result<FaultRule, &'static str> {
        let mut faults = Vec::new();
        if let Some(code) = self.status {
            if StatusCode::from_u16(code).is_err() {
                return Err("status must be an HTTP status code");
            }
            faults.push(Fault::Status(code));
        }
        if let Some(ms) = self.latency_ms {
            faults.push(Fault::Latency(Duration::from_millis(ms)));
        }
        if self.malformed == Some(true) {
            faults.push(Fault::Malformed);
        }
        if self.hang == Some(true) {
            faults.push(Fault::Hang);
        }
        if let Some(ms) = self.late_answer_ms {
            faults.push(Fault::LateAnswer(Duration::from_millis(ms)));
        }
        if let Some(ms) = self.late_work_ms {
            faults.push(Fault::LateWork(Duration::from_millis(ms)));
        }
        if let Some(code) = self.status_after_work {
            if StatusCode::from_u16(code).is_err() {
                return Err("status_after_work must be an HTTP status code");
            }
            faults.push(Fault::StatusAfterWork(code));
        }
        if self.cut == Some(true) {
            faults.push(Fault::Cut);
        }
        if faults.len() != 1 {
            return Err(
                "give exactly one of status, latency_ms, malformed:true, hang:true, \
                 late_answer_ms, late_work_ms, status_after_work, cut:true",
            );
        }
        Ok(FaultRule {
            path_contains: self.path_contains,
            fault: faults.remove(0),
            times: self.times,
        })
    }
}

async fn inject_fault_route(State(traffic): State<ApiTraffic>, request: Request) -> Response {
    let Json(body) = match Json::<FaultRequest>::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "INVALID_FAULT", "message": rejection.body_text()})),
            )
                .into_response();
        }
    };
    match body.into_rule() {
        Ok(rule) => {
            traffic.inject(rule);
            (StatusCode::OK, Json(json!({"ok": true}))).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "INVALID_FAULT", "message": message})),
        )
            .into_response(),
    }
}

async fn clear_faults_route(State(traffic): State<ApiTraffic>) -> Response {
    traffic.clear_faults();
    (StatusCode::OK, Json(json!({"ok": true}))).into_response()
}

async fn set_autopilot_route(State(traffic): State<ApiTraffic>, request: Request) -> Response {
    match Json::<Autopilot>::from_request(request, &()).await {
        Ok(Json(autopilot))
            if autopilot.approve_percent <= 100 && autopilot.error_percent <= 100 =>
        {
            traffic.set_autopilot(Some(autopilot));
            (StatusCode::OK, Json(json!({"ok": true}))).into_response()
        }
        Ok(_) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "INVALID_AUTOPILOT", "message": "percentages go from 0 to 100"})),
        )
            .into_response(),
        Err(rejection) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "INVALID_AUTOPILOT", "message": rejection.body_text()})),
        )
            .into_response(),
    }
}

async fn clear_autopilot_route(State(traffic): State<ApiTraffic>) -> Response {
    traffic.set_autopilot(None);
    (StatusCode::OK, Json(json!({"ok": true}))).into_response()
}

/// The `/_sandbox/faults` and `/_sandbox/autopilot` routes, shared by both simulators.
pub(crate) fn fault_control_routes(traffic: ApiTraffic) -> Router {
    Router::new()
        .route(
            "/_sandbox/faults",
            post(inject_fault_route).delete(clear_faults_route),
        )
        .route(
            "/_sandbox/autopilot",
            post(set_autopilot_route).delete(clear_autopilot_route),
        )
        .with_state(traffic)
}

/// Body of `POST /_sandbox/finish/{id}`, as a form or JSON. `name`/`last_name` let BeTrust's
/// credential_information answer with chosen names.
#[derive(Deserialize)]
pub(crate) struct FinishRequest {
    pub(crate) outcome: String,
    pub(crate) name: Option<String>,
    pub(crate) last_name: Option<String>,
}

/// Whether a finish request came from an HTML form (answer HTML) or from code (answer JSON).
pub(crate) enum FinishFrom {
    Form,
    Json,
}

/// Reads a finish request sent as JSON or as a urlencoded form.
pub(crate) async fn read_finish_request(
    request: Request,
) -> Result<(FinishRequest, FinishFrom), Response> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        Json::<FinishRequest>::from_request(request, &())
            .await
            .map(|Json(body)| (body, FinishFrom::Json))
            .map_err(|rejection| {
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "INVALID_REQUEST", "message": rejection.body_text()})),
                )
                    .into_response()
            })
    } else {
        axum::Form::<FinishRequest>::from_request(request, &())
            .await
            .map(|axum::Form(body)| (body, FinishFrom::Form))
            .map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    Html(pages::message_page(
                        "Bad request",
                        "The form needs an outcome field.",
                    )),
                )
                    .into_response()
            })
    }
}

/// Answers a finish request in the form it came in.
pub(crate) fn finish_response(
    from: FinishFrom,
    id: &str,
    result: Result<Outcome, SandboxError>,
) -> Response {
    match (from, result) {
        (FinishFrom::Form, Ok(outcome)) => Html(pages::done_page(outcome)).into_response(),
        (FinishFrom::Json, Ok(outcome)) => {
            Json(json!({"id": id, "outcome": outcome})).into_response()
        }
        (FinishFrom::Form, Err(SandboxError::NotFound)) => (
            StatusCode::NOT_FOUND,
            Html(pages::message_page(
                "Not found",
                "No verification has this id in the sandbox.",
            )),
        )
            .into_response(),
        (FinishFrom::Json, Err(SandboxError::NotFound)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "NOT_FOUND", "message": "No verification has this id"})),
        )
            .into_response(),
        (FinishFrom::Form, Err(err)) => (
            StatusCode::BAD_REQUEST,
            Html(pages::message_page("Bad request", &err.to_string())),
        )
            .into_response(),
        (FinishFrom::Json, Err(err)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "INVALID_OUTCOME", "message": err.to_string()})),
        )
            .into_response(),
    }
}

/// The webhooks a simulator has sent, so that a test can send one again: the latest (a
/// duplicate, as a provider's own retry is) or an earlier one (arriving after a newer one).
#[derive(Default)]
pub(crate) struct SentWebhooks(Mutex<Vec<SentWebhook>>);

/// One webhook as it was first sent: where, the body, and the headers beside `Content-Type`
/// (each provider signs in its own headers: gu1 one, Didit four, BeTrust none).
#[derive(Clone)]
pub(crate) struct SentWebhook {
    pub(crate) verification_id: String,
    pub(crate) url: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// How one delivery attempt went, so that a simulator whose provider retries knows when to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered this other status.
    Refused(u16),
    /// No answer: the connection failed or timed out.
    Failed,
}

impl SentWebhooks {
    /// Records the webhook and delivers it once.
    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        provider: &'static str,
        verification_id: &str,
        url: &str,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    ) -> Delivery {
        let webhook = SentWebhook {
            verification_id: verification_id.to_owned(),
            url: url.to_owned(),
            body,
            headers,
        };
        lock(&self.0).push(webhook.clone());
        deliver_webhook(http, provider, webhook).await
    }

    /// The webhook sent `back` webhooks before the latest one about `verification_id` (0: the
    /// latest).
    pub(crate) fn recorded(
        &self,
        verification_id: &str,
        back: usize,
    ) -> Result<SentWebhook, SandboxError> {
        let sent = lock(&self.0);
        let mine: Vec<&SentWebhook> = sent
            .iter()
            .filter(|w| w.verification_id == verification_id)
            .collect();
        let index = mine
            .len()
            .checked_sub(back + 1)
            .ok_or(SandboxError::NotFound)?;
        Ok(mine[index].clone())
    }

    /// Delivers again the webhook sent `back` webhooks before the latest one about
    /// `verification_id` (0: the latest).
    pub(crate) async fn send_again(
        &self,
        http: &reqwest::Client,
        provider: &'static str,
        verification_id: &str,
        back: usize,
    ) -> Result<(), SandboxError> {
        let webhook = self.recorded(verification_id, back)?;
        deliver_webhook(http, provider, webhook).await;
        Ok(())
    }
}

/// POSTs a webhook body and waits for the attempt; failures are logged without body or URL (the
/// URL may carry the receiver's secret token).
pub(crate) async fn deliver_webhook(
    http: &reqwest::Client,
    provider: &'static str,
    webhook: SentWebhook,
) -> Delivery {
    let SentWebhook {
        verification_id,
        url,
        body,
        headers,
    } = webhook;
    let verification_id = verification_id.as_str();
    let mut request = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(
                provider,
                verification_id,
                status = response.status().as_u16(),
                "sandbox: webhook delivered"
            );
            Delivery::Delivered
        }
        Ok(response) => {
            tracing::warn!(
                provider,
                verification_id,
                status = response.status().as_u16(),
                "sandbox: webhook refused by receiver"
            );
            Delivery::Refused(response.status().as_u16())
        }
        Err(err) => {
            tracing::warn!(provider, verification_id, error = %err.without_url(), "sandbox: webhook delivery failed");
            Delivery::Failed
        }
    }
}

/// The HTTP client simulators use to send webhooks.
pub(crate) fn webhook_client() -> std::io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(std::io::Error::other)
}

/// The serve task of a simulator; dropping it stops the server and ends hanging requests.
pub(crate) struct ServerTask {
    task: JoinHandle<()>,
    _shutdown: watch::Sender<()>,
}

impl ServerTask {
    /// Binds `127.0.0.1:0`, returning the listener, its base URL and the shutdown pair.
    pub(crate) async fn bind() -> std::io::Result<(TcpListener, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        Ok((listener, base_url))
    }

    /// Serves `router` on `listener` in a spawned task.
    pub(crate) fn spawn(
        listener: TcpListener,
        router: Router,
        shutdown: watch::Sender<()>,
        provider: &'static str,
    ) -> Self {
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::warn!(provider, error = %err, "sandbox: server stopped");
            }
        });
        ServerTask {
            task,
            _shutdown: shutdown,
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}

    #[test]
    fn sims_and_their_finish_futures_can_cross_threads() {
        fn check(betrust: &BetrustSim, gu1: &Gu1Sim, didit: &DiditSim) {
            assert_send_sync(betrust);
            assert_send_sync(gu1);
            assert_send_sync(didit);
            let f = betrust.finish("x", Outcome::Approved);
            let g = gu1.finish("x", Outcome::Approved);
            let d = didit.finish("x", Outcome::Approved);
            let s = didit.set_status("x", "Kyc Expired");
            let a = didit.send_webhook_again("x", 0);
            let u = didit.send_data_updated("x");
            fn assert_send<T: Send>(_: &T) {}
            assert_send(&f);
            assert_send(&g);
            assert_send(&d);
            assert_send(&s);
            assert_send(&a);
            assert_send(&u);
        }
        let _ = check;
    }

    #[test]
    fn outcome_parses_and_serializes_snake_case() {
        assert_eq!("in_review".parse::<Outcome>(), Ok(Outcome::InReview));
        assert_eq!(" Approved ".parse::<Outcome>(), Ok(Outcome::Approved));
        assert!(matches!(
            "done".parse::<Outcome>(),
            Err(SandboxError::UnknownOutcome(_))
        ));
        assert_eq!(
            serde_json::to_string(&Outcome::InProgress).unwrap(),
            "\"in_progress\""
        );
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
        }
    }

    #[test]
    fn fault_rules_apply_in_order_and_run_out() {
        let (_tx, rx) = watch::channel(());
        let traffic = ApiTraffic::new(rx);
        traffic.inject(FaultRule::once(Fault::Status(503)).on_path("/transactions"));
        traffic.inject(FaultRule::always(Fault::Malformed).times(2));
        assert_eq!(
            traffic.take_fault("/oauth/token/", None),
            Some(Fault::Malformed)
        );
        assert_eq!(
            traffic.take_fault("/v1/transactions", None),
            Some(Fault::Status(503))
        );
        assert_eq!(
            traffic.take_fault("/v1/transactions", None),
            Some(Fault::Malformed)
        );
        assert_eq!(traffic.take_fault("/v1/transactions", None), None);
        assert_eq!(traffic.requests_seen("/transactions"), 3);
    }
}

#[cfg(test)]
mod autopilot_tests {
    use super::*;

    #[test]
    fn shares_are_exact_over_every_hundred() {
        for percent in [0, 1, 13, 50, 70, 99, 100] {
            let taken = (0..100).filter(|k| in_share(*k, percent)).count();
            assert_eq!(taken, usize::from(percent));
            let first_20 = (0..20).filter(|k| in_share(*k, percent)).count();
            assert_eq!(first_20, usize::from(percent) / 5, "{percent} %");
        }
    }
}
