//! The audit trail: `GET /v1/audit/head` and `GET /v1/audit/export`.

use crate::app::AppState;
use crate::http::extract::{Tenant, ValidQuery};
use crate::http::input::AuditExportParams;
use crate::http::problem::{ApiError, AuthProblems, QueryProblems};
use crate::lifecycle::{ServiceError, audit};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The audit routes, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_head))
        .routes(routes!(audit_export))
}

/// Where the tenant's tamper-evident history ends: the number of rows in its hash chain and the
/// last hash. Keep the hash somewhere the gateway cannot write (a ticket, another database):
/// `kyc-gateway audit verify` shows whether the stored chain still leads to it.
#[utoipa::path(
    get,
    path = "/v1/audit/head",
    tag = "audit",
    responses(
        (status = 200, description = "The chain's head", body = audit::ChainHead),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn audit_head(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<Json<audit::ChainHead>, ApiError> {
    let head = audit::head(state.store.as_ref(), &tenant.name)
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(head))
}

/// The tenant's history recorded in a period, as JSON Lines (`application/jsonl`), oldest first:
/// one line per history row with its status change (`from`, `to`, `source`, `at`), a manual
/// decision's `actor` and `note` (rows of `kind` `decision`), the verification's `subject_id`,
/// `provider` instance and `provider_reference`, the routing reason at creation, and the row's
/// place in the hash chain (`seq`, `record`, `prev_hash`, `hash`; absent for a row not sealed
/// yet). `hash` is the hex SHA-256 of `prev_hash`, a newline and `record`. Streamed: any period
/// can be exported.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    params(AuditExportParams),
    responses(
        (status = 200, description = "One JSON object per line", body = String, content_type = "application/jsonl"),
        QueryProblems,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn audit_export(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidQuery(params): ValidQuery<AuditExportParams>,
) -> Result<Response, ApiError> {
    let (from, to) = params
        .check(chrono::Utc::now())
        .map_err(ApiError::in_query)?;
    let lines =
        audit::export(state.store.clone(), tenant.name.clone(), from, to).map_err(|error| {
            tracing::warn!(%error, "audit export: the store failed mid-stream");
            std::io::Error::other("the store failed")
        });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from_stream(lines),
    )
        .into_response())
}
