//! kyc-gateway: one normalized identity-verification API in front of several KYC providers.
//!
//! Layers, each a folder, importing only downward (`tests/architecture.rs` holds the rule):
//! - [`http`]: the router and its layers, the spec, problem answers, input rules, one module per
//!   resource; handlers parse, call one lifecycle or analytics function, and answer;
//! - [`jobs`]: the background loops (reconciler, outbox delivery, experiments' guardrail, policy
//!   watch), started and stopped by the server;
//! - [`lifecycle`] (create, sync, cancel, decide, standing) and [`analytics`] (stats,
//!   experiments, replay): the rules, taking domain commands;
//! - [`app`]: the store, the provider instances and one immutable policy snapshot;
//! - [`providers`] (registry, routing, circuits, limits) and [`store`] (SQLite or PostgreSQL);
//! - [`config`]: the policy file, read, interpolated and checked;
//! - [`infra`] (telemetry, outbound client, refused credentials), usable from any layer;
//! - [`devtools`]: the sandbox and its scenario (feature `sandbox`), above everything.

pub mod analytics;
pub mod app;
pub mod config;
#[cfg(feature = "sandbox")]
pub mod devtools;
pub mod http;
pub mod infra;
pub mod jobs;
pub mod lifecycle;
pub mod providers;
pub mod store;
