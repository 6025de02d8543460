//! A user's presence and camera state, and how it changes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Camera {
    On,
    Off,
}

/// What everyone sees of a user. `version` grows by one on every change.
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

    fn bump(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = now;
    }

    /// Turns the camera on (again); `meta` replaces the old one when given.
    /// Always a change: a repeated cameraOn refreshes meta and tells everyone.
    pub fn camera_on(&mut self, meta: Option<serde_json::Value>, now: DateTime<Utc>) {
        self.camera = Camera::On;
        if meta.is_some() {
            self.meta = meta;
        }
        self.bump(now);
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
        assert_eq!(u.version, 1);
        assert!(u.set_online(true, now));
        assert!(!u.set_online(true, now));
        assert!(u.camera_off(now));
        assert_eq!(u.version, 3);
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
