//! Rate limits (governor's GCRA, a token bucket in effect): a tenant's requests on the way in, a
//! provider instance's calls on the way out, and the unverified webhook traffic of an instance.
//!
//! A limiter is part of the policy snapshot and is kept across a reload while its limit stays
//! the same, so a reload neither resets nor doubles anyone's budget. Tenants and instances each
//! have their own limiter: one cannot spend another's budget.

use crate::config::RateLimit;
use axum::http::{HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Unverified provider webhooks accepted per instance: a burst of this many, refilled at this
/// many per second. Providers send a few per verification; a flood of forged ones stops here.
pub const HOOK_LIMIT: RateLimit = RateLimit {
    per_second: 50,
    burst: 200,
};

/// Webhooks to instance names the policy does not have, all such names together: a few are
/// answered 404, a flood gets 429 before it costs anything.
pub const UNKNOWN_HOOK_LIMIT: RateLimit = RateLimit {
    per_second: 5,
    burst: 20,
};

/// The `RateLimit-Policy` and `RateLimit` headers of one answer.
pub type RateLimitHeaders = [(HeaderName, HeaderValue); 2];

/// One limit and its bucket.
pub struct Limiter {
    limit: RateLimit,
    bucket: RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>,
    clock: DefaultClock,
}

/// What a limiter said to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Let through; `remaining` cells are left, and the bucket is full again in `reset_seconds`.
    Allowed {
        /// Cells left.
        remaining: u32,
        /// Seconds until the bucket is full.
        reset_seconds: u64,
    },
    /// Refused until `retry_after` has passed.
    Refused {
        /// The wait before a cell is back.
        retry_after: Duration,
    },
}

impl Limiter {
    /// A full bucket for `limit` (zeros, refused by the policy check, count as 1).
    pub fn new(limit: &RateLimit) -> Limiter {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        Limiter {
            limit: limit.clone(),
            bucket: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>(),
            clock: DefaultClock::default(),
        }
    }

    /// The limit this bucket enforces.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Spends a cell if there is one.
    pub fn admit(&self) -> Admission {
        match self.bucket.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = self.limit.burst.saturating_sub(remaining);
                Admission::Allowed {
                    remaining,
                    reset_seconds: u64::from(missing)
                        .div_ceil(u64::from(self.limit.per_second.max(1))),
                }
            }
            Err(not_until) => Admission::Refused {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Waits for a cell for at most `bound`; answers whether one was spent. For calls on the way
    /// out, where a short wait is better than a failure.
    pub async fn wait(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            match self.admit() {
                Admission::Allowed { .. } => return true,
                Admission::Refused { retry_after } => {
                    if Instant::now() + retry_after > deadline {
                        return false;
                    }
                    tokio::time::sleep(retry_after).await;
                }
            }
        }
    }

    /// The IETF `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers)
    /// for an admission: the quota is the burst, over the seconds it takes to refill.
    pub fn headers(&self, admission: Admission) -> RateLimitHeaders {
        let window = u64::from(self.limit.burst).div_ceil(u64::from(self.limit.per_second.max(1)));
        let (remaining, reset) = match admission {
            Admission::Allowed {
                remaining,
                reset_seconds,
            } => (remaining, reset_seconds),
            Admission::Refused { retry_after } => (0, ceil_seconds(retry_after)),
        };
        let policy = format!("\"tenant\";q={};w={window}", self.limit.burst);
        let state = format!("\"tenant\";r={remaining};t={reset}");
        [
            (
                HeaderName::from_static("ratelimit-policy"),
                HeaderValue::from_str(&policy).expect("ASCII"),
            ),
            (
                HeaderName::from_static("ratelimit"),
                HeaderValue::from_str(&state).expect("ASCII"),
            ),
        ]
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` says.
pub fn ceil_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_refuses_with_a_wait() {
        let limiter = Limiter::new(&RateLimit {
            per_second: 2,
            burst: 3,
        });
        for left in [2, 1, 0] {
            assert!(
                matches!(limiter.admit(), Admission::Allowed { remaining, .. } if remaining == left)
            );
        }
        let Admission::Refused { retry_after } = limiter.admit() else {
            panic!("the fourth request in a burst of 3 went through");
        };
        assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}");
        let [(policy_name, policy), (state_name, state)] =
            limiter.headers(Admission::Refused { retry_after });
        assert_eq!(policy_name, "ratelimit-policy");
        assert_eq!(policy, "\"tenant\";q=3;w=2");
        assert_eq!(state_name, "ratelimit");
        assert_eq!(state, "\"tenant\";r=0;t=1");
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let limiter = Limiter::new(&RateLimit {
            per_second: 1,
            burst: 1,
        });
        assert!(limiter.wait(Duration::ZERO).await);
        let started = Instant::now();
        assert!(!limiter.wait(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_millis(150));
        assert!(limiter.wait(Duration::from_millis(1500)).await);
    }
}
