//! The provider registry: the one place in the gateway that names adapter crates.
//!
//! Adding a provider is a new adapter crate whose config type implements
//! [`kyc_core::AdapterConfig`], and one line in `REGISTRY`. Nothing else in the gateway knows a
//! provider's settings or wire format.

use kyc_core::outbound::Outbound;
use kyc_core::{AdapterConfig, Provider};
use std::sync::Arc;

/// Builds an instance from its name and its policy section (without `kind`).
type Builder = fn(&str, toml::Table, &Outbound) -> Result<Arc<dyn Provider>, BuildError>;

/// Every adapter, by the `kind` that selects it.
const REGISTRY: &[(&str, Builder)] = &[
    (
        kyc_adapters_betrust::BetrustConfig::KIND,
        build::<kyc_adapters_betrust::BetrustConfig>,
    ),
    (
        kyc_adapters_gu1::Gu1Config::KIND,
        build::<kyc_adapters_gu1::Gu1Config>,
    ),
];

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

/// Builds the instance `name` of adapter `kind` from its settings; its targets must pass
/// `outbound`, and its client follows it.
pub fn build_instance(
    kind: &str,
    name: &str,
    settings: toml::Table,
    outbound: &Outbound,
) -> Result<Arc<dyn Provider>, BuildError> {
    let (_, builder) = REGISTRY.iter().find(|(k, _)| *k == kind).ok_or_else(|| {
        let kinds: Vec<&str> = REGISTRY.iter().map(|(k, _)| *k).collect();
        BuildError::UnknownKind(kinds.join(", "))
    })?;
    builder(name, settings, outbound)
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
                message: crate::policy::describe_serde_error(&e.into_inner().to_string()),
            }
        })?;
    Ok(config.build(name, outbound)?)
}
