//! Metrics, in Prometheus text at `GET /metrics` (the `metrics` facade and its Prometheus
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

use kyc_core::ProviderError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
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
