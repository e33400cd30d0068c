//! What the stored verifications say: per-provider figures, experiments and their significance,
//! and the replay of a draft routing over past traffic.

pub mod experiments;
#[cfg(test)]
mod monitoring_tests;
pub mod optimize;
pub mod projection;
pub mod replay;
pub mod significance;
pub mod stats;

use crate::store::StoreError;

/// Why an analytics query failed: only the store can fail one (a period or a name that matches
/// nothing is an empty answer, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
