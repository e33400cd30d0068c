//! Failed authentication is rate-limited per source address.
//!
//! Each request whose API key is missing or wrong spends one cell of its address's budget
//! (`[server] auth_failures_per_minute`, the burst too). An address that has spent it is refused
//! with 429 and `Retry-After` until a cell is back, before its key is even looked at, so a guess
//! made while blocked learns nothing. Requests with a valid key cost nothing.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses kept blocked before the list is pruned of those whose block has ended.
const PRUNE_AT: usize = 10_000;

/// The failure budget of every source address.
pub struct AuthFailures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthFailures {
    /// A budget of `per_minute` failures a minute per address (at least 1).
    pub fn new(per_minute: u32) -> AuthFailures {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        AuthFailures {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            blocked: Mutex::default(),
        }
    }

    /// How long `ip` stays blocked, if it is.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = *blocked.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    /// Spends a cell of `ip`'s budget for a failed authentication; when there is none left, blocks
    /// the address until one is back and answers how long that is.
    pub fn record(&self, ip: IpAddr) -> Option<Duration> {
        let Err(not_until) = self.limiter.check_key(&ip) else {
            return None;
        };
        let wait = not_until.wait_time_from(self.clock.now());
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if blocked.len() >= PRUNE_AT {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.limiter.retain_recent();
        }
        blocked.insert(ip, Instant::now() + wait);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_once_its_budget_is_spent_and_others_are_not() {
        let failures = AuthFailures::new(3);
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(failures.blocked_for(attacker), None);
            failures.record(attacker);
        }
        assert_eq!(
            failures.blocked_for(attacker),
            None,
            "three failures are within budget"
        );
        failures.record(attacker);
        let wait = failures
            .blocked_for(attacker)
            .expect("blocked after the fourth");
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert_eq!(failures.blocked_for(other), None);
    }
}
