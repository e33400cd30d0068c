//! Provider webhooks in: `POST /hooks/{provider}/{token}`.
//!
//! The URL token (unguessable, per provider instance) is checked first, then the adapter's own
//! check (gu1's signature), in [`lifecycle::webhooks::on_webhook`]. The body's status is never
//! trusted: the lifecycle re-reads the verification from the provider and records that, so a
//! forged, duplicated or stale event changes nothing. Unknown verifications are acknowledged and
//! ignored, so the provider stops retrying.
//! Each instance's hook takes at most [`crate::providers::limits::HOOK_LIMIT`] requests, verified or not
//! (429 past it; the reconciler catches up on whatever a refused webhook announced); names the
//! policy does not have share one small budget, [`crate::providers::limits::UNKNOWN_HOOK_LIMIT`].
//!
//! Refusals are counted in `kyc_webhook_refusals_total{reason}` and logged at most once per
//! reason every [`LOG_EVERY`], with how many there were since: a flood of forged webhooks cannot
//! flood the log.

use crate::app::AppState;
use crate::http::extract::{LimitedBody, ValidPath};
use crate::http::problem::ApiError;
use crate::lifecycle::{self, ServiceError};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kyc_core::IncomingWebhook;

/// How often a refusal reason may write a log line.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts a refused webhook, and logs it unless its reason was logged less than [`LOG_EVERY`]
/// ago (the next line then says how many were refused since).
fn refused(reason: &'static str, provider: &str) {
    metrics::counter!("kyc_webhook_refusals_total", "reason" => reason).increment(1);
    static LOGGED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<&'static str, (std::time::Instant, u64)>>,
    > = std::sync::OnceLock::new();
    let mut logged = LOGGED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = std::time::Instant::now();
    let entry = logged.entry(reason).or_insert((now - LOG_EVERY, 0));
    entry.1 += 1;
    if now.duration_since(entry.0) >= LOG_EVERY {
        // The name as sent may be anything: only a known instance's name is logged.
        tracing::warn!(provider, reason, refused = entry.1, "webhooks refused");
        *entry = (now, 0);
    }
}

/// Receives one provider webhook.
pub async fn receive(
    State(state): State<AppState>,
    ValidPath((provider_name, token)): ValidPath<(String, String)>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<StatusCode, ApiError> {
    let runtime = state.runtime();
    let not_found = || ApiError::NotFound("no such hook".into());
    // Before any check: a flood of forged webhooks spends only this instance's budget, or the
    // one budget of names the policy does not have.
    let known = runtime.providers.contains_key(&provider_name);
    let limiter = match runtime.hook_limits.get(&provider_name) {
        Some(limiter) if known => limiter,
        _ => &runtime.unknown_hook_limit,
    };
    let shown = if known { provider_name.as_str() } else { "?" };
    if let crate::providers::limits::Admission::Refused { retry_after } = limiter.admit() {
        refused("budget spent", shown);
        crate::infra::telemetry::rate_limited("hooks");
        return Err(ApiError::HooksRateLimited(retry_after));
    }
    if !known {
        refused("unknown instance", shown);
        return Err(not_found());
    }
    if !runtime.hook_token_matches(&provider_name, &token) {
        refused("wrong token", shown);
        return Err(not_found());
    }
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let webhook = IncomingWebhook {
        headers: &headers,
        body: &body,
    };
    match lifecycle::webhooks::on_webhook(&state, &runtime, &provider_name, webhook).await {
        Err(ServiceError::WebhookRefused(e)) => {
            refused(
                match e {
                    kyc_core::WebhookError::BadSignature => "bad signature",
                    kyc_core::WebhookError::BadBody(_) => "bad body",
                },
                shown,
            );
            Err(ApiError::Unauthorized)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(StatusCode::OK),
    }
}
