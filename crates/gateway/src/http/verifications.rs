//! The normalized v1 API. Each handler carries its own OpenAPI entry (utoipa-axum `routes!`), so
//! the published spec cannot drift from the code.

use crate::app::AppState;
use crate::http::extract::{Tenant, ValidJson, ValidPath, ValidQuery, split_page};
use crate::http::input::{CreateVerification, ListParams, ManualDecision, StatsParams};
use crate::http::problem::{
    ApiError, AuthProblems, BodyProblems, Problem, ProviderFailures, ProviderRefused,
    QueryProblems, VerificationNotFound,
};
use crate::lifecycle::{self, Created};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kyc_core::{Identity, Source, StatusChange, SubjectStanding, Verification};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the public API, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_verification, list_verifications))
        .routes(routes!(get_verification))
        .routes(routes!(refresh_verification))
        .routes(routes!(get_identity))
        .routes(routes!(cancel_verification))
        .routes(routes!(verification_history))
        .routes(routes!(decide_verification))
        .routes(routes!(subject_kyc))
        .routes(routes!(get_stats))
        .routes(routes!(get_experiment))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// A page of verifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationPage {
    /// Newest first.
    pub items: Vec<Verification>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Start a verification; the tenant policy picks the provider.
#[utoipa::path(
    post,
    path = "/v1/verifications",
    tag = "verifications",
    request_body = CreateVerification,
    responses(
        (status = 201, description = "Started", body = Verification),
        (status = 200, description = "This reference was already started with the same body", body = Verification),
        (status = 409, description = "`conflict`: the reference was already used with another body (answered before any provider call, whatever became of the first create), or the provider holds another request's verification under this request's key. `subject_conflict`: the provider knows the person under an id the gateway cannot find. `in_progress`: a create with this reference and the same body is under way; retry after `Retry-After` to get its verification", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "With `in_progress`: seconds to wait before retrying"))),
        (status = 422, description = "A field is invalid, or the provider refused", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider answered something unreadable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`provider_unavailable`: no provider could take the request now, or one may have taken it without a usable answer (a timeout after sending). Retry the same request after `Retry-After`: it resumes at that provider with the same key, adopts what the provider made, and never starts a second verification; a fallback runs only once that provider is known to hold nothing. `unavailable`: no instance is configured to take it", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "With `provider_unavailable`: seconds to wait before retrying"))),
        BodyProblems,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn create_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidJson { body, raw }: ValidJson<CreateVerification>,
) -> Result<Response, ApiError> {
    let runtime = &tenant.runtime;
    body.check(|name| runtime.providers.contains_key(name))?;
    Ok(
        match crate::lifecycle::create::create(
            state.0.clone(),
            runtime.clone(),
            tenant.name.clone(),
            body.into_command(&raw),
        )
        .await?
        {
            Created::New(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Created::Replayed(v) => (StatusCode::OK, Json(v)).into_response(),
        },
    )
}

/// List and look up verifications, newest first.
#[utoipa::path(
    get,
    path = "/v1/verifications",
    tag = "verifications",
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = VerificationPage),
        QueryProblems,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn list_verifications(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidQuery(params): ValidQuery<ListParams>,
) -> Result<Json<VerificationPage>, ApiError> {
    let mut filter = params.check().map_err(ApiError::in_query)?;
    let limit = filter.limit;
    filter.limit += 1;
    let rows = lifecycle::list(&state, &tenant.name, &filter).await?;
    let (items, next_cursor) = split_page(rows, limit, |v: &Verification| &v.id);
    Ok(Json(VerificationPage { items, next_cursor }))
}

/// The stored verification; no provider call.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "The verification", body = Verification),
        VerificationNotFound,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(
        lifecycle::load(&state, &tenant.name, &id)
            .await?
            .verification,
    ))
}

/// Read the provider now, update the store, return the result.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/refresh",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "The verification as the provider has it now", body = Verification),
        VerificationNotFound,
        ProviderFailures,
        ProviderRefused,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn refresh_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Verification>, ApiError> {
    let stored = lifecycle::load(&state, &tenant.name, &id).await?;
    let synced = lifecycle::sync(&state, &tenant.runtime, stored, Source::Refresh).await?;
    Ok(Json(synced.verification))
}

/// The document data the provider extracted, read live and not stored.
///
/// Until the person has gone through the document step there is none: that is a 409 with code
/// `not_ready`, whatever the provider.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}/identity",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "Document data (personal data: handle with care)", body = Identity),
        (status = 409, description = "No document data yet: the person has not reached that step (code `not_ready`)", body = Problem, content_type = "application/problem+json"),
        VerificationNotFound,
        ProviderFailures,
        ProviderRefused,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_identity(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<Response, ApiError> {
    let identity = lifecycle::identity(&state, &tenant.runtime, &tenant.name, &id).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(identity)).into_response())
}

/// Cancel a verification, where the provider allows it.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/cancel",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "Cancelled", body = Verification),
        (status = 409, description = "Already final, or the provider cannot cancel", body = Problem, content_type = "application/problem+json"),
        VerificationNotFound,
        ProviderFailures,
        ProviderRefused,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn cancel_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Verification>, ApiError> {
    let cancelled = lifecycle::cancel(&state, &tenant.runtime, &tenant.name, &id).await?;
    Ok(Json(cancelled.verification))
}

/// Approve or reject a verification in review by hand, where its provider takes manual decisions
/// (gu1; BeTrust does not: 409 `not_supported`).
///
/// The provider is read first; the decision is then sent to it and recorded in the history with
/// source `decision` and the name of the API key that made it. It emits an event, and a later
/// provider sync cannot undo it.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/decision",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    request_body = ManualDecision,
    responses(
        (status = 200, description = "Decided", body = Verification),
        (status = 409, description = "Not in review (`not_in_review`), or the provider takes no manual decisions (`not_supported`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid, or the provider refused", body = Problem, content_type = "application/problem+json"),
        BodyProblems,
        VerificationNotFound,
        ProviderFailures,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn decide_verification(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
    ValidJson { body, .. }: ValidJson<ManualDecision>,
) -> Result<Json<Verification>, ApiError> {
    body.check()?;
    let decided = lifecycle::decide(
        &state,
        &tenant.runtime,
        &tenant.name,
        &id,
        body.into_command(&tenant.key_name),
    )
    .await?;
    Ok(Json(decided.verification))
}

/// Every status change of a verification, oldest first: from, to, what caused it, and when.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}/history",
    tag = "verifications",
    params(("id" = String, Path, description = "The verification id (`ver_...`)")),
    responses(
        (status = 200, description = "Its status changes, oldest first; the first is its creation", body = Vec<StatusChange>),
        VerificationNotFound,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn verification_history(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Vec<StatusChange>>, ApiError> {
    Ok(Json(lifecycle::history(&state, &tenant.name, &id).await?))
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
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_stats(
    State(state): State<AppState>,
    tenant: Tenant,
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
/// (or conversion) and 95 % interval, the difference, the p-value of a two-proportion z-test, and
/// the verdict.
///
/// The verdict is `collecting` until each arm has `min_sample` verifications counted, then
/// `challenger_better`, `champion_better` (significant at 5 %) or `no_difference`. `stopped` is
/// true once the guardrail has sent all of the experiment's subjects to the champion.
#[utoipa::path(
    get,
    path = "/v1/experiments/{name}",
    tag = "experiments",
    params(("name" = String, Path, description = "The experiment's name in the tenant's routing")),
    responses(
        (status = 200, description = "The experiment's figures", body = crate::analytics::experiments::ExperimentFigures),
        (status = 404, description = "The tenant's policy has no experiment by that name", body = Problem, content_type = "application/problem+json"),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn get_experiment(
    State(state): State<AppState>,
    tenant: Tenant,
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

/// The subject's standing: verified or not, and its latest verification.
///
/// Computed from the store: `verified` when the subject's newest approval is younger than the
/// tenant's `verification_valid_days`. Where that approval's provider keeps its own view of the
/// subject (gu1), its `isVerified`, `expiresAt` and `needsReverification` are used instead.
#[utoipa::path(
    get,
    path = "/v1/subjects/{subject_id}/kyc",
    tag = "subjects",
    params(("subject_id" = String, Path, description = "Your subject id")),
    responses(
        (status = 200, description = "The subject's standing", body = SubjectStanding),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn subject_kyc(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(subject_id): ValidPath<String>,
) -> Result<Json<SubjectStanding>, ApiError> {
    let standing = lifecycle::standing(&state, &tenant.runtime, &tenant.name, &subject_id).await?;
    Ok(Json(standing))
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
