//! The W3C trace context (`traceparent`, `tracestate`) a provider call carries, so a provider's
//! own traces join the caller's.
//!
//! The gateway knows the trace (it runs OpenTelemetry); adapters only send requests. The gateway
//! runs each provider call inside [`with_context`], and an adapter passes every request it builds
//! through [`propagate`]. Outside a traced call, [`propagate`] adds nothing.

use std::future::Future;

tokio::task_local! {
    static CONTEXT: Vec<(&'static str, String)>;
}

/// Runs `call` with `headers` (W3C trace context header names and values) as the trace context
/// its requests carry.
pub async fn with_context<F: Future>(headers: Vec<(&'static str, String)>, call: F) -> F::Output {
    CONTEXT.scope(headers, call).await
}

/// `request` with the current call's trace context headers, if any.
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let headers = CONTEXT.try_with(Clone::clone).unwrap_or_default();
    headers.into_iter().fold(request, |request, (name, value)| {
        request.header(name, value)
    })
}
