//! Re-reads verifications that are not final from their providers on a schedule, so a lost
//! provider webhook only delays an update.
//!
//! Each provider instance gets its own round: it claims that instance's unfinished verifications
//! that are due, a page at a time in id order (keyset paging, so a backlog of any size is read a
//! page at a time and each verification once per round), with at most `CONCURRENCY` (8) provider
//! reads at once. A slow or failing provider slows only its own round; a round still running when
//! the next is due is not started twice.
//!
//! Replicas on one database share the work through the store, not through memory: a claim marks
//! each row not due again until one period after the round started, and a row another replica has
//! claimed is not due (on PostgreSQL, one being claimed at that moment is skipped). So each
//! unfinished verification is read about once per `reconciler.every_seconds` however many
//! replicas run; whichever replica's round comes first once it is due reads it, and the rows of a
//! replica that died are read by another within a period. This assumes the replicas' clocks agree
//! to well under a second.

use crate::app::{App, Runtime};
use crate::create;
use crate::service;
use crate::store::AttemptState;
use crate::store::now;
use chrono::{DateTime, Utc};
use kyc_core::Source;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Verifications claimed from the store at a time.
const PAGE: u32 = 200;
/// Provider reads in flight at once, per provider instance.
const CONCURRENCY: usize = 8;
/// A claimed verification is due again this much before one period has passed, so that the
/// claiming replica's next round, a period later by its timer, finds it due even if the wall
/// clock was adjusted a little meanwhile.
const GRACE: chrono::Duration = chrono::Duration::milliseconds(250);

/// Every `reconciler.every_seconds`, a round for each provider instance whose last round has
/// finished, until the app is stopping; the rounds then finish the reads under way (each bounded
/// by the provider's timeout) and start no more. Rows they claimed but did not read come due
/// again within a period, for any replica.
pub async fn run(app: Arc<App>) {
    let mut rounds: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut settling: Option<JoinHandle<Beats>> = None;
    let mut beats = Beats::new();
    loop {
        let every = app.runtime().policy.reconciler.every_seconds;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = app.stopping.cancelled() => break,
        }
        let runtime = app.runtime();
        let started = now();
        if settling.as_ref().is_none_or(|s| s.is_finished()) {
            if let Some(done) = settling.take() {
                beats = done.await.unwrap_or_default();
            }
            settling = Some(tokio::spawn(settle(app.clone(), runtime.clone(), beats)));
            beats = Beats::new();
        }
        rounds.retain(|_, round| !round.is_finished());
        for name in runtime.providers.keys() {
            if !rounds.contains_key(name) {
                let round =
                    tokio::spawn(round(app.clone(), runtime.clone(), name.clone(), started));
                rounds.insert(name.clone(), round);
            }
        }
    }
    for (_, round) in rounds {
        let _ = round.await;
    }
    if let Some(settling) = settling {
        let _ = settling.await;
    }
}

/// The beat each reservation under way had when a round first saw it there, and when.
type Beats = HashMap<(String, String), (i64, Instant)>;

/// Reservations settled in one round at most.
const SETTLE_PAGE: u32 = 100;

/// Resolves the creates that no caller is finishing: a reservation left `ambiguous`, or one
/// whose attempt stopped beating (its process died between the provider call and the store
/// write) for at least [`create::LEASE`] across rounds. Each is taken over and looked up at its
/// instance: what the provider holds under its key is stored as the verification; where the
/// lookup finds nothing once the instance's grace has passed, the reservation is left open (a
/// retry starts afresh); otherwise it stays ambiguous for a later round or retry. The reconciler
/// never starts a verification: it has no personal data to send.
async fn settle(app: Arc<App>, runtime: Arc<Runtime>, mut seen: Beats) -> Beats {
    let attempts = match app.store.unsettled_attempts(SETTLE_PAGE).await {
        Ok(attempts) => attempts,
        Err(error) => {
            tracing::warn!(%error, "reconciler: store unavailable");
            return seen;
        }
    };
    let mut still = Beats::new();
    for attempt in attempts {
        if app.stopping.is_cancelled() {
            break;
        }
        let key = (attempt.tenant.clone(), attempt.reference.clone());
        if attempt.state == AttemptState::Calling {
            match seen.remove(&key) {
                Some((beat, since)) if beat == attempt.beat && since.elapsed() >= create::LEASE => {
                    tracing::warn!(provider = %attempt.provider, "reconciler: a create's attempt stopped beating; resolving it");
                }
                Some((beat, since)) if beat == attempt.beat => {
                    still.insert(key, (beat, since));
                    continue;
                }
                _ => {
                    still.insert(key, (attempt.beat, Instant::now()));
                    continue;
                }
            }
        }
        let held = match create::take_over(&app, &attempt).await {
            Ok(Some(held)) => held,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "reconciler: could not take a create over");
                continue;
            }
        };
        let mut resolving = create::Attempt {
            app: &app,
            runtime: &runtime,
            body: None,
            held,
        };
        match resolving.resolve().await {
            Ok(create::Resolved::Adopted(_)) => {
                tracing::info!(provider = %attempt.provider, "reconciler: stored the verification of an interrupted create");
            }
            Ok(create::Resolved::Absent) => resolving.release(AttemptState::Open).await,
            Ok(create::Resolved::Pending(error)) => {
                tracing::info!(provider = %attempt.provider, %error, "reconciler: an interrupted create is not resolved yet");
                resolving.release(AttemptState::Ambiguous).await;
            }
            Err(error) => {
                tracing::warn!(provider = %attempt.provider, %error, "reconciler: could not resolve a create");
                resolving.release(AttemptState::Ambiguous).await;
            }
        }
    }
    still
}

/// One pass over a provider instance's unfinished verifications that are due at `started`.
async fn round(app: Arc<App>, runtime: Arc<Runtime>, provider: String, started: DateTime<Utc>) {
    // `kyc_reconciler_backlog{provider}`: every unfinished verification of the instance, whichever
    // replica reads it.
    match app.store.unfinished_count(&provider).await {
        Ok(backlog) => metrics::gauge!("kyc_reconciler_backlog", "provider" => provider.clone())
            .set(backlog as f64),
        Err(error) => {
            tracing::warn!(%provider, %error, "reconciler: store unavailable");
            return;
        }
    }
    let every = runtime.policy.reconciler.every_seconds;
    let every = chrono::Duration::seconds(i64::from(u32::try_from(every).unwrap_or(u32::MAX)));
    let until = started + every - GRACE;
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut after = String::new();
    loop {
        let page = match app
            .store
            .claim_unfinished(&provider, &after, started, until, PAGE)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%provider, %error, "reconciler: store unavailable");
                return;
            }
        };
        let full = page.len() == PAGE as usize;
        let Some(last) = page.last() else {
            return;
        };
        after = last.verification.id.clone();
        let mut reads = JoinSet::new();
        for stored in page {
            if app.stopping.is_cancelled() {
                break;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (app, runtime, provider) = (app.clone(), runtime.clone(), provider.clone());
            reads.spawn(async move {
                if let Err(error) = service::sync(&app, &runtime, stored, Source::Reconciler).await
                {
                    tracing::warn!(%provider, %error, "reconciler: read failed");
                }
                drop(slot);
            });
        }
        while reads.join_next().await.is_some() {}
        if !full || app.stopping.is_cancelled() {
            return;
        }
    }
}
