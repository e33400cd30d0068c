//! What the stored verifications say: per-provider figures, experiments and their significance,
//! and the replay of a draft routing over past traffic.

pub mod experiments;
pub mod replay;
pub mod significance;
pub mod stats;
