//! One provider call, guarded: the instance's outbound rate limit, its circuit breaker, a span
//! whose trace context goes to the provider, the call metrics, and the judgement of what counts
//! as the provider's failure. Each policy snapshot builds one [`Guard`] per instance, and every
//! call to a provider goes through it; the caller writes down what the guard reports (a failure
//! for the tenant's figures, a circuit that opened), since the figures live in the store, and
//! attributes it to the tenant whose verification the call was for.

use crate::config::CircuitSettings;
use crate::infra::telemetry;
use crate::providers::circuit::Breakers;
use crate::providers::limits::Limiter;
use kyc_core::ProviderError;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The longest a call waits for its provider instance's rate limit.
const OUTBOUND_WAIT: Duration = Duration::from_secs(1);

/// The guard of one provider instance, built with each policy snapshot from its settings. The
/// circuit breakers belong to the process (they outlive reloads), so a call is given them.
pub struct Guard {
    /// The instance.
    pub name: String,
    /// When this instance's circuit opens, and for how long.
    pub settings: CircuitSettings,
    /// The instance's outbound rate limit, if it has one.
    pub limiter: Option<Arc<Limiter>>,
}

/// What a guarded call did, beside its result.
#[derive(Debug)]
pub struct Guarded<T> {
    /// The provider's answer, or why there is none.
    pub result: Result<T, ProviderError>,
    /// The call counts as the provider's failure (unavailable, unreadable, our credentials
    /// refused, or refused a turn by the circuit or the rate limit).
    pub failed: bool,
    /// The circuit opened with this call, for this long.
    pub opened_for: Option<Duration>,
}

impl<T> Guarded<T> {
    /// A call to an instance the snapshot does not have (removed by a reload meanwhile).
    pub fn gone(name: &str) -> Self {
        Guarded {
            result: Err(ProviderError::Config(format!(
                "instance {name} is no longer in the policy"
            ))),
            failed: false,
            opened_for: None,
        }
    }

    fn refused(error: ProviderError) -> Self {
        Guarded {
            result: Err(error),
            failed: true,
            opened_for: None,
        }
    }
}

impl Guard {
    /// Makes the call `operation` once the instance's outbound rate limit gives a turn (waiting up
    /// to [`OUTBOUND_WAIT`]; past it the instance counts as unavailable, so a create goes to its
    /// fallback).
    pub async fn call<T>(
        &self,
        breakers: &Breakers,
        operation: &'static str,
        request: impl Future<Output = Result<T, ProviderError>>,
    ) -> Guarded<T> {
        if let Some(limiter) = &self.limiter
            && !limiter.wait(OUTBOUND_WAIT).await
        {
            telemetry::rate_limited("provider");
            self.count(operation, "rate_limited");
            return Guarded::refused(ProviderError::Unavailable(
                "the instance's outbound rate limit is spent".into(),
            ));
        }
        self.call_in_turn(breakers, operation, request).await
    }

    /// [`Guard::call`] for a caller that already had its turn at the rate limit.
    pub async fn call_in_turn<T>(
        &self,
        breakers: &Breakers,
        operation: &'static str,
        request: impl Future<Output = Result<T, ProviderError>>,
    ) -> Guarded<T> {
        let name = self.name.as_str();
        if !breakers.allow(name, &self.settings) {
            self.count(operation, "circuit_open");
            return Guarded::refused(ProviderError::Unavailable(
                "its circuit breaker is open after repeated failures".into(),
            ));
        }
        let span = tracing::info_span!(
            "provider call",
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            provider = %name,
            operation,
            outcome = tracing::field::Empty,
        );
        telemetry::name_span(&span, format_args!("{name} {operation}"), "client");
        let trace = telemetry::trace_headers(&span);
        let started = std::time::Instant::now();
        let result = kyc_core::trace::with_context(trace, request)
            .instrument(span.clone())
            .await;
        let outcome = telemetry::outcome(result.as_ref().map(|_| ()));
        span.record("outcome", outcome);
        metrics::histogram!(
            "kyc_provider_call_duration_seconds",
            "provider" => name.to_string(),
            "operation" => operation
        )
        .record(started.elapsed().as_secs_f64());
        self.count(operation, outcome);
        let error = result.as_ref().err();
        let unavailable = error.is_some_and(ProviderError::is_unavailable);
        let opened = breakers.record(name, &self.settings, unavailable);
        Guarded {
            failed: error.is_some_and(ProviderError::is_failure),
            opened_for: opened.then(|| self.settings.open_for()),
            result,
        }
    }

    /// `kyc_provider_calls_total{provider, operation, outcome}`.
    fn count(&self, operation: &'static str, outcome: &'static str) {
        metrics::counter!(
            "kyc_provider_calls_total",
            "provider" => self.name.to_string(),
            "operation" => operation,
            "outcome" => outcome
        )
        .increment(1);
    }
}
