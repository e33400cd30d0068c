//! Used from any layer: telemetry (logs, traces, metrics), the SSRF-safe outbound client, and the
//! count of refused credentials.

pub mod auth_failures;
pub mod outbound;
pub mod telemetry;
