//! A subject's standing, `GET /v1/subjects/{id}/kyc`, and its erasure, `DELETE
//! /v1/subjects/{id}`.

use crate::app::AppState;
use crate::http::extract::{Tenant, ValidPath};
use crate::http::problem::{ApiError, AuthProblems};
use crate::lifecycle;
use axum::Json;
use axum::extract::State;
use kyc_core::SubjectStanding;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The subjects' routes, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subject_kyc))
        .routes(routes!(erase_subject))
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

/// Erases what the gateway holds on the subject, on the subject's request.
///
/// Verifications still in flight are cancelled first where the provider allows it; one at a
/// provider that cannot cancel (BeTrust) makes the erasure wait: `409 in_flight` until it has
/// finished. Then the subject's verifications lose the subject id, the caller's and the
/// provider's references, metadata, link, reason and decision, and keep their status, provider,
/// country and times, so that they still count in the stats, anonymous; their events go, the
/// provider's id for the subject goes, and each history gets a tombstone (the hash chain stays
/// whole). The tenant gets a `subject.erased` event. The answer lists the provider instances that
/// hold data on the subject, with their references, for the tenant to file the request there
/// (neither provider documents a call to delete it). Erasing again finds nothing and changes
/// nothing.
#[utoipa::path(
    delete,
    path = "/v1/subjects/{subject_id}",
    tag = "subjects",
    params(("subject_id" = String, Path, description = "Your subject id")),
    responses(
        (status = 200, description = "What was erased, and who else holds data", body = lifecycle::erasure::Erased),
        (status = 409, description = "A verification is in flight at a provider that cannot cancel it (`in_flight`), or the subject's verifications kept changing during the erasure (`subject_busy`): erase again", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn erase_subject(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(subject_id): ValidPath<String>,
) -> Result<Json<lifecycle::erasure::Erased>, ApiError> {
    let erased =
        lifecycle::erasure::erase(&state, &tenant.runtime, &tenant.name, &subject_id).await?;
    Ok(Json(erased))
}
