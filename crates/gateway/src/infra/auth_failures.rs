//! Failed authentication is rate-limited per source address.
//!
//! Each request whose API key is missing or wrong spends one cell of its address's budget
//! (`[server] auth_failures_per_minute`, the burst too). An address that has spent it is refused
//! with 429 and `Retry-After` until a cell is back, before its key is even looked at, so a guess
//! made while blocked learns nothing. Requests with a valid key cost nothing.
//!
//! An IPv6 source counts by its /64 (one host usually holds a whole /64, and could otherwise
//! spread its guesses over it), and the memory kept stays bounded: the budgets are pruned of
//! idle addresses whenever they hold [`PRUNE_AT`] of them.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses kept blocked before the list is pruned of those whose block has ended.
const PRUNE_AT: usize = 10_000;
/// Budgets kept at most: past this, even after pruning, they start afresh (a flood from this
/// many sources at once learns little from a fresh budget each).
const MAX_SOURCES: usize = 100_000;

/// The failure budget of every source address.
pub struct AuthFailures {
    quota: Quota,
    limiter: std::sync::RwLock<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthFailures {
    /// A budget of `per_minute` failures a minute per address (at least 1).
    pub fn new(per_minute: u32) -> AuthFailures {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute);
        AuthFailures {
            quota,
            limiter: std::sync::RwLock::new(RateLimiter::keyed(quota)),
            clock: DefaultClock::default(),
            blocked: Mutex::default(),
        }
    }

    /// How long `ip` stays blocked, if it is.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let ip = source(ip);
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
        let ip = source(ip);
        let checked = {
            let limiter = self
                .limiter
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if limiter.len() >= PRUNE_AT {
                limiter.retain_recent();
            }
            (limiter.len() < MAX_SOURCES).then(|| limiter.check_key(&ip))
        };
        let checked = checked.unwrap_or_else(|| {
            tracing::warn!(
                sources = MAX_SOURCES,
                "failed authentications from too many sources at once; their budgets start afresh"
            );
            let mut limiter = self
                .limiter
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *limiter = RateLimiter::keyed(self.quota);
            limiter.check_key(&ip)
        });
        let Err(not_until) = checked else {
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
        }
        blocked.insert(ip, Instant::now() + wait);
        Some(wait)
    }
}

/// The key a source address is budgeted under: itself, or for IPv6 its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("mapped")),
        v4 => v4,
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

    #[test]
    fn an_ipv6_host_cannot_spread_its_guesses_over_its_64() {
        let failures = AuthFailures::new(3);
        for i in 0..4u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
            failures.record(ip);
        }
        let sibling: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert!(
            failures.blocked_for(sibling).is_some(),
            "the /64 is blocked"
        );
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(failures.blocked_for(elsewhere), None);
    }

    #[test]
    fn many_sources_keep_the_memory_bounded() {
        let failures = AuthFailures::new(60);
        for n in 0..(MAX_SOURCES as u32 + 5) {
            failures.record(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        let kept = failures.limiter.read().unwrap().len();
        assert!(kept <= MAX_SOURCES, "{kept}");
    }
}
