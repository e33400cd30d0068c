//! The tenant's delivery log of outgoing events: `GET /v1/events`,
//! `POST /v1/events/{id}/redeliver` and `POST /v1/events/recover`.

use crate::app::AppState;
use crate::http::extract::{Tenant, ValidJson, ValidPath, ValidQuery, split_page};
use crate::http::input::{EventParams, RecoverEvents};
use crate::http::problem::{ApiError, AuthProblems, BodyProblems, Problem, QueryProblems};
use crate::lifecycle;
use crate::lifecycle::events::Recovered;
use crate::store::EventRecord;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the delivery log, with their OpenAPI entries.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(redeliver_event))
        .routes(routes!(recover_events))
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub items: Vec<EventRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The tenant's outgoing events, newest first, each with its delivery attempts (time, status
/// code, latency).
///
/// A `verification.updated` event is written with each status change of a verification, for
/// tenants whose policy sets a `webhook_url`, and delivered there signed per the Standard Webhooks
/// spec; an `experiment.stopped` event (its `verification_id` is `experiment:<name>`) when an
/// experiment's guardrail stops it; an `endpoint.disabled` event (its `verification_id` is
/// `endpoint`) when the tenant's `webhook_url` was disabled after failing without a break for
/// `[webhooks] disable_after_seconds`, sent once the URL works again. Its `data` is
/// `{"url", "reason": "failing", "failing_since", "disabled_at"}`, for example
/// `{"type": "endpoint.disabled", "timestamp": "2026-12-06T10:00:00Z", "data": {"url":
/// "https://payments.internal.example/kyc-events", "reason": "failing", "failing_since":
/// "2026-12-01T10:00:00Z", "disabled_at": "2026-12-06T10:00:00Z"}}`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "A page", body = EventPage),
        QueryProblems,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn list_events(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidQuery(params): ValidQuery<EventParams>,
) -> Result<Json<EventPage>, ApiError> {
    let mut filter = params.check().map_err(ApiError::in_query)?;
    let limit = filter.limit;
    filter.limit += 1;
    let rows = lifecycle::events::list(&state, &tenant.name, &filter).await?;
    let (items, next_cursor) = split_page(rows, limit, |e: &EventRecord| &e.id);
    Ok(Json(EventPage { items, next_cursor }))
}

/// Sends again every event of the tenant that failed since a time (at most 14 days back), in
/// order per verification, and enables the tenant's `webhook_url` again if it was disabled
/// (after failing without a break for `[webhooks] disable_after_seconds`, or after a 410): its
/// waiting events, an `endpoint.disabled` event among them, then go out.
#[utoipa::path(
    post,
    path = "/v1/events/recover",
    tag = "events",
    request_body = RecoverEvents,
    responses(
        (status = 202, description = "Queued for delivery", body = Recovered),
        (status = 422, description = "`since` is not an RFC 3339 time", body = Problem, content_type = "application/problem+json"),
        BodyProblems,
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn recover_events(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidJson { body, .. }: ValidJson<RecoverEvents>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let recovery =
        lifecycle::events::recover(&state, &tenant.runtime, &tenant.name, body.since).await?;
    Ok((StatusCode::ACCEPTED, Json(recovery)))
}

/// Sends an event again: it becomes due now, with a fresh retry schedule, and keeps its id (the
/// `webhook-id` receivers deduplicate on).
#[utoipa::path(
    post,
    path = "/v1/events/{id}/redeliver",
    tag = "events",
    params(("id" = String, Path, description = "The event id (`evt_...`)")),
    responses(
        (status = 202, description = "Queued for delivery", body = EventRecord),
        (status = 404, description = "No such event for this tenant", body = Problem, content_type = "application/problem+json"),
        AuthProblems,
    ),
    security(("api_key" = []))
)]
async fn redeliver_event(
    State(state): State<AppState>,
    tenant: Tenant,
    ValidPath(id): ValidPath<String>,
) -> Result<(StatusCode, Json<EventRecord>), ApiError> {
    let event = lifecycle::events::redeliver(&state, &tenant.name, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(event)))
}
