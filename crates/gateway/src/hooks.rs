//! Provider webhooks in: `POST /hooks/{provider}/{token}`.
//!
//! The URL token (unguessable, per provider instance) is checked first, then the adapter's own
//! check (gu1's signature). The body's status is never trusted: the lifecycle service re-reads the
//! verification from the provider and records that, so a forged, duplicated or stale event changes
//! nothing. Unknown verifications are acknowledged and ignored, so the provider stops retrying.
//! Each instance's hook takes at most [`crate::limits::HOOK_LIMIT`] requests, verified or not
//! (429 past it; the reconciler catches up on whatever a refused webhook announced).

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{LimitedBody, ValidPath};
use crate::service;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kyc_core::{IncomingWebhook, Source};

/// Receives one provider webhook.
pub async fn receive(
    State(state): State<AppState>,
    ValidPath((provider_name, token)): ValidPath<(String, String)>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<StatusCode, ApiError> {
    let runtime = state.runtime();
    let not_found = || ApiError::NotFound("no such hook".into());
    // Before any check: a flood of forged webhooks spends only this instance's budget.
    if let Some(limiter) = runtime.hook_limits.get(&provider_name)
        && let crate::limits::Admission::Refused { retry_after } = limiter.admit()
    {
        tracing::warn!(provider = ?provider_name, "webhook refused: the instance's webhook budget is spent");
        crate::telemetry::rate_limited("hooks");
        return Err(ApiError::HooksRateLimited(retry_after));
    }
    if !runtime.hook_token_matches(&provider_name, &token) {
        tracing::warn!(provider = ?provider_name, "webhook with a wrong URL token refused");
        return Err(not_found());
    }
    let provider = runtime
        .providers
        .get(&provider_name)
        .ok_or_else(not_found)?;
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let provider_reference = provider
        .verify_webhook(IncomingWebhook {
            headers: &headers,
            body: &body,
        })
        .map_err(|e| {
            tracing::warn!(provider = ?provider_name, error = %e, "webhook refused");
            ApiError::Unauthorized
        })?;
    let Some(stored) = state
        .store
        .find_by_provider_reference(&provider_name, &provider_reference)
        .await?
    else {
        tracing::info!(provider = ?provider_name, "webhook for an unknown verification ignored");
        return Ok(StatusCode::OK);
    };
    service::sync(&state, &runtime, stored, Source::Webhook).await?;
    Ok(StatusCode::OK)
}
