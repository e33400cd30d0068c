//! The tenant policy: one TOML file naming provider instances, tenants, their keys and routing.
//!
//! Parsing is strict: an unknown key, a route to a provider that does not exist, a key that is not a
//! `sha256:` hash or a secret written into the file itself is refused with a message naming the key.
//! Secrets come from the environment through `${VAR}`; the lookup is a parameter so that the
//! sandbox and tests can supply their own environment without touching the process's.
//!
//! [`schema`] is the file's shape, [`load`] reads it and fills `${VAR}`, [`validate`] checks
//! every bound and reference (one function per section), and [`signing`] reads the tenants'
//! webhook signing keys.

pub mod keys;
pub mod load;
pub mod schema;
pub mod signing;
pub mod validate;

pub use keys::{ApiKey, Scope};
pub use load::{describe_serde_error, hash_api_key};
pub use schema::*;
pub use validate::{country_codes, is_country_code};

use serde::Deserialize;
use std::collections::BTreeMap;

/// A policy that failed to load, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("not valid TOML: {0}")]
    Syntax(String),
    /// A key is missing, unknown or has a bad value.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted path of the key at fault, e.g. `tenants.payments.routing.default`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Server-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where verifications are kept.
    pub store: StoreConfig,
    /// Named provider instances.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Tenants by name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The background re-reader of unfinished verifications.
    #[serde(default)]
    pub reconciler: ReconcilerConfig,
    /// Delivery of tenants' events.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The watch over experiments' guardrails.
    #[serde(default)]
    pub experiments: ExperimentsConfig,
    /// The compliance jobs.
    #[serde(default)]
    pub compliance: ComplianceConfig,
}

impl Policy {
    /// The outbound rule with this policy's `server.outbound_allow` exemptions, through its
    /// `server.outbound_proxy` when it names one (the policy check refuses one that is not a URL).
    pub fn outbound(&self) -> kyc_core::outbound::Outbound {
        use kyc_core::outbound::{Allowlist, Outbound};
        let allow = &self.server.outbound_allow;
        match self.outbound_proxy() {
            Some(proxy) => Outbound::through_proxy(allow, proxy),
            None => Outbound::new(Allowlist::new(allow)),
        }
    }

    /// `server.outbound_proxy`, parsed.
    fn outbound_proxy(&self) -> Option<url::Url> {
        url::Url::parse(self.server.outbound_proxy.as_deref()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy file of DESIGN.md, with an instance of every registered kind.
    pub const PINNED: &str = include_str!("../../../../deploy/policy.example.toml");

    fn env(name: &str) -> Option<String> {
        Some(match name {
            "PAYMENTS_WEBHOOK_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            _ => format!("value-of-{name}"),
        })
    }

    #[test]
    fn the_pinned_example_parses() {
        let policy = Policy::parse(PINNED, env).unwrap();
        assert_eq!(
            policy.tenants["payments"].routing.default.as_deref(),
            Some("betrust-cl")
        );
        assert_eq!(policy.providers["gu1"].kind, "gu1");
        let printed = format!("{policy:?}");
        assert!(!printed.contains("value-of-GU1_API_KEY"), "{printed}");
        assert_eq!(policy.reconciler.every_seconds, 60);
        assert_eq!(policy.server.outbound_allow.len(), 2);
    }

    #[test]
    fn a_rule_names_an_assigned_country() {
        assert!(is_country_code("CL") && is_country_code("XK"));
        assert!(!is_country_code("XX") && !is_country_code("cl") && !is_country_code("CHL"));
        let text = PINNED.replace("country = \"AR\"", "country = \"XX\"");
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(
            err.starts_with("tenants.payments.routing.rules[0].country:"),
            "{err}"
        );
    }

    #[test]
    fn webhook_settings_are_checked() {
        let bad_secret = |secret: &str| {
            let env = |name: &str| match name {
                "PAYMENTS_WEBHOOK_SECRET" => Some(secret.to_string()),
                other => env(other),
            };
            Policy::parse(PINNED, env).unwrap_err().to_string()
        };
        for secret in ["plain-text", "whsec_short", "whsec_a whsec_b whsec_c"] {
            assert!(
                bad_secret(secret).starts_with("tenants.payments.webhook_secret:"),
                "{secret}"
            );
        }
        let text = PINNED.replace("\"10.20.0.0/16\"", "\"10.20.0.0/99\"");
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(err.starts_with("server.outbound_allow[0]:"), "{err}");
        let text = PINNED.replace(
            "https://payments.internal.example/kyc-events",
            "ftp://payments.internal.example/kyc-events",
        );
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(err.starts_with("tenants.payments.webhook_url:"), "{err}");
    }

    #[test]
    fn an_unknown_provider_in_routing_names_the_key() {
        let text = PINNED.replace("default = \"betrust-cl\"", "default = \"nope\"");
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(
            err.starts_with("tenants.payments.routing.default:"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = PINNED.replace("[reconciler]", "[reconciler]\nevery_minutes = 3");
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(err.contains("every_minutes"), "{err}");
    }

    #[test]
    fn a_literal_tenant_secret_is_refused() {
        // Adapters' secrets are refused where their instance is built (crate::providers).
        let literal = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let text = PINNED.replace("\"${PAYMENTS_WEBHOOK_SECRET}\"", &format!("\"{literal}\""));
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(err.starts_with("tenants.payments.webhook_secret:"), "{err}");
        assert!(err.contains("must come from the environment"), "{err}");
        assert!(!err.contains(literal));
    }

    #[test]
    fn a_missing_environment_variable_is_named() {
        let err = Policy::parse(PINNED, |_| None).unwrap_err().to_string();
        assert!(err.contains("is not set"), "{err}");
    }

    #[test]
    fn a_bad_key_hash_is_refused() {
        let text = PINNED.replace("sha256:9f86", "9f86");
        let err = Policy::parse(&text, env).unwrap_err().to_string();
        assert!(err.starts_with("tenants.payments.api_keys[0]:"), "{err}");
    }

    #[test]
    fn hash_key_matches_the_example() {
        assert_eq!(
            hash_api_key("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
