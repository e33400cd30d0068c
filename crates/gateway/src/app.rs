//! The application state: one typed struct holding the store, the live policy and the provider
//! instances built from it.
//!
//! The policy and the providers it names are one [`Runtime`] snapshot behind a lock, so a request
//! sees one consistent policy from start to end, and a reload swaps the whole snapshot at once.

use crate::config::{ApiKey, Policy, PolicyError, ProviderConfig, RateLimit};
use crate::infra::auth_failures::AuthFailures;
use crate::providers::BuildError;
use crate::providers::guarded::Guard;
use crate::providers::limits::{HOOK_LIMIT, Limiter, UNKNOWN_HOOK_LIMIT};
use crate::providers::routing::Allocation;
use crate::store::Store;
use hmac::{Hmac, KeyInit, Mac};
use kyc_core::Provider;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// The shared state every handler receives.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// Everything the gateway holds while serving.
pub struct App {
    /// Where verifications live.
    pub store: Arc<dyn Store>,
    /// Base URL of the webhook addresses handed to providers.
    pub public_url: String,
    /// Wakes the outbox worker when a change has written an event.
    pub outbox_wake: tokio::sync::Notify,
    /// Each provider instance's circuit breaker (process state: a reload keeps it).
    pub breakers: crate::providers::circuit::Breakers,
    /// Cancelled on shutdown: background jobs finish what they started and take nothing new.
    pub stopping: tokio_util::sync::CancellationToken,
    /// (tenant, experiment) of the experiments a guardrail has stopped, as last read from the
    /// store by [`crate::jobs::experiments`].
    stopped_experiments: RwLock<std::collections::HashSet<(String, String)>>,
    /// Each tenant's adaptive routing, as last computed by [`crate::jobs::experiments`]: routing
    /// draws by its shares, and the stats show it as it is.
    allocations: RwLock<HashMap<String, Arc<Allocation>>>,
    runtime: RwLock<Arc<Runtime>>,
}

/// Why a new policy was not applied. The last good one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The policy is invalid, or an instance cannot be built from it.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The new policy drops an instance that still runs verifications.
    #[error(
        "providers.{provider}: {count} verifications on it are not final; keep the instance until they are"
    )]
    InstanceInUse {
        /// The instance the new policy drops.
        provider: String,
        /// Its verifications that are not final.
        count: u64,
    },
    /// The store could not be asked.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl App {
    /// A new application around a store and a first policy snapshot.
    pub fn new(store: Arc<dyn Store>, public_url: String, runtime: Runtime) -> App {
        App {
            store,
            public_url: public_url.trim_end_matches('/').to_string(),
            outbox_wake: tokio::sync::Notify::new(),
            breakers: crate::providers::circuit::Breakers::default(),
            stopping: tokio_util::sync::CancellationToken::new(),
            stopped_experiments: RwLock::default(),
            allocations: RwLock::default(),
            runtime: RwLock::new(Arc::new(runtime)),
        }
    }

    /// Whether a guardrail has stopped the tenant's experiment.
    pub fn experiment_stopped(&self, tenant: &str, experiment: &str) -> bool {
        self.stopped_experiments
            .read()
            .expect("stopped experiments lock poisoned")
            .contains(&(tenant.to_string(), experiment.to_string()))
    }

    /// Replaces the set of stopped experiments with what the store holds.
    pub fn set_stopped_experiments(&self, stopped: std::collections::HashSet<(String, String)>) {
        *self
            .stopped_experiments
            .write()
            .expect("stopped experiments lock poisoned") = stopped;
    }

    /// The tenant's adaptive routing, once computed.
    pub fn allocation(&self, tenant: &str) -> Option<Arc<Allocation>> {
        self.allocations
            .read()
            .expect("allocations lock poisoned")
            .get(tenant)
            .cloned()
    }

    /// Replaces every tenant's adaptive routing.
    pub fn set_allocations(&self, allocations: HashMap<String, Arc<Allocation>>) {
        *self.allocations.write().expect("allocations lock poisoned") = allocations;
    }

    /// Puts `policy` in force for every request that starts from now on; requests under way keep
    /// the snapshot they started with. Provider instances whose settings did not change are kept
    /// (with their token caches and single flights). Refused, with the last good policy kept, when
    /// the policy drops an instance that still runs verifications. Answers the settings that changed
    /// but only apply after a restart.
    pub async fn apply_policy(&self, policy: Policy) -> Result<Vec<&'static str>, ReloadError> {
        let current = self.runtime();
        for name in current.policy.providers.keys() {
            if !policy.providers.contains_key(name) {
                let count = self.store.unfinished_count(name).await?;
                if count > 0 {
                    return Err(ReloadError::InstanceInUse {
                        provider: name.clone(),
                        count,
                    });
                }
            }
        }
        let old = &current.policy;
        let mut needs_restart = Vec::new();
        if policy.store.url != old.store.url {
            needs_restart.push("store.url");
        }
        if policy.server.public_url != old.server.public_url {
            needs_restart.push("server.public_url");
        }
        if policy.server.header_read_timeout_ms != old.server.header_read_timeout_ms {
            needs_restart.push("server.header_read_timeout_ms");
        }
        if policy.server.max_connections != old.server.max_connections {
            needs_restart.push("server.max_connections");
        }
        let next = Runtime::build_next(policy, Some(&current))?;
        start_series(&next.policy, false);
        *self.runtime.write().expect("runtime lock poisoned") = Arc::new(next);
        Ok(needs_restart)
    }

    /// Whether the store answers now (readiness); why not is logged, never answered.
    pub async fn store_answers(&self) -> bool {
        match self.store.ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "readiness: store unavailable");
                false
            }
        }
    }

    /// The policy snapshot in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.read().expect("runtime lock poisoned").clone()
    }

    /// The webhook URL a provider instance is given: it carries the instance's unguessable token.
    pub fn hook_url(&self, runtime: &Runtime, provider: &str) -> Option<String> {
        let token = runtime.hook_tokens.get(provider)?;
        Some(format!("{}/hooks/{provider}/{token}", self.public_url))
    }
}

/// One policy and the provider instances it names.
pub struct Runtime {
    /// The policy as loaded.
    pub policy: Policy,
    /// Provider instances by name.
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    /// Tenant name and key by API key hash (`sha256:<hex>`).
    keys: HashMap<String, (String, ApiKey)>,
    /// Webhook URL token by provider instance name.
    hook_tokens: BTreeMap<String, String>,
    /// The failed-authentication budget of each source address.
    pub auth_failures: Arc<AuthFailures>,
    /// Each tenant's inbound limit, for tenants that have one.
    pub tenant_limits: BTreeMap<String, Arc<Limiter>>,
    /// Each provider instance's outbound limit, for instances that have one.
    pub provider_limits: BTreeMap<String, Arc<Limiter>>,
    /// Each provider instance's guard (rate limit, circuit, span, metrics).
    pub guards: BTreeMap<String, Guard>,
    /// The part of each limited instance's outbound limit that reconciler reads may use
    /// (`reconciler.rate_limit_share`); a read takes a cell here, then one of the instance's.
    pub reconciler_limits: BTreeMap<String, Arc<Limiter>>,
    /// Each provider instance's budget of unverified incoming webhooks.
    pub hook_limits: BTreeMap<String, Arc<Limiter>>,
    /// The one budget of webhooks to instance names the policy does not have.
    pub unknown_hook_limit: Arc<Limiter>,
    /// Each tenant's delivery rate to its endpoint, for tenants that set one.
    pub webhook_limits: BTreeMap<String, Arc<Limiter>>,
}

/// The limiters for `wanted` limits by name, keeping `previous` ones whose limit is unchanged (so
/// a reload neither refills nor empties a bucket).
fn limiters<'a>(
    wanted: impl Iterator<Item = (&'a String, &'a RateLimit)>,
    previous: Option<&BTreeMap<String, Arc<Limiter>>>,
) -> BTreeMap<String, Arc<Limiter>> {
    wanted
        .map(|(name, limit)| {
            let kept = previous
                .and_then(|p| p.get(name))
                .filter(|l| l.limit() == limit)
                .cloned();
            (
                name.clone(),
                kept.unwrap_or_else(|| Arc::new(Limiter::new(limit))),
            )
        })
        .collect()
}

/// An instance that cannot be built, as a policy error naming its key.
fn instance_error(name: &str, e: BuildError) -> PolicyError {
    let key = match &e {
        BuildError::Setting { key, .. } => format!("providers.{name}.{key}"),
        BuildError::UnknownKind(_) => format!("providers.{name}.kind"),
        BuildError::Adapter(_) => format!("providers.{name}"),
    };
    PolicyError::Invalid {
        key,
        message: e.to_string(),
    }
}

impl Runtime {
    /// Every provider instance of `policy` that cannot be built (its adapter's own checks, its
    /// targets under the outbound rule), for `check-config`: what `serve` would refuse.
    pub fn instance_problems(policy: &Policy) -> Vec<PolicyError> {
        let outbound = policy.outbound();
        policy
            .providers
            .iter()
            .filter_map(|(name, config)| {
                crate::providers::build_instance(name, config, &outbound)
                    .err()
                    .map(|e| instance_error(name, e))
            })
            .collect()
    }

    /// Builds every provider instance the policy names.
    pub fn build(policy: Policy) -> Result<Runtime, PolicyError> {
        Runtime::build_next(policy, None)
    }

    /// Builds the snapshot for `policy`, keeping from `previous` what did not change: provider
    /// instances with the same settings (and the same outbound rule), and the failed-
    /// authentication budget with its counts.
    pub fn build_next(policy: Policy, previous: Option<&Runtime>) -> Result<Runtime, PolicyError> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        let mut hook_tokens = BTreeMap::new();
        let outbound = policy.outbound();
        let same_outbound = previous.is_some_and(|p| {
            p.policy.server.outbound_allow == policy.server.outbound_allow
                && p.policy.server.outbound_proxy == policy.server.outbound_proxy
        });
        for (name, config) in &policy.providers {
            let unchanged = previous.filter(|_| same_outbound).and_then(|p| {
                let before = p.policy.providers.get(name)?;
                // Where a value came from counts too: a secret now written in the file is
                // refused by the build, even with the value it had.
                (before.kind == config.kind
                    && before.settings == config.settings
                    && before.from_env == config.from_env)
                    .then(|| p.providers.get(name).cloned())
                    .flatten()
            });
            if let Some(provider) = unchanged {
                providers.insert(name.clone(), provider);
                hook_tokens.insert(name.clone(), hook_token(name, config));
                continue;
            }
            let provider = crate::providers::build_instance(name, config, &outbound)
                .map_err(|e| instance_error(name, e))?;
            providers.insert(name.clone(), provider);
            hook_tokens.insert(name.clone(), hook_token(name, config));
        }
        let keys = policy
            .tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.api_keys
                    .iter()
                    .map(move |k| (k.hash().to_string(), (tenant.clone(), k.clone())))
            })
            .collect();
        let auth_failures = previous
            .filter(|p| {
                p.policy.server.auth_failures_per_minute == policy.server.auth_failures_per_minute
            })
            .map_or_else(
                || Arc::new(AuthFailures::new(policy.server.auth_failures_per_minute)),
                |p| p.auth_failures.clone(),
            );
        let tenant_limits = limiters(
            policy
                .tenants
                .iter()
                .filter_map(|(n, t)| Some((n, t.rate_limit.as_ref()?))),
            previous.map(|p| &p.tenant_limits),
        );
        let provider_limits = limiters(
            policy
                .providers
                .iter()
                .filter_map(|(n, p)| Some((n, p.rate_limit.as_ref()?))),
            previous.map(|p| &p.provider_limits),
        );
        let guards = policy
            .providers
            .iter()
            .map(|(name, config)| {
                let guard = Guard {
                    name: name.clone(),
                    settings: config.circuit_breaker.clone(),
                    limiter: provider_limits.get(name).cloned(),
                };
                (name.clone(), guard)
            })
            .collect();
        let share = policy.reconciler.rate_limit_share;
        let reconciler_shares: BTreeMap<&String, RateLimit> = policy
            .providers
            .iter()
            .filter_map(|(n, p)| Some((n, p.rate_limit.as_ref()?.share(share))))
            .collect();
        let reconciler_limits = limiters(
            reconciler_shares.iter().map(|(n, l)| (*n, l)),
            previous.map(|p| &p.reconciler_limits),
        );
        let hook_limits = limiters(
            policy.providers.keys().map(|n| (n, &HOOK_LIMIT)),
            previous.map(|p| &p.hook_limits),
        );
        let unknown_hook_limit = previous.map_or_else(
            || Arc::new(Limiter::new(&UNKNOWN_HOOK_LIMIT)),
            |p| p.unknown_hook_limit.clone(),
        );
        let delivery_rates: BTreeMap<&String, RateLimit> = policy
            .tenants
            .iter()
            .filter_map(|(n, t)| Some((n, t.webhook_rate_limit.as_ref()?.as_limit())))
            .collect();
        let webhook_limits = limiters(
            delivery_rates.iter().map(|(n, l)| (*n, l)),
            previous.map(|p| &p.webhook_limits),
        );
        Ok(Runtime {
            policy,
            providers,
            keys,
            hook_tokens,
            auth_failures,
            tenant_limits,
            provider_limits,
            guards,
            reconciler_limits,
            hook_limits,
            unknown_hook_limit,
            webhook_limits,
        })
    }

    /// The tenant owning an API key hash, and that key, while it has not expired.
    pub fn tenant_by_key_hash(&self, hash: &str) -> Option<(&str, &ApiKey)> {
        let (name, key) = self.keys.get(hash)?;
        let live = key.expires_at().is_none_or(|at| chrono::Utc::now() < at);
        live.then_some((name.as_str(), key))
    }

    /// Whether `token` is the webhook token of provider instance `provider`.
    pub fn hook_token_matches(&self, provider: &str, token: &str) -> bool {
        self.hook_tokens
            .get(provider)
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), token.as_bytes()))
    }
}

/// Each provider instance's webhook URL under `base` (the policy's `public_url`): its name, kind
/// and URL, for providers that post to one destination per account, set in their console (Didit).
pub fn hook_urls(policy: &Policy, base: &str) -> Vec<(String, String, String)> {
    let base = base.trim_end_matches('/');
    policy
        .providers
        .iter()
        .map(|(name, config)| {
            let url = format!("{base}/hooks/{name}/{}", hook_token(name, config));
            (name.clone(), config.kind.clone(), url)
        })
        .collect()
}

/// A stable, unguessable token for an instance's webhook URL: derived from the instance's own
/// secrets, so it survives restarts and differs between instances and deployments.
fn hook_token(name: &str, config: &ProviderConfig) -> String {
    let key = crate::providers::secret_values(config).join("\n");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"kyc-gateway webhook url token\n");
    mac.update(name.as_bytes());
    hex::encode(mac.finalize().into_bytes())[..40].to_string()
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Exports, at 0, the series the dashboards read for `policy`'s tenants and instances (the
/// gauges too with `gauges`, at start: see [`crate::infra::telemetry::start_series`]).
pub fn start_series(policy: &Policy, gauges: bool) {
    crate::infra::telemetry::start_series(
        policy.tenants.keys().map(String::as_str),
        policy
            .providers
            .iter()
            .map(|(name, p)| (name.as_str(), p.kind == "betrust")),
        gauges,
    );
}
