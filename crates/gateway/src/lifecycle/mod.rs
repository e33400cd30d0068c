//! The verification lifecycle: every rule about changing a verification's status (starting one is
//! [`crate::lifecycle::create`]'s: reserve, route, call, record).
//!
//! Handlers, the provider-webhook receiver and the reconciler call these functions and do nothing
//! of their own. Every status change goes through [`sync`] or [`cancel`] and from there through one
//! private `record`, which merges the provider's answer by the rule in `kyc_core::merge` and writes
//! the change, its history row and its outbox event in one transaction. A change that is not real
//! (a duplicate, a stale or out-of-order answer) writes nothing and emits nothing.

pub mod audit;
pub mod create;
pub mod erasure;
pub mod events;
pub mod expiry;
pub mod webhooks;

use crate::app::{App, Runtime};
use crate::providers::guarded::Guarded;
use crate::providers::routing::RoutingError;
use crate::store::{ListFilter, NewChange, NewEvent, StoreError, StoredVerification, now};
use chrono::Duration;
use kyc_core::{
    Identity, Provider, ProviderError, ProviderVerification, Source, Status, StatusChange,
    SubjectStanding, Verification,
};
use std::sync::Arc;

/// The one event type tenants receive.
pub const VERIFICATION_UPDATED: &str = "verification.updated";

/// Why a lifecycle operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The tenant has no such verification.
    #[error("no such verification for this tenant")]
    NotFound,
    /// The tenant has no such event.
    #[error("no such event for this tenant")]
    EventNotFound,
    /// The adapter refused a webhook: a bad signature or an unreadable body.
    #[error("webhook refused: {0}")]
    WebhookRefused(kyc_core::WebhookError),
    /// The reference was already used with a different request body.
    #[error("this reference was already used with a different request body")]
    ReferenceConflict,
    /// The verification is final and cannot be cancelled.
    #[error("the verification is already {0}")]
    NotCancellable(Status),
    /// A manual decision needs the verification in review.
    #[error("only a verification in review takes a manual decision; this one is {0}")]
    NotInReview(Status),
    /// The provider has no document data yet.
    #[error("provider {provider} has no document data for this verification yet (status {status})")]
    NotReady {
        /// The provider instance.
        provider: String,
        /// Where the verification stands.
        status: Status,
    },
    /// The verification's provider instance is no longer in the policy.
    #[error("provider {0} is no longer in the policy; restore it to reach this verification")]
    ProviderGone(String),
    /// A provider failed; `provider` is the instance name.
    #[error("provider {provider}: {error}")]
    Provider {
        /// The provider instance.
        provider: String,
        /// What it did.
        error: ProviderError,
    },
    /// No provider instance could be chosen.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Every candidate provider was unavailable, and none was tried.
    #[error("no provider could take the request")]
    NoProviderAvailable,
    /// An erasure met a verification still in flight at a provider that cannot cancel it.
    #[error(
        "verification {verification} is still in flight at {provider}, which cannot cancel it: \
         erase again once it has finished (at the latest when its session lapses)"
    )]
    InFlight {
        /// The verification.
        verification: String,
        /// Its provider instance.
        provider: String,
    },
    /// A subject's verifications kept changing while it was being erased.
    #[error("the subject's verifications kept changing during the erasure; erase again shortly")]
    SubjectBusy,
    /// A create of the same reference and body is under way (its attempt holds the reservation).
    #[error("a create with this reference and body is under way")]
    InProgress,
    /// The create's task ended before its answer (the runtime shutting down, or a panic).
    #[error("the create was interrupted")]
    Interrupted,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub(crate) fn provider(provider: &str, error: ProviderError) -> Self {
        ServiceError::Provider {
            provider: provider.to_string(),
            error,
        }
    }
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// A new verification was started.
    New(Verification),
    /// The reference was already started with the same body: the first verification.
    Replayed(Verification),
}

/// A tenant's verification.
pub async fn load(app: &App, tenant: &str, id: &str) -> Result<StoredVerification, ServiceError> {
    app.store
        .get(tenant, id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// A page of the tenant's verifications, as `filter` asks.
pub async fn list(
    app: &App,
    tenant: &str,
    filter: &ListFilter,
) -> Result<Vec<Verification>, ServiceError> {
    let rows = app.store.list(tenant, filter).await?;
    Ok(rows.into_iter().map(|s| s.verification).collect())
}

/// A verification's status changes, oldest first.
pub async fn history(app: &App, tenant: &str, id: &str) -> Result<Vec<StatusChange>, ServiceError> {
    load(app, tenant, id).await?;
    Ok(app.store.history(tenant, id).await?)
}

/// The provider instance that runs a stored verification.
fn provider_of(
    runtime: &Runtime,
    stored: &StoredVerification,
) -> Result<Arc<dyn Provider>, ServiceError> {
    let name = &stored.verification.provider;
    runtime
        .providers
        .get(name)
        .cloned()
        .ok_or_else(|| ServiceError::ProviderGone(name.clone()))
}

/// Counts a verification that reached a final status, and how long it took from its creation.
pub(crate) fn count_finished(tenant: &str, v: &Verification) {
    let labels = [
        ("tenant", tenant.to_string()),
        ("provider", v.provider.clone()),
        ("status", v.status.as_str().to_string()),
    ];
    metrics::counter!("kyc_verifications_finished_total", &labels).increment(1);
    let took = v.completed_at.unwrap_or(v.updated_at) - v.created_at;
    metrics::histogram!("kyc_time_to_decision_seconds", &labels)
        .record(took.num_milliseconds().max(0) as f64 / 1000.0);
}

/// Whose verification a provider call is for: its failures count in that tenant's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) tenant: &'a str,
    /// The subject's country (`""` when unknown).
    pub(crate) country: &'a str,
}

impl<'a> Caller<'a> {
    fn of(stored: &'a StoredVerification) -> Self {
        Caller {
            tenant: &stored.tenant,
            country: stored.country.as_deref().unwrap_or(""),
        }
    }
}

/// Makes one call, `operation`, to provider instance `name` through its guard (rate limit,
/// circuit, span, metrics: [`crate::providers::guarded::Guard`]), and writes down what the guard
/// reports: a failure of the provider's in the tenant's daily figures, and the time its circuit
/// opens.
pub(crate) async fn call<T>(
    app: &App,
    runtime: &Runtime,
    on: Caller<'_>,
    name: &str,
    operation: &'static str,
    request: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let guarded = match runtime.guards.get(name) {
        Some(guard) => guard.call(&app.breakers, operation, request).await,
        None => Guarded::gone(name),
    };
    write_down(app, on, name, guarded).await
}

/// [`call`] for a caller that already had its turn at the instance's outbound rate limit.
async fn call_in_turn<T>(
    app: &App,
    runtime: &Runtime,
    on: Caller<'_>,
    name: &str,
    operation: &'static str,
    request: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let guarded = match runtime.guards.get(name) {
        Some(guard) => guard.call_in_turn(&app.breakers, operation, request).await,
        None => Guarded::gone(name),
    };
    write_down(app, on, name, guarded).await
}

/// Records a circuit's opening and counts a failed call in the tenant's daily figures (on the day
/// it failed). A store that cannot take them is logged, not passed on: the call's own result is
/// what the caller needs.
async fn write_down<T>(
    app: &App,
    on: Caller<'_>,
    name: &str,
    guarded: Guarded<T>,
) -> Result<T, ProviderError> {
    if let Some(open_for) = guarded.opened_for {
        let opened_at = now();
        let closes_at = opened_at + Duration::from_std(open_for).unwrap_or(Duration::seconds(1));
        if let Err(error) = app
            .store
            .record_circuit_opening(name, opened_at, closes_at)
            .await
        {
            tracing::warn!(provider = %name, %error, "could not record the circuit's opening");
        }
    }
    if guarded.failed
        && let Err(error) = app
            .store
            .count_provider_error(on.tenant, name, on.country, now())
            .await
    {
        tracing::warn!(provider = %name, %error, "could not count a provider error");
    }
    guarded.result
}

/// Reads the provider now and records what it says. A caller's refresh asks the provider to bring
/// its own view up to date first (gu1 sync); webhooks and the reconciler read it as it is.
pub async fn sync(
    app: &App,
    runtime: &Runtime,
    stored: StoredVerification,
    source: Source,
) -> Result<StoredVerification, ServiceError> {
    let provider = provider_of(runtime, &stored)?;
    let reference = &stored.verification.provider_reference;
    let name = &stored.verification.provider;
    let on = Caller::of(&stored);
    let answer = match source {
        Source::Refresh => {
            call(
                app,
                runtime,
                on,
                name,
                "refresh",
                provider.refresh(reference),
            )
            .await
        }
        _ => call(app, runtime, on, name, "get", provider.get(reference)).await,
    }
    .map_err(|e| ServiceError::provider(&stored.verification.provider, e))?;
    record(app, runtime, stored, &answer, source, None).await
}

/// The reconciler's read: [`sync`] from source `reconciler`, for a read that already had its
/// turn at the instance's outbound rate limit (the reconciler waits for one rather than fail, so
/// its reads never count as failed calls for want of a turn).
pub async fn reconcile(
    app: &App,
    runtime: &Runtime,
    stored: StoredVerification,
) -> Result<StoredVerification, ServiceError> {
    let provider = provider_of(runtime, &stored)?;
    let name = &stored.verification.provider;
    let reference = &stored.verification.provider_reference;
    let answer = call_in_turn(
        app,
        runtime,
        Caller::of(&stored),
        name,
        "get",
        provider.get(reference),
    )
    .await
    .map_err(|e| ServiceError::provider(name, e))?;
    record(app, runtime, stored, &answer, Source::Reconciler, None).await
}

/// Ends as `expired` a verification whose provider session lapsed without a result (see
/// [`Provider::session_lifetime`]), through the same path as a provider's answer: the change is
/// recorded with source `reconciler`, counted, and announced to the tenant by its event. One that
/// became final meanwhile stays as it is.
pub async fn expire_lapsed(
    app: &App,
    runtime: &Runtime,
    stored: StoredVerification,
) -> Result<StoredVerification, ServiceError> {
    let lapsed = ProviderVerification {
        provider_reference: stored.verification.provider_reference.clone(),
        status: Status::Expired,
        reason: Some(kyc_core::Reason {
            code: "session_expired".into(),
            provider_code: None,
            message: Some("the provider's session ended without a result".into()),
        }),
        verification_url: None,
        expires_at: None,
        decision: None,
        subject_ref: None,
    };
    record(app, runtime, stored, &lapsed, Source::Reconciler, None).await
}

/// Cancels a verification where the provider allows it.
pub async fn cancel(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    id: &str,
) -> Result<StoredVerification, ServiceError> {
    let stored = load(app, tenant, id).await?;
    let provider = provider_of(runtime, &stored)?;
    let v = &stored.verification;
    if v.status.is_final() {
        return Err(ServiceError::NotCancellable(v.status));
    }
    let answer = call(
        app,
        runtime,
        Caller::of(&stored),
        &v.provider,
        "cancel",
        provider.cancel(&v.provider_reference),
    )
    .await
    .map_err(|e| ServiceError::provider(&v.provider, e))?;
    record(app, runtime, stored, &answer, Source::Cancel, None).await
}

/// A reviewer's decision on a verification in review, as the lifecycle takes it.
#[derive(Debug, Clone)]
pub struct ReviewDecision {
    /// Approve or reject.
    pub outcome: kyc_core::ManualOutcome,
    /// Why, in the reviewer's words (checked at the edge).
    pub reason: String,
    /// The name of the API key that decided, recorded with the change.
    pub by: String,
}

/// A person's approve or reject of a verification in review, made through the gateway where the
/// provider takes manual decisions: the provider is synced first (it may have decided already),
/// then told. The change is recorded with source `decision` and the deciding key's name; later
/// syncs cannot undo it, since a final status never changes.
pub async fn decide(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    id: &str,
    decision: ReviewDecision,
) -> Result<StoredVerification, ServiceError> {
    let key_name = decision.by.as_str();
    let stored = load(app, tenant, id).await?;
    let provider = provider_of(runtime, &stored)?;
    let name = stored.verification.provider.clone();
    if !provider.takes_manual_decisions() {
        return Err(ServiceError::provider(
            &name,
            ProviderError::Unsupported("manual decisions"),
        ));
    }
    if stored.verification.status != Status::InReview {
        return Err(ServiceError::NotInReview(stored.verification.status));
    }
    let synced = sync(app, runtime, stored, Source::Refresh).await?;
    if synced.verification.status != Status::InReview {
        return Err(ServiceError::NotInReview(synced.verification.status));
    }
    let answer = call(
        app,
        runtime,
        Caller::of(&synced),
        &name,
        "decide",
        provider.decide(
            &synced.verification.provider_reference,
            decision.outcome,
            &decision.reason,
        ),
    )
    .await
    .map_err(|e| ServiceError::provider(&name, e))?;
    let (tenant, id) = (synced.tenant.clone(), synced.verification.id.clone());
    let recorded = record(
        app,
        runtime,
        synced,
        &answer,
        Source::Decision,
        Some(key_name),
    )
    .await?;
    // Who decided and why, in the history of its own. The provider may announce the decision by
    // webhook before it answers the call, and that webhook may be recorded first: the history
    // shows the change as this decision's all the same.
    app.store
        .record_decision(&tenant, &id, answer.status, key_name, &decision.reason)
        .await?;
    Ok(recorded)
}

/// Merges a provider's answer into the stored verification and writes it, with its history row
/// and, where the tenant has a `webhook_url`, its event. If another writer changed the status in
/// between, the answer is judged again against what is stored now.
async fn record(
    app: &App,
    runtime: &Runtime,
    mut current: StoredVerification,
    answer: &ProviderVerification,
    source: Source,
    actor: Option<&str>,
) -> Result<StoredVerification, ServiceError> {
    for _ in 0..3 {
        let at = now();
        let Some(next) = kyc_core::merge(&current.verification, answer, at) else {
            return Ok(current);
        };
        let old = current.verification.status;
        let status_changed = next.status != old;
        let change = status_changed.then(|| NewChange {
            tenant: current.tenant.clone(),
            verification_id: next.id.clone(),
            change: StatusChange {
                from: Some(old),
                to: next.status,
                source,
                actor: actor.map(str::to_string),
                note: None,
                at,
            },
        });
        let wants_events = runtime
            .policy
            .tenants
            .get(&current.tenant)
            .is_some_and(|t| t.webhook_url.is_some());
        let event = (status_changed && wants_events).then(|| {
            let line = next.id.clone();
            tenant_event(
                runtime,
                &current.tenant,
                line,
                VERIFICATION_UPDATED,
                &next,
                at,
            )
        });
        if app
            .store
            .save_change(&current.tenant, old, &next, change.as_ref(), event.as_ref())
            .await?
        {
            if event.is_some() {
                app.outbox_wake.notify_one();
            }
            if status_changed {
                tracing::info!(
                    verification = %next.id, from = %old, to = %next.status,
                    source = source.as_str(), "status changed"
                );
                if next.status.is_final() && !old.is_final() {
                    count_finished(&current.tenant, &next);
                }
            }
            current.verification = next;
            return Ok(current);
        }
        current = load(app, &current.tenant, &current.verification.id).await?;
    }
    Ok(current)
}

/// An event for the tenant's `webhook_url`, `{"type", "timestamp": at, "data"}`, in `line` (a
/// verification's id, or a line of its own for events about no verification), due after the
/// policy's first delay.
pub(crate) fn tenant_event(
    runtime: &Runtime,
    tenant: &str,
    line: String,
    event_type: &'static str,
    data: &impl serde::Serialize,
    at: chrono::DateTime<chrono::Utc>,
) -> NewEvent {
    NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        tenant: tenant.to_owned(),
        verification_id: line,
        event_type,
        payload: serde_json::json!({"type": event_type, "timestamp": at, "data": data}).to_string(),
        created_at: at,
        due_at: at + first_delay(runtime),
    }
}

/// The delay before an event's first delivery attempt.
fn first_delay(runtime: &Runtime) -> Duration {
    let seconds = runtime.policy.webhooks.retry_seconds.first().copied();
    // The policy bounds each delay to a week.
    Duration::seconds(seconds.unwrap_or(0) as i64)
}

/// The document data the provider extracted, read live. Until the person has reached the
/// document step there is none, whatever the provider: [`ServiceError::NotReady`].
pub async fn identity(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    id: &str,
) -> Result<Identity, ServiceError> {
    let stored = load(app, tenant, id).await?;
    let provider = provider_of(runtime, &stored)?;
    let v = &stored.verification;
    let not_ready = || ServiceError::NotReady {
        provider: v.provider.clone(),
        status: v.status,
    };
    let identity = call(
        app,
        runtime,
        Caller::of(&stored),
        &v.provider,
        "identity",
        provider.identity(&v.provider_reference),
    )
    .await
    .map_err(|e| match e {
        ProviderError::NotFound => not_ready(),
        e => ServiceError::provider(&v.provider, e),
    })?;
    // Providers differ in how they say "nothing extracted yet"; callers get one answer.
    if identity == Identity::default() {
        return Err(not_ready());
    }
    Ok(identity)
}

/// A subject's standing, from the store: `verified` when its newest approval is younger than the
/// tenant's `verification_valid_days`. Where that approval's provider keeps its own view of the
/// subject (gu1), its view wins; if the provider cannot be reached, the store's answer stands.
pub async fn standing(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    subject_id: &str,
) -> Result<SubjectStanding, ServiceError> {
    let (current, approved) = app.store.subject_history(tenant, subject_id).await?;
    let valid_days = runtime.policy.tenants[tenant].verification_valid_days;
    let verified_at = approved.as_ref().and_then(|a| a.completed_at);
    let expires_at =
        verified_at.and_then(|t| t.checked_add_signed(Duration::days(i64::from(valid_days))));
    let fresh = expires_at.is_some_and(|e| chrono::Utc::now() < e);
    let mut standing = SubjectStanding {
        subject_id: subject_id.to_string(),
        verified: fresh,
        current,
        verified_at,
        expires_at,
        needs_reverification: approved.is_some() && !fresh,
        reverifications: app
            .store
            .subject_reverifications(tenant, subject_id)
            .await?,
    };
    if let Some(approved) = approved
        && let Some(provider) = runtime.providers.get(&approved.provider)
        && let Some(subject_ref) = app
            .store
            .subject_ref(tenant, &approved.provider, subject_id)
            .await?
    {
        // The subject's country is not at hand here; its errors count under country "".
        let on = Caller {
            tenant,
            country: "",
        };
        let view = call(
            app,
            runtime,
            on,
            &approved.provider,
            "standing",
            provider.subject_standing(&subject_ref),
        )
        .await;
        match view {
            Ok(Some(view)) => {
                standing.verified = view.verified && !view.needs_reverification;
                standing.verified_at = view.verified_at.or(standing.verified_at);
                standing.expires_at = view.expires_at.or(standing.expires_at);
                standing.needs_reverification = view.needs_reverification;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                provider = %approved.provider, %error,
                "provider standing unavailable; answering from the store"
            ),
        }
    }
    Ok(standing)
}
