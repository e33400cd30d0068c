//! For operators and orchestrators: `GET /healthz` and `GET /readyz`.

use crate::app::AppState;
use crate::http::problem::{ApiError, Problem};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The operations routes, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers and a policy is loaded. It also shows each provider instance's
/// circuit breaker; an open circuit does not make the gateway unready (fallbacks may serve).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if !state.store_answers().await {
        return Err(ApiError::Unavailable("the store is not reachable".into()));
    }
    let providers = state
        .runtime()
        .providers
        .keys()
        .map(|name| {
            let circuit = state.breakers.state(name);
            (name.clone(), InstanceReadiness { circuit })
        })
        .collect();
    Ok(Json(Readiness {
        status: "ready",
        providers,
    }))
}

/// The readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// Each provider instance of the policy, by name.
    pub providers: std::collections::BTreeMap<String, InstanceReadiness>,
}

/// One provider instance, as readiness shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceReadiness {
    /// Its circuit breaker.
    pub circuit: crate::providers::circuit::CircuitState,
}
