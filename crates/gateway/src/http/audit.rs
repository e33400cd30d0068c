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
        (status = 200, description = "One JSON object per line", body = String, content_type = "application/jsonl",
            example = json!("{\"seq\":41,\"id\":\"chg_01M92WAK5TXR2XB9P1NR502Y30\",\"verification_id\":\"ver_01M92WAK5TXR2XB9P1NR502Y28\",\"kind\":\"change\",\"from\":null,\"to\":\"pending\",\"source\":\"create\",\"actor\":null,\"note\":null,\"at\":\"2026-12-05T10:34:47.866137Z\",\"subject_id\":\"customer-42\",\"provider\":\"betrust-sandbox\",\"provider_reference\":\"42a2aada-6a46-4601-a1cc-36356abac9d2\",\"routing\":\"default\",\"record\":\"{\\\"v\\\":1}\",\"prev_hash\":\"9b1c7e0f0d5a4e3f8a2b6c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f\",\"hash\":\"3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f\"}\n")),
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
