//! The tenant's outgoing events: its delivery log, sending one again, and recovering every event
//! that failed since a time (which also enables a disabled `webhook_url` again). Each change that
//! queues an event wakes the outbox, so delivery starts at once instead of at its next poll.

use super::ServiceError;
use crate::app::{App, Runtime};
use crate::store::{DisabledEndpoint, EventFilter, EventRecord, now};
use chrono::{DateTime, Utc};

/// The longest a recover reaches back.
pub const RECOVER_DAYS: i64 = 14;

/// What a recover did.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// How many failed events were queued again.
    pub recovered: u64,
    /// From when: the `since` asked, or [`RECOVER_DAYS`] ago if that is later.
    pub since: DateTime<Utc>,
    /// Whether the tenant's `webhook_url` had been disabled and is enabled again.
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
) -> Result<Recovery, ServiceError> {
    let at = now();
    let since = since.max(at - chrono::Duration::days(RECOVER_DAYS));
    let url = runtime
        .policy
        .tenants
        .get(tenant)
        .and_then(|t| t.webhook_url.clone());
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
    Ok(Recovery {
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
    let url = runtime
        .policy
        .tenants
        .get(tenant)
        .and_then(|t| t.webhook_url.as_deref());
    Ok(match url {
        Some(url) => app.store.endpoint_disabled(tenant, url).await?,
        None => None,
    })
}
