//! Removes each tenant's final verifications past its `retention_days` (see
//! [`crate::store::RemovalStore::remove_past`]) every `[compliance] every_seconds`, and once at
//! start; a backlog is taken a batch after another. Replicas may run it at once: each
//! verification is removed once, with one tombstone in its history.

use crate::app::App;
use crate::store::now;
use std::sync::Arc;
use std::time::Duration;

/// Verifications removed per transaction.
const BATCH: u32 = 500;

/// A run now, then one every period, until the app is stopping.
pub async fn run(app: Arc<App>) {
    loop {
        let runtime = app.runtime();
        for (tenant, config) in &runtime.policy.tenants {
            let Some(days) = config.retention_days else {
                continue;
            };
            let cutoff = now() - chrono::Duration::days(i64::from(days));
            let mut removed = 0;
            loop {
                match app.store.remove_past(tenant, cutoff, BATCH).await {
                    Ok(n) => {
                        removed += n;
                        if n < u64::from(BATCH) {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(tenant, %error, "retention: run failed; trying again next period");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(
                    tenant,
                    removed,
                    days,
                    "retention: verifications past it removed"
                );
            }
        }
        let every = runtime.policy.compliance.every_seconds;
        drop(runtime);
        if !super::waited(&app, Duration::from_secs(every)).await {
            break;
        }
    }
}
