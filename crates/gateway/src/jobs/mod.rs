//! Background work, each job in a file of its own, started by the server.

pub mod audit;
pub mod experiments;
pub mod expiry;
pub mod outbox;
pub mod policy_watch;
pub mod reconciler;
pub mod retention;
