//! Verifications: create, list, read, refresh, identity, cancel, history and manual decisions.
//! Each handler carries its own OpenAPI entry (utoipa-axum `routes!`), so the published spec
//! cannot drift from the code.

use crate::app::AppState;
use crate::http::extract::{Tenant, ValidJson, ValidPath, ValidQuery, split_page};
use crate::http::input::{CreateVerification, ListParams, ManualDecision};
use crate::http::problem::{
    ApiError, AuthProblems, BodyProblems, Problem, ProviderFailures, ProviderRefused,
    QueryProblems, VerificationNotFound,
};
use crate::lifecycle::{self, Created};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kyc_core::{Identity, Source, StatusChange, Verification};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The verifications' routes, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_verification, list_verifications))
        .routes(routes!(get_verification))
        .routes(routes!(refresh_verification))
        .routes(routes!(get_identity))
        .routes(routes!(cancel_verification))
        .routes(routes!(verification_history))
        .routes(routes!(decide_verification))
}

/// A page of verifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationPage {
    /// Newest first.
    pub items: Vec<Verification>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
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
