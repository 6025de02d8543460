//! Shared state: users, rooms and live sessions. One trait, with a `memory`
//! implementation for the single node and a `redis` one for many nodes.
//!
//! Every method is one atomic step across all nodes: a caller never sees, and
//! never leaves, a half-applied change. Pure rules live in `domain`; a store
//! only makes them atomic and durable.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::domain::{Camera, Connection, Role, RoomId, SessionId, UserId, UserState};
use crate::error::Result;

/// A page of `GET /webrtc/users`.
#[derive(Debug, Clone)]
pub struct UserQuery {
    /// None: everyone online or with a camera on.
    pub camera: Option<Camera>,
    pub limit: usize,
    /// Exclusive: the last user id of the previous page.
    pub after: Option<UserId>,
}

#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<UserState>,
    pub next_cursor: Option<String>,
}

impl UserPage {
    /// A page from up to `limit + 1` matches: the extra one only says there is more.
    pub fn from_overfetch(mut users: Vec<UserState>, limit: usize) -> Self {
        let next_cursor = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|u| u.user_id.to_string())
        } else {
            None
        };
        Self { users, next_cursor }
    }
}

/// What one step did: the user's new state where it changed, and rooms it closed.
#[derive(Debug, Default)]
pub struct Change {
    pub user: Option<UserState>,
    pub closed: Vec<Connection>,
}

#[derive(Debug)]
pub enum Show {
    Created(Connection),
    /// A room between the two was already open.
    Existing(Connection),
}

/// A room transition from `domain::Connection`; returns the side to notify.
pub type RoomOp<'a> = &'a (dyn Fn(&mut Connection) -> Result<Role> + Send + Sync);

/// Which users pass a listing filter.
pub fn listed(u: &UserState, camera: Option<Camera>) -> bool {
    match camera {
        None => u.online || u.camera == Camera::On,
        Some(Camera::On) => u.camera == Camera::On,
        Some(Camera::Off) => u.online && u.camera == Camera::Off,
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn user(&self, id: &UserId) -> Result<Option<UserState>>;
    async fn users(&self, q: &UserQuery) -> Result<UserPage>;
    async fn room(&self, id: &RoomId) -> Result<Option<Connection>>;

    /// Camera on, creating the user if new; `meta` replaces the old one when given.
    /// With no session open anywhere, the grace period starts (expiry at `expire_at`).
    async fn camera_on(&self, id: &UserId, meta: Option<serde_json::Value>, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<UserState>;

    /// Camera off, and every open room the user owns closed with reason `camera_off`.
    /// `user` is None when the camera was already off.
    async fn camera_off(&self, id: &UserId, now: DateTime<Utc>) -> Result<Change>;

    /// Opens a room from `abonent` to `owner`'s camera, or returns the one already open.
    /// Checks, in order: owner exists (404), camera on (409), viewer slots (409).
    async fn show(&self, owner: &UserId, abonent: &UserId, max_viewers: usize, now: DateTime<Utc>) -> Result<Show>;

    /// Applies `op` to a room (404 if unknown). A room the op closes leaves the open indexes.
    async fn update_room(&self, id: &RoomId, op: RoomOp<'_>) -> Result<(Connection, Role)>;

    /// Records a live session. Returns the new state when the user just came online.
    async fn session_opened(&self, user: &UserId, session: &SessionId, node: &str, now: DateTime<Utc>) -> Result<Option<UserState>>;

    /// Forgets a session. When it was the user's last one, the user goes offline
    /// (the new state is returned) and their expiry is due at `expire_at`.
    async fn session_closed(&self, user: &UserId, session: &SessionId, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<Option<UserState>>;

    /// Takes the users whose grace period ended by `now`; each is handed to one caller only.
    async fn claim_expired(&self, now: DateTime<Utc>) -> Result<Vec<UserId>>;

    /// The grace period ran out: if the user still has no session, the camera goes
    /// off (owned rooms close with `camera_off`) and rooms they watch close with `gone`.
    async fn expire(&self, user: &UserId, now: DateTime<Utc>) -> Result<Change>;

    /// Closes rooms stuck negotiating since before `cutoff`, with reason `timeout`.
    async fn close_idle(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Connection>>;

    /// Ok when the store can serve.
    async fn ping(&self) -> Result<()>;

    /// Keeps `value` under the user's idempotency `key` for `ttl`, unless a record
    /// is there already: then nothing changes and that record is returned.
    async fn record_once(&self, user: &UserId, key: &str, value: &str, ttl: Duration) -> Result<Option<String>>;

    /// Replaces the record under the user's idempotency `key`, for `ttl`.
    async fn record(&self, user: &UserId, key: &str, value: &str, ttl: Duration) -> Result<()>;

    /// Drops the record under the user's idempotency `key`.
    async fn forget_record(&self, user: &UserId, key: &str) -> Result<()>;

    /// Renews this node's lease until `until`; a node whose lease ends is dead.
    /// The memory store serves one node, which never outlives itself.
    async fn renew_lease(&self, _node: &str, _until: DateTime<Utc>) -> Result<()> {
        Ok(())
    }

    /// Takes the nodes whose lease ended by `now`, with when it ended; each
    /// dead node is handed to one caller only.
    async fn claim_dead_nodes(&self, _now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>> {
        Ok(vec![])
    }

    /// The sessions a node had open, forgotten from its list as they are returned.
    async fn take_node_sessions(&self, _node: &str) -> Result<Vec<(UserId, SessionId)>> {
        Ok(vec![])
    }
}
