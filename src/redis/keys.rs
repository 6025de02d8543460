//! The key table: every Redis key and channel camsig uses, under one prefix
//! (`redis.prefix`, default `camsig`). `docs/architecture.md` has the same table.

use crate::domain::{MeetingId, RoomId, SessionId, UserId};

/// Separates the parts of a composite member; user ids and keys hold no spaces.
pub const SEP: char = ' ';

#[derive(Debug, Clone)]
pub struct Keys {
    p: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { p: prefix.to_owned() }
    }

    /// Hash: `doc` (UserState JSON), `v` (its version, which guards writes).
    pub fn user(&self, u: &UserId) -> String {
        format!("{}:user:{u}", self.p)
    }

    /// Sorted set, every score 0: the directory, paged by id (`ZRANGE BYLEX`).
    pub fn users(&self) -> String {
        format!("{}:users", self.p)
    }

    /// Hash: `doc` (Connection JSON), `rev` (bumped on every write, guards
    /// writes), `open` ("1" while open), `t` (ms of the last ICE candidate).
    /// Expires `CLOSED_ROOM_KEEP_S` after it closes.
    pub fn room(&self, r: &RoomId) -> String {
        format!("{}{r}", self.room_prefix())
    }

    pub fn room_prefix(&self) -> String {
        format!("{}:room:", self.p)
    }

    /// Hash: abonent → room id, for the open rooms this user owns.
    pub fn viewers(&self, u: &UserId) -> String {
        format!("{}:viewers:{u}", self.p)
    }

    /// Hash: owner → room id, for the open rooms this user watches.
    pub fn watching(&self, u: &UserId) -> String {
        format!("{}:watching:{u}", self.p)
    }

    /// Hash: `doc` (Meeting JSON with its members), `rev` (bumped by every
    /// write, guards writes). Expires `connections.idle_ttl_s` after its last
    /// member left (or after its creation, if nobody joins).
    pub fn meeting(&self, m: &MeetingId) -> String {
        format!("{}:meeting:{m}", self.p)
    }

    /// Hash: pair key (`user user`, sorted) → room id, for a meeting's open pairs.
    pub fn meeting_pairs(&self, m: &MeetingId) -> String {
        format!("{}:meeting:{m}:pairs", self.p)
    }

    /// Sorted set: the meetings this user created, each scored by when it is
    /// gone (ms; `+inf` while it has members), as its meeting's writes set
    /// it; the gone ones are pruned on each create.
    pub fn created(&self, u: &UserId) -> String {
        format!("{}:created:{u}", self.p)
    }

    /// Hash: meeting id → "1", for the meetings this user is a member of.
    pub fn memberships(&self, u: &UserId) -> String {
        format!("{}:meetings:{u}", self.p)
    }

    /// Hash: session id → lease (`node#incarnation`), for this user's open sessions.
    pub fn sessions(&self, u: &UserId) -> String {
        format!("{}:sessions:{u}", self.p)
    }

    /// Set of `user SEP session`: the sessions open under a lease (one
    /// incarnation of a node), for sweeping it.
    pub fn lease_sessions(&self, lease: &str) -> String {
        format!("{}:lease:{lease}:sessions", self.p)
    }

    pub fn node_session_member(u: &UserId, s: &SessionId) -> String {
        format!("{u}{SEP}{s}")
    }

    /// String: a counter the replica waiter bumps, so that one `WAIT` covers
    /// every step answered before it (`redis::replicated`).
    pub fn replicated(&self) -> String {
        format!("{}:replicated", self.p)
    }

    /// Written by `/readyz`: a store that refuses writes is not ready.
    pub fn ready(&self) -> String {
        format!("{}:ready", self.p)
    }

    /// Sorted set: lease (`node#incarnation`) scored by when it ends (ms).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.p)
    }

    /// Sorted set: user scored by when their held-back `online` change is due (ms).
    pub fn flaps(&self) -> String {
        format!("{}:flaps", self.p)
    }

    /// Sorted set: offline user scored by when they may be forgotten (ms).
    pub fn forgets(&self) -> String {
        format!("{}:forgets", self.p)
    }

    /// Stream: every `update_user`, so a node can catch its sessions up after
    /// a pub/sub gap; capped at `PRESENCE_LOG_MAX` entries.
    pub fn presence_log(&self) -> String {
        format!("{}:presence:log", self.p)
    }

    /// Sorted set: user scored by when their grace period ends (ms).
    pub fn expiries(&self) -> String {
        format!("{}:expiries", self.p)
    }

    /// Sorted set: rooms still negotiating, scored by their last activity (ms).
    pub fn negotiating(&self) -> String {
        format!("{}:negotiating", self.p)
    }

    /// Hash: `Idempotency-Key` → the kept answer, for 10 minutes each (as
    /// `records` dates them).
    pub fn kept(&self, u: &UserId) -> String {
        format!("{}:idem:{u}", self.p)
    }

    /// Sorted set: the user's kept keys, scored by when they were kept (ms):
    /// an answer older than 10 minutes is gone, and the oldest go first past
    /// `limits.max_idempotency_keys`.
    pub fn records(&self, u: &UserId) -> String {
        format!("{}:idems:{u}", self.p)
    }

    /// Stream: the user's event log, capped by `events.keep_max` and `keep_s`.
    pub fn log(&self, u: &UserId) -> String {
        format!("{}:log:{u}", self.p)
    }

    /// Channel: the user's events, live.
    pub fn channel(&self, u: &UserId) -> String {
        format!("{}{u}", self.channel_prefix())
    }

    pub fn channel_prefix(&self) -> String {
        format!("{}:u:", self.p)
    }

    /// Channel: every `update_user`, for nodes with a session that hears everyone.
    pub fn presence(&self) -> String {
        format!("{}:presence", self.p)
    }

    /// Channel: the user's own `update_user`s, for nodes with a session that watches them.
    pub fn presence_of(&self, u: &UserId) -> String {
        format!("{}{u}", self.presence_prefix())
    }

    pub fn presence_prefix(&self) -> String {
        format!("{}:pu:", self.p)
    }
}
