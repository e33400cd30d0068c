//! Starting a verification: reserve, route, call, record; and resolving a create whose provider
//! call ended without a usable answer.
//!
//! # The reservation
//!
//! Before any provider call a create writes, in its own committed statement, the reservation of
//! `(tenant, reference)` with the request's hash ([`crate::store::CreateAttempt`]). It is unique
//! in the store, so it holds across replicas, and the transaction that stores the verification
//! removes it. Then:
//!
//! - the same reference with another body is a conflict at once, with no provider call, whatever
//!   became of the first attempt;
//! - the same body while an attempt holds the reservation waits for it (up to [`WAIT`]) and
//!   answers its verification, or `in_progress`; it never makes a second provider call;
//! - the same body after an attempt that ended (or died) resumes it.
//!
//! The provider-side key is derived from the reservation (tenant, reference, request hash,
//! instance), so a different body can never meet the first body's provider object, and an object
//! the provider already holds under the key is adopted only once the adapter has checked it is
//! this request's.
//!
//! # Provider failures
//!
//! A failed create is one of three ([`kyc_core::CreateFailure`]): nothing started (the next
//! candidate, a fallback, may take it), refused (answered: nothing started, nothing else tried),
//! or ambiguous (sent, no usable answer: the provider may have started it). An ambiguous attempt
//! is looked up at once; if the lookup does not find it, the reservation is left `ambiguous` at
//! that instance and the caller gets `503 provider_unavailable` with `Retry-After`. The next
//! attempt (a retry, or the reconciler) goes to the same instance with the same key first: it
//! looks the object up and adopts it, or, where the provider enforces the key
//! ([`kyc_core::Provider::create_is_idempotent`]), sends the create again. A lookup that finds
//! nothing proves absence only once the instance's `lookup_grace_seconds` have passed since the
//! ambiguous call (a request still being processed there could land after the lookup); only
//! then does the route start again, fallback included.
//!
//! # Holders and beats
//!
//! An attempt holds the reservation while it calls, and bumps its `beat` every [`BEAT_EVERY`]
//! meanwhile; every write is compare-and-set on the beat. A reservation whose beat has not
//! moved for [`LEASE`], as seen by the one waiting (its own monotonic clock, not the holder's
//! wall clock), belongs to an attempt that died (`kill -9`, a dropped task): it is taken over as
//! ambiguous at its instance. The attempt runs in a task of its own, so a caller that hangs up
//! does not cut it off half way.

use crate::app::{App, Runtime};
use crate::lifecycle::{Caller, Created, ServiceError, call, count_finished};
use crate::providers::routing;
use crate::store::{
    AttemptState, CreateAttempt, Inserted, NewChange, Reserved, StoredVerification, now,
};
use kyc_core::{
    CreateFailure, CreateRequest, Found, ProviderError, ProviderVerification, RoutingReason,
    RoutingRecord, Source, StatusChange, Subject, Verification,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How often an attempt bumps its reservation's beat while it calls a provider.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// A beat that has not moved for this long belongs to an attempt that is gone.
pub const LEASE: Duration = Duration::from_secs(3);
/// How long a create waits for another attempt of its reference and body before answering
/// `in_progress`: longer than [`LEASE`], so one wait sees a dead holder through.
pub const WAIT: Duration = Duration::from_secs(4);

/// A create as the lifecycle takes it: what the caller asked for, checked at the edge, and the
/// SHA-256 of the request's canonical body (so a retry is recognised without storing the body).
#[derive(Debug, Clone)]
pub struct NewVerification {
    /// The caller's reference: unique per tenant, and the idempotency key.
    pub reference: String,
    /// The person to verify.
    pub subject: kyc_core::Subject,
    /// Checks to run (the provider's default when absent).
    pub checks: Option<kyc_core::Checks>,
    /// Where the provider sends the person when done.
    pub redirect_url: Option<String>,
    /// The caller's labels, stored and returned as given.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// An instance the caller asked for (honoured where the tenant allows it).
    pub provider: Option<String>,
    /// The hash of the request's canonical body.
    pub request_hash: String,
}

/// Starts a verification for `tenant`, or answers the one its reference already has (see the
/// module's docs).
pub async fn create(
    app: Arc<App>,
    runtime: Arc<Runtime>,
    tenant: String,
    body: NewVerification,
) -> Result<Created, ServiceError> {
    let hash = body.request_hash.clone();
    let attempt = async move { reserve_and_run(&app, &runtime, &tenant, &body, hash).await };
    tokio::spawn(attempt.in_current_span())
        .await
        .map_err(|_| ServiceError::Interrupted)?
}

async fn reserve_and_run(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    body: &NewVerification,
    hash: String,
) -> Result<Created, ServiceError> {
    // A reservation settled while this create looked at it is looked at once more.
    for _ in 0..3 {
        if let Some(existing) = app.store.find_by_reference(tenant, &body.reference).await? {
            return replay(existing, &hash);
        }
        let before = optimized_before(app, runtime, tenant, body).await?;
        let route = route(app, runtime, tenant, body, before.as_deref())?;
        let first = route.candidates[0].clone();
        let at = now();
        let fresh = CreateAttempt {
            tenant: tenant.to_string(),
            reference: body.reference.clone(),
            request_hash: hash.clone(),
            state: AttemptState::Calling,
            routing: record_of(&route, 0, Vec::new()),
            provider: first,
            beat: 0,
            subject_id: body.subject.id.clone(),
            country: body.subject.country.clone(),
            metadata: body.metadata.clone(),
            ambiguous_at: None,
            created_at: at,
            updated_at: at,
        };
        let held = match app.store.reserve(&fresh).await? {
            // The reference's verification may have been stored between the look above and
            // the reservation (the write that stores it removes the reservation it settles):
            // look again, holding the reservation, before any provider call.
            Reserved::Fresh => match app.store.find_by_reference(tenant, &body.reference).await? {
                Some(existing) => {
                    app.store.drop_attempt(tenant, &body.reference, 0).await?;
                    return replay(existing, &hash);
                }
                None => fresh,
            },
            Reserved::Settled => continue,
            Reserved::Existing(existing) => {
                if existing.request_hash != hash {
                    return Err(ServiceError::ReferenceConflict);
                }
                match acquire(app, *existing).await? {
                    Some(held) => held,
                    None => continue,
                }
            }
        };
        let mut attempt = Attempt {
            app,
            runtime,
            body: Some(body),
            held,
        };
        if attempt.held.ambiguous_at.is_some() {
            match attempt.resolve().await? {
                Resolved::Adopted(created) => return Ok(*created),
                Resolved::Absent => {}
                Resolved::Pending(error) => {
                    attempt.release(AttemptState::Ambiguous).await;
                    return Err(error);
                }
            }
        }
        return attempt.route(route).await;
    }
    Err(ServiceError::InProgress)
}

/// Where adaptive routing sent this create's subject before, when the tenant's routing
/// optimizes the subject's country (one read of the subject's latest verification).
async fn optimized_before(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    body: &NewVerification,
) -> Result<Option<String>, ServiceError> {
    let routing = &runtime.policy.tenants[tenant].routing;
    if !routing
        .optimize
        .as_ref()
        .is_some_and(|o| o.covers(&body.subject.country))
    {
        return Ok(None);
    }
    let latest = app.store.subject_latest(tenant, &body.subject.id).await?;
    Ok(latest
        .filter(|v| {
            v.routing
                .as_ref()
                .is_some_and(|r| r.reason == RoutingReason::Optimize)
        })
        .map(|v| v.provider))
}

/// Where the policy sends this create now; instances not in the runtime are left out.
fn route(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    body: &NewVerification,
    optimized_before: Option<&str>,
) -> Result<routing::Route, ServiceError> {
    let routing = &runtime.policy.tenants[tenant].routing;
    let stopped = routing
        .experiment
        .as_ref()
        .is_some_and(|e| app.experiment_stopped(tenant, &e.name));
    let learnt = app.allocation(tenant);
    let live = routing::Live {
        experiment_stopped: stopped,
        shares: learnt.as_deref().map(|a| &a.shares),
        optimized_before,
    };
    let mut route = routing::candidates(
        routing,
        tenant,
        &body.subject.id,
        &body.subject.country,
        body.provider.as_deref(),
        |n| runtime.providers.contains_key(n),
        live,
    )?;
    route
        .candidates
        .retain(|name| runtime.providers.contains_key(name));
    if route.candidates.is_empty() {
        return Err(ServiceError::NoProviderAvailable);
    }
    Ok(route)
}

/// The routing record of a verification started at candidate `index` of `route`. A fallback is
/// not in the experiment: its arm's instance did not run it.
fn record_of(route: &routing::Route, index: usize, tried: Vec<String>) -> RoutingRecord {
    if index == 0 {
        RoutingRecord {
            reason: route.reason,
            tried,
            experiment: route.experiment.as_ref().map(|(name, _)| name.clone()),
            arm: route.experiment.as_ref().map(|(_, arm)| *arm),
            shares: route.shares.clone(),
        }
    } else {
        RoutingRecord {
            reason: RoutingReason::Fallback,
            tried,
            experiment: None,
            arm: None,
            shares: None,
        }
    }
}

/// Waits for the attempt holding `current` to end, and takes the reservation over when it is
/// not held (ambiguous, open) or its holder is gone (its beat stood still for [`LEASE`]).
/// `None`: it was settled meanwhile (its verification is stored).
async fn acquire(
    app: &App,
    mut current: CreateAttempt,
) -> Result<Option<CreateAttempt>, ServiceError> {
    let started = Instant::now();
    let mut watched = (current.beat, Instant::now());
    let mut pause = Duration::from_millis(20);
    loop {
        let holder_gone = current.state == AttemptState::Calling && watched.1.elapsed() >= LEASE;
        if current.state != AttemptState::Calling || holder_gone {
            if holder_gone {
                tracing::warn!(
                    provider = %current.provider,
                    "a create's attempt stopped beating; taking it over to resolve it"
                );
            }
            if let Some(held) = take_over(app, &current).await? {
                return Ok(Some(held));
            }
        } else if started.elapsed() >= WAIT {
            return Err(ServiceError::InProgress);
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        match app
            .store
            .attempt(&current.tenant, &current.reference)
            .await?
        {
            None => return Ok(None),
            Some(seen) => {
                if seen.beat != watched.0 {
                    watched = (seen.beat, Instant::now());
                }
                current = seen;
            }
        }
    }
}

/// Takes `current` over for this attempt, compare-and-set on its beat: a reservation another
/// attempt was calling from is ambiguous from now on (it may have sent its request); an open
/// one is routed afresh. `None` when another writer moved first.
pub(crate) async fn take_over(
    app: &App,
    current: &CreateAttempt,
) -> Result<Option<CreateAttempt>, ServiceError> {
    let mut held = current.clone();
    held.state = AttemptState::Calling;
    held.updated_at = now();
    if current.state == AttemptState::Calling {
        held.ambiguous_at = current.ambiguous_at.or(Some(held.updated_at));
    }
    if app.store.update_attempt(&held, current.beat).await? {
        held.beat = current.beat + 1;
        Ok(Some(held))
    } else {
        Ok(None)
    }
}

/// How resolving an ambiguous attempt came out.
pub(crate) enum Resolved {
    /// The provider's object was found (or made again under the same key) and stored.
    Adopted(Box<Created>),
    /// Nothing is there, and nothing can still land: the route may start again.
    Absent,
    /// Not known yet; the caller is told this.
    Pending(ServiceError),
}

/// One attempt holding a create's reservation. `body` is the caller's request; the reconciler,
/// which keeps no personal data, resolves without one.
pub(crate) struct Attempt<'a> {
    pub(crate) app: &'a App,
    pub(crate) runtime: &'a Runtime,
    pub(crate) body: Option<&'a NewVerification>,
    pub(crate) held: CreateAttempt,
}

impl Attempt<'_> {
    /// Tries the route's candidates in order: the next one only when a call started nothing.
    async fn route(mut self, route: routing::Route) -> Result<Created, ServiceError> {
        let mut tried = Vec::new();
        let mut last_failure = None;
        for (index, name) in route.candidates.iter().enumerate() {
            let record = record_of(&route, index, tried.clone());
            if self.held.provider != *name
                || self.held.routing != record
                || self.held.ambiguous_at.is_some()
            {
                let mut next = self.held.clone();
                next.provider = name.clone();
                next.routing = record;
                next.ambiguous_at = None;
                next.updated_at = now();
                self.write(next).await?;
            }
            let request = self.request(name).await?;
            let provider = self.runtime.providers[name].clone();
            let result = self
                .provider_call(name, "create", provider.create(&request))
                .await;
            let error = match result {
                Ok(started) => return self.record(started).await,
                Err(error) => error,
            };
            match error.on_create() {
                CreateFailure::NotStarted => {
                    tracing::warn!(provider = %name, %error, "provider unavailable on create; trying the next");
                    tried.push(name.clone());
                    last_failure = Some(ServiceError::provider(name, error));
                }
                CreateFailure::Refused => {
                    self.release(AttemptState::Open).await;
                    return Err(ServiceError::provider(name, error));
                }
                CreateFailure::Ambiguous => {
                    tracing::warn!(provider = %name, %error, "create ended without a usable answer; looking it up");
                    let found = self
                        .provider_call(name, "find_created", provider.find_created(&request))
                        .await;
                    if let Ok(Found::Created(started)) = found {
                        return self.record(*started).await;
                    }
                    self.held.ambiguous_at = Some(now());
                    self.release(AttemptState::Ambiguous).await;
                    return Err(ServiceError::provider(name, error));
                }
            }
        }
        self.release(AttemptState::Open).await;
        Err(last_failure.unwrap_or(ServiceError::NoProviderAvailable))
    }

    /// Resolves the ambiguous attempt at the reservation's instance: adopts what the provider
    /// holds under the key, or, where the provider enforces the key, sends the create again.
    pub(crate) async fn resolve(&mut self) -> Result<Resolved, ServiceError> {
        let name = self.held.provider.clone();
        let Some(provider) = self.runtime.providers.get(&name).cloned() else {
            return Ok(Resolved::Pending(ServiceError::ProviderGone(name)));
        };
        let request = self.request(&name).await?;
        let found = self
            .provider_call(&name, "find_created", provider.find_created(&request))
            .await;
        let found = match found {
            Ok(found) => found,
            Err(error) => return Ok(Resolved::Pending(ServiceError::provider(&name, error))),
        };
        if let Found::Created(started) = found {
            tracing::info!(provider = %name, "found the provider's verification of an ambiguous create");
            return self
                .record(*started)
                .await
                .map(|c| Resolved::Adopted(Box::new(c)));
        }
        let grace = self
            .runtime
            .policy
            .providers
            .get(&name)
            .map_or(crate::config::DEFAULT_LOOKUP_GRACE_SECONDS, |p| {
                p.lookup_grace_seconds
            });
        let since = self.held.ambiguous_at.unwrap_or(self.held.updated_at);
        if now() - since >= chrono::Duration::seconds(grace as i64) {
            tracing::info!(provider = %name, "an ambiguous create left nothing at the provider; routing it again");
            return Ok(Resolved::Absent);
        }
        if self.body.is_some() && provider.create_is_idempotent() {
            let sent = self
                .provider_call(&name, "create", provider.create(&request))
                .await;
            return match sent {
                Ok(started) => self
                    .record(started)
                    .await
                    .map(|c| Resolved::Adopted(Box::new(c))),
                Err(error) => Ok(Resolved::Pending(ServiceError::provider(&name, error))),
            };
        }
        Ok(Resolved::Pending(ServiceError::provider(
            &name,
            ProviderError::Ambiguous(
                "an earlier attempt of this create may still be processed there".into(),
            ),
        )))
    }

    /// What the provider is asked: the caller's request, or for the reconciler the subject's id
    /// and country only.
    async fn request(&self, name: &str) -> Result<CreateRequest, ServiceError> {
        let held = &self.held;
        let given = self
            .body
            .and_then(|body| body.subject.provider_refs.get(name).cloned());
        let subject_ref = match given {
            Some(given) => Some(given),
            None => {
                self.app
                    .store
                    .subject_ref(&held.tenant, name, &held.subject_id)
                    .await?
            }
        };
        let subject = match self.body {
            Some(body) => body.subject.clone(),
            None => Subject {
                id: held.subject_id.clone(),
                country: held.country.clone(),
                national_id: None,
                first_name: None,
                last_name: None,
                date_of_birth: None,
                email: None,
                phone: None,
                provider_refs: Default::default(),
            },
        };
        Ok(CreateRequest {
            idempotency_key: idempotency_key(
                &held.tenant,
                &held.reference,
                &held.request_hash,
                name,
            ),
            tenant: held.tenant.clone(),
            reference: held.reference.clone(),
            subject,
            checks: self
                .body
                .and_then(|body| body.checks.clone())
                .unwrap_or_default(),
            redirect_url: self.body.and_then(|body| body.redirect_url.clone()),
            webhook_url: self.app.hook_url(self.runtime, name),
            subject_ref,
            subject_partial: self.body.is_none(),
        })
    }

    /// One call to instance `name` through the gateway's guarded [`call`] (rate limit, circuit,
    /// metrics), counted for this create's tenant and country, while beating.
    async fn provider_call<T>(
        &mut self,
        name: &str,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let (tenant, country) = (self.held.tenant.clone(), self.held.country.clone());
        let on = Caller {
            tenant: &tenant,
            country: &country,
        };
        let (app, runtime) = (self.app, self.runtime);
        self.beating(call(app, runtime, on, name, operation, request))
            .await
    }

    /// Runs a provider call while bumping the reservation's beat every [`BEAT_EVERY`], so that
    /// others see this attempt alive. The beats run beside the call, never in its way (the call
    /// may itself be holding the store's one SQLite writer), and a beat under way when the call
    /// ends is finished, not dropped, so the beat this attempt knows is the stored one.
    async fn beating<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let app = self.app;
        let held = &mut self.held;
        let done = tokio::sync::Notify::new();
        let beats = async {
            let start = tokio::time::Instant::now() + BEAT_EVERY;
            let mut every = tokio::time::interval_at(start, BEAT_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = done.notified() => return,
                }
                match app.store.update_attempt(held, held.beat).await {
                    Ok(true) => held.beat += 1,
                    Ok(false) => {
                        tracing::warn!(
                            provider = %held.provider,
                            "another attempt took this create over; its call goes on"
                        );
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "could not beat a create's reservation"),
                }
            }
        };
        let work = async {
            let out = work.await;
            done.notify_one();
            out
        };
        tokio::join!(work, beats).0
    }

    /// Writes `next` as the held reservation (compare-and-set on the beat).
    async fn write(&mut self, next: CreateAttempt) -> Result<(), ServiceError> {
        if !self.app.store.update_attempt(&next, self.held.beat).await? {
            return Err(ServiceError::InProgress);
        }
        self.held = CreateAttempt {
            beat: self.held.beat + 1,
            ..next
        };
        Ok(())
    }

    /// Lets go of the reservation, leaving it in `state`. A reservation another attempt took
    /// over meanwhile is left to it.
    pub(crate) async fn release(&mut self, state: AttemptState) {
        let mut next = self.held.clone();
        next.state = state;
        next.updated_at = now();
        if state == AttemptState::Open {
            next.ambiguous_at = None;
        }
        if let Err(error) = self.write(next).await {
            tracing::warn!(%error, "could not release a create's reservation");
        }
    }

    /// Stores the verification the provider started (or holds under the key), which settles the
    /// reservation in the same write.
    async fn record(&mut self, started: ProviderVerification) -> Result<Created, ServiceError> {
        let held = &self.held;
        let name = &held.provider;
        if let Some(subject_ref) = &started.subject_ref {
            self.app
                .store
                .remember_subject_ref(&held.tenant, name, &held.subject_id, subject_ref)
                .await?;
        }
        let at = now();
        let verification = Verification {
            id: format!("ver_{}", ulid::Ulid::generate()),
            reference: held.reference.clone(),
            subject_id: held.subject_id.clone(),
            provider: name.clone(),
            routing: Some(held.routing.clone()),
            provider_reference: started.provider_reference,
            status: started.status,
            reason: started.reason,
            verification_url: started.verification_url,
            expires_at: started.expires_at,
            decision: started.decision,
            metadata: held.metadata.clone(),
            created_at: at,
            updated_at: at,
            completed_at: started.status.is_final().then_some(at),
        };
        let created = NewChange {
            tenant: held.tenant.clone(),
            verification_id: verification.id.clone(),
            change: StatusChange {
                from: None,
                to: verification.status,
                source: Source::Create,
                actor: None,
                note: None,
                at,
            },
        };
        let row = StoredVerification {
            tenant: held.tenant.clone(),
            request_hash: held.request_hash.clone(),
            country: Some(held.country.clone()),
            verification,
        };
        let valid_days = self.runtime.policy.tenants[&held.tenant].verification_valid_days;
        let lapsed_before = at - chrono::Duration::days(i64::from(valid_days));
        match self.app.store.insert(&row, &created, lapsed_before).await? {
            Inserted::Created => {
                tracing::info!(verification = %row.verification.id, provider = %name, "verification started");
                metrics::counter!(
                    "kyc_verifications_started_total",
                    "tenant" => held.tenant.clone(),
                    "provider" => name.clone()
                )
                .increment(1);
                if row.verification.status.is_final() {
                    count_finished(&held.tenant, &row.verification);
                }
                Ok(Created::New(row.verification))
            }
            Inserted::Exists(existing) => {
                if existing.verification.provider_reference != row.verification.provider_reference {
                    tracing::error!(
                        verification = %existing.verification.id, provider = %name,
                        "a second provider object was made for a stored verification"
                    );
                }
                // The reservation this attempt holds settles nothing now: without this it would
                // be resolved again, and again, by every later attempt and reconciler round.
                self.app
                    .store
                    .drop_attempt(&held.tenant, &held.reference, held.beat)
                    .await?;
                replay(*existing, &held.request_hash)
            }
        }
    }
}

/// The answer to a create whose reference already has a verification.
fn replay(existing: StoredVerification, hash: &str) -> Result<Created, ServiceError> {
    if existing.request_hash == hash {
        Ok(Created::Replayed(existing.verification))
    } else {
        Err(ServiceError::ReferenceConflict)
    }
}

/// The provider-side idempotency key of a reservation's attempt at one instance: the same on
/// every retry of the same request, and different for another body (so another person's request
/// can never be handed this one's provider object).
pub(crate) fn idempotency_key(
    tenant: &str,
    reference: &str,
    request_hash: &str,
    provider: &str,
) -> String {
    let digest =
        Sha256::digest(format!("{tenant}\n{reference}\n{request_hash}\n{provider}").as_bytes());
    format!("kyc_{}", &hex::encode(digest)[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_is_stable_and_scoped_to_the_body() {
        let key = |t, r, h, p| idempotency_key(t, r, h, p);
        assert_eq!(key("t", "r", "h", "p"), key("t", "r", "h", "p"));
        assert_ne!(key("t", "r", "h", "p"), key("u", "r", "h", "p"));
        assert_ne!(key("t", "r", "h", "p"), key("t", "r", "h", "q"));
        assert_ne!(
            key("t", "r", "h", "p"),
            key("t", "r", "other body", "p"),
            "another body never meets this body's provider object"
        );
    }
}
