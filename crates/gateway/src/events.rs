//! The tenant's delivery log of outgoing events: `GET /v1/events` and
//! `POST /v1/events/{id}/redeliver`.

use crate::app::AppState;
use crate::error::{ApiError, AuthProblems, Problem};
use crate::extract::{Tenant, ValidPath, ValidQuery, split_page};
use crate::input::EventParams;
use crate::store::{EventRecord, now};
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
/// experiment's guardrail stops it.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "A page", body = EventPage),
        (status = 400, description = "A parameter is invalid, or the query string cannot be read (e.g. a repeated parameter); `field` names the parameter", body = Problem, content_type = "application/problem+json"),
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
    let rows = state.store.list_events(&tenant.name, &filter).await?;
    let (items, next_cursor) = split_page(rows, limit, |e: &EventRecord| &e.id);
    Ok(Json(EventPage { items, next_cursor }))
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
    let not_found = || ApiError::NotFound("no such event for this tenant".into());
    if !state.store.redeliver(&tenant.name, &id, now()).await? {
        return Err(not_found());
    }
    state.outbox_wake.notify_one();
    let event = state
        .store
        .get_event(&tenant.name, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok((StatusCode::ACCEPTED, Json(event)))
}
