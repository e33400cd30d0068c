//! A provider's webhook, once its URL token has been checked at the edge: the adapter checks it
//! (gu1's signature) and names the verification; the body's status is never trusted, so the
//! verification is re-read from the provider through [`super::sync`]. A webhook for a
//! verification the gateway does not have is ignored, so the provider stops retrying.

use super::{ServiceError, sync};
use crate::app::{App, Runtime};
use kyc_core::{IncomingWebhook, Source};

/// What became of a webhook that passed the adapter's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The verification was re-read (and its change, if any, recorded).
    Synced,
    /// No verification of this instance has the provider's id.
    Unknown,
}

/// Handles one webhook to instance `provider`; a webhook the adapter refuses is
/// [`ServiceError::WebhookRefused`].
pub async fn on_webhook(
    app: &App,
    runtime: &Runtime,
    provider: &str,
    webhook: IncomingWebhook<'_>,
) -> Result<Heard, ServiceError> {
    let adapter = runtime
        .providers
        .get(provider)
        .ok_or_else(|| ServiceError::ProviderGone(provider.to_string()))?;
    let provider_reference = adapter
        .verify_webhook(webhook)
        .map_err(ServiceError::WebhookRefused)?;
    let Some(stored) = app
        .store
        .find_by_provider_reference(provider, &provider_reference)
        .await?
    else {
        tracing::info!(provider = ?provider, "webhook for an unknown verification ignored");
        return Ok(Heard::Unknown);
    };
    sync(app, runtime, stored, Source::Webhook).await?;
    Ok(Heard::Synced)
}
