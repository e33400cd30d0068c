//! kyc-gateway: one normalized identity-verification API in front of several KYC providers.
//!
//! Layout: [`policy`] reads the tenant policy; [`app`] holds the state and the provider instances;
//! [`api`] and [`hooks`] are the HTTP surface, [`input`] the rules for what callers send and
//! [`openapi`] the published spec; [`store`] keeps verifications; [`server`] assembles
//! and serves; [`sandbox`] is the first run with both provider simulators in-process.

pub mod api;
pub mod app;
pub mod error;
pub mod events;
pub mod extract;
pub mod hooks;
pub mod input;
pub mod jobs;
pub mod openapi;
pub mod outbound;
pub mod policy;
pub mod providers;
pub mod routing;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod store;
