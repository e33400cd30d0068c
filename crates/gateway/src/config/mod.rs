//! The tenant policy: one TOML file naming provider instances, tenants, their keys and routing.
//!
//! Parsing is strict: an unknown key, a route to a provider that does not exist, a key that is not a
//! `sha256:` hash or a secret written into the file itself is refused with a message naming the key.
//! Secrets come from the environment through `${VAR}`; the lookup is a parameter so that the
//! sandbox and tests can supply their own environment without touching the process's.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

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
}

/// How often each tenant's experiment is checked against its guardrail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsConfig {
    /// Seconds between checks.
    pub every_seconds: u64,
}

impl Default for ExperimentsConfig {
    fn default() -> Self {
        Self { every_seconds: 30 }
    }
}

/// Server-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Base of the webhook URLs given to providers; when absent, the address the gateway listens on.
    pub public_url: Option<String>,
    /// Host names and CIDR blocks (or single addresses) exempt from the refusal of private,
    /// loopback and plain-http targets of outgoing webhooks.
    #[serde(default)]
    pub outbound_allow: Vec<String>,
    /// An HTTP(S) proxy every outbound connection goes through (providers and tenants' webhooks);
    /// none when absent, and the proxy variables of the environment are ignored either way.
    /// The target rule still applies to each target, before it is used.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Failed authentications allowed per source address and minute before it gets 429.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// How long a connection may take to send a request's head (line and headers), counted from
    /// when the server starts waiting for it: this also closes a kept-alive connection that sends
    /// nothing for this long.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// How long a request body may take to arrive once its head is in (408 past it).
    #[serde(default = "default_request_body_timeout")]
    pub request_body_timeout_ms: u64,
    /// How long one request may take in all, provider calls included (503 past it). Keep it above
    /// the providers' `timeout_ms` times the instances a create may try.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Most connections open at once; past it a new connection is answered 503 and closed. Lowered
    /// at start to fit the process's open-file limit (see `crate::http::listener`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_auth_failures() -> u32 {
    60
}
fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_request_body_timeout() -> u64 {
    10_000
}
fn default_request_timeout() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_url: None,
            outbound_allow: Vec::new(),
            outbound_proxy: None,
            auth_failures_per_minute: default_auth_failures(),
            header_read_timeout_ms: default_header_read_timeout(),
            request_body_timeout_ms: default_request_body_timeout(),
            request_timeout_ms: default_request_timeout(),
            max_connections: default_max_connections(),
        }
    }
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

/// The default of [`ProviderConfig::lookup_grace_seconds`].
pub const DEFAULT_LOOKUP_GRACE_SECONDS: u64 = 120;

fn default_lookup_grace_seconds() -> u64 {
    DEFAULT_LOOKUP_GRACE_SECONDS
}

/// Where verifications are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://FILE` or `postgres://user@host/db`.
    pub url: String,
    /// On PostgreSQL, the longest one statement may run, milliseconds: 100 to 600000; default
    /// 15000.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// On PostgreSQL, the longest a statement waits for a lock, milliseconds: 100 to 600000;
    /// default 3000. (SQLite waits for its writer at most 10 s.)
    #[serde(default = "default_lock_timeout_ms")]
    pub lock_timeout_ms: u64,
}

fn default_statement_timeout_ms() -> u64 {
    15_000
}

fn default_lock_timeout_ms() -> u64 {
    3_000
}

impl StoreConfig {
    /// The store at `url` with the default time limits.
    pub fn at(url: &str) -> StoreConfig {
        StoreConfig {
            url: url.to_string(),
            statement_timeout_ms: default_statement_timeout_ms(),
            lock_timeout_ms: default_lock_timeout_ms(),
        }
    }
}

/// One provider instance: its adapter kind and that adapter's settings, which the adapter reads
/// (see [`crate::providers`]).
#[derive(Clone, Deserialize)]
pub struct ProviderConfig {
    /// The adapter (`betrust`, `gu1`).
    pub kind: String,
    /// Calls to this instance allowed, on the way out (a create waits for a cell up to a short
    /// bound, then goes to the fallback); none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// When this instance's circuit breaker opens, and for how long (see [`crate::providers::circuit`]).
    #[serde(default)]
    pub circuit_breaker: crate::providers::circuit::CircuitSettings,
    /// What one verification started at this instance costs, for the stats' cost figures only.
    #[serde(default)]
    pub price_per_verification: Option<Price>,
    /// How long after a create at this instance ended without a usable answer (sent, then a
    /// timeout or a cut connection) a lookup that finds nothing proves nothing was made: longer
    /// than the instance may still process a request its caller gave up on. Until then the
    /// create is not routed elsewhere. 1 to 86400; default 120.
    #[serde(default = "default_lookup_grace_seconds")]
    pub lookup_grace_seconds: u64,
    /// Everything else in the section, secrets interpolated.
    #[serde(flatten)]
    pub settings: toml::Table,
    /// The settings whose value came from the environment (`"${VAR}"`): the adapter's secrets
    /// must be among them (checked where the instance is built, which knows its kind).
    #[serde(skip)]
    pub from_env: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for ProviderConfig {
    /// Names the settings, never their values (some are secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for ProviderConfig {
    /// The settings hold the instance's secrets in plain strings: wipe every string from memory
    /// (which of them are secrets is the adapter's to say).
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, value) in self.settings.iter_mut() {
            if let toml::Value::String(text) = value {
                text.zeroize();
            }
        }
    }
}

/// A tenant: a team calling the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// API keys as `sha256:<hex>` of the key (see `kyc-gateway hash-key`), or tables naming
    /// the key and, optionally, when it stops working.
    pub api_keys: Vec<ApiKey>,
    /// Where the tenant's status-change events go.
    pub webhook_url: Option<String>,
    /// The tenant's Standard Webhooks signing secret (`whsec_...`).
    pub webhook_secret: Option<SecretString>,
    /// Requests per second allowed in.
    pub rate_limit: Option<RateLimit>,
    /// Deliveries per second to `webhook_url`, on each replica; none when absent.
    #[serde(default)]
    pub webhook_rate_limit: Option<DeliveryRate>,
    /// How long an approval counts, in days, where the provider does not say (default 365).
    #[serde(default = "default_valid_days")]
    pub verification_valid_days: u32,
    /// Which provider gets which verification.
    pub routing: Routing,
}

/// One API key of a tenant: its hash alone, or with a name (shown as the actor of manual
/// decisions) and an expiry. Read by hand rather than as an untagged enum, so that a key table
/// with a field it does not know (a `scope` not built yet, a typo) is refused naming the field,
/// instead of silently serving as a full-access key.
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
    },
}

/// The table form of an [`ApiKey`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedKey {
    name: String,
    hash: String,
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = ApiKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"sha256:<hex>\" or a table { name, hash, expires_at }")
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

    /// When it stops working, if ever.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            ApiKey::Named { expires_at, .. } => *expires_at,
            ApiKey::Hash(_) => None,
        }
    }
}

fn default_valid_days() -> u32 {
    365
}

/// A price: an amount in a currency.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The amount, at least 0.
    pub amount: f64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: u32,
    /// Burst size.
    pub burst: u32,
}

impl RateLimit {
    /// What [`RateLimit::is_valid`] asks, for the message that names a limit that is not.
    pub const RANGE: &str = "per_second and burst must each be from 1 to 1000000";

    /// Both numbers from 1 to a million.
    pub fn is_valid(&self) -> bool {
        (1..=1_000_000).contains(&self.per_second) && (1..=1_000_000).contains(&self.burst)
    }

    /// `percent` (at most 100) of this limit, each number rounded down but at least 1: the part
    /// of an instance's outbound limit that the reconciler's reads may use.
    pub fn share(&self, percent: u32) -> RateLimit {
        let part = |n: u32| {
            let share = u64::from(n) * u64::from(percent.min(100)) / 100;
            u32::try_from(share).unwrap_or(n).max(1)
        };
        RateLimit {
            per_second: part(self.per_second),
            burst: part(self.burst),
        }
    }
}

/// A rate of deliveries to a tenant's endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRate {
    /// Deliveries a second, 1 to 10000 (a burst of as many).
    pub per_second: u32,
}

impl DeliveryRate {
    /// As a token bucket whose burst is one second's worth.
    pub fn as_limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.per_second,
            burst: self.per_second,
        }
    }
}

/// A tenant's routing rules.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The provider used when no rule matches and there is no split.
    pub default: Option<String>,
    /// Country rules; the first match wins, before split and default.
    #[serde(default)]
    pub rules: Vec<CountryRule>,
    /// Weighted split, sticky per subject; replaces `default` when present. Weights are 0 to
    /// 10000, not all 0.
    #[serde(default)]
    pub split: BTreeMap<String, u32>,
    /// Tried in order when the chosen provider is unavailable.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Whether the request's `provider` field is honoured.
    #[serde(default)]
    pub allow_override: bool,
    /// A champion-challenger trial: after an override and before the rules, a share of the
    /// named countries' subjects goes to the challenger (sticky per subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
}

/// A champion-challenger experiment: a share of traffic sent to a challenger, measured against
/// the champion.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Its name, in `GET /v1/experiments/{name}`: letters, digits, `-` and `_`, at most 64.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// The instance the challenger is measured against.
    pub champion: String,
    /// The instance on trial.
    pub challenger: String,
    /// Percent of the experiment's subjects sent to the challenger, 1 to 99.
    #[schema(minimum = 1, maximum = 99)]
    pub share: u32,
    /// The subject countries in the experiment; empty or absent, every country.
    #[serde(default)]
    pub countries: Vec<String>,
    /// What is compared.
    #[serde(default)]
    pub metric: Metric,
    /// Verifications counted in each arm before a verdict is given (default 200).
    #[serde(default = "default_min_sample")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub min_sample: u64,
    /// Stop sending traffic to the challenger once it is, with 95 % confidence, more than this
    /// many percentage points below the champion; absent, never.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub guardrail_pp: Option<f64>,
}

impl Experiment {
    /// Whether subjects of `country` take part.
    pub fn covers(&self, country: &str) -> bool {
        self.countries.is_empty() || self.countries.iter().any(|c| c == country)
    }
}

fn default_min_sample() -> u64 {
    200
}

/// The largest `min_sample`.
const MAX_MIN_SAMPLE: u64 = 1_000_000;

/// The largest weight of a split.
pub const MAX_WEIGHT: u32 = 10_000;

/// The proportion an experiment compares.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// approved / finished: of the verifications that reached a final status, the approved.
    #[default]
    ApprovalRate,
    /// approved / started.
    Conversion,
}

/// Send subjects of one country to one provider.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountryRule {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The provider instance.
    pub provider: String,
}

/// The reconciler's schedule (see [`crate::jobs::reconciler`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Seconds between passes over unfinished verifications, and between two reads of a young
    /// one: 1 to 86400; default 60.
    #[serde(default = "default_reconcile_every")]
    pub every_seconds: u64,
    /// The longest wait between two reads of an old unfinished verification (the wait doubles
    /// as its age doubles, up to this): 1 to 604800; default 21600 (6 h). Never below
    /// `every_seconds`.
    #[serde(default = "default_reconcile_at_most_every")]
    pub max_interval_seconds: u64,
    /// The percentage of a provider instance's outbound `rate_limit` that reconciler reads may
    /// use, so that creates keep the rest: 1 to 100; default 25.
    #[serde(default = "default_reconcile_share")]
    pub rate_limit_share: u32,
    /// How long past the end of its provider session a verification still `pending` or
    /// `in_progress` ends as `expired` (room for a person who opened the link at its last
    /// minute, and for the provider's late update): 0 to 604800; default 3600.
    #[serde(default = "default_lapse_margin")]
    pub lapse_margin_seconds: u64,
}

fn default_lapse_margin() -> u64 {
    3600
}

fn default_reconcile_every() -> u64 {
    60
}

fn default_reconcile_at_most_every() -> u64 {
    21_600
}

fn default_reconcile_share() -> u32 {
    25
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            every_seconds: default_reconcile_every(),
            max_interval_seconds: default_reconcile_at_most_every(),
            rate_limit_share: default_reconcile_share(),
            lapse_margin_seconds: default_lapse_margin(),
        }
    }
}

/// How events are delivered to tenants' `webhook_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Seconds to wait before each attempt: the first is the delay after the change, each next
    /// one the delay after a failed attempt. After the last, the event is marked failed.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: Vec<u64>,
    /// Whole time of one attempt, connect to last byte read, milliseconds.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a tenant's URL may fail every attempt, without a 2xx in between, before it is
    /// disabled, in seconds: 1 to 7776000 (90 days); default 432000 (5 days).
    #[serde(default = "default_disable_after_seconds")]
    pub disable_after_seconds: u64,
}

fn default_disable_after_seconds() -> u64 {
    5 * 24 * 3600
}

/// Longest wait between two attempts of one event.
const MAX_RETRY_DELAY: u64 = 7 * 24 * 3600;

/// The most delivery attempts `webhooks.retry_seconds` may schedule.
const MAX_ATTEMPTS: usize = 100;

fn default_retry_seconds() -> Vec<u64> {
    // Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 hours in all.
    vec![0, 5, 300, 1800, 7200, 18000, 36000, 36000]
}

fn default_webhook_timeout_ms() -> u64 {
    10_000
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            retry_seconds: default_retry_seconds(),
            timeout_ms: default_webhook_timeout_ms(),
            disable_after_seconds: default_disable_after_seconds(),
        }
    }
}

/// The gateway's own secret setting, which must come from the environment: a tenant's
/// `webhook_secret`. Adapters name theirs ([`kyc_core::AdapterConfig::SECRETS`]).
const TENANT_SECRET: &str = "webhook_secret";

impl Policy {
    /// Reads and validates a policy file, taking `${VAR}` values from the process environment.
    pub fn load(path: &str) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_string(),
            source,
        })?;
        Policy::parse(&text, |name| std::env::var(name).ok())
    }

    /// Parses and validates policy text, taking `${VAR}` values from `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
        Policy::parse_all(text, env).map_err(|mut all| all.remove(0))
    }

    /// Like [`Policy::parse`], with every error found instead of the first: a syntax error stops
    /// there; otherwise every `${VAR}` problem, or else the first key serde refuses, or else every
    /// error of [`Policy::problems`].
    pub fn parse_all(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Policy, Vec<PolicyError>> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
        let mut problems = Vec::new();
        let mut from_env = std::collections::BTreeSet::new();
        interpolate(&mut value, "", &env, &mut problems, &mut from_env);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut policy: Policy = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            vec![invalid(
                if key == "." { "policy".into() } else { key },
                describe_serde_error(&e.into_inner().to_string()),
            )]
        })?;
        for (name, config) in policy.providers.iter_mut() {
            let section = format!("providers.{name}.");
            config.from_env = from_env
                .iter()
                .filter_map(|path| path.strip_prefix(&section))
                .map(str::to_string)
                .collect();
        }
        let problems = policy.problems();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// What in the policy is legal but may not be meant: a default no subject reaches because a
    /// split takes them all (the pinned example does this on purpose), an instance no tenant routes
    /// to (kept, say, until its verifications finish). `serve` logs them; `check-config` prints
    /// them, and refuses them with `--strict`.
    pub fn warnings(&self) -> Vec<PolicyError> {
        let mut warnings = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for (name, tenant) in &self.tenants {
            let routing = &tenant.routing;
            let at = |k: &str| format!("tenants.{name}.routing.{k}");
            if routing.default.is_some() && !routing.split.is_empty() {
                warnings.push(invalid(
                    at("default"),
                    "is never used: the split takes every subject no rule takes",
                ));
            }
            used.extend(routing.default.iter().cloned());
            used.extend(routing.rules.iter().map(|r| r.provider.clone()));
            used.extend(routing.split.keys().cloned());
            used.extend(routing.fallback.iter().cloned());
            if let Some(experiment) = &routing.experiment {
                used.extend([experiment.champion.clone(), experiment.challenger.clone()]);
            }
        }
        for name in self.providers.keys() {
            if !used.contains(name) {
                warnings.push(invalid(
                    format!("providers.{name}"),
                    "no tenant routes to it (fine while its verifications finish)",
                ));
            }
        }
        warnings
    }

    /// Every error in the policy that can be found without the network, in file order where
    /// there is one.
    pub fn problems(&self) -> Vec<PolicyError> {
        let mut problems = Vec::new();
        let mut key_owner: HashMap<&str, String> = HashMap::new();
        for (name, tenant) in &self.tenants {
            for (i, key) in tenant.api_keys.iter().enumerate() {
                let at = format!("tenants.{name}.api_keys[{i}]");
                if let Some(first) = key_owner.insert(key.hash(), at.clone()) {
                    problems.push(invalid(
                        at,
                        format!("the same key as {first}: a key must name one tenant, once"),
                    ));
                }
            }
        }
        for (key, value) in [
            (
                "store.statement_timeout_ms",
                self.store.statement_timeout_ms,
            ),
            ("store.lock_timeout_ms", self.store.lock_timeout_ms),
        ] {
            if !(100..=600_000).contains(&value) {
                problems.push(invalid(key, "must be from 100 to 600000 (milliseconds)"));
            }
        }
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            problems.push(invalid(
                "store.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if let Some(url) = &self.server.public_url
            && let Err(e) = url::Url::parse(url)
        {
            problems.push(invalid("server.public_url", e.to_string()));
        }
        for (name, provider) in &self.providers {
            if provider.rate_limit.as_ref().is_some_and(|l| !l.is_valid()) {
                problems.push(invalid(
                    format!("providers.{name}.rate_limit"),
                    RateLimit::RANGE,
                ));
            }
            if let Some(price) = &provider.price_per_verification {
                if !(price.amount.is_finite() && (0.0..=1_000_000.0).contains(&price.amount)) {
                    problems.push(invalid(
                        format!("providers.{name}.price_per_verification.amount"),
                        "must be a number from 0 to 1000000",
                    ));
                }
                if !(price.currency.len() == 3
                    && price.currency.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    problems.push(invalid(
                        format!("providers.{name}.price_per_verification.currency"),
                        "must be an ISO 4217 code such as \"USD\"",
                    ));
                }
            }
            if !(1..=86_400).contains(&provider.lookup_grace_seconds) {
                problems.push(invalid(
                    format!("providers.{name}.lookup_grace_seconds"),
                    "must be from 1 to 86400",
                ));
            }
            let circuit = &provider.circuit_breaker;
            if !(1..=crate::providers::circuit::MAX_FAILURES).contains(&circuit.failures) {
                problems.push(invalid(
                    format!("providers.{name}.circuit_breaker.failures"),
                    "must be from 1 to 1000",
                ));
            }
            if !(1..=crate::providers::circuit::MAX_OPEN_SECONDS).contains(&circuit.open_seconds) {
                problems.push(invalid(
                    format!("providers.{name}.circuit_breaker.open_seconds"),
                    "must be from 1 to 86400 (a day)",
                ));
            }
        }
        if let Some(proxy) = &self.server.outbound_proxy {
            // What `Outbound::client_builder` is given must be a proxy reqwest takes: a
            // refused one there would mean no proxy at all.
            let fine = url::Url::parse(proxy).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && reqwest::Proxy::all(u.as_str()).is_ok()
            });
            if !fine {
                problems.push(invalid(
                    "server.outbound_proxy",
                    "must be an http:// or https:// URL of a proxy (host and port only)",
                ));
            }
        }
        for (i, entry) in self.server.outbound_allow.iter().enumerate() {
            if crate::infra::outbound::AllowEntry::parse(entry).is_none() {
                problems.push(invalid(
                    format!("server.outbound_allow[{i}]"),
                    "must be a host name, an IP address or a CIDR block",
                ));
            }
        }
        if self.webhooks.retry_seconds.is_empty()
            || self.webhooks.retry_seconds.len() > MAX_ATTEMPTS
            || self
                .webhooks
                .retry_seconds
                .iter()
                .any(|s| *s > MAX_RETRY_DELAY)
        {
            problems.push(invalid(
                "webhooks.retry_seconds",
                "needs 1 to 100 attempts, each at most 604800 seconds (a week) after the last",
            ));
        }
        if !(1..=90 * 24 * 3600).contains(&self.webhooks.disable_after_seconds) {
            problems.push(invalid(
                "webhooks.disable_after_seconds",
                "must be from 1 to 7776000 (90 days)",
            ));
        }
        for (key, value) in [
            (
                "server.auth_failures_per_minute",
                u64::from(self.server.auth_failures_per_minute),
            ),
            ("server.max_connections", self.server.max_connections as u64),
        ] {
            if !(1..=1_000_000).contains(&value) {
                problems.push(invalid(key, "must be from 1 to 1000000"));
            }
        }
        for (key, value) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.request_body_timeout_ms",
                self.server.request_body_timeout_ms,
            ),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&value) {
                problems.push(invalid(key, "must be from 1 to 3600000 (an hour)"));
            }
        }
        if !(1..=600_000).contains(&self.webhooks.timeout_ms) {
            problems.push(invalid(
                "webhooks.timeout_ms",
                "must be from 1 to 600000 (ten minutes)",
            ));
        }
        if !(1..=86_400).contains(&self.reconciler.every_seconds) {
            problems.push(invalid(
                "reconciler.every_seconds",
                "must be from 1 to 86400 (a day)",
            ));
        }
        if !(1..=604_800).contains(&self.reconciler.max_interval_seconds) {
            problems.push(invalid(
                "reconciler.max_interval_seconds",
                "must be from 1 to 604800 (a week)",
            ));
        }
        if self.reconciler.lapse_margin_seconds > 604_800 {
            problems.push(invalid(
                "reconciler.lapse_margin_seconds",
                "must be from 0 to 604800 (a week)",
            ));
        }
        if !(1..=100).contains(&self.reconciler.rate_limit_share) {
            problems.push(invalid(
                "reconciler.rate_limit_share",
                "must be a percentage from 1 to 100",
            ));
        }
        if !(1..=86_400).contains(&self.experiments.every_seconds) {
            problems.push(invalid(
                "experiments.every_seconds",
                "must be from 1 to 86400 (a day)",
            ));
        }
        for (name, tenant) in &self.tenants {
            let at = |k: &str| format!("tenants.{name}.{k}");
            if tenant.api_keys.is_empty() {
                problems.push(invalid(at("api_keys"), "a tenant needs at least one key"));
            }
            for (i, key) in tenant.api_keys.iter().enumerate() {
                let ok = key
                    .hash()
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                if !ok {
                    problems.push(invalid(
                        format!("{}[{i}]", at("api_keys")),
                        "must be \"sha256:<64 hex digits>\" (see `kyc-gateway hash-key KEY`)",
                    ));
                }
            }
            if let Some(url) = &tenant.webhook_url {
                let ok = url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if !ok {
                    problems.push(invalid(at("webhook_url"), "must be an http(s) URL"));
                } else if let Ok(parsed) = url::Url::parse(url)
                    && let Err(why) = self.outbound().check_target(&parsed)
                {
                    // The same rule as at delivery, now: a literal non-public address, or a
                    // host that resolves to one, is refused here rather than at every attempt.
                    problems.push(invalid(
                        at("webhook_url"),
                        format!(
                            "is refused: {why}; name the host or its address block in \
                             server.outbound_allow to allow it"
                        ),
                    ));
                }
                if tenant.webhook_secret.is_none() {
                    problems.push(invalid(
                        at("webhook_secret"),
                        "missing: a webhook_url needs a whsec_ secret to sign with",
                    ));
                }
            }
            if tenant
                .webhook_rate_limit
                .as_ref()
                .is_some_and(|r| !(1..=10_000).contains(&r.per_second))
            {
                problems.push(invalid(
                    at("webhook_rate_limit.per_second"),
                    "must be from 1 to 10000",
                ));
            }
            if let Some(secret) = &tenant.webhook_secret
                && crate::jobs::outbox::signers(secret.expose_secret()).is_none()
            {
                problems.push(invalid(
                    at("webhook_secret"),
                    "must be one or two whsec_<base64> secrets separated by a space",
                ));
            }
            if !(1..=36_500).contains(&tenant.verification_valid_days) {
                problems.push(invalid(
                    at("verification_valid_days"),
                    "must be from 1 to 36500 (a hundred years)",
                ));
            }
            if let Some(limit) = &tenant.rate_limit
                && !limit.is_valid()
            {
                problems.push(invalid(at("rate_limit"), RateLimit::RANGE));
            }
            let routing = &tenant.routing;
            let known = |key: String, provider: &str| {
                if self.providers.contains_key(provider) {
                    Ok(())
                } else {
                    Err(invalid(key, "names no provider instance of this policy"))
                }
            };
            if let Some(default) = &routing.default
                && let Err(e) = known(at("routing.default"), default)
            {
                problems.push(e);
            }
            if routing.default.is_none() && routing.split.is_empty() {
                problems.push(invalid(
                    at("routing.default"),
                    "missing: set a default provider or a split",
                ));
            }
            for (i, rule) in routing.rules.iter().enumerate() {
                if let Some(first) = routing.rules[..i]
                    .iter()
                    .position(|r| r.country == rule.country)
                {
                    problems.push(invalid(
                        format!("{}[{i}].country", at("routing.rules")),
                        format!("can never match: rules[{first}] takes the same country first"),
                    ));
                }
                if let Err(e) = known(
                    format!("{}[{i}].provider", at("routing.rules")),
                    &rule.provider,
                ) {
                    problems.push(e);
                }
                if !is_country_code(&rule.country) {
                    problems.push(invalid(
                        format!("{}[{i}].country", at("routing.rules")),
                        "must be an ISO 3166-1 alpha-2 code such as \"AR\"",
                    ));
                }
            }
            for provider in routing.split.keys() {
                if let Err(e) = known(format!("{}.{provider}", at("routing.split")), provider) {
                    problems.push(e);
                }
            }
            if !routing.split.is_empty() && routing.split.values().all(|w| *w == 0) {
                problems.push(invalid(at("routing.split"), "weights must not all be 0"));
            }
            for (provider, weight) in &routing.split {
                if *weight > MAX_WEIGHT {
                    problems.push(invalid(
                        format!("{}.{provider}", at("routing.split")),
                        "a weight is at most 10000",
                    ));
                }
            }
            for (i, provider) in routing.fallback.iter().enumerate() {
                if let Err(e) = known(format!("{}[{i}]", at("routing.fallback")), provider) {
                    problems.push(e);
                }
            }
            if let Some(experiment) = &routing.experiment {
                let at = |k: &str| format!("tenants.{name}.routing.experiment.{k}");
                let name_ok = !experiment.name.is_empty()
                    && experiment.name.len() <= 64
                    && experiment
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !name_ok {
                    problems.push(invalid(
                        at("name"),
                        "must be 1 to 64 letters, digits, '-' or '_'",
                    ));
                }
                for (key, provider) in [
                    ("champion", &experiment.champion),
                    ("challenger", &experiment.challenger),
                ] {
                    if let Err(e) = known(at(key), provider) {
                        problems.push(e);
                    }
                }
                if experiment.champion == experiment.challenger {
                    problems.push(invalid(
                        at("challenger"),
                        "must be another instance than the champion",
                    ));
                }
                if !(1..=99).contains(&experiment.share) {
                    problems.push(invalid(at("share"), "must be a percentage from 1 to 99"));
                }
                for (i, country) in experiment.countries.iter().enumerate() {
                    if !is_country_code(country) {
                        problems.push(invalid(
                            format!("{}[{i}]", at("countries")),
                            "must be an ISO 3166-1 alpha-2 code such as \"CL\"",
                        ));
                    }
                }
                if !(1..=MAX_MIN_SAMPLE).contains(&experiment.min_sample) {
                    problems.push(invalid(at("min_sample"), "must be 1 to 1000000"));
                }
                if experiment
                    .guardrail_pp
                    .is_some_and(|g| !(g > 0.0 && g <= 100.0))
                {
                    problems.push(invalid(
                        at("guardrail_pp"),
                        "must be percentage points above 0, at most 100",
                    ));
                }
            }
        }
        problems
    }
}

/// Every assigned ISO 3166-1 alpha-2 code (and `XK`, Kosovo's code in common use), in capitals,
/// from the `celes` crate's maintained list.
pub fn country_codes() -> &'static [&'static str] {
    static CODES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let mut codes: Vec<&str> = celes::Country::get_countries()
            .iter()
            .map(|c| c.alpha2)
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    });
    &CODES
}

/// Whether `s` is an assigned ISO 3166-1 alpha-2 code, in capitals (`CL`, not `cl` or `XX`).
pub fn is_country_code(s: &str) -> bool {
    country_codes().binary_search(&s).is_ok()
}

/// Rewrites a serde error message so that it names what was expected but never echoes the value
/// (which may be a secret or personal data).
pub fn describe_serde_error(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if message.starts_with("missing field") {
        return message.to_string();
    }
    // "unknown field `<what was sent>`, expected one of ...": the name sent is not repeated (it
    // can be anything, of any length); the names expected are ours.
    if message.starts_with("unknown field") {
        return match message.find(", expected ") {
            Some(i) => format!(
                "unknown field; expected {}",
                &message[i + ", expected ".len()..]
            ),
            None => "unknown field".to_string(),
        };
    }
    match message.rfind(", expected ") {
        Some(i) => format!(
            "invalid value, expected {}",
            &message[i + ", expected ".len()..]
        ),
        None if message.starts_with("unknown variant") => "unknown value".to_string(),
        None => "invalid value".to_string(),
    }
}

/// A TOML syntax error with its line and column (never the text around it).
fn syntax_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let at = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..text.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    PolicyError::Syntax(format!("line {line}, column {column}: {}", error.message()))
}

/// Replaces each `"${VAR}"` with the variable's value, noting its path in `from_env`.
fn interpolate(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<PolicyError>,
    from_env: &mut std::collections::BTreeSet<String>,
) {
    match value {
        toml::Value::String(s) => {
            let tenant_secret =
                path.starts_with("tenants.") && path.rsplit('.').next() == Some(TENANT_SECRET);
            let reference = s
                .strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|r| !r.contains(['$', '{', '}']));
            match reference {
                Some(var) => match env(var) {
                    Some(found) if found.is_empty() => problems.push(invalid(
                        path,
                        format!("environment variable {var} is set but empty"),
                    )),
                    Some(found) => {
                        *s = found;
                        from_env.insert(path.to_string());
                    }
                    None => problems.push(invalid(
                        path,
                        format!("environment variable {var} is not set"),
                    )),
                },
                None if s.contains("${") => problems.push(invalid(
                    path,
                    "only a whole value can come from the environment: write \"${VAR_NAME}\" alone",
                )),
                None if tenant_secret => problems.push(invalid(
                    path,
                    "secrets must come from the environment: write \"${VAR_NAME}\"",
                )),
                None => {}
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(v, &child, env, problems, from_env);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env, problems, from_env);
            }
        }
        _ => {}
    }
}

/// The `sha256:<hex>` form of an API key, as written in `api_keys`.
pub fn hash_api_key(key: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy file from DESIGN.md, verbatim.
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
