//! Per-user rate limits, counted on this node: `limits.rate_per_s` for every
//! call, and `limits.presence_per_min` for cameraOn/cameraOff, each of which
//! is broadcast to every session. Behind a load balancer a user gets up to
//! nodes × each limit (docs/security.md).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitSettings;
use crate::domain::UserId;
use crate::error::{Error, Result};

pub struct RateLimits {
    calls: DefaultKeyedRateLimiter<UserId>,
    presence: DefaultKeyedRateLimiter<UserId>,
}

impl RateLimits {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            calls: RateLimiter::keyed(Quota::per_second(limits.rate_per_s)),
            presence: RateLimiter::keyed(Quota::per_minute(limits.presence_per_min)),
        }
    }

    /// 429 when `user` is over `limits.rate_per_s`.
    pub fn check_call(&self, user: &UserId) -> Result<()> {
        check(&self.calls, user)
    }

    /// As `check_call`, for a command that weighs `n` calls (a `watch` of
    /// many users); at most the limit's whole burst, so a heavy command can
    /// still pass once the user is idle.
    pub fn check_calls(&self, user: &UserId, n: u32, limits: &LimitSettings) -> Result<()> {
        let Some(n) = std::num::NonZeroU32::new(n.min(limits.rate_per_s.get())) else { return Ok(()) };
        match self.calls.check_key_n(user, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Error::RateLimited { retry_after_s: not_until.wait_time_from(DefaultClock::default().now()).as_secs_f64().ceil().max(1.0) as u64 }),
            Err(_) => Err(Error::RateLimited { retry_after_s: 1 }),
        }
    }

    /// 429 when `user` is over `limits.presence_per_min`.
    pub fn check_presence(&self, user: &UserId) -> Result<()> {
        check(&self.presence, user)
    }

    /// Drops the keys of users quiet long enough to be back at a full quota.
    pub fn retain_recent(&self) {
        self.calls.retain_recent();
        self.presence.retain_recent();
    }
}

fn check(limiter: &DefaultKeyedRateLimiter<UserId>, user: &UserId) -> Result<()> {
    limiter.check_key(user).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Error::RateLimited { retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_command_takes_its_weight_and_never_more_than_the_burst() {
        let limits = LimitSettings { rate_per_s: std::num::NonZeroU32::new(20).unwrap(), ..LimitSettings::default() };
        let r = RateLimits::new(&limits);
        let u = UserId::parse("heavy").unwrap();
        r.check_calls(&u, 10, &limits).unwrap();
        r.check_calls(&u, 10, &limits).unwrap();
        assert!(matches!(r.check_call(&u), Err(Error::RateLimited { .. })), "the burst of 20 is spent");
        // A weight past the burst is the burst: a fresh user passes once.
        let v = UserId::parse("heavier").unwrap();
        r.check_calls(&v, 1000, &limits).unwrap();
        assert!(matches!(r.check_call(&v), Err(Error::RateLimited { .. })));
    }
}
