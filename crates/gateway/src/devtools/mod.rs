//! The first run (`kyc-gateway sandbox`) with both simulators, and its generated scenario; built
//! only with the `sandbox` feature.

pub mod sandbox;
pub mod scenario;
