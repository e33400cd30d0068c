//! The provider registry: the one place in the gateway that names adapter crates.
//!
//! Adding a provider is a new adapter crate whose config type implements
//! [`kyc_core::AdapterConfig`], and one line in `REGISTRY` (see `docs/adding-a-provider.md`).
//! Nothing else in the gateway knows a provider's settings, secrets or wire format.

pub mod circuit;
pub mod guarded;
pub mod limits;
pub mod routing;

use crate::config::ProviderConfig;
use kyc_core::outbound::Outbound;
use kyc_core::{AdapterConfig, Provider};
use std::sync::Arc;

/// Every adapter, one line each.
const REGISTRY: &[Adapter] = &[
    adapter::<kyc_adapters_betrust::BetrustConfig>(),
    adapter::<kyc_adapters_gu1::Gu1Config>(),
    adapter::<kyc_adapters_didit::DiditConfig>(),
];

/// Builds an instance from its name and its policy section (without `kind`).
type Builder = fn(&str, toml::Table, &Outbound) -> Result<Arc<dyn Provider>, BuildError>;

/// What the gateway knows of an adapter: its `kind`, its secret settings, and how to build it.
struct Adapter {
    kind: &'static str,
    secrets: &'static [&'static str],
    build: Builder,
}

const fn adapter<C: AdapterConfig>() -> Adapter {
    Adapter {
        kind: C::KIND,
        secrets: C::SECRETS,
        build: build::<C>,
    }
}

/// The adapter of `kind`.
fn find(kind: &str) -> Result<&'static Adapter, BuildError> {
    REGISTRY.iter().find(|a| a.kind == kind).ok_or_else(|| {
        let kinds: Vec<&str> = REGISTRY.iter().map(|a| a.kind).collect();
        BuildError::UnknownKind(kinds.join(", "))
    })
}

/// The kinds of every registered adapter.
pub fn kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|a| a.kind).collect()
}

/// Why an instance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No adapter has this kind.
    #[error("unknown kind; expected one of {0}")]
    UnknownKind(String),
    /// A setting is missing, unknown or of the wrong type; `key` is its dotted path in the section.
    #[error("{message}")]
    Setting {
        /// The setting's path below the section, e.g. `timeout_ms`.
        key: String,
        /// What is wrong, never the value.
        message: String,
    },
    /// The adapter refused the settings (its own checks, e.g. a base URL that is not http(s)).
    #[error(transparent)]
    Adapter(#[from] kyc_core::ProviderError),
}

/// Builds the instance `name` from its policy section; its secret settings must have come from
/// the environment, its targets must pass `outbound`, and its client follows it.
pub fn build_instance(
    name: &str,
    config: &ProviderConfig,
    outbound: &Outbound,
) -> Result<Arc<dyn Provider>, BuildError> {
    let adapter = find(&config.kind)?;
    for secret in adapter.secrets {
        if config.settings.contains_key(*secret) && !config.from_env.contains(*secret) {
            return Err(BuildError::Setting {
                key: secret.to_string(),
                message: "secrets must come from the environment: write \"${VAR_NAME}\"".into(),
            });
        }
    }
    (adapter.build)(name, config.settings.clone(), outbound)
}

/// The instance's secret values, in its adapter's order: the key of the unguessable token in
/// its webhook URL. Empty for an unknown kind (which is never built).
pub fn secret_values(config: &ProviderConfig) -> Vec<&str> {
    find(&config.kind).map_or_else(
        |_| Vec::new(),
        |adapter| {
            adapter
                .secrets
                .iter()
                .filter_map(|k| config.settings.get(*k).and_then(toml::Value::as_str))
                .collect()
        },
    )
}

fn build<C: AdapterConfig>(
    name: &str,
    settings: toml::Table,
    outbound: &Outbound,
) -> Result<Arc<dyn Provider>, BuildError> {
    let config: C =
        serde_path_to_error::deserialize(toml::Value::Table(settings)).map_err(|e| {
            BuildError::Setting {
                key: e.path().to_string(),
                message: crate::config::describe_serde_error(&e.into_inner().to_string()),
            }
        })?;
    Ok(config.build(name, outbound)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Runtime;
    use crate::config::Policy;

    /// The pinned example policy: it has an instance of every registered kind.
    const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.toml");

    fn env(name: &str) -> Option<String> {
        Some(if name == "PAYMENTS_WEBHOOK_SECRET" {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
        } else {
            format!("from-the-environment-{name}")
        })
    }

    /// The example with one setting of one instance written as `value`.
    fn example_with(instance: &str, key: &str, value: &str) -> String {
        let mut doc: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let section = doc["providers"][instance].as_table_mut();
        let section = section.expect("the instance is a table");
        section.insert(key.to_string(), toml::Value::String(value.into()));
        toml::to_string(&doc).unwrap()
    }

    #[test]
    fn every_registered_kind_refuses_its_secret_settings_written_literally() {
        let example = Policy::parse(EXAMPLE, env).unwrap();
        assert!(Runtime::instance_problems(&example).is_empty());
        let mut checked = 0;
        for kind in kinds() {
            let (name, config) = example
                .providers
                .iter()
                .find(|(_, c)| c.kind == kind)
                .unwrap_or_else(|| panic!("deploy/policy.example.toml has no {kind} instance"));
            let secrets = find(kind).unwrap().secrets;
            assert!(!secrets.is_empty(), "{kind} names no secret setting");
            for secret in secrets {
                assert!(
                    config.settings.contains_key(*secret),
                    "the example's {name} leaves out {secret}"
                );
                let literal = "written-in-the-file-0123456789";
                let policy = Policy::parse(&example_with(name, secret, literal), env).unwrap();
                let problems = Runtime::instance_problems(&policy);
                let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
                assert!(
                    shown.iter().any(|p| {
                        p.starts_with(&format!("providers.{name}.{secret}:"))
                            && p.contains("must come from the environment")
                    }),
                    "{kind} took {secret} written literally: {shown:?}"
                );
                assert!(!shown.iter().any(|p| p.contains(literal)), "{shown:?}");
                checked += 1;
            }
        }
        assert!(checked >= 3);
    }

    #[test]
    fn a_reload_that_writes_a_secret_literally_is_refused_even_with_the_same_value() {
        let running = Runtime::build(Policy::parse(EXAMPLE, env).unwrap()).unwrap();
        let (name, config) = running
            .policy
            .providers
            .iter()
            .find(|(_, c)| c.kind == "gu1")
            .map(|(n, c)| (n.clone(), c.clone()))
            .unwrap();
        // The value the environment gave, now pasted into the file.
        let same = config.settings["api_key"].as_str().unwrap().to_string();
        let edited = Policy::parse(&example_with(&name, "api_key", &same), env).unwrap();
        assert_eq!(edited.providers[&name].settings, config.settings);
        let refused = Runtime::build_next(edited, Some(&running)).err().unwrap();
        assert!(
            refused
                .to_string()
                .starts_with(&format!("providers.{name}.api_key:")),
            "{refused}"
        );
        assert!(!refused.to_string().contains(&same));
    }

    #[test]
    fn a_setting_that_is_no_secret_may_be_written_literally() {
        // BeTrust's client id is not a secret: written in the file, it is taken.
        let name = Policy::parse(EXAMPLE, env)
            .unwrap()
            .providers
            .iter()
            .find(|(_, c)| c.kind == "betrust")
            .map(|(n, _)| n.clone())
            .unwrap();
        let policy = Policy::parse(&example_with(&name, "client_id", "a-client-id"), env).unwrap();
        assert!(Runtime::instance_problems(&policy).is_empty());
    }
}
