//! Re-reads verifications that are not final from their providers on a schedule, so a lost
//! provider webhook only delays an update.
//!
//! Each provider instance gets its own round: it pages through that instance's unfinished
//! verifications in id order (keyset paging, so a backlog of any size is read a page at a time and
//! each verification once per round), with at most `CONCURRENCY` (8) provider reads at once. A slow
//! or failing provider slows only its own round; a round still running when the next is due is
//! not started twice.

use crate::app::{App, Runtime};
use crate::service;
use kyc_core::Source;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Verifications read from the store at a time.
const PAGE: u32 = 200;
/// Provider reads in flight at once, per provider instance.
const CONCURRENCY: usize = 8;

/// Runs forever: every `reconciler.every_seconds`, a round for each provider instance whose last
/// round has finished.
pub async fn run(app: Arc<App>) {
    let mut rounds: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let every = app.runtime().policy.reconciler.every_seconds;
        tokio::time::sleep(Duration::from_secs(every)).await;
        let runtime = app.runtime();
        rounds.retain(|_, round| !round.is_finished());
        for name in runtime.providers.keys() {
            if !rounds.contains_key(name) {
                let round = tokio::spawn(round(app.clone(), runtime.clone(), name.clone()));
                rounds.insert(name.clone(), round);
            }
        }
    }
}

/// One pass over a provider instance's unfinished verifications.
async fn round(app: Arc<App>, runtime: Arc<Runtime>, provider: String) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut after = String::new();
    let mut backlog = 0usize;
    loop {
        let page = match app.store.unfinished(&provider, &after, PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%provider, %error, "reconciler: store unavailable");
                return;
            }
        };
        backlog += page.len();
        let full = page.len() == PAGE as usize;
        if !full {
            // What this round found not final: `kyc_reconciler_backlog{provider}`.
            metrics::gauge!("kyc_reconciler_backlog", "provider" => provider.clone())
                .set(backlog as f64);
        }
        let Some(last) = page.last() else {
            return;
        };
        after = last.verification.id.clone();
        let mut reads = JoinSet::new();
        for stored in page {
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
        if !full {
            return;
        }
    }
}
