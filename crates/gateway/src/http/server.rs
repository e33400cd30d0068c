//! Assembles the service: routes, OpenAPI and Swagger UI, the request layers (tower-http's request
//! id, trace and compression layers, and our size and time limits), the background jobs, and the
//! listening socket.

use crate::app::{App, AppState, Runtime};
use crate::config::{Policy, PolicyError};
use crate::http::problem::{ApiError, REQUEST_ID};
use crate::http::{hooks, openapi};
use crate::jobs;
use crate::store::{SqlStore, Store, StoreError};
use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tracing::Instrument;
use utoipa_swagger_ui::SwaggerUi;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy is invalid.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another process holds the address.
    #[error(
        "{0} is already in use; choose another address with --listen, e.g. --listen 127.0.0.1:8081"
    )]
    AddressInUse(String),
    /// The address could not be bound, or serving failed.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The whole HTTP service around an application state.
pub fn router(state: AppState) -> Router {
    let (api, document) = openapi::router_and_document();
    let document = Arc::new(openapi::complete(document));
    api.route(
        "/hooks/{provider}/{token}",
        axum::routing::post(hooks::receive),
    )
    .route(
        "/openapi.json",
        axum::routing::get(move |State(state): State<AppState>| async move {
            let runtime = state.runtime();
            let names = runtime.providers.keys().map(String::as_str);
            Json(openapi::served(&document, names))
        }),
    )
    .route(
        "/metrics",
        axum::routing::get(crate::infra::telemetry::serve_metrics),
    )
    .merge(crate::http::dashboard::router())
    .fallback(|| async { ApiError::NotFound("no such endpoint; see /docs".into()) })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        around_request,
    ))
    .layer(tower_http::compression::CompressionLayer::new())
    .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(
        answer_panic,
    ))
    .with_state(state)
    .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
}

/// A panic is a bug: log it (not its payload, which could hold anything) and answer a problem
/// document instead of dropping the connection.
fn answer_panic(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal.into_response()
}

/// Longest request target (path and query) served.
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) served.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What every request goes through, as one layer: its id, its span and log line, the size and
/// time limits, the `RateLimit` headers and the request counter. One layer, not six: each layer
/// of its own boxed the request's future and cloned the service behind it, per request, and
/// together they were about a fifth of the CPU of a `GET` (issue 24).
async fn around_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = usable_request_id(request.headers()).unwrap_or_else(new_request_id);
    request.headers_mut().insert(X_REQUEST_ID, id.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let span = request_span(&request, &id, &route);
    let started = std::time::Instant::now();
    let mut response = within_limits(state, request, next, id.to_str().unwrap_or("-"), &route)
        .instrument(span.clone())
        .await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    let quiet = logged_at_debug(read, &route, response.status());
    log_served(response.status(), started.elapsed(), quiet, &span);
    response
}

/// The request id header, read and answered.
const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The caller's `x-request-id` when it is usable: one, not empty, at most 64 characters, made of
/// letters, digits, `-` and `_`. It goes into every log line and the answer, so it must be short
/// and inert; otherwise the request gets a new one.
fn usable_request_id(headers: &axum::http::HeaderMap) -> Option<HeaderValue> {
    let mut ids = headers.get_all(X_REQUEST_ID).iter();
    let (Some(id), None) = (ids.next(), ids.next()) else {
        return None;
    };
    let bytes = id.as_bytes();
    let usable = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    usable.then(|| id.clone())
}

/// A new request id, `req_<ULID>`.
fn new_request_id() -> HeaderValue {
    let mut ulid = [0u8; ulid::ULID_LEN];
    let mut id = [0u8; 4 + ulid::ULID_LEN];
    id[..4].copy_from_slice(b"req_");
    id[4..].copy_from_slice(ulid::Ulid::generate().array_to_str(&mut ulid).as_bytes());
    HeaderValue::from_bytes(&id).expect("ASCII")
}

/// Runs the request under the size and time limits, with its id at hand for problem documents,
/// counts it in `kyc_http_requests_total`, and puts the calling tenant's `RateLimit` headers
/// (noted by the `Tenant` extractor) on the answer, whatever it is.
async fn within_limits(
    state: AppState,
    mut request: Request,
    next: Next,
    id: &str,
    route: &str,
) -> Response {
    let note = crate::http::extract::RequestNote::default();
    request.extensions_mut().insert(note.clone());
    let answer = async {
        match oversized(&request) {
            Some(refusal) => refusal.into_response(),
            None => in_time(&state, request, next).await,
        }
    };
    let mut response = REQUEST_ID.scope(id.to_string(), answer).await;
    let noted = note.take();
    // The calling tenant's rate limit, on whatever the answer is.
    if let Some(headers) = noted.rate_limit {
        response.headers_mut().extend(headers);
    }
    metrics::counter!(
        "kyc_http_requests_total",
        "tenant" => noted.tenant.unwrap_or_else(|| "-".into()),
        "route" => route.to_string(),
        "status" => response.status().as_str().to_string()
    )
    .increment(1);
    response
}

/// A request target or headers over the limits, refused as a problem (beyond them, what is left
/// is the HTTP server's own, much larger, buffer limit).
fn oversized(request: &Request) -> Option<ApiError> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong);
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (headers > MAX_HEADER_BYTES).then_some(ApiError::HeadersTooLarge)
}

/// Bounds a request in time by `[server]`: its body must be in within `request_body_timeout_ms`
/// of the head (408 otherwise, however slowly it trickles), and the answer must be ready within
/// `request_timeout_ms` (503 otherwise; a create cut off this way is safe to retry with the same
/// reference). The body deadline is tower-http's `DeadlineBody`; the request deadline is ours
/// because tower-http's `TimeoutLayer` answers with an empty body, not a problem document.
async fn in_time(state: &AppState, request: Request, next: Next) -> Response {
    let (body_timeout, request_timeout) = {
        let server = &state.runtime().policy.server;
        (
            std::time::Duration::from_millis(server.request_body_timeout_ms),
            std::time::Duration::from_millis(server.request_timeout_ms),
        )
    };
    let request = request.map(|body| {
        axum::body::Body::new(tower_http::timeout::DeadlineBody::new(body_timeout, body))
    });
    match tokio::time::timeout(request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = request_timeout.as_millis() as u64,
                "request not answered in time"
            );
            ApiError::Unavailable(format!(
                "the request was not answered within {} ms; retry it (a create with the same \
                 reference is safe to retry)",
                request_timeout.as_millis()
            ))
            .into_response()
        }
    }
}

/// A request's span: its id, method and route template (never the raw path or query), as an
/// OpenTelemetry server span continuing the caller's trace.
fn request_span(request: &Request, id: &HeaderValue, route: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        request_id = %id.to_str().unwrap_or("-"),
        method = %request.method(),
        route = %route,
        tenant = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    crate::infra::telemetry::name_span(
        &span,
        format_args!("{} {route}", request.method()),
        "server",
    );
    crate::infra::telemetry::continue_trace(&span, request.headers());
    span
}

/// One log line per request, in its span: the status and the time taken, at DEBUG when `quiet`
/// (see [`logged_at_debug`]), else at INFO.
fn log_served(status: StatusCode, latency: std::time::Duration, quiet: bool, span: &tracing::Span) {
    let status = status.as_u16();
    span.record("http.response.status_code", status);
    let _in_span = span.enter();
    let elapsed_ms = latency.as_millis() as u64;
    if quiet {
        tracing::debug!(status, elapsed_ms, "request served");
    } else {
        tracing::info!(status, elapsed_ms, "request served");
    }
}

/// Whether a request's line is DEBUG: a read that succeeded (`GET` or `HEAD` answered 2xx or
/// 304), since at a busy gateway those lines were most of the log and about a tenth of the CPU,
/// and `kyc_http_requests_total` counts them anyway. So do a 429 and a refused provider webhook:
/// a flood of them would flood the log, and the limits and the webhook receiver count them (and
/// the receiver logs a line per reason now and then).
fn logged_at_debug(read: bool, route: &str, status: StatusCode) -> bool {
    (read && (status.is_success() || status == StatusCode::NOT_MODIFIED))
        || status == StatusCode::TOO_MANY_REQUESTS
        || (route.starts_with("/hooks/") && !status.is_success())
}

/// Binds `listen`, a clear error when another process holds it.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, ServeError> {
    let in_use = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AddrInUse => ServeError::AddressInUse(listen.to_string()),
        _ => ServeError::Io(e),
    };
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            // A deep accept queue: when a burst of connections outruns the accept loop, the
            // kernel keeps them instead of dropping them unseen (the system caps it, somaxconn).
            Ok(()) => return socket.listen(LISTEN_BACKLOG).map_err(in_use),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || {
            ServeError::Io(std::io::Error::other(
                "the listen address resolves to nothing",
            ))
        },
        in_use,
    ))
}

/// The accept queue asked of the kernel.
const LISTEN_BACKLOG: u32 = 4096;

/// Opens the store, binds `listen`, and serves `policy` until Ctrl-C or SIGTERM, reloading it
/// from `policy_file` when that changes or on SIGHUP. `on_listening` gets the bound base URL
/// (useful when `listen` asks for port 0).
pub async fn serve(
    policy: Policy,
    policy_file: Option<std::path::PathBuf>,
    listen: &str,
    on_listening: impl FnOnce(&str),
) -> Result<(), ServeError> {
    serve_on(
        bind(listen).await?,
        policy,
        policy_file,
        Router::new(),
        on_listening,
    )
    .await
}

/// Serves `policy` on a bound listener, with `extra` routes beside the API (the sandbox's); with
/// a `policy_file`, reloads it live (see [`jobs::policy_watch`]).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    policy: Policy,
    policy_file: Option<std::path::PathBuf>,
    extra: Router,
    on_listening: impl FnOnce(&str),
) -> Result<(), ServeError> {
    crate::infra::telemetry::metrics();
    let store = SqlStore::connect_with(&policy.store).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let public_url = policy
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| base.clone());
    let limits = crate::http::listener::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(policy.server.header_read_timeout_ms),
        max_connections: policy.server.max_connections,
    };
    for warning in policy.warnings() {
        tracing::warn!("policy warning: {warning}");
    }
    crate::app::start_series(&policy, true);
    let runtime = Runtime::build(policy)?;
    let app = Arc::new(App::new(
        Arc::new(store) as Arc<dyn Store>,
        public_url,
        runtime,
    ));
    let workers = [
        tokio::spawn(jobs::reconciler::run(app.clone())),
        tokio::spawn(jobs::outbox::run(app.clone())),
        tokio::spawn(jobs::experiments::run(app.clone())),
        tokio::spawn(jobs::expiry::run(app.clone())),
        tokio::spawn(jobs::audit::run(app.clone())),
        tokio::spawn(jobs::retention::run(app.clone())),
    ];
    if let Some(path) = policy_file {
        jobs::policy_watch::start(app.clone(), path)?;
    }
    let service = router(AppState(app.clone())).merge(extra);
    tracing::info!("listening on {base}");
    on_listening(&base);
    let stopping = app.stopping.clone();
    let signal = async move {
        shutdown_signal().await;
        // The jobs stop taking work while the open requests drain.
        stopping.cancel();
    };
    crate::http::listener::serve(listener, service, limits, signal).await;
    let jobs = async {
        for worker in workers {
            let _ = worker.await;
        }
    };
    if tokio::time::timeout(WORKER_GRACE, jobs).await.is_err() {
        tracing::warn!("background jobs still busy after the shutdown grace period; leaving them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long the background jobs get, once open requests are done, to finish what they started.
/// Open requests get up to 30 s first (see `listener`); the Kubernetes manifest's
/// `terminationGracePeriodSeconds` covers both.
const WORKER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}
