//! Delivers tenants' events to their `webhook_url`, signed per the Standard Webhooks spec.
//!
//! - Headers: `webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` (the
//!   time of this attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`
//!   under each of the tenant's `whsec_` secrets, space-separated while it rotates). Signing per
//!   attempt keeps a retry hours later inside receivers' usual five-minute tolerance.
//! - Paced per endpoint: `webhook_rate_limit` deliveries a second (each replica), and after a
//!   429, 502 or 504 nothing to that endpoint until its `Retry-After` (or a backoff from 1 s to
//!   60 s) has passed; events due meanwhile are put off without an attempt. The events of one
//!   batch (of different lines) go out side by side, so those already sent when the 429 comes
//!   back are not recalled.
//! - Only a 2xx answer delivers. Otherwise the next attempt follows `[webhooks] retry_seconds`,
//!   with a little jitter, or the receiver's `Retry-After` when it sends one; after the last
//!   attempt the event is marked failed. A 410 Gone disables the tenant's URL until its policy
//!   names another: its events wait, and go out then.
//! - Only the head of each line is read: an event behind an earlier pending one of its line has
//!   no due time, and one whose tenant has no working URL (none in the policy, or one disabled)
//!   is parked, unread, until the policy names one (looked at on each policy change and every 30
//!   s). So the due scan costs the same however many events wait.
//! - At least once, across restarts and `kill -9`: an event is a row written with its change, and
//!   stays pending until an attempt is recorded.
//! - One sender per attempt across replicas: a replica claims an event in the store (a
//!   conditional update) before sending it, for a lease of `[webhooks] timeout_ms` (an attempt
//!   is cut off there) plus `LEASE_MARGIN` (5 s). A replica that dies mid-attempt leaves its claims
//!   to the others once that lease runs out; the receiver may then get those events twice, with
//!   the same `webhook-id`. Leases compare replicas' clocks, which must agree to well within the
//!   margin.
//! - Fenced: each claim carries a token, and an attempt's outcome is applied only while it still
//!   stands. A retry or a failure needs the claim still held; a delivery needs the event not
//!   redelivered since it was claimed (a delivery is a fact, whoever holds the claim). An attempt
//!   whose outcome did not stand still leaves its row in the event's attempts, and is counted in
//!   `kyc_webhook_stale_attempts_total{tenant}`. Attempt numbers come from a counter on the
//!   event's row, so two attempts never take one.
//! - In order per line: each event has a sequence in its line (the tenant's verification, or a
//!   tenant-level line such as `experiment:<name>`), assigned in the change's transaction, and is
//!   not sent while an earlier one of its line is pending. No clock is compared for order.
//! - The target is checked against the SSRF rules of [`crate::infra::outbound`].

use crate::app::{App, Runtime};
use crate::config::signing::signers;
use crate::infra::outbound::{Answer, OutboundClient, OutboundError};
use crate::store::{Attempt, AttemptOutcome, DueEvent, now};
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use standardwebhooks::Webhook;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Events read per pass.
const BATCH: u32 = 50;
/// How long a claim holds beyond the attempt's own timeout: room for the store calls around the
/// attempt and for some disagreement between replicas' clocks.
const LEASE_MARGIN: Duration = Duration::seconds(5);
/// How long a pass waits when nothing was due and nothing woke it.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);
/// How often parked events are looked at again for tenants whose endpoint works (besides each
/// policy change): an endpoint disabled by a 410 works again when the policy names another URL.
const RESUME_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Events of older replicas sequenced per resume.
const STRAYS_PAGE: u32 = 1000;

/// The longest an endpoint's `Retry-After` is honoured for, and the longest backoff.
const MAX_SLOW_DOWN: Duration = Duration::hours(1);
/// The backoff after a 429, 502 or 504 that names no `Retry-After`: doubling from 1 s to 60 s.
const BACKOFF_CAP_SECONDS: i64 = 60;

/// How fast this replica sends to each endpoint (tenant and URL): after a 429, 502 or 504 the
/// endpoint gets nothing until its `Retry-After` has passed (or, without one, a backoff doubling
/// from 1 s to 60 s), and a 2xx ends the backoff. Events due meanwhile are put off, with no
/// attempt made.
#[derive(Default)]
struct Pacing(std::sync::Mutex<std::collections::HashMap<(String, String), SlowedDown>>);

#[derive(Clone, Copy)]
struct SlowedDown {
    until: DateTime<Utc>,
    backoffs: u32,
}

impl Pacing {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), SlowedDown>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Until when the endpoint gets nothing, if that is later than `at`.
    fn held_until(&self, tenant: &str, url: &str, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let key = (tenant.to_string(), url.to_string());
        self.lock()
            .get(&key)
            .map(|s| s.until)
            .filter(|until| *until > at)
    }

    fn slow_down(&self, tenant: &str, url: &str, retry_after: Option<u64>, at: DateTime<Utc>) {
        let mut slowed = self.lock();
        let entry = slowed
            .entry((tenant.to_string(), url.to_string()))
            .or_insert(SlowedDown {
                until: at,
                backoffs: 0,
            });
        let wait = match retry_after {
            Some(seconds) => Duration::seconds(seconds.min(3600) as i64),
            None => Duration::seconds((1i64 << entry.backoffs.min(6)).min(BACKOFF_CAP_SECONDS)),
        };
        entry.until = at + wait.min(MAX_SLOW_DOWN);
        entry.backoffs = entry.backoffs.saturating_add(1);
    }

    fn recovered(&self, tenant: &str, url: &str) {
        self.lock().remove(&(tenant.to_string(), url.to_string()));
    }
}

/// The headers of one attempt.
fn signed_headers(
    event_id: &str,
    payload: &str,
    signers: &[Webhook],
    at: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let timestamp = at.timestamp();
    let signature = signers
        .iter()
        .filter_map(|s| s.sign(event_id, timestamp, payload.as_bytes()).ok())
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("content-type", "application/json".to_string()),
        ("user-agent", "kyc-gateway".to_string()),
        ("webhook-id", event_id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

/// The delay before attempt number `attempts_made` (0-based) with up to 10% jitter either way,
/// spread by the event id so that retries of many events do not land together.
fn delay(schedule: &[u64], attempts_made: u32, event_id: &str) -> Option<Duration> {
    let base = *schedule.get(attempts_made as usize)? as i64;
    let digest = Sha256::digest(format!("{event_id}/{attempts_made}").as_bytes());
    let spread = i64::from(digest[0]) - 128; // -128..=127
    Some(Duration::milliseconds(
        base * 1000 + base * 1000 * spread / 1280,
    ))
}

/// Delivers due events, a batch at a time, waking early when a change writes one, until the app
/// is stopping; attempts under way then finish (each is bounded by the webhook timeout) and are
/// recorded, so none is left to its lease.
pub async fn run(app: Arc<App>) {
    let mut client: Option<(Arc<Runtime>, OutboundClient)> = None;
    let mut resumed: Option<(Arc<Runtime>, std::time::Instant)> = None;
    let pacing = Arc::new(Pacing::default());
    while !app.stopping.is_cancelled() {
        let runtime = app.runtime();
        let resume_due = resumed.as_ref().is_none_or(|(for_runtime, at)| {
            !Arc::ptr_eq(for_runtime, &runtime) || at.elapsed() >= RESUME_EVERY
        });
        if resume_due {
            resume_parked(&app, &runtime).await;
            resumed = Some((runtime.clone(), std::time::Instant::now()));
        }
        // One client per policy snapshot: the allowlist and timeout come from the policy.
        let outbound = match &client {
            Some((built_for, c)) if Arc::ptr_eq(built_for, &runtime) => c.clone(),
            _ => {
                let c = OutboundClient::new(
                    runtime.policy.outbound(),
                    std::time::Duration::from_millis(runtime.policy.webhooks.timeout_ms),
                );
                client = Some((runtime.clone(), c.clone()));
                c
            }
        };
        let worked = pass(&app, &runtime, &outbound, &pacing).await;
        if !worked {
            tokio::select! {
                _ = app.outbox_wake.notified() => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = app.stopping.cancelled() => {}
            }
        }
    }
}

/// Makes the parked events of every tenant whose endpoint works due again.
async fn resume_parked(app: &App, runtime: &Runtime) {
    // Events written by replicas of a release before the outbox had sequences (during a rolling
    // upgrade) take their places in their lines first.
    match app.store.sequence_strays(STRAYS_PAGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            events = n,
            "outbox: sequenced events an older replica wrote"
        ),
        Err(error) => tracing::warn!(%error, "outbox: could not sequence older replicas' events"),
    }
    for (tenant, policy) in &runtime.policy.tenants {
        let Some(url) = policy.webhook_url.as_ref() else {
            continue;
        };
        let signs = policy
            .webhook_secret
            .as_ref()
            .is_some_and(|s| signers(s.expose_secret()).is_some());
        let disabled = match app.store.endpoint_disabled(tenant, url).await {
            Ok(disabled) => disabled.is_some(),
            Err(_) => continue,
        };
        metrics::gauge!("kyc_webhook_endpoint_disabled", "tenant" => tenant.clone())
            .set(if disabled { 1.0 } else { 0.0 });
        if !signs || disabled {
            continue;
        }
        match app.store.resume_parked(tenant).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(%tenant, events = n, "outbox: the tenant's endpoint works; its parked events go out");
                app.outbox_wake.notify_one();
            }
            Err(error) => tracing::warn!(%error, "outbox: could not resume parked events"),
        }
    }
}

/// One batch; `true` when there was something to send.
async fn pass(
    app: &Arc<App>,
    runtime: &Arc<Runtime>,
    client: &OutboundClient,
    pacing: &Arc<Pacing>,
) -> bool {
    let at = now();
    let due = match app.store.due_events(at, BATCH).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "outbox: store unavailable");
            return false;
        }
    };
    let timeout = runtime.policy.webhooks.timeout_ms;
    let lease = Duration::milliseconds(i64::from(u32::try_from(timeout).unwrap_or(u32::MAX)))
        + LEASE_MARGIN;
    let mut sends = JoinSet::new();
    for event in due {
        if app.stopping.is_cancelled() {
            break;
        }
        let claimed_at = now();
        let token = ulid::Ulid::generate().to_string();
        match app
            .store
            .claim_event(&event, &token, claimed_at, claimed_at + lease)
            .await
        {
            Ok(true) => {
                let (app, runtime, client, pacing) =
                    (app.clone(), runtime.clone(), client.clone(), pacing.clone());
                sends.spawn(async move {
                    deliver(&app, &runtime, &client, &pacing, event, &token).await
                });
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "outbox: claim failed"),
        }
    }
    let worked = !sends.is_empty();
    while sends.join_next().await.is_some() {}
    worked
}

/// `kyc_webhook_attempts_total{tenant, outcome}`, and for a delivery
/// `kyc_webhook_delivery_lag_seconds{tenant}`: from the change (the event's `timestamp`) to its
/// delivery.
fn count_attempt(tenant: &str, payload: &str, outcome: AttemptOutcome) {
    let word = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::RetryAt(_) => "retry",
        AttemptOutcome::Failed => "failed",
    };
    metrics::counter!("kyc_webhook_attempts_total", "tenant" => tenant.to_string(), "outcome" => word)
        .increment(1);
    if matches!(outcome, AttemptOutcome::Delivered) {
        let changed_at = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["timestamp"].as_str().map(str::to_owned))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
        if let Some(changed_at) = changed_at {
            let lag = now() - changed_at.with_timezone(&chrono::Utc);
            metrics::histogram!("kyc_webhook_delivery_lag_seconds", "tenant" => tenant.to_string())
                .record(lag.num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
}

/// One attempt at one event, claimed with `token`.
async fn deliver(
    app: &App,
    runtime: &Runtime,
    client: &OutboundClient,
    pacing: &Pacing,
    event: DueEvent,
    token: &str,
) {
    let tenant = &event.tenant;
    let Some((url, signers, at)) = cleared_to_send(app, runtime, pacing, &event, token).await
    else {
        return;
    };
    let headers = signed_headers(&event.id, &event.payload, &signers, at);
    let headers: Vec<(&str, String)> = headers.into_iter().collect();
    let started = std::time::Instant::now();
    // The client's own timeout does not cover the target check's name lookup; the lease needs
    // the whole attempt bounded.
    let timeout = std::time::Duration::from_millis(runtime.policy.webhooks.timeout_ms);
    let result = tokio::time::timeout(timeout, client.post(&url, &headers, event.payload.clone()))
        .await
        .unwrap_or_else(|_| Err(OutboundError::Failed("timed out".into())));
    let schedule = &runtime.policy.webhooks.retry_seconds;
    let next = |retry_after: Option<u64>| {
        let made = event.attempts + 1;
        match delay(schedule, made, &event.id) {
            None => AttemptOutcome::Failed,
            Some(d) => {
                let wait = retry_after
                    .map(|s| Duration::seconds(s.min(7 * 24 * 3600) as i64))
                    .unwrap_or(d);
                AttemptOutcome::RetryAt(now() + wait)
            }
        }
    };
    let (attempt, outcome) = match result {
        Ok(answer) => {
            let outcome = if took(app, pacing, tenant, &url, at, &answer).await {
                AttemptOutcome::Delivered
            } else {
                next(answer.retry_after)
            };
            let attempt = Attempt {
                at,
                status_code: Some(answer.status),
                latency_ms: answer.latency.as_millis() as u64,
                error: None,
            };
            (attempt, outcome)
        }
        Err(error) => {
            tracing::warn!(%tenant, %error, "outbox: delivery failed");
            let attempt = Attempt {
                at,
                status_code: None,
                latency_ms: started.elapsed().as_millis() as u64,
                error: Some(error.to_string()),
            };
            (attempt, next(None))
        }
    };
    count_attempt(tenant, &event.payload, outcome);
    record(app, runtime, &event, token, &url, &attempt, outcome).await;
}

/// The endpoint, its signers and the attempt's time when `event` may be sent now. Otherwise the
/// event is parked (no endpoint, or one disabled) or put off (the endpoint asked to slow down, or
/// the tenant's delivery rate is spent), and `None`.
async fn cleared_to_send(
    app: &App,
    runtime: &Runtime,
    pacing: &Pacing,
    event: &DueEvent,
    token: &str,
) -> Option<(String, Vec<Webhook>, DateTime<Utc>)> {
    let tenant = &event.tenant;
    let endpoint = runtime.policy.tenants.get(tenant).and_then(|t| {
        let secret = t.webhook_secret.as_ref()?;
        Some((t.webhook_url.clone()?, signers(secret.expose_secret())?))
    });
    let paused = match &endpoint {
        None => true,
        Some((url, _)) => app
            .store
            .endpoint_disabled(tenant, url)
            .await
            .map_or(true, |d| d.is_some()),
    };
    let Some((url, signers)) = endpoint.filter(|_| !paused) else {
        if let Err(error) = app.store.park_event(&event.id, token).await {
            tracing::warn!(%error, "outbox: could not park an event");
        }
        return None;
    };
    let at = now();
    let limited = runtime
        .webhook_limits
        .get(tenant)
        .and_then(|limiter| match limiter.admit() {
            crate::providers::limits::Admission::Refused { retry_after } => {
                Some(at + Duration::from_std(retry_after).unwrap_or(Duration::seconds(1)))
            }
            crate::providers::limits::Admission::Allowed { .. } => None,
        });
    if let Some(until) = pacing.held_until(tenant, &url, at).or(limited) {
        if let Err(error) = app.store.defer_event(&event.id, token, until).await {
            tracing::warn!(%error, "outbox: could not put an event off");
        }
        return None;
    }
    Some((url, signers, at))
}

/// Whether the endpoint took the event (a 2xx), pacing it by what it answered: a 429, 502 or 504
/// slows it down, a 2xx ends that, and a 410 Gone disables it until the policy changes.
async fn took(
    app: &App,
    pacing: &Pacing,
    tenant: &str,
    url: &str,
    at: DateTime<Utc>,
    answer: &Answer,
) -> bool {
    let status = answer.status;
    if matches!(status, 429 | 502 | 504) {
        tracing::info!(%tenant, status, "outbox: the endpoint asks to slow down");
        pacing.slow_down(tenant, url, answer.retry_after, now());
    }
    if (200..300).contains(&status) {
        pacing.recovered(tenant, url);
        return true;
    }
    if status == 410 {
        tracing::warn!(%tenant, "outbox: webhook_url answered 410 Gone; disabled until the policy changes");
        if let Err(error) = app
            .store
            .disable_endpoint(tenant, url, at, "gone", None)
            .await
        {
            tracing::warn!(%error, "outbox: could not disable the endpoint");
        }
    }
    false
}

/// Records an attempt's outcome under the event's claim; disables an endpoint failing too long.
async fn record(
    app: &App,
    runtime: &Runtime,
    event: &DueEvent,
    token: &str,
    url: &str,
    attempt: &Attempt,
    outcome: AttemptOutcome,
) {
    match app
        .store
        .record_attempt(event, token, url, attempt, outcome)
        .await
    {
        Ok(recorded) => {
            if let Some(since) = recorded.failing_since {
                disable_if_failing_too_long(app, runtime, &event.tenant, url, since).await;
            }
            if !recorded.stood {
                stale(&event.tenant, &event.id);
            }
        }
        Err(error) => {
            tracing::warn!(%error, "outbox: could not record an attempt; the event will be sent again")
        }
    }
}

/// An attempt whose outcome did not stand: its claim ran out and another replica took the event,
/// or the tenant redelivered it meanwhile; what that one does stands.
fn stale(tenant: &str, event: &str) {
    metrics::counter!("kyc_webhook_stale_attempts_total", "tenant" => tenant.to_string())
        .increment(1);
    tracing::warn!(%tenant, %event, "outbox: an attempt outlived its claim; its outcome was not applied");
}

/// The operational event that says a tenant's URL was disabled.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// Disables a tenant's URL that has failed every attempt since `since`, once that has lasted
/// `[webhooks] disable_after_seconds`, with an `endpoint.disabled` event: it waits, parked with
/// the tenant's others, and goes out once the tenant's URL works again (a new URL in the policy,
/// or `POST /v1/events/recover`).
async fn disable_if_failing_too_long(
    app: &App,
    runtime: &Runtime,
    tenant: &str,
    url: &str,
    since: DateTime<Utc>,
) {
    let after = runtime.policy.webhooks.disable_after_seconds;
    let at = now();
    if at - since < Duration::seconds(i64::try_from(after).unwrap_or(i64::MAX)) {
        return;
    }
    let event = crate::store::NewEvent {
        id: format!("evt_{}", ulid::Ulid::generate()),
        tenant: tenant.to_string(),
        verification_id: "endpoint".into(),
        event_type: ENDPOINT_DISABLED,
        payload: serde_json::json!({
            "type": ENDPOINT_DISABLED,
            "timestamp": at,
            "data": {
                "url": url,
                "reason": "failing",
                "failing_since": since,
                "disabled_at": at,
            },
        })
        .to_string(),
        created_at: at,
        due_at: at,
    };
    match app
        .store
        .disable_endpoint(tenant, url, at, "failing", Some(&event))
        .await
    {
        Ok(true) => {
            tracing::warn!(%tenant, failing_since = %since, "outbox: webhook_url disabled after failing without a break; recover or change it to resume");
            metrics::gauge!("kyc_webhook_endpoint_disabled", "tenant" => tenant.to_string())
                .set(1.0);
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "outbox: could not disable the endpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn secrets_are_one_or_two_whsec_keys() {
        assert_eq!(signers(SECRET).map(|s| s.len()), Some(1));
        assert_eq!(
            signers(&format!("{SECRET} whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=")).map(|s| s.len()),
            Some(2)
        );
        for bad in [
            "",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_short",
            "whsec_!!!!!!!!!!!!!!!!!!!!!!!!",
            &format!("{SECRET} {SECRET} {SECRET}"),
        ] {
            assert!(signers(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_secret_signs_and_each_signature_verifies() {
        let second = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=";
        let both = signers(&format!("{SECRET} {second}")).unwrap();
        let headers = signed_headers("evt_1", "{\"a\":1}", &both, Utc::now());
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in &headers {
            map.insert(*name, value.parse().unwrap());
        }
        let signature = &headers
            .iter()
            .find(|(n, _)| *n == "webhook-signature")
            .unwrap()
            .1;
        assert_eq!(signature.split(' ').count(), 2);
        for secret in [SECRET, second] {
            Webhook::new(secret)
                .unwrap()
                .verify(b"{\"a\":1}", &map)
                .unwrap();
        }
        assert!(
            Webhook::new(SECRET)
                .unwrap()
                .verify(b"{\"a\":2}", &map)
                .is_err()
        );
    }

    #[test]
    fn the_schedule_has_jitter_and_an_end() {
        let schedule = [0, 5, 300];
        assert_eq!(delay(&schedule, 0, "evt_1"), Some(Duration::zero()));
        let d = delay(&schedule, 2, "evt_1").unwrap();
        assert!(
            d >= Duration::seconds(270) && d <= Duration::seconds(330),
            "{d}"
        );
        assert_eq!(delay(&schedule, 3, "evt_1"), None);
    }
}
