//! Checking a Didit webhook. Didit signs each delivery three ways; the adapter checks
//! `X-Signature`: the lowercase hex HMAC-SHA256, under the webhook secret, of the raw body bytes
//! as received, compared in constant time. The other two are not used: `X-Signature-V2` signs a
//! re-serialisation of the JSON (sorted keys, unescaped Unicode, floats shortened the way Python
//! prints them), which a reader must reproduce byte for byte, and `X-Signature-Simple` covers only
//! four fields, leaving the decision unsigned.
//!
//! The body's `timestamp` (Unix seconds) must be within [`SIGNATURE_WINDOW_SECONDS`] of now, so a
//! captured delivery cannot be replayed later. It is read from the body, which the signature
//! covers, not from `X-Timestamp`, which it does not: a replay with a fresh header is refused.

use hmac::{Hmac, KeyInit, Mac};
use kyc_core::WebhookError;
use serde::Deserialize;
use sha2::Sha256;

/// How far the signed `timestamp` may be from now, either way (Didit's documented 5 minutes).
pub const SIGNATURE_WINDOW_SECONDS: i64 = 300;

/// What the gateway reads of a webhook's body once its signature holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookEnvelope {
    /// The session it is about.
    pub session_id: String,
    /// When Didit sent it, Unix seconds.
    pub timestamp: i64,
    /// Its status, as Didit writes it.
    #[serde(default)]
    pub status: Option<String>,
    /// `status.updated` or `data.updated`.
    #[serde(default)]
    pub webhook_type: Option<String>,
    /// The key the gateway gave the session at its creation.
    #[serde(default)]
    pub vendor_data: Option<String>,
}

/// Checks a delivery's `X-Signature` over `body`, then its signed `timestamp` against `now`
/// (Unix seconds), and reads its envelope.
pub fn verify_webhook_signature(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
    now: i64,
) -> Result<WebhookEnvelope, WebhookError> {
    let signature = signature
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or(WebhookError::BadSignature)?;
    if secret.is_empty() {
        return Err(WebhookError::BadSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| WebhookError::BadSignature)?;
    let envelope: WebhookEnvelope = serde_json::from_slice(body).map_err(|e| {
        WebhookError::BadBody(format!(
            "not a Didit webhook ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if envelope.timestamp.abs_diff(now) > SIGNATURE_WINDOW_SECONDS.unsigned_abs() {
        return Err(WebhookError::BadSignature);
    }
    if envelope.session_id.trim().is_empty() {
        return Err(WebhookError::BadBody(
            "the Didit webhook names no session".to_string(),
        ));
    }
    Ok(envelope)
}
