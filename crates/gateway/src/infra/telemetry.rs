//! Logs, traces and metrics.
//!
//! **Logs** go to stderr: plain text (colour only on a terminal without `NO_COLOR`), or one JSON
//! object a line with `KYC_GATEWAY_LOG_FORMAT=json`; `KYC_GATEWAY_LOG` filters them
//! (`tracing_subscriber`'s `EnvFilter` syntax). A request's lines carry its `request_id`, and its
//! `trace_id` while traces are on.
//!
//! **Traces** go out over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, configured by the standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, default `kyc-gateway`; `OTEL_TRACES_SAMPLER`; `OTEL_EXPORTER_OTLP_HEADERS`;
//! `OTEL_BSP_*`); off otherwise. A request is a server span (`GET /v1/verifications/{id}`: the route
//! template, never the path) that continues the caller's W3C `traceparent`; each provider call in
//! it is a client span with the instance, the operation and the outcome, and the provider gets
//! the trace in its own `traceparent`. Span attributes are the fields of our spans (log lines are
//! not copied into spans), which never hold personal data or secrets.
//!
//! **Metrics**, in Prometheus text at `GET /metrics` (the `metrics` facade and its Prometheus
//! exporter). Every label has a bounded set of values: tenant and provider instance names from the
//! policy, route templates, status codes and words. No id, reference or personal datum is a label.
//!
//! | series | labels |
//! |---|---|
//! | `kyc_http_requests_total` | `tenant` (`-` before authentication), `route`, `status` |
//! | `kyc_provider_calls_total` | `provider`, `operation`, `outcome` |
//! | `kyc_provider_call_duration_seconds` (histogram) | `provider`, `operation` |
//! | `kyc_rate_limited_total` | `limit` (`tenant`, `auth`, `hooks`, `provider`) |
//! | `kyc_circuit_state` (gauge: 0 closed, 1 half-open, 2 open) | `provider` |
//! | `kyc_verifications_started_total` | `tenant`, `provider` |
//! | `kyc_verifications_finished_total` | `tenant`, `provider`, `status` |
//! | `kyc_time_to_decision_seconds` (histogram, creation to final status) | `tenant`, `provider`, `status` |
//! | `kyc_provider_tokens_total` (in the BeTrust adapter) | `provider`, `source` |
//! | `kyc_webhook_attempts_total` | `tenant`, `outcome` |
//! | `kyc_webhook_delivery_lag_seconds` (histogram) | `tenant` |
//! | `kyc_reconciler_backlog` (gauge) | `provider` |
//! | `kyc_webhook_endpoint_disabled` (gauge: 1 disabled) | `tenant` |
//! | `kyc_webhook_refusals_total` | `reason` |
//! | `kyc_webhook_stale_attempts_total` | `tenant` |
//!
//! Each series has its HELP text ([`describe`]), and those the Grafana dashboards read are
//! exported from the start, at 0, for every tenant and instance of the policy
//! ([`start_series`]), so that a panel shows 0 rather than "no data" before the first event.

use kyc_core::ProviderError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The process's recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("kyc_time_to_decision_seconds".into()),
                    &[
                        30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0,
                    ],
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test process): this one then stays empty.
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

/// The HELP text (and unit) of every series.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "kyc_http_requests_total",
        "Requests answered, by tenant (- before authentication), route template and status."
    );
    describe_counter!(
        "kyc_provider_calls_total",
        "Calls to provider instances, by instance, operation and outcome."
    );
    describe_histogram!(
        "kyc_provider_call_duration_seconds",
        Unit::Seconds,
        "Time a call to a provider instance took, by instance and operation."
    );
    describe_counter!(
        "kyc_rate_limited_total",
        "Requests or calls refused by a rate limit, by limit (tenant, auth, hooks, provider)."
    );
    describe_gauge!(
        "kyc_circuit_state",
        "Each instance's circuit breaker on this replica: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "kyc_verifications_started_total",
        "Verifications started, by tenant and instance."
    );
    describe_counter!(
        "kyc_verifications_finished_total",
        "Verifications that reached a final status, by tenant, instance and status."
    );
    describe_histogram!(
        "kyc_time_to_decision_seconds",
        Unit::Seconds,
        "Time from a verification's creation to its final status, by tenant, instance and status."
    );
    describe_counter!(
        "kyc_provider_tokens_total",
        "Access tokens a BeTrust instance used, by instance and source (cache, fetched)."
    );
    describe_counter!(
        "kyc_webhook_attempts_total",
        "Deliveries of events to tenants' webhook URLs, by tenant and outcome (delivered, retry, failed)."
    );
    describe_histogram!(
        "kyc_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "Time from a change to the delivery of its event, by tenant."
    );
    describe_gauge!(
        "kyc_reconciler_backlog",
        "Verifications of each instance not final yet, as the reconciler last counted them."
    );
    describe_gauge!(
        "kyc_webhook_endpoint_disabled",
        "1 while a tenant's webhook URL is disabled after failing too long, else 0."
    );
    describe_counter!(
        "kyc_webhook_refusals_total",
        "Provider webhooks refused before they were read, by reason."
    );
    describe_counter!(
        "kyc_webhook_stale_attempts_total",
        "Delivery attempts whose result came after another replica had taken the event, by tenant."
    );
}

/// Exports, at 0, the series the Grafana dashboards read for the policy's `tenants` and
/// `instances` (name, and whether it is a BeTrust one, which counts its tokens): counters and
/// histograms are only registered (a value already counted stays); the gauges are set to 0 only
/// with `gauges`, at start, before anything sets them.
pub fn start_series<'a>(
    tenants: impl Iterator<Item = &'a str> + Clone,
    instances: impl Iterator<Item = (&'a str, bool)> + Clone,
    gauges: bool,
) {
    metrics::counter!("kyc_http_requests_total", "tenant" => "-", "route" => "/metrics", "status" => "200")
        .increment(0);
    for limit in ["tenant", "auth", "hooks", "provider"] {
        metrics::counter!("kyc_rate_limited_total", "limit" => limit).increment(0);
    }
    for reason in ["budget spent", "unknown instance", "wrong token"] {
        metrics::counter!("kyc_webhook_refusals_total", "reason" => reason).increment(0);
    }
    for (instance, betrust) in instances.clone() {
        let provider = instance.to_string();
        metrics::counter!("kyc_provider_calls_total", "provider" => provider.clone(), "operation" => "create", "outcome" => "ok")
            .increment(0);
        let _ = metrics::histogram!("kyc_provider_call_duration_seconds", "provider" => provider.clone(), "operation" => "create");
        if betrust {
            metrics::counter!("kyc_provider_tokens_total", "provider" => provider.clone(), "source" => "fetched")
                .increment(0);
        }
        if gauges {
            metrics::gauge!("kyc_circuit_state", "provider" => provider.clone()).set(0.0);
            metrics::gauge!("kyc_reconciler_backlog", "provider" => provider.clone()).set(0.0);
        }
        for tenant in tenants.clone() {
            let tenant = tenant.to_string();
            metrics::counter!("kyc_verifications_started_total", "tenant" => tenant.clone(), "provider" => provider.clone())
                .increment(0);
            metrics::counter!("kyc_verifications_finished_total", "tenant" => tenant.clone(), "provider" => provider.clone(), "status" => "approved")
                .increment(0);
            let _ = metrics::histogram!("kyc_time_to_decision_seconds", "tenant" => tenant, "provider" => provider.clone(), "status" => "approved");
        }
    }
    for tenant in tenants {
        let tenant = tenant.to_string();
        metrics::counter!("kyc_webhook_attempts_total", "tenant" => tenant.clone(), "outcome" => "delivered")
            .increment(0);
        metrics::counter!("kyc_webhook_stale_attempts_total", "tenant" => tenant.clone())
            .increment(0);
        if gauges {
            metrics::gauge!("kyc_webhook_endpoint_disabled", "tenant" => tenant.clone()).set(0.0);
        }
        let _ = metrics::histogram!("kyc_webhook_delivery_lag_seconds", "tenant" => tenant);
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn serve_metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render(),
    )
}

/// One provider call's outcome, as a label value.
pub fn outcome(result: Result<(), &ProviderError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(ProviderError::Unavailable(_)) => "unavailable",
        Err(ProviderError::Ambiguous(_)) => "ambiguous",
        Err(ProviderError::NotOurs(_)) => "not_ours",
        Err(ProviderError::BadResponse(_)) => "bad_response",
        Err(ProviderError::Rejected { .. }) => "rejected",
        Err(ProviderError::NotFound) => "not_found",
        Err(ProviderError::SubjectConflict(_)) => "subject_conflict",
        Err(ProviderError::Unauthorized) => "unauthorized",
        Err(ProviderError::Unsupported(_)) => "unsupported",
        Err(ProviderError::Config(_)) => "config",
    }
}

/// A refusal by one of the rate limits.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!("kyc_rate_limited_total", "limit" => limit).increment(1);
}

/// The log thread's buffer: lines waiting together go out in one write of up to this much.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Whether spans are exported (set once, at start).
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// What must outlive serving: the trace exporter and the log writer, flushed when dropped.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    _log_writer: tracing_appender::non_blocking::WorkerGuard,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "traces: the last spans could not be sent");
        }
    }
}

/// Installs logging, and tracing when the `OTEL_*` variables ask for it (see the module doc).
pub fn init() -> Telemetry {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KYC_GATEWAY_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn,opentelemetry_sdk=warn")
    });
    // Colour only on a terminal, and never with NO_COLOR: a log file or collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let json = std::env::var("KYC_GATEWAY_LOG_FORMAT").as_deref() == Ok("json");
    // Lines go to stderr from a thread of their own, so a request never waits on a write; a
    // burst beyond the queue (128k lines) makes writers wait rather than lose lines. The thread
    // writes every line waiting in one write and flushes as soon as none is left, so a line is
    // never held back, and a busy gateway makes one system call per burst, not per line.
    let (stderr, log_writer) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("kyc-gateway-log")
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stderr(),
        ));
    // A log that cannot be written (stderr closed) is dropped: reporting that would panic
    // (eprintln! on the same closed stderr) inside whatever request was logging.
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .log_internal_errors(false)
            .with_writer(stderr.clone())
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .log_internal_errors(false)
            .with_writer(stderr)
    });
    let (provider, failure) = match tracer_provider() {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("kyc-gateway"))
            // Neither busy/idle times, source locations nor log lines as span events: they cost
            // every request more than they tell (the log has the lines, with the trace id; the
            // bench `request_overhead` measures the exporter's cost).
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(traces)
        .init();
    if let Some(error) = failure {
        tracing::error!("traces are off: {error}");
    }
    TRACES_ON.store(provider.is_some(), Ordering::Relaxed);
    Telemetry {
        traces: provider,
        _log_writer: log_writer,
    }
}

/// The OTLP exporter the `OTEL_*` variables describe; `None` when no endpoint is set.
fn tracer_provider() -> Result<Option<SdkTracerProvider>, String> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("kyc-gateway");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Gives `span` its OpenTelemetry name and kind (`server`, `client`) while traces are on; the
/// fields stay empty otherwise, so log lines do not repeat what they already say.
pub fn name_span(span: &tracing::Span, name: std::fmt::Arguments<'_>, kind: &'static str) {
    if TRACES_ON.load(Ordering::Relaxed) {
        span.record("otel.name", tracing::field::display(name));
        span.record("otel.kind", kind);
    }
}

/// Continues the caller's trace (W3C `traceparent` and `tracestate` in `headers`) in `span`, a
/// request's span, and notes the trace id on it for the logs. Nothing when traces are off.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !TRACES_ON.load(Ordering::Relaxed) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// The W3C trace context headers that carry `span` to a provider; none when traces are off.
pub fn trace_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !TRACES_ON.load(Ordering::Relaxed) {
        return Vec::new();
    }
    let mut headers = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| Some((name, headers.remove(name)?)))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// Request headers, read by the trace context propagator.
struct HeaderCarrier<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
