//! `GET /v1/policy`: the calling tenant's policy as it is in force now (routing, limits, the
//! provider instances it can reach and their circuits), without any secret or key hash.

use crate::app::AppState;
use crate::config::{Policy, PolicyError, RateLimit, Routing};
use crate::http::extract::Reader;
use crate::http::extract::ValidJson;
use crate::http::problem::Problem;
use crate::http::problem::{ApiError, BodyProblems, ReadAuthProblems};
use crate::lifecycle;
use crate::providers::circuit::CircuitState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy))
        .routes(routes!(preview_policy))
}

/// A draft routing to replay, as sent.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The draft: the keys of the policy's `[tenants.NAME.routing]`.
    pub routing: Routing,
    /// How many days back from now to replay, 1 to 366 (default 30).
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 366)]
    #[serde(default, deserialize_with = "whole_number")]
    pub since_days: Option<f64>,
}

/// A JSON number that is whole (`30` or `30.0`, as JSON Schema's `integer` allows), or null.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let number: Option<f64> = serde::Deserialize::deserialize(d)?;
    match number {
        Some(n) if n.fract() != 0.0 => Err(serde::de::Error::custom("must be a whole number")),
        other => Ok(other),
    }
}

/// What a draft routing would have done to the tenant's verifications of the last `since_days`
/// days: how many would move from each provider instance to each other, per country, and each
/// destination's observed approval rate and cost per approved verification. No provider is
/// called and nothing is changed; see `kyc-gateway replay` for the same from the command line.
#[utoipa::path(
    post,
    path = "/v1/policy/preview",
    tag = "policy",
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "The replay", body = crate::analytics::replay::Preview),
        (status = 422, description = "A field is invalid, or the draft routing is inconsistent in a way no schema states (no default and no split, a country ruled twice, an experiment whose challenger is its champion, split weights all 0); `field` names it", body = Problem, content_type = "application/problem+json"),
        BodyProblems,
        ReadAuthProblems,
    ),
    security(("api_key" = []))
)]
async fn preview_policy(
    State(state): State<AppState>,
    Reader(tenant): Reader,
    ValidJson { body, .. }: ValidJson<PreviewRequest>,
) -> Result<Json<crate::analytics::replay::Preview>, ApiError> {
    let days = body.since_days.unwrap_or(30.0);
    if !(1.0..=366.0).contains(&days) {
        return Err(ApiError::invalid("since_days", "must be 1 to 366"));
    }
    let policy = &tenant.runtime.policy;
    check_draft(policy, &tenant.name, &body.routing)?;
    let preview = crate::analytics::replay::preview_past_days(
        &state,
        policy,
        &tenant.name,
        &body.routing,
        days,
    )
    .await?;
    Ok(Json(preview))
}

/// The policy's own checks of a draft routing, as the tenant's routing: the first problem, named
/// from `routing`.
fn check_draft(policy: &Policy, tenant: &str, draft: &Routing) -> Result<(), ApiError> {
    let mut drafted = policy.clone();
    if let Some(config) = drafted.tenants.get_mut(tenant) {
        config.routing = draft.clone();
    }
    let prefix = format!("tenants.{tenant}.");
    for problem in drafted.problems() {
        if let PolicyError::Invalid { key, message } = problem
            && let Some(field) = key.strip_prefix(&prefix)
            && field.starts_with("routing")
        {
            return Err(ApiError::invalid(field, message));
        }
    }
    Ok(())
}

/// A tenant's effective policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPolicy {
    /// The tenant's name in the policy.
    pub tenant: String,
    /// Which instance gets which verification.
    pub routing: Routing,
    /// The tenant's inbound request limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// How long an approval counts where the provider does not say, in days.
    pub verification_valid_days: u32,
    /// Whether events go to a `webhook_url`.
    pub webhook_configured: bool,
    /// Deliveries a second to the `webhook_url`, if limited.
    pub webhook_rate_limit: Option<crate::config::DeliveryRate>,
    /// When and why the `webhook_url` was disabled, if it is: nothing goes there until the policy
    /// names another URL or `POST /v1/events/recover` enables it again.
    pub webhook_disabled: Option<crate::store::DisabledEndpoint>,
    /// The tenant's API keys by name (never their hashes), with their expiry and scope.
    pub api_keys: Vec<KeyView>,
    /// The key this request came with.
    pub calling_key: Option<KeyView>,
    /// The instances the tenant's routing names, by name.
    pub providers: BTreeMap<String, InstanceView>,
}

/// One API key, as the tenant may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// The key's name (for a bare hash, `sha256:` and its first 12 hex digits).
    pub name: String,
    /// When it stops working; absent, never.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What it may do: `full`, or `read` (stats, experiments, the policy and previews only).
    pub scope: crate::config::Scope,
}

impl KeyView {
    fn of(key: &crate::config::ApiKey) -> KeyView {
        KeyView {
            name: key.name(),
            expires_at: key.expires_at(),
            scope: key.scope(),
        }
    }
}

/// One provider instance, as the tenant may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    /// The adapter: one of the registered kinds.
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// Its outbound call limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Its circuit breaker now.
    pub circuit: CircuitState,
    /// Its price per verification started, for cost figures.
    pub price_per_verification: Option<crate::config::Price>,
}

/// `kind` as an enum of the registry's kinds, so the spec follows a provider's registration.
fn kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(crate::providers::kinds()))
        .description(Some("The adapter: one of the registered kinds."))
        .examples(["betrust"])
        .build()
}

/// The calling tenant's policy, as in force for this request.
#[utoipa::path(
    get,
    path = "/v1/policy",
    tag = "policy",
    responses(
        (status = 200, description = "The tenant's effective policy", body = TenantPolicy),
        ReadAuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_policy(
    State(state): State<AppState>,
    Reader(tenant): Reader,
) -> Result<Json<TenantPolicy>, ApiError> {
    let config = tenant.config();
    let routing = &config.routing;
    let named = routing
        .default
        .iter()
        .chain(routing.rules.iter().map(|r| &r.provider))
        .chain(routing.split.keys())
        .chain(routing.fallback.iter())
        .chain(
            routing
                .experiment
                .iter()
                .flat_map(|e| [&e.champion, &e.challenger]),
        )
        .chain(routing.optimize.iter().flat_map(|o| o.among.iter()));
    let mut providers = BTreeMap::new();
    for name in named {
        if let Some(instance) = tenant.runtime.policy.providers.get(name) {
            providers.insert(
                name.clone(),
                InstanceView {
                    kind: instance.kind.clone(),
                    rate_limit: instance.rate_limit.clone(),
                    circuit: state.breakers.state(name),
                    price_per_verification: instance.price_per_verification.clone(),
                },
            );
        }
    }
    Ok(Json(TenantPolicy {
        tenant: tenant.name.clone(),
        routing: routing.clone(),
        rate_limit: config.rate_limit.clone(),
        verification_valid_days: config.verification_valid_days,
        webhook_configured: config.webhook_url.is_some(),
        webhook_rate_limit: config.webhook_rate_limit.clone(),
        webhook_disabled: lifecycle::events::endpoint_disabled(
            &state,
            &tenant.runtime,
            &tenant.name,
        )
        .await?,
        api_keys: config.api_keys.iter().map(KeyView::of).collect(),
        calling_key: config
            .api_keys
            .iter()
            .find(|k| k.name() == tenant.key_name)
            .map(KeyView::of),
        providers,
    }))
}
