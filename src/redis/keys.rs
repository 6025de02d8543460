//! The key table: every Redis key and channel camsig uses, under one prefix
//! (`redis.prefix`, default `camsig`). `docs/architecture.md` has the same table.
//!
//! With `redis.shards` = S above 1, every key carries its shard's hash tag,
//! `{P:n}`, so that a Redis Cluster keeps each shard in one slot: a user's
//! keys (and the rooms and meetings placed beside them, see
//! `domain::ids::placement`) are in the user's shard, and the global sets
//! are one per shard. With S = 1 the names are as they always were (on a
//! cluster, under the one tag `{P}`).

use crate::domain::ids::placement;
use crate::domain::{MeetingId, RoomId, SessionId, UserId};

/// Separates the parts of a composite member; user ids and keys hold no spaces.
pub const SEP: char = ' ';

/// A shard: a set of placements stored together.
pub type Shard = u16;

#[derive(Debug, Clone)]
pub struct Keys {
    /// `redis.prefix`, as given.
    p: String,
    shards: u16,
    /// With one shard, every key's start: the prefix (`{P}` on a cluster).
    whole: String,
}

/// What a channel carries, as `Keys::parse_channel` reads its name.
#[derive(Debug, PartialEq)]
pub enum Channel<'a> {
    /// A user's events.
    User(&'a str),
    /// A user's own `update_user`s.
    PresenceOf(&'a str),
    /// Every `update_user` of one shard.
    Presence(Shard),
}

impl Keys {
    /// `shards` is a power of two up to `PLACEMENTS` (the settings check it).
    pub fn new(prefix: &str, shards: u16, cluster: bool) -> Self {
        let whole = if cluster { format!("{{{prefix}}}") } else { prefix.to_owned() };
        Self { p: prefix.to_owned(), shards: shards.max(1), whole }
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of a user, room or meeting id.
    pub fn shard_of(&self, id: &str) -> Shard {
        placement(id) % self.shards
    }

    /// The shard a key of this table is in, from its hash tag (0 with one shard).
    pub fn shard_of_key(&self, key: &str) -> Shard {
        if self.shards == 1 {
            return 0;
        }
        let tag = format!("{{{}:", self.p);
        key.strip_prefix(&tag).and_then(|rest| rest.split_once('}')).and_then(|(n, _)| n.parse().ok()).unwrap_or(0)
    }

    /// Every key of shard `n` starts with this.
    pub fn tag(&self, n: Shard) -> String {
        if self.shards == 1 { self.whole.clone() } else { format!("{{{}:{n}}}", self.p) }
    }

    fn at(&self, id: &str) -> String {
        self.tag(self.shard_of(id))
    }

    /// Hash: `doc` (UserState JSON), `v` (its version, which guards writes).
    pub fn user(&self, u: &UserId) -> String {
        format!("{}:user:{u}", self.at(u.as_str()))
    }

    /// Sorted set, every score 0: shard `n`'s part of the directory, paged by id (`ZRANGE BYLEX`).
    pub fn users(&self, n: Shard) -> String {
        format!("{}:users", self.tag(n))
    }

    /// Hash: `doc` (Connection JSON), `rev` (bumped on every write, guards
    /// writes), `open` ("1" while open), `t` (ms of the last ICE candidate).
    /// Expires `CLOSED_ROOM_KEEP_S` after it closes.
    pub fn room(&self, r: &RoomId) -> String {
        format!("{}{r}", self.room_prefix(self.shard_of(r.as_str())))
    }

    /// Where shard `n`'s rooms are, for a read that follows an index.
    pub fn room_prefix(&self, n: Shard) -> String {
        format!("{}:room:", self.tag(n))
    }

    /// Hash: abonent → room id, for the open rooms this user owns.
    pub fn viewers(&self, u: &UserId) -> String {
        format!("{}:viewers:{u}", self.at(u.as_str()))
    }

    /// Hash: owner → room id, for the open rooms this user watches.
    pub fn watching(&self, u: &UserId) -> String {
        format!("{}:watching:{u}", self.at(u.as_str()))
    }

    /// Hash: `doc` (Meeting JSON with its members), `rev` (bumped by every
    /// write, guards writes). Expires `connections.idle_ttl_s` after its last
    /// member left (or after its creation, if nobody joins).
    pub fn meeting(&self, m: &MeetingId) -> String {
        format!("{}:meeting:{m}", self.at(m.as_str()))
    }

    /// Hash: pair key (`user user`, sorted) → room id, for a meeting's open pairs.
    pub fn meeting_pairs(&self, m: &MeetingId) -> String {
        format!("{}:meeting:{m}:pairs", self.at(m.as_str()))
    }

    /// Sorted set: the meetings this user created, each scored by when it is
    /// gone (ms; `+inf` while it has members), as its meeting's writes set
    /// it; the gone ones are pruned on each create.
    pub fn created(&self, u: &UserId) -> String {
        format!("{}:created:{u}", self.at(u.as_str()))
    }

    /// Hash: meeting id → "1", for the meetings this user is a member of.
    pub fn memberships(&self, u: &UserId) -> String {
        format!("{}:meetings:{u}", self.at(u.as_str()))
    }

    /// Hash: session id → lease (`node#incarnation`), for this user's open sessions.
    pub fn sessions(&self, u: &UserId) -> String {
        format!("{}:sessions:{u}", self.at(u.as_str()))
    }

    /// Set of `user SEP session`: shard `n`'s sessions open under a lease (one
    /// incarnation of a node), for sweeping it.
    pub fn lease_sessions(&self, lease: &str, n: Shard) -> String {
        format!("{}:lease:{lease}:sessions", self.tag(n))
    }

    pub fn node_session_member(u: &UserId, s: &SessionId) -> String {
        format!("{u}{SEP}{s}")
    }

    /// String: a counter the replica waiter bumps in shard `n`, so that one
    /// `WAIT` covers every step answered before it (`redis::replicated`).
    pub fn replicated(&self, n: Shard) -> String {
        format!("{}:replicated", self.tag(n))
    }

    /// Written by `/readyz`: a store that refuses writes is not ready.
    pub fn ready(&self) -> String {
        format!("{}:ready", self.tag(0))
    }

    /// String: the last peer id handed out to a peerconnection_client peer; in shard 0.
    pub fn peer_ids(&self) -> String {
        format!("{}:pc:ids", self.tag(0))
    }

    /// String: the log id a peer's next hanging GET resumes after; in the peer's shard.
    pub fn peer_cursor(&self, u: &UserId) -> String {
        format!("{}:pc:cursor:{u}", self.at(u.as_str()))
    }

    /// Sorted set: lease (`node#incarnation`) scored by when it ends (ms); in shard 0.
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag(0))
    }

    /// Sorted set: user scored by when their held-back `online` change is due (ms).
    pub fn flaps(&self, n: Shard) -> String {
        format!("{}:flaps", self.tag(n))
    }

    /// Sorted set: offline user scored by when they may be forgotten (ms).
    pub fn forgets(&self, n: Shard) -> String {
        format!("{}:forgets", self.tag(n))
    }

    /// Stream: shard `n`'s `update_user`s, so a node can catch its sessions
    /// up after a pub/sub gap; capped at `PRESENCE_LOG_MAX` entries.
    pub fn presence_log(&self, n: Shard) -> String {
        format!("{}:presence:log", self.tag(n))
    }

    /// Sorted set: user scored by when their grace period ends (ms).
    pub fn expiries(&self, n: Shard) -> String {
        format!("{}:expiries", self.tag(n))
    }

    /// Sorted set: rooms still negotiating, scored by their last activity (ms).
    pub fn negotiating(&self, n: Shard) -> String {
        format!("{}:negotiating", self.tag(n))
    }

    /// Hash: `Idempotency-Key` → the kept answer, for 10 minutes each (as
    /// `records` dates them), in shard `n`: the caller's own, and the shard
    /// a step ran in (`store::redis`), where its guard checks it.
    pub fn kept(&self, u: &UserId, n: Shard) -> String {
        format!("{}:idem:{u}", self.tag(n))
    }

    /// Sorted set: the user's kept keys in shard `n`, scored by when they
    /// were kept (ms): an answer older than 10 minutes is gone, and the
    /// oldest go first past `limits.max_idempotency_keys`.
    pub fn records(&self, u: &UserId, n: Shard) -> String {
        format!("{}:idems:{u}", self.tag(n))
    }

    /// Stream: the writes a step made for other shards, until relayed.
    pub fn outbox(&self, n: Shard) -> String {
        format!("{}:outbox", self.tag(n))
    }

    /// Sorted set: the outbox entries relayed into shard `n` (`shard id`),
    /// dated, so a second relay of one is a no-op.
    pub fn relayed(&self, n: Shard) -> String {
        format!("{}:relayed", self.tag(n))
    }

    /// Stream: shard `n`'s webhooks (`u` subject, `b` body, `o` the one
    /// receiver group of a replayed dead letter), written by the step that
    /// made each change; one consumer group per receiver (`crate::webhooks`).
    pub fn hooks(&self, n: Shard) -> String {
        format!("{}:hooks", self.tag(n))
    }

    /// Stream: shard `n`'s webhooks that a receiver never took.
    pub fn hooks_dead(&self, n: Shard) -> String {
        format!("{}:hooks:dead", self.tag(n))
    }

    /// String: the lease of the node delivering shard `n`'s webhooks, for a few seconds.
    pub fn hooks_holder(&self, n: Shard) -> String {
        format!("{}:hooks:holder", self.tag(n))
    }

    /// Hash: shard `n`'s counters of `admin/stats`, moved by the steps.
    pub fn stats(&self, n: Shard) -> String {
        format!("{}:stats", self.tag(n))
    }

    /// Sorted set: banned user scored by when the ban ends (ms); in shard 0.
    pub fn bans(&self) -> String {
        format!("{}:bans", self.tag(0))
    }

    /// Hash: session id → `transport SEP opened ms`, for `admin/users/{id}`.
    pub fn session_info(&self, u: &UserId) -> String {
        format!("{}:sinfo:{u}", self.at(u.as_str()))
    }

    /// Stream: the user's event log, capped by `events.keep_max` and `keep_s`.
    pub fn log(&self, u: &UserId) -> String {
        format!("{}:log:{u}", self.at(u.as_str()))
    }

    /// Channel: the user's events, live.
    pub fn channel(&self, u: &UserId) -> String {
        format!("{}:u:{u}", self.at(u.as_str()))
    }

    /// Channel: shard `n`'s `update_user`s, for nodes with a session that hears everyone.
    pub fn presence(&self, n: Shard) -> String {
        format!("{}:presence", self.tag(n))
    }

    /// Channel: the user's own `update_user`s, for nodes with a session that watches them.
    pub fn presence_of(&self, u: &UserId) -> String {
        format!("{}:pu:{u}", self.at(u.as_str()))
    }

    /// What a channel name carries (None: not one of ours).
    pub fn parse_channel<'a>(&self, ch: &'a str) -> Option<Channel<'a>> {
        let (shard, rest) = if self.shards == 1 {
            (0, ch.strip_prefix(self.whole.as_str())?.strip_prefix(':')?)
        } else {
            let inner = ch.strip_prefix('{')?.strip_prefix(self.p.as_str())?.strip_prefix(':')?;
            let (n, rest) = inner.split_once("}:")?;
            (n.parse().ok()?, rest)
        };
        if let Some(u) = rest.strip_prefix("u:") {
            Some(Channel::User(u))
        } else if let Some(u) = rest.strip_prefix("pu:") {
            Some(Channel::PresenceOf(u))
        } else {
            (rest == "presence").then_some(Channel::Presence(shard))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_keeps_the_old_names_and_many_tag_each_key() {
        let ann = UserId::parse("ann").unwrap();
        let one = Keys::new("camsig", 1, false);
        assert_eq!(one.user(&ann), "camsig:user:ann");
        assert_eq!(one.parse_channel("camsig:u:ann"), Some(Channel::User("ann")));
        assert_eq!(one.parse_channel("camsig:presence"), Some(Channel::Presence(0)));
        assert_eq!(Keys::new("camsig", 1, true).log(&ann), "{camsig}:log:ann");
        let many = Keys::new("camsig", 16, true);
        let n = many.shard_of("ann");
        assert_eq!(many.user(&ann), format!("{{camsig:{n}}}:user:ann"));
        assert_eq!(many.parse_channel(&many.channel(&ann)), Some(Channel::User("ann")));
        assert_eq!(many.parse_channel(&many.presence_of(&ann)), Some(Channel::PresenceOf("ann")));
        assert_eq!(many.parse_channel(&many.presence(7)), Some(Channel::Presence(7)));
        assert_eq!(many.parse_channel("other:u:ann"), None);
        // A room placed beside its owner is in the owner's shard.
        let room = RoomId::near("ann");
        assert_eq!(many.shard_of(room.as_str()), n);
        assert_eq!(many.shard_of_key(&many.log(&ann)), n);
        assert_eq!(many.shard_of_key(&many.relayed(9)), 9);
        assert_eq!(one.shard_of_key(&one.log(&ann)), 0);
    }
}
