//! Re-reads verifications that are not final from their providers on a schedule, so a lost
//! provider webhook only delays an update.
//!
//! Each provider instance gets its own round: it claims that instance's unfinished verifications
//! that are due, a page at a time in id order (keyset paging, so a backlog of any size is read a
//! page at a time and each verification once per round), with at most `CONCURRENCY` (8) provider
//! reads at once. A slow or failing provider slows only its own round; a round still running when
//! the next is due is not started twice.
//!
//! **Backing off and ending.** A verification is due again after [`wait_before_next_read`] of its
//! age: every period (`reconciler.every_seconds`) while it is young, then less and less often, at
//! most `reconciler.max_interval_seconds` apart (6 h by default). One still `pending` or
//! `in_progress` an hour (`reconciler.lapse_margin_seconds`) past the end of its provider session ([`kyc_core::Provider::
//! session_lifetime`]: BeTrust's link expiry, gu1's 7 days) has had its last read: it ends as
//! `expired` (reason `session_expired`) through the lifecycle path, with its history row and
//! event. So a link nobody opened stops costing reads within days, and a backlog shrinks.
//!
//! **Never in the way of creates.** On an instance with an outbound `rate_limit`, reads wait for
//! a cell of their own bucket, `reconciler.rate_limit_share` percent of it (25 by default), and
//! then for a cell of the instance's: they never take more than that share, and they wait for
//! their turn instead of failing for want of one, so they add no failed calls to the stats. While
//! the instance's circuit is open a round stops (no read would go out); a read's outcome counts
//! for the circuit exactly as a create's would.
//!
//! Replicas on one database share the work through the store, not through memory: a claim marks
//! each row not due again until the round could have read it (one period, or as long as a page
//! takes at the reconciler's share), a row another replica has claimed is not due (on
//! PostgreSQL, one being claimed at that moment is skipped), and a read schedules the row's next
//! one. So each unfinished verification is read about once per wait however many replicas run;
//! whichever replica's round comes first once it is due reads it, and the rows of a replica that
//! died are read by another once the claim lapses. This assumes the replicas' clocks agree to
//! well under a second.

use crate::app::{App, Runtime};
use crate::lifecycle;
use crate::lifecycle::create;
use crate::providers::circuit::CircuitState;
use crate::providers::limits::{Admission, Limiter};
use crate::store::{AttemptState, StoredVerification, now};
use chrono::{DateTime, Utc};
use kyc_core::{Status, Verification};
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
        if !super::waited(&app, Duration::from_secs(every)).await {
            break;
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
    let Some(lifetime) = runtime
        .providers
        .get(&provider)
        .map(|p| p.session_lifetime())
    else {
        return;
    };
    let config = &runtime.policy.reconciler;
    let every = Duration::from_secs(config.every_seconds);
    let longest = Duration::from_secs(config.max_interval_seconds);
    let share = runtime.reconciler_limits.get(&provider).cloned();
    let turns = runtime.provider_limits.get(&provider).cloned();
    // A claimed page is held for as long as reading it at the reconciler's share may take.
    let hold = share.as_ref().map_or(every, |share| {
        let per_second = u64::from(share.limit().per_second.max(1));
        every.max(Duration::from_secs(u64::from(PAGE).div_ceil(per_second)))
    });
    let until = started + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX) - GRACE;
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
        let mut stopped = false;
        for stored in page {
            // An open circuit fails every call at once: leave the rest of the round to a later
            // one (the claimed rows come due again when the claim lapses) instead of counting a
            // failure for each.
            if app.stopping.is_cancelled() || app.breakers.state(&provider) == CircuitState::Open {
                stopped = true;
                break;
            }
            for limiter in share.iter().chain(&turns) {
                if !turn(limiter, &app.stopping).await {
                    stopped = true;
                    break;
                }
            }
            if stopped {
                break;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (app, runtime, provider) = (app.clone(), runtime.clone(), provider.clone());
            reads.spawn(async move {
                let next = read(&app, &runtime, &provider, stored, lifetime, every, longest).await;
                drop(slot);
                next
            });
        }
        let mut next = Vec::new();
        while let Some(read) = reads.join_next().await {
            next.extend(read.ok().flatten());
        }
        if let Err(error) = app.store.schedule_reads(&next).await {
            tracing::warn!(%provider, %error, "reconciler: could not schedule the next reads");
        }
        if !full || stopped {
            return;
        }
    }
}

/// Reads one verification and says when to read it next (`None` once it is final). One still
/// unfinished past the end of its provider session (plus `reconciler.lapse_margin_seconds`) has
/// had its last read: it ends as `expired`.
async fn read(
    app: &App,
    runtime: &Runtime,
    provider: &str,
    stored: StoredVerification,
    lifetime: Option<std::time::Duration>,
    every: Duration,
    longest: Duration,
) -> Option<(String, DateTime<Utc>)> {
    let id = stored.verification.id.clone();
    let created_at = stored.verification.created_at;
    let next = |at: DateTime<Utc>| {
        // Half a period early, so that the round nearest the due time finds it due.
        let early = chrono::Duration::from_std(every / 2).unwrap_or_default();
        let wait = wait_before_next_read(at - created_at, every, longest);
        Some((id.clone(), at + wait - early))
    };
    let read = match lifecycle::reconcile(app, runtime, stored).await {
        Ok(read) => read,
        Err(error) => {
            tracing::warn!(%provider, %error, "reconciler: read failed");
            return next(now());
        }
    };
    let at = now();
    let margin = Duration::from_secs(runtime.policy.reconciler.lapse_margin_seconds);
    if lapsed(&read.verification, lifetime, margin, at) {
        match lifecycle::expire_lapsed(app, runtime, read).await {
            Ok(expired) if expired.verification.status.is_final() => {
                tracing::info!(%provider, verification = %id, "reconciler: the provider session lapsed; expired");
                return None;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%provider, %error, "reconciler: could not expire a lapsed verification");
            }
        }
    } else if read.verification.status.is_final() {
        return None;
    }
    next(at)
}

/// Whether `v`'s provider session ended (by the link's expiry, or its creation plus the
/// provider's documented `lifetime`) more than `margin` before `at` without a result. One
/// `in_review` waits for a person at the provider and never lapses.
pub fn lapsed(
    v: &Verification,
    lifetime: Option<std::time::Duration>,
    margin: Duration,
    at: DateTime<Utc>,
) -> bool {
    if !matches!(v.status, Status::Pending | Status::InProgress) {
        return false;
    }
    let end = v.expires_at.or_else(|| {
        let lifetime = chrono::Duration::from_std(lifetime?).ok()?;
        v.created_at.checked_add_signed(lifetime)
    });
    let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
    end.and_then(|end| end.checked_add_signed(margin))
        .is_some_and(|end| at > end)
}

/// The wait before the next read of an unfinished verification `age` old: one period until it is
/// 20 periods old, then doubling as its age doubles (2 periods until it is 40 periods old, 4
/// until 80, ...), and never more than `longest` (nor less than one period). With the defaults:
/// every minute for its first 20 minutes, every 6 hours from about its fourth day.
pub fn wait_before_next_read(
    age: chrono::Duration,
    every: Duration,
    longest: Duration,
) -> chrono::Duration {
    let every = every.as_secs().max(1);
    let age = u64::try_from(age.num_seconds()).unwrap_or(0);
    let periods = age / every.saturating_mul(10);
    // The largest power of two not above `periods` (1 below 2).
    let factor = if periods < 2 {
        1
    } else {
        1u64 << (63 - periods.leading_zeros())
    };
    let wait = every
        .saturating_mul(factor)
        .min(longest.as_secs().max(every));
    chrono::Duration::seconds(i64::try_from(wait).unwrap_or(i64::MAX / 1000))
}

/// Waits for a cell of `limiter` as long as it takes; `false` if the app stops meanwhile.
async fn turn(limiter: &Limiter, stopping: &tokio_util::sync::CancellationToken) -> bool {
    loop {
        match limiter.admit() {
            Admission::Allowed { .. } => return true,
            Admission::Refused { retry_after } => tokio::select! {
                _ = tokio::time::sleep(retry_after) => {}
                _ = stopping.cancelled() => return false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(age_seconds: i64, every: u64, longest: u64) -> i64 {
        wait_before_next_read(
            chrono::Duration::seconds(age_seconds),
            Duration::from_secs(every),
            Duration::from_secs(longest),
        )
        .num_seconds()
    }

    #[test]
    fn the_wait_doubles_with_age_up_to_the_longest() {
        let minute = 60;
        let schedule: Vec<i64> = [
            0,
            19,
            20,
            39,
            40,
            79,
            80,
            160,
            320,
            640,
            1280,
            5120,
            20480,
            1 << 40,
        ]
        .iter()
        .map(|m| wait(m * minute, 60, 21_600) / minute)
        .collect();
        assert_eq!(
            schedule,
            [1, 1, 2, 2, 4, 4, 8, 16, 32, 64, 128, 360, 360, 360],
            "minutes between reads at each age in minutes"
        );
        // Absurd ages and periods neither panic nor go below one period.
        assert_eq!(wait(-5, 60, 21_600), 60);
        assert_eq!(wait(i64::MAX / 1000, 1, 604_800), 604_800);
        assert_eq!(wait(0, 86_400, 60), 86_400, "never less than one period");
    }

    fn verification(
        status: Status,
        created_minutes_ago: i64,
        expires_at: Option<i64>,
    ) -> Verification {
        let at = now();
        serde_json::from_value(serde_json::json!({
            "id": "ver_1", "reference": "r", "subject_id": "s", "provider": "p",
            "provider_reference": "x", "status": status,
            "expires_at": expires_at.map(|m| at + chrono::Duration::minutes(m)),
            "created_at": at - chrono::Duration::minutes(created_minutes_ago),
            "updated_at": at,
        }))
        .unwrap()
    }

    #[test]
    fn a_session_lapses_an_hour_after_its_end() {
        let week = Some(std::time::Duration::from_secs(7 * 24 * 3600));
        let at = now();
        let days = |d: i64| d * 24 * 60;
        let lapses = |status, age_minutes, expires_in_minutes, lifetime| {
            let v = verification(status, age_minutes, expires_in_minutes);
            lapsed(&v, lifetime, Duration::from_secs(3600), at)
        };
        // By the provider's lifetime, from the creation.
        assert!(!lapses(Status::Pending, days(7) + 59, None, week));
        assert!(lapses(Status::Pending, days(7) + 61, None, week));
        assert!(lapses(Status::InProgress, days(8), None, week));
        // By the link's expiry, where the provider gave one.
        assert!(lapses(Status::Pending, 5, Some(-61), week));
        assert!(!lapses(Status::Pending, days(30), Some(-59), week));
        // Never in review, never final, never without a lifetime.
        assert!(!lapses(Status::InReview, days(30), None, week));
        assert!(!lapses(Status::Approved, days(30), None, week));
        assert!(!lapses(Status::Pending, days(3000), None, None));
    }
}
