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
