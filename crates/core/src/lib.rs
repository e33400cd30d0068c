//! The normalized KYC model shared by every part of kyc-gateway.
//!
//! This crate knows no HTTP server, no database and no provider by name. Adapters turn a provider's
//! wire format into these types; the gateway stores and serves them. Keeping them here is what lets a
//! third provider be one new adapter crate. It also holds the rule every outbound HTTP client obeys
//! ([`outbound`]), so adapters and the gateway cannot drift apart on it.

pub mod lifecycle;
pub mod model;
pub mod outbound;
pub mod personal;
pub mod provider;
pub mod provider_http;
pub mod trace;

pub use lifecycle::{Source, StatusChange, merge};
pub use model::{
    Arm, CheckOutcome, Checks, Decision, Identity, Reason, RoutingReason, RoutingRecord, Scores,
    Status, Subject, SubjectStanding, Verification,
};
pub use personal::Personal;
pub use provider::{
    AdapterConfig, CreateFailure, CreateRequest, Found, IncomingWebhook, ManualOutcome, Provider,
    ProviderError, ProviderStanding, ProviderVerification, WebhookError,
};
