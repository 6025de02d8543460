//! Time-bound parts of a session: its token (the `token_expiring` warning,
//! the 4001 close at `exp`, and `refresh`, which moves `exp` later), and its
//! TURN credentials, renewed at 80 % of their lifetime.

use std::time::Duration;

use crate::auth::{Auth, Caller};
use crate::config::{AuthSettings, IceSettings};
use crate::domain::UserId;
use crate::error::{Error, Result};
use crate::protocol::bodies::RefreshBody;

/// When to warn and when to close, counted from `now` (seconds since the epoch).
pub fn token_timers(exp: u64, now: u64, auth: &AuthSettings) -> (Duration, Duration) {
    let left = Duration::from_secs(exp.saturating_sub(now));
    (left.saturating_sub(auth.refresh_before), left)
}

/// The new `exp` a `refresh` brings: the same user, a later `exp`.
pub fn refreshed_exp(auth: &Auth, user: &UserId, exp: u64, body: &RefreshBody) -> Result<u64> {
    let Caller { user: new_user, exp: new_exp, .. } = auth.verify(&body.token)?;
    if new_user != *user {
        return Err(Error::Forbidden("a refresh must be for the session's own user".into()));
    }
    if new_exp <= exp {
        return Err(Error::BadRequest("the new token must expire later than the current one".into()));
    }
    Ok(new_exp)
}

/// How often fresh TURN credentials are pushed; none without TURN.
pub fn ice_refresh_every(ice: &IceSettings) -> Option<Duration> {
    if ice.turn_urls.is_empty() {
        return None;
    }
    Some(ice.turn_ttl.mul_f64(0.8).max(Duration::from_millis(500)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_before_and_closes_at_exp() {
        let auth = AuthSettings { refresh_before: Duration::from_secs(60), ..AuthSettings::default() };
        assert_eq!(token_timers(1_100, 1_000, &auth), (Duration::from_secs(40), Duration::from_secs(100)));
        assert_eq!(token_timers(900, 1_000, &auth), (Duration::ZERO, Duration::ZERO));
    }
}
