//! What the tenant's verifications say: `GET /v1/stats` and `GET /v1/experiments/{name}`.

use crate::app::AppState;
use crate::http::extract::{Reader, ValidPath, ValidQuery};
use crate::http::input::StatsParams;
use crate::http::problem::{ApiError, Problem, QueryProblems, ReadAuthProblems};
use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The analytics routes, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_stats))
        .routes(routes!(get_experiment))
}

/// How each provider instance (or country) did with the verifications started in a period.
///
/// Each verification counts on the UTC day it was created, by the status it has reached since;
/// `from` and `to` are widened to whole UTC days. Read from daily counts kept with each change,
/// so every replica answers the same.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "stats",
    params(StatsParams),
    responses(
        (status = 200, description = "The figures per group", body = crate::analytics::stats::Stats),
        QueryProblems,
        ReadAuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_stats(
    State(state): State<AppState>,
    Reader(tenant): Reader,
    ValidQuery(params): ValidQuery<StatsParams>,
) -> Result<Json<crate::analytics::stats::Stats>, ApiError> {
    let period = params
        .check(chrono::Utc::now())
        .map_err(ApiError::in_query)?;
    Ok(Json(
        crate::analytics::stats::for_period(&state, &tenant.name, &period).await?,
    ))
}

/// A champion-challenger experiment of the tenant's routing: each arm's sample, approval rate
/// (or conversion) and 95 % interval, the difference with its always-valid p-value and
/// confidence sequence (the verdict's test, the mSPRT: valid however often it is read), the
/// fixed-horizon p-value and interval for comparison, and the verdict.
///
/// The verdict is `collecting` until each arm has `min_sample` verifications counted, then
/// `challenger_better`, `champion_better` (always-valid p-value below 5 %) or `no_difference`
/// (not shown different so far). `stopped` is true once the guardrail has sent all of the
/// experiment's subjects to the champion.
#[utoipa::path(
    get,
    path = "/v1/experiments/{name}",
    tag = "experiments",
    params(("name" = String, Path, description = "The experiment's name in the tenant's routing")),
    responses(
        (status = 200, description = "The experiment's figures", body = crate::analytics::experiments::ExperimentFigures),
        (status = 404, description = "The tenant's policy has no experiment by that name", body = Problem, content_type = "application/problem+json"),
        ReadAuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_experiment(
    State(state): State<AppState>,
    Reader(tenant): Reader,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<crate::analytics::experiments::ExperimentFigures>, ApiError> {
    let experiment = tenant
        .config()
        .routing
        .experiment
        .clone()
        .filter(|e| e.name == name)
        .ok_or_else(|| {
            ApiError::NotFound("the tenant's policy has no experiment by that name".into())
        })?;
    Ok(Json(
        crate::analytics::experiments::figures(&state, &tenant.name, &experiment).await?,
    ))
}
