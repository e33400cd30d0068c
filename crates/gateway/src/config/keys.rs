//! A tenant's API keys as the policy writes them: a bare hash, or a table with a name, an expiry
//! and a scope.

use serde::Deserialize;

/// One API key of a tenant: its hash alone, or with a name (shown as the actor of manual
/// decisions), an expiry and a scope. Read by hand rather than as an untagged enum, so that a key
/// table with a field it does not know (a typo of `scope`) is refused naming the field, instead
/// of silently serving as a full-access key.
#[derive(Debug, Clone)]
pub enum ApiKey {
    /// `"sha256:<hex>"`.
    Hash(String),
    /// `{ name = "ci", hash = "sha256:<hex>", expires_at = "2027-06-30T00:00:00Z" }`.
    Named {
        /// What the key is called, e.g. the team or system holding it.
        name: String,
        /// `sha256:<hex>` of the key.
        hash: String,
        /// When the key stops working; absent, never.
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// What it may do.
        scope: Scope,
    },
}

/// What an API key may do.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything the API offers the tenant.
    #[default]
    Full,
    /// Only the figures: stats, experiments, the policy, previews (and so the dashboard); no
    /// verification, identity or event, and no change.
    Read,
}

/// The table form of an [`ApiKey`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedKey {
    name: String,
    hash: String,
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    scope: Scope,
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = ApiKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"sha256:<hex>\" or a table { name, hash, expires_at, scope }")
            }
            fn visit_str<E: serde::de::Error>(self, hash: &str) -> Result<ApiKey, E> {
                Ok(ApiKey::Hash(hash.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ApiKey, A::Error> {
                let key = NamedKey::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ApiKey::Named {
                    name: key.name,
                    hash: key.hash,
                    expires_at: key.expires_at,
                    scope: key.scope,
                })
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl ApiKey {
    /// The `sha256:<hex>` form.
    pub fn hash(&self) -> &str {
        match self {
            ApiKey::Hash(hash) | ApiKey::Named { hash, .. } => hash,
        }
    }

    /// Its name, or for a bare hash the hash's first 12 hex digits (not secret, and stable).
    pub fn name(&self) -> String {
        match self {
            ApiKey::Named { name, .. } => name.clone(),
            ApiKey::Hash(hash) => hash.chars().take("sha256:".len() + 12).collect(),
        }
    }

    /// What it may do: a bare hash may do everything.
    pub fn scope(&self) -> Scope {
        match self {
            ApiKey::Named { scope, .. } => *scope,
            ApiKey::Hash(_) => Scope::Full,
        }
    }

    /// When it stops working, if ever.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            ApiKey::Named { expires_at, .. } => *expires_at,
            ApiKey::Hash(_) => None,
        }
    }
}
