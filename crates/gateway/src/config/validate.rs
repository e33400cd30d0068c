//! Every check the policy gets once read: bounds, references between sections, and what is legal
//! but probably not meant (warnings).

use super::{
    Experiment, MAX_ATTEMPTS, MAX_FAILURES, MAX_MIN_SAMPLE, MAX_OPEN_SECONDS, MAX_OPTIMIZED,
    MAX_RETRY_DELAY, MAX_WEIGHT, Optimize, Policy, PolicyError, ProviderConfig, RateLimit, Routing,
    TenantConfig, invalid, parse_horizon,
};
use secrecy::ExposeSecret;
use std::collections::{BTreeSet, HashMap};

impl Policy {
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
            if tenant
                .retention_days
                .is_some_and(|days| days < tenant.verification_valid_days)
            {
                warnings.push(invalid(
                    format!("tenants.{name}.retention_days"),
                    "is shorter than verification_valid_days: an approval is removed while it \
                     still counts, and the subject's standing forgets it",
                ));
            }
            used.extend(routing.default.iter().cloned());
            used.extend(routing.rules.iter().map(|r| r.provider.clone()));
            used.extend(routing.split.keys().cloned());
            used.extend(routing.fallback.iter().cloned());
            if let Some(experiment) = &routing.experiment {
                used.extend([experiment.champion.clone(), experiment.challenger.clone()]);
            }
            if let Some(optimize) = &routing.optimize {
                used.extend(optimize.among.iter().cloned());
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

    /// Every error in the policy that can be found without the network, section by section.
    pub fn problems(&self) -> Vec<PolicyError> {
        let mut problems = Vec::new();
        self.check_unique_keys(&mut problems);
        self.check_server(&mut problems);
        self.check_store(&mut problems);
        for (name, provider) in &self.providers {
            check_provider(name, provider, &mut problems);
        }
        self.check_webhooks(&mut problems);
        self.check_reconciler(&mut problems);
        self.check_experiments(&mut problems);
        self.check_compliance(&mut problems);
        for (name, tenant) in &self.tenants {
            self.check_tenant(name, tenant, &mut problems);
            self.check_routing(name, &tenant.routing, &mut problems);
            if let Some(experiment) = &tenant.routing.experiment {
                self.check_experiment(name, experiment, &mut problems);
            }
            if let Some(optimize) = &tenant.routing.optimize {
                self.check_optimize(name, &tenant.routing, optimize, &mut problems);
            }
        }
        problems
    }

    /// A key names one tenant, once.
    fn check_unique_keys(&self, problems: &mut Vec<PolicyError>) {
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
    }

    /// `[server]`: its addresses, the outbound proxy and allow list, and its limits.
    fn check_server(&self, problems: &mut Vec<PolicyError>) {
        if let Some(url) = &self.server.public_url
            && let Err(e) = url::Url::parse(url)
        {
            problems.push(invalid("server.public_url", e.to_string()));
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
    }

    /// `[store]`.
    fn check_store(&self, problems: &mut Vec<PolicyError>) {
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
    }

    /// `[webhooks]`: the retry schedule, when an endpoint is disabled, the timeout.
    fn check_webhooks(&self, problems: &mut Vec<PolicyError>) {
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
        if !(1..=600_000).contains(&self.webhooks.timeout_ms) {
            problems.push(invalid(
                "webhooks.timeout_ms",
                "must be from 1 to 600000 (ten minutes)",
            ));
        }
    }

    /// `[reconciler]`.
    fn check_reconciler(&self, problems: &mut Vec<PolicyError>) {
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
    }

    /// `[experiments]`.
    fn check_experiments(&self, problems: &mut Vec<PolicyError>) {
        if !(1..=86_400).contains(&self.experiments.every_seconds) {
            problems.push(invalid(
                "experiments.every_seconds",
                "must be from 1 to 86400 (a day)",
            ));
        }
    }

    /// `[compliance]`.
    fn check_compliance(&self, problems: &mut Vec<PolicyError>) {
        if !(1..=86_400).contains(&self.compliance.every_seconds) {
            problems.push(invalid(
                "compliance.every_seconds",
                "must be from 1 to 86400 (a day)",
            ));
        }
    }

    /// A tenant's keys, webhook endpoint and limits.
    fn check_tenant(&self, name: &str, tenant: &TenantConfig, problems: &mut Vec<PolicyError>) {
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
            && super::signing::signers(secret.expose_secret()).is_none()
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
        if tenant
            .retention_days
            .is_some_and(|days| !(1..=36_500).contains(&days))
        {
            problems.push(invalid(
                at("retention_days"),
                "must be from 1 to 36500 (a hundred years)",
            ));
        }
        if let Some(notice) = tenant.reverification_notice_days
            && notice >= tenant.verification_valid_days
        {
            problems.push(invalid(
                at("reverification_notice_days"),
                "must be fewer days than verification_valid_days",
            ));
        }
        if let Some(limit) = &tenant.rate_limit
            && !limit.is_valid()
        {
            problems.push(invalid(at("rate_limit"), RateLimit::RANGE));
        }
    }

    /// `key` names `provider`, which must be an instance of this policy.
    fn check_known(&self, key: String, provider: &str, problems: &mut Vec<PolicyError>) {
        if !self.providers.contains_key(provider) {
            problems.push(invalid(key, "names no provider instance of this policy"));
        }
    }

    /// A tenant's routing: every instance it names exists, rules can match, weights are sane.
    fn check_routing(&self, name: &str, routing: &Routing, problems: &mut Vec<PolicyError>) {
        let at = |k: &str| format!("tenants.{name}.{k}");
        if let Some(default) = &routing.default {
            self.check_known(at("routing.default"), default, problems);
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
            let key = format!("{}[{i}].provider", at("routing.rules"));
            self.check_known(key, &rule.provider, problems);
            if !is_country_code(&rule.country) {
                problems.push(invalid(
                    format!("{}[{i}].country", at("routing.rules")),
                    "must be an ISO 3166-1 alpha-2 code such as \"AR\"",
                ));
            }
        }
        for provider in routing.split.keys() {
            self.check_known(
                format!("{}.{provider}", at("routing.split")),
                provider,
                problems,
            );
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
            self.check_known(
                format!("{}[{i}]", at("routing.fallback")),
                provider,
                problems,
            );
        }
    }

    /// A tenant's experiment.
    fn check_experiment(
        &self,
        name: &str,
        experiment: &Experiment,
        problems: &mut Vec<PolicyError>,
    ) {
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
            self.check_known(at(key), provider, problems);
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
        if parse_horizon(&experiment.horizon).is_none() {
            problems.push(invalid(
                at("horizon"),
                "must be a duration such as \"48h\" or \"2d\", from 1s to 90 days",
            ));
        }
    }
}

impl Policy {
    /// A tenant's adaptive routing: instances known, priced in one currency, bounds that leave
    /// room for every instance, countries not taken by the experiment first.
    fn check_optimize(
        &self,
        name: &str,
        routing: &Routing,
        optimize: &Optimize,
        problems: &mut Vec<PolicyError>,
    ) {
        let at = |k: &str| format!("tenants.{name}.routing.optimize.{k}");
        let n = optimize.among.len();
        if !(2..=MAX_OPTIMIZED).contains(&n) {
            problems.push(invalid(at("among"), "must name 2 to 8 instances"));
        }
        let mut currencies = BTreeSet::new();
        for (i, provider) in optimize.among.iter().enumerate() {
            let key = format!("{}[{i}]", at("among"));
            if optimize.among[..i].contains(provider) {
                problems.push(invalid(key, "names an instance twice"));
                continue;
            }
            let Some(config) = self.providers.get(provider) else {
                self.check_known(key, provider, problems);
                continue;
            };
            match &config.price_per_verification {
                Some(price) if price.amount > 0.0 => {
                    currencies.insert(price.currency.clone());
                }
                _ => problems.push(invalid(
                    key,
                    "needs a price_per_verification above 0 (the objective is approvals per cost)",
                )),
            }
        }
        if currencies.len() > 1 {
            problems.push(invalid(at("among"), "prices must all be in one currency"));
        }
        for (i, country) in optimize.countries.iter().enumerate() {
            if !is_country_code(country) {
                problems.push(invalid(
                    format!("{}[{i}]", at("countries")),
                    "must be an ISO 3166-1 alpha-2 code such as \"CL\"",
                ));
            }
        }
        let (min, max) = (u64::from(optimize.min_share), u64::from(optimize.max_share));
        let n = n.max(1) as u64;
        if min > 100 || max > 100 || min > max || min * n > 100 || max * n < 100 {
            problems.push(invalid(
                at("min_share"),
                "min_share and max_share must be percentages with min_share <= max_share, \
                 min_share times the instances at most 100 and max_share times them at least 100",
            ));
        }
        if parse_horizon(&optimize.horizon).is_none() {
            problems.push(invalid(
                at("horizon"),
                "must be a duration such as \"48h\" or \"2d\", from 1s to 90 days",
            ));
        }
        if let Some(experiment) = &routing.experiment {
            let overlap = experiment.countries.is_empty()
                || optimize.countries.is_empty()
                || optimize.countries.iter().any(|c| experiment.covers(c));
            if overlap {
                problems.push(invalid(
                    at("countries"),
                    "overlap the experiment's, which takes them first: give each its own countries",
                ));
            }
        }
    }
}

/// One provider instance's limits, price and circuit.
fn check_provider(name: &str, provider: &ProviderConfig, problems: &mut Vec<PolicyError>) {
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
        if !(price.currency.len() == 3 && price.currency.bytes().all(|b| b.is_ascii_uppercase())) {
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
    if !(1..=MAX_FAILURES).contains(&circuit.failures) {
        problems.push(invalid(
            format!("providers.{name}.circuit_breaker.failures"),
            "must be from 1 to 1000",
        ));
    }
    if !(1..=MAX_OPEN_SECONDS).contains(&circuit.open_seconds) {
        problems.push(invalid(
            format!("providers.{name}.circuit_breaker.open_seconds"),
            "must be from 1 to 86400 (a day)",
        ));
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
