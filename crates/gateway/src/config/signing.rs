//! The tenants' webhook signing keys (Standard Webhooks `whsec_` secrets).

use standardwebhooks::Webhook;

/// The signers for a tenant's `webhook_secret`: one `whsec_<base64>` secret, or two separated by a
/// space while it rotates. `None` when it is not that.
pub fn signers(secret: &str) -> Option<Vec<Webhook>> {
    let parts: Vec<&str> = secret.split(' ').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.len() > 2 {
        return None;
    }
    parts
        .into_iter()
        .map(|p| {
            let key = p.strip_prefix("whsec_")?;
            let ok = base64_len_ok(key);
            ok.then(|| Webhook::new(p).ok()).flatten()
        })
        .collect()
}

/// A secret of at least 16 bytes once decoded (24 base64 characters).
fn base64_len_ok(key: &str) -> bool {
    key.len() >= 24
}
