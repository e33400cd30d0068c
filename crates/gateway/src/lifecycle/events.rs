//! The tenant's outgoing events: its delivery log, sending one again, and recovering every event
//! that failed since a time (which also enables a disabled `webhook_url` again). Each change that
//! queues an event wakes the outbox, so delivery starts at once instead of at its next poll.

use super::ServiceError;
use crate::app::{App, Runtime};
use crate::store::{DisabledEndpoint, EventFilter, EventRecord, now};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The longest a recover reaches back.
pub const RECOVER_DAYS: i64 = 14;

/// What a recover did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed events were queued again.
    pub recovered: u64,
    /// From when: the `since` asked, or 14 days ago if that is later.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Whether the tenant's `webhook_url` had been disabled (after failing, or a 410) and is
    /// enabled again.
    pub endpoint_enabled: bool,
}

/// A page of the tenant's events, newest first, with their attempts.
pub async fn list(
    app: &App,
    tenant: &str,
    filter: &EventFilter,
) -> Result<Vec<EventRecord>, ServiceError> {
    Ok(app.store.list_events(tenant, filter).await?)
}

/// Makes one event due now with a fresh retry schedule, keeping its id; the event as it is now.
pub async fn redeliver(app: &App, tenant: &str, id: &str) -> Result<EventRecord, ServiceError> {
    if !app.store.redeliver(tenant, id, now()).await? {
        return Err(ServiceError::EventNotFound);
    }
    app.outbox_wake.notify_one();
    app.store
        .get_event(tenant, id)
        .await?
        .ok_or(ServiceError::EventNotFound)
}

/// Queues again every event of the tenant that failed since `since` (at most [`RECOVER_DAYS`]
/// back), and enables its `webhook_url` again if it was disabled.
pub async fn recover(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    since: DateTime<Utc>,
) -> Result<Recovered, ServiceError> {
    let at = now();
    let since = since.max(at - chrono::Duration::days(RECOVER_DAYS));
    let url = webhook_url(runtime, tenant).map(str::to_owned);
    let endpoint_enabled = match &url {
        Some(url) => app.store.endpoint_disabled(tenant, url).await?.is_some(),
        None => false,
    };
    let recovered = app
        .store
        .recover_events(tenant, url.as_deref(), since, at)
        .await?;
    if endpoint_enabled {
        metrics::gauge!("kyc_webhook_endpoint_disabled", "tenant" => tenant.to_string()).set(0.0);
    }
    app.outbox_wake.notify_one();
    Ok(Recovered {
        recovered,
        since,
        endpoint_enabled,
    })
}

/// Whether, and why, the tenant's `webhook_url` is disabled now.
pub async fn endpoint_disabled(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
) -> Result<Option<DisabledEndpoint>, ServiceError> {
    Ok(match webhook_url(runtime, tenant) {
        Some(url) => app.store.endpoint_disabled(tenant, url).await?,
        None => None,
    })
}

/// The tenant's `webhook_url` in this policy snapshot, if it sets one.
fn webhook_url<'a>(runtime: &'a Runtime, tenant: &str) -> Option<&'a str> {
    runtime.policy.tenants.get(tenant)?.webhook_url.as_deref()
}
