//! A subject's standing: `GET /v1/subjects/{id}/kyc`.

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
    OpenApiRouter::new().routes(routes!(subject_kyc))
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
