//! The HTTP surface: the router and its layers, the listener, the spec, the problem answers, the
//! extractors and input rules, and one module per resource. Handlers parse, call one lifecycle or
//! analytics function, and answer.

pub mod analytics;
pub mod audit;
pub mod dashboard;
pub mod events;
pub mod extract;
pub mod hooks;
pub mod input;
pub mod listener;
pub mod openapi;
pub mod ops;
pub mod policy;
pub mod problem;
pub mod server;
pub mod spec_additions;
pub mod subjects;
pub mod verifications;
