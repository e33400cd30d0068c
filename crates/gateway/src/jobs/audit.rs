//! The sealer: every second, each tenant's history rows recorded since are chained (see
//! [`crate::store::AuditStore::seal`]); a backlog is taken a batch after another without a
//! pause. Replicas all run it: a tenant's chain grows under a lock on its head, one replica at
//! a time.

use crate::app::App;
use std::sync::Arc;
use std::time::Duration;

/// Rows sealed per transaction: small, so that on SQLite a seal holds the one writer for a
/// moment only and creates waiting behind it are not held up (500 a batch doubled the p99 of
/// creates at 16 callers; see docs/performance.md).
const BATCH: u32 = 64;

/// Seals until the app is stopping.
pub async fn run(app: Arc<App>) {
    loop {
        let runtime = app.runtime();
        for tenant in runtime.policy.tenants.keys() {
            loop {
                match app.store.seal(tenant, BATCH).await {
                    Ok(sealed) if sealed == u64::from(BATCH) => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(tenant, %error, "audit: sealing failed; trying again shortly");
                        break;
                    }
                }
            }
        }
        drop(runtime);
        if !super::waited(&app, Duration::from_secs(1)).await {
            break;
        }
    }
}
