//! A user's presence and camera state, and how it changes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::UserId;
use crate::error::Error;

/// Largest `meta` accepted, serialized.
pub const MAX_META_BYTES: usize = 1024;

/// A user's free-form `meta`: a JSON object of at most `MAX_META_BYTES`.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta(serde_json::Value);

impl Meta {
    pub fn parse(v: serde_json::Value) -> Result<Self, Error> {
        if !v.is_object() {
            return Err(Error::BadRequest("meta must be a JSON object".into()));
        }
        if v.to_string().len() > MAX_META_BYTES {
            return Err(Error::PayloadTooLarge(format!("meta is over {MAX_META_BYTES} bytes")));
        }
        // Shown to everyone as the user's name: held to what member names are.
        if let Some(name) = v.get("name") {
            let fine = name.as_str().is_some_and(|n| super::meeting::MemberName::parse(n).is_ok_and(|m| m.as_str() == n));
            if !fine {
                return Err(Error::BadRequest(format!(
                    "meta.name is 1 to {} characters with a letter or digit, without control or invisible characters or surrounding spaces",
                    super::meeting::MAX_NAME_LEN
                )));
            }
        }
        Ok(Self(v))
    }

    pub fn into_value(self) -> serde_json::Value {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Camera {
    On,
    Off,
}

/// What everyone sees of a user. `version` grows on every change, and never
/// goes backwards: it is a hybrid logical clock (see `bump`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserState {
    #[schema(value_type = String, example = "42")]
    pub user_id: UserId,
    pub online: bool,
    pub camera: Camera,
    pub version: u64,
    #[serde(with = "super::ts")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-21T19:00:00.123Z")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>, example = json!({"name": "Ann"}))]
    pub meta: Option<serde_json::Value>,
}

impl UserState {
    /// A user the service has not seen before: offline, camera off, version 0.
    pub fn new(user_id: UserId, now: DateTime<Utc>) -> Self {
        Self { user_id, online: false, camera: Camera::Off, version: 0, updated_at: now, meta: None }
    }

    /// The next version: one more than the last, but never below the wall
    /// clock in µs. A store that comes back empty restarts from the clock, not
    /// from 0, so clients that drop older versions never get stuck.
    fn bump(&mut self, now: DateTime<Utc>) {
        self.version = (self.version + 1).max(now.timestamp_micros().max(0) as u64);
        self.updated_at = now;
    }

    /// Turns the camera on (again); `meta` replaces the old one when given.
    /// Always a change: a repeated cameraOn refreshes meta and tells everyone.
    /// Turns the camera on. Returns false when it was on with the same meta:
    /// nothing new to tell anyone.
    pub fn camera_on(&mut self, meta: Option<serde_json::Value>, now: DateTime<Utc>) -> bool {
        if self.camera == Camera::On && (meta.is_none() || meta == self.meta) {
            return false;
        }
        self.camera = Camera::On;
        if meta.is_some() {
            self.meta = meta;
        }
        self.bump(now);
        true
    }

    /// A user the store did not know (never seen, or lost with a Redis that
    /// came back empty) is given a real version before anyone is told of
    /// them: never 0, which would go back. Returns whether it was new.
    pub fn first_seen(&mut self, now: DateTime<Utc>) -> bool {
        if self.version != 0 {
            return false;
        }
        self.bump(now);
        true
    }

    /// Turns the camera off. Returns false when it was already off (no change, no event).
    pub fn camera_off(&mut self, now: DateTime<Utc>) -> bool {
        if self.camera == Camera::Off {
            return false;
        }
        self.camera = Camera::Off;
        self.bump(now);
        true
    }

    /// Returns false when nothing changed.
    pub fn set_online(&mut self, online: bool, now: DateTime<Utc>) -> bool {
        if self.online == online {
            return false;
        }
        self.online = online;
        self.bump(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_grows_on_every_change_only() {
        let now = Utc::now();
        let mut u = UserState::new(UserId::parse("1").unwrap(), now);
        assert!(!u.camera_off(now));
        assert_eq!(u.version, 0);
        u.camera_on(None, now);
        let v1 = u.version;
        assert_eq!(v1, now.timestamp_micros() as u64, "the first change starts at the clock");
        assert!(u.set_online(true, now));
        assert!(!u.set_online(true, now));
        assert!(u.camera_off(now));
        assert_eq!(u.version, v1 + 2, "within one µs it counts up by one");
        let mut fresh = UserState::new(u.user_id.clone(), now);
        fresh.camera_on(None, now + chrono::Duration::seconds(1));
        assert!(fresh.version > u.version, "a state rebuilt from nothing is still newer");
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T19:00:00.123456Z").unwrap().to_utc();
        let u = UserState::new(UserId::parse("1").unwrap(), now);
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["updated_at"], "2026-11-21T19:00:00.123Z");
        assert!(v.get("meta").is_none());
    }
}
