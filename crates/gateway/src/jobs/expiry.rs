//! Sends each tenant's re-verification notices (see [`crate::lifecycle::expiry`]) every
//! `[compliance] every_seconds`, and once at start. Replicas may run it at once: each notice is
//! recorded with its tenant's cursor, compare-and-set, so it goes out once.

use crate::app::App;
use crate::lifecycle::expiry;
use std::sync::Arc;
use std::time::Duration;

/// A run now, then one every period, until the app is stopping.
pub async fn run(app: Arc<App>) {
    loop {
        let runtime = app.runtime();
        for tenant in runtime.policy.tenants.keys() {
            match expiry::notify_lapses(&app, &runtime, tenant).await {
                Ok(0) => {}
                Ok(queued) => tracing::info!(tenant, queued, "re-verification notices queued"),
                Err(error) => tracing::warn!(
                    tenant, %error,
                    "re-verification notices: run failed; trying again next period"
                ),
            }
        }
        let every = runtime.policy.compliance.every_seconds;
        drop(runtime);
        if !super::waited(&app, Duration::from_secs(every)).await {
            break;
        }
    }
}
