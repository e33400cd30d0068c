//! Background work, each job in a file of its own, started by the server.

pub mod audit;
pub mod experiments;
pub mod expiry;
pub mod outbox;
pub mod policy_watch;
pub mod reconciler;
pub mod retention;

use crate::app::App;
use std::time::Duration;

/// Waits `every`, or less if the app starts stopping meanwhile: `false` then, and the job ends.
async fn waited(app: &App, every: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(every) => true,
        _ = app.stopping.cancelled() => false,
    }
}
