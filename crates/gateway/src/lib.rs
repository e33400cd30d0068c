//! kyc-gateway: one normalized identity-verification API in front of several KYC providers.
//!
//! Layout, in the order a request meets it:
//! - [`api`], [`events`] and [`hooks`] are the HTTP surface (handlers parse and answer), with
//!   [`extract`] (the `Tenant` and body extractors), [`input`] (the rules for what callers send,
//!   as the spec states them), [`error`] (the problem answers) and [`openapi`] (the spec);
//! - [`service`] holds the lifecycle rules: create, one sync path, cancel, decisions;
//! - [`routing`] picks providers; [`providers`] is the registry of adapter crates; [`policy`]
//!   reads the tenant policy and [`app`] holds it with the provider instances;
//! - [`store`] only queries (SQLite or PostgreSQL); [`jobs`] are the background workers (the
//!   reconciler, the outbox delivery) and [`outbound`] their SSRF-safe HTTP client;
//! - [`server`] assembles and serves; [`sandbox`] is the first run with both simulators.

pub mod api;
pub mod app;
pub mod auth_failures;
pub mod circuit;
pub mod create;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod experiments;
pub mod extract;
pub mod hooks;
pub mod input;
pub mod jobs;
pub mod limits;
pub mod listener;
pub mod openapi;
pub mod outbound;
pub mod policy;
pub mod providers;
pub mod replay;
pub mod routing;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sandbox")]
pub mod scenario;
pub mod server;
pub mod service;
pub mod significance;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tenant_policy;
