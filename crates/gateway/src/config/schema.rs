//! The policy file's sections, as serde reads them (every default named here).

use super::ApiKey;
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// How often the compliance jobs run (re-verification notices, retention).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Seconds between runs.
    pub every_seconds: u64,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self { every_seconds: 300 }
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
    /// The adapter: a registered kind (`betrust`, `gu1`, `didit`).
    pub kind: String,
    /// Calls to this instance allowed, on the way out (a create waits for a cell up to a short
    /// bound, then goes to the fallback); none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// When this instance's circuit breaker opens, and for how long (see [`crate::providers::circuit`]).
    #[serde(default)]
    pub circuit_breaker: crate::config::CircuitSettings,
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
    /// How many days before an approval lapses the tenant gets `verification.expiring` (default
    /// 30, or half the validity where that is shorter; 0: no notice before, only
    /// `verification.expired`).
    pub reverification_notice_days: Option<u32>,
    /// Days a final verification is kept after its last change; none: kept until erased.
    pub retention_days: Option<u32>,
    /// Which provider gets which verification.
    pub routing: Routing,
}

fn default_valid_days() -> u32 {
    365
}

impl TenantConfig {
    /// [`TenantConfig::reverification_notice_days`] with its default.
    pub fn notice_days(&self) -> u32 {
        self.reverification_notice_days
            .unwrap_or_else(|| 30.min(self.verification_valid_days / 2))
    }
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
    /// Adaptive routing: after the experiment and before the rules, the named countries'
    /// new subjects go to the instances `among`, in shares that follow their approvals per cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize: Option<Optimize>,
}

/// Adaptive routing: new subjects of some countries are shared among instances by Thompson
/// sampling on their matured outcomes (see [`crate::analytics::optimize`]), within bounds.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Optimize {
    /// The subject countries it routes; empty or absent, every country.
    #[serde(default)]
    pub countries: Vec<String>,
    /// The instances it shares them among: 2 to 8, each with a `price_per_verification`, all in
    /// one currency.
    pub among: Vec<String>,
    /// What it maximises.
    #[serde(default)]
    pub objective: Objective,
    /// The least share of new subjects each instance keeps, in percent (default 10): it goes on
    /// learning about each.
    #[serde(default = "default_min_share")]
    #[schema(minimum = 0, maximum = 100)]
    pub min_share: u32,
    /// The most share of new subjects one instance takes, in percent (default 90).
    #[serde(default = "default_max_share")]
    #[schema(minimum = 0, maximum = 100)]
    pub max_share: u32,
    /// The age at which a verification's outcome is read (approved by then or not), as for an
    /// experiment: a duration such as `"48h"`, from 1 second to 90 days (default 48 hours).
    #[serde(default = "default_horizon")]
    #[schema(example = "48h")]
    pub horizon: String,
}

impl Optimize {
    /// Whether subjects of `country` are routed by it.
    pub fn covers(&self, country: &str) -> bool {
        self.countries.is_empty() || self.countries.iter().any(|c| c == country)
    }

    /// [`Optimize::horizon`] as a duration (see [`Experiment::horizon`]).
    pub fn horizon(&self) -> Duration {
        parse_horizon(&self.horizon).unwrap_or(DEFAULT_HORIZON)
    }
}

/// What adaptive routing maximises.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Approved verifications per unit of money spent: approval rate / price per verification.
    #[default]
    ApprovalsPerCost,
}

fn default_min_share() -> u32 {
    10
}

fn default_max_share() -> u32 {
    90
}

/// The most instances adaptive routing shares among.
pub const MAX_OPTIMIZED: usize = 8;

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
    /// The age at which a verification is counted, with its outcome as it stood then (approved
    /// by then or not): both arms are compared at the same age, however fast their providers
    /// decide. A duration such as `"48h"`, `"2d"` or `"90m"`, from 1 second to 90 days (default
    /// 48 hours).
    #[serde(default = "default_horizon")]
    #[schema(example = "48h")]
    pub horizon: String,
}

impl Experiment {
    /// Whether subjects of `country` take part.
    pub fn covers(&self, country: &str) -> bool {
        self.countries.is_empty() || self.countries.iter().any(|c| c == country)
    }

    /// [`Experiment::horizon`] as a duration; the default for one that does not parse (a loaded
    /// policy's has been checked).
    pub fn horizon(&self) -> Duration {
        parse_horizon(&self.horizon).unwrap_or(DEFAULT_HORIZON)
    }
}

/// The default [`Experiment::horizon`]: two days, longer than the providers' slowest decisions
/// but for the rare manual review.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(48 * 3600);

/// The longest [`Experiment::horizon`].
const MAX_HORIZON: Duration = Duration::from_secs(90 * 86_400);

fn default_horizon() -> String {
    "48h".into()
}

/// A horizon from 1 second to [`MAX_HORIZON`], written as a duration such as `"48h"`.
pub(super) fn parse_horizon(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| (Duration::from_secs(1)..=MAX_HORIZON).contains(d))
}

fn default_min_sample() -> u64 {
    200
}

/// The largest `min_sample`.
pub(super) const MAX_MIN_SAMPLE: u64 = 1_000_000;

/// The largest weight of a split.
pub const MAX_WEIGHT: u32 = 10_000;

/// The proportion an experiment compares.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// approved ÷ decided: of the verifications a provider approved or rejected, the approved.
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
pub(super) const MAX_RETRY_DELAY: u64 = 7 * 24 * 3600;

/// The most delivery attempts `webhooks.retry_seconds` may schedule.
pub(super) const MAX_ATTEMPTS: usize = 100;

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

/// When a breaker opens and for how long (`[providers.NAME] circuit_breaker`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitSettings {
    /// Consecutive failures that open it. Default 5.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Seconds it stays open before a probe. Default 30.
    #[serde(default = "default_open_seconds")]
    pub open_seconds: u64,
}

fn default_failures() -> u32 {
    5
}
fn default_open_seconds() -> u64 {
    30
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures: default_failures(),
            open_seconds: default_open_seconds(),
        }
    }
}

/// The most consecutive failures `failures` may be set to.
pub const MAX_FAILURES: u32 = 1000;
/// The longest `open_seconds` may be: a day.
pub const MAX_OPEN_SECONDS: u64 = 86_400;

impl CircuitSettings {
    /// How long the circuit stays open, within the policy's bound whatever was set.
    pub fn open_for(&self) -> Duration {
        Duration::from_secs(self.open_seconds.min(MAX_OPEN_SECONDS))
    }
}
