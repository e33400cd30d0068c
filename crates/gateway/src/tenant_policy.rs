//! `GET /v1/policy`: the calling tenant's policy as it is in force now (routing, limits, the
//! provider instances it can reach and their circuits), without any secret or key hash.

use crate::app::AppState;
use crate::circuit::CircuitState;
use crate::error::{ApiError, AuthProblems};
use crate::extract::Tenant;
use crate::policy::{RateLimit, Routing};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_policy))
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
    /// The tenant's API keys by name (never their hashes), with their expiry.
    pub api_keys: Vec<KeyView>,
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
}

/// One provider instance, as the tenant may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    /// The adapter (`betrust`, `gu1`).
    pub kind: String,
    /// Its outbound call limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Its circuit breaker now.
    pub circuit: CircuitState,
    /// Its price per verification started, for cost figures.
    pub price_per_verification: Option<crate::policy::Price>,
}

/// The calling tenant's policy, as in force for this request.
#[utoipa::path(
    get,
    path = "/v1/policy",
    tag = "policy",
    responses(
        (status = 200, description = "The tenant's effective policy", body = TenantPolicy),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_policy(
    State(state): State<AppState>,
    tenant: Tenant,
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
        );
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
        api_keys: config
            .api_keys
            .iter()
            .map(|k| KeyView {
                name: k.name(),
                expires_at: k.expires_at(),
            })
            .collect(),
        providers,
    }))
}
