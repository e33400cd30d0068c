//! A circuit breaker per provider instance, so an instance that is down is not tried on every
//! request.
//!
//! Closed, it counts consecutive failures (the provider could not be reached, timed out, answered
//! 5xx or 429: [`kyc_core::ProviderError::is_unavailable`]; a 4xx refusal is an answer, not a
//! failure). At `failures` in a row it opens: calls fail at once as unavailable, so a create goes
//! straight to the tenant's fallback. After `open_seconds` it half-opens: one call goes through as
//! a probe (another may follow if a probe gets no outcome within `open_seconds`); success closes
//! it, failure opens it again. The state belongs to the process, not to the policy: a reload
//! keeps it.

use crate::config::{CircuitSettings, MAX_OPEN_SECONDS};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `at + wait`, or `at` a day on if the clock cannot represent it.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(Duration::from_secs(MAX_OPEN_SECONDS)))
        .unwrap_or(at)
}

/// Where a breaker stands, as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the probe time.
    Open,
    /// A probe call decides.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// `kyc_circuit_state{provider}`: 0 closed, 1 half-open, 2 open.
fn gauge(name: &str, value: f64) {
    metrics::gauge!("kyc_circuit_state", "provider" => name.to_string()).set(value);
}

/// Every instance's breaker, by instance name.
#[derive(Default)]
pub struct Breakers {
    breakers: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Whether a call to `name` may go out now; in the half-open state only the probe may.
    pub fn allow(&self, name: &str, settings: &CircuitSettings) -> bool {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let breaker = breakers
            .entry(name.to_string())
            .or_insert(Breaker::Closed { failures: 0 });
        match *breaker {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if now < until => false,
            Breaker::HalfOpen { probe_since } if now < later(probe_since, settings.open_for()) => {
                false
            }
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => {
                *breaker = Breaker::HalfOpen { probe_since: now };
                gauge(name, 1.0);
                tracing::info!(provider = %name, "circuit half-open: probing");
                true
            }
        }
    }

    /// Records the outcome of a call to `name` that [`Breakers::allow`] let through; `true` when
    /// this opened the circuit.
    pub fn record(&self, name: &str, settings: &CircuitSettings, failed: bool) -> bool {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let breaker = breakers
            .entry(name.to_string())
            .or_insert(Breaker::Closed { failures: 0 });
        let open = Breaker::Open {
            until: later(Instant::now(), settings.open_for()),
        };
        let was_open = matches!(*breaker, Breaker::Open { .. });
        *breaker = match (*breaker, failed) {
            (Breaker::Closed { .. }, false) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, true) if failures + 1 >= settings.failures.max(1) => {
                tracing::warn!(provider = %name, failures = failures + 1, "circuit open");
                open
            }
            (Breaker::Closed { failures }, true) => Breaker::Closed {
                failures: failures + 1,
            },
            (Breaker::HalfOpen { .. }, false) => {
                tracing::info!(provider = %name, "circuit closed: the probe succeeded");
                Breaker::Closed { failures: 0 }
            }
            (Breaker::HalfOpen { .. }, true) => {
                tracing::warn!(provider = %name, "circuit open again: the probe failed");
                open
            }
            // A call let through before the circuit opened: its outcome changes nothing now.
            (state @ Breaker::Open { .. }, _) => state,
        };
        let is_open = matches!(*breaker, Breaker::Open { .. });
        gauge(
            name,
            match breaker {
                Breaker::Closed { .. } => 0.0,
                Breaker::HalfOpen { .. } => 1.0,
                Breaker::Open { .. } => 2.0,
            },
        );
        is_open && !was_open
    }

    /// Where `name`'s breaker stands.
    pub fn state(&self, name: &str) -> CircuitState {
        let breakers = self
            .breakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match breakers.get(name) {
            None | Some(Breaker::Closed { .. }) => CircuitState::Closed,
            Some(Breaker::Open { until }) if Instant::now() < *until => CircuitState::Open,
            Some(Breaker::Open { .. } | Breaker::HalfOpen { .. }) => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_failures_probes_once_and_closes_on_success() {
        let settings = CircuitSettings {
            failures: 3,
            open_seconds: 0,
        };
        let b = Breakers::default();
        for _ in 0..2 {
            assert!(b.allow("p", &settings));
            assert!(!b.record("p", &settings, true));
        }
        // A success in between starts the count again.
        b.record("p", &settings, false);
        for i in 0..3 {
            assert_eq!(b.state("p"), CircuitState::Closed);
            assert!(b.allow("p", &settings));
            // Only the third failure opens it (and says so, for the stats).
            assert_eq!(b.record("p", &settings, true), i == 2);
        }
        // open_seconds = 0: the probe time has come at once; one probe, and no second.
        assert_eq!(b.state("p"), CircuitState::HalfOpen);
        let long = CircuitSettings {
            failures: 3,
            open_seconds: 60,
        };
        assert!(b.allow("p", &long));
        assert!(
            !b.allow("p", &long),
            "a second probe while the first is out"
        );
        b.record("p", &long, false);
        assert_eq!(b.state("p"), CircuitState::Closed);
        assert!(b.allow("p", &long));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let settings = CircuitSettings {
            failures: 1,
            open_seconds: 60,
        };
        let b = Breakers::default();
        assert!(b.allow("p", &settings));
        b.record("p", &settings, true);
        assert_eq!(b.state("p"), CircuitState::Open);
        assert!(!b.allow("p", &settings));
        assert!(b.allow("other", &settings), "breakers are per instance");
    }

    /// Numbers at and past the policy's bounds open the circuit without a panic, and the
    /// breaker keeps answering (its lock is never left poisoned).
    #[test]
    fn absurd_settings_open_the_circuit_without_a_panic() {
        let b = Breakers::default();
        for (name, open_seconds) in [("max", MAX_OPEN_SECONDS), ("absurd", u64::MAX)] {
            let settings = CircuitSettings {
                failures: 2,
                open_seconds,
            };
            for _ in 0..2 {
                assert!(b.allow(name, &settings));
                b.record(name, &settings, true);
            }
            assert_eq!(b.state(name), CircuitState::Open, "{name}");
            assert!(!b.allow(name, &settings), "{name}");
        }
        let many = CircuitSettings {
            failures: u32::MAX,
            open_seconds: 1,
        };
        for _ in 0..3 {
            b.record("many", &many, true);
        }
        assert_eq!(b.state("many"), CircuitState::Closed);
        assert!(b.allow("many", &many));
    }
}
