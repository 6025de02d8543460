//! Shared state, and the one atomic step that changes it.
//!
//! Every operation is a read, then one `commit`: the commit checks that what
//! was read still holds (`Guard`s), writes the new state, appends each event
//! to its recipient's log and hands it to their sessions, and records the
//! idempotent answer, all or nothing. The rules that decide the new state live
//! once, in `domain` and `service`; a store only reads and commits. `memory`
//! serves one node behind one lock; `redis` serves many nodes through one Lua
//! script (see `crate::redis`).

pub mod hook_queue;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use crate::domain::{Camera, Connection, Event, IdempotencyKey, Meeting, MeetingId, RoomId, SessionId, UserId, UserState};
use crate::error::Result;

/// How long a closed room stays readable.
pub const CLOSED_ROOM_KEEP_S: u64 = 600;
/// How long a kept idempotent answer lasts.
pub const RECORD_KEEP_S: u64 = 600;
/// How long a claimed piece of housekeeping (an expiry, a dead node) is held by
/// the node that claimed it; if that node dies, another takes it after this.
/// A quarter of `grace_s`, at most 1 s (at least 100 ms): a sweeper that dies
/// right after its claim is taken over (hold plus two 250 ms sweeps) before
/// the grace periods it was to start end, so the ghost bound (`ttl_s +
/// grace_s`) holds whole. Short is safe: every step of a claimed job is
/// guarded, so a slow claimant and the one that takes over cannot both apply it.
pub fn claim_hold(grace: std::time::Duration) -> std::time::Duration {
    (grace / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1))
}

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

/// Which users pass a listing filter.
pub fn listed(u: &UserState, camera: Option<Camera>) -> bool {
    match camera {
        None => u.online || u.camera == Camera::On,
        Some(Camera::On) => u.camera == Camera::On,
        Some(Camera::Off) => u.online && u.camera == Camera::Off,
    }
}

/// What a step reads, in one round trip.
#[derive(Debug, Default, Clone)]
pub struct Read {
    pub users: Vec<UserId>,
    pub rooms: Vec<RoomId>,
    /// Open rooms this user owns, each read whole.
    pub owned_by: Option<UserId>,
    /// Open rooms this user watches, each read whole.
    pub watched_by: Option<UserId>,
    /// `(owner, abonent)`: the open room between them, if any, and the owner's viewer count.
    pub pair: Option<(UserId, UserId)>,
    /// This user's open sessions.
    pub sessions_of: Option<UserId>,
    /// The answer kept under this idempotency key, if any.
    pub record: Option<(UserId, IdempotencyKey)>,
    pub meetings: Vec<MeetingId>,
    /// The open pair rooms of this meeting, each read whole.
    pub meeting_pairs: Option<MeetingId>,
    /// The meetings this user is a member of.
    pub meetings_of: Option<UserId>,
    /// How many meetings this user created that are not gone.
    pub created_by: Option<UserId>,
}

impl Read {
    /// Everything a user's end touches: their state and sessions, the rooms
    /// they own and watch, and their meetings (an expiry, forgetting).
    pub fn all_of(user: &UserId) -> Read {
        Read {
            users: vec![user.clone()],
            sessions_of: Some(user.clone()),
            owned_by: Some(user.clone()),
            watched_by: Some(user.clone()),
            meetings_of: Some(user.clone()),
            ..Read::default()
        }
    }
}

/// A room as read, with the revision its writes are checked against.
#[derive(Debug, Clone)]
pub struct RoomRead {
    pub room: Connection,
    pub rev: u64,
}

/// A meeting as read, with the revision its writes are checked against.
#[derive(Debug, Clone)]
pub struct MeetingRead {
    pub meeting: Meeting,
    pub rev: u64,
}

/// What a `Read` found.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: HashMap<UserId, UserState>,
    pub rooms: HashMap<RoomId, RoomRead>,
    /// Open rooms of `owned_by` (or `pair`'s owner when counting).
    pub owned: Vec<RoomRead>,
    pub watched: Vec<RoomRead>,
    /// The open room of `pair`, and how many open rooms its owner has.
    pub pair_room: Option<RoomRead>,
    pub viewers: usize,
    /// Session id → node id.
    pub sessions: HashMap<SessionId, String>,
    pub record: Option<String>,
    pub meetings: HashMap<MeetingId, MeetingRead>,
    /// The open pair rooms of `meeting_pairs`.
    pub pairs: Vec<RoomRead>,
    /// The meetings of `meetings_of`.
    pub member_of: Vec<MeetingId>,
    /// The count of `created_by`.
    pub created: usize,
    /// The store's clock when it read (Redis's `TIME`; the memory store's,
    /// the process clock): every time a step writes comes from here, so
    /// nodes' clocks never matter.
    pub now: DateTime<Utc>,
}

impl Snapshot {
    /// The user's version as read (0: unknown), for `Guard::User`.
    pub fn version(&self, u: &UserId) -> u64 {
        self.users.get(u).map_or(0, |s| s.version)
    }
}

/// A condition a commit checks before writing anything; if one fails, nothing
/// is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// Nothing is kept under this idempotency key (else: `Commit::Recorded`).
    Fresh(UserId, IdempotencyKey),
    /// The user's version is still this one (0: the user is unknown).
    User(UserId, u64),
    /// The room's revision is still this one.
    Room(RoomId, u64),
    /// The room exists and is open (else `Commit::Closed` or `Commit::Missing`).
    /// Cheaper than `Room`: a change that keeps it open does not conflict.
    Open(RoomId),
    /// The user has exactly this many open sessions.
    Sessions(UserId, usize),
    /// The user owns exactly this many open rooms.
    Owned(UserId, usize),
    /// The user watches exactly this many open rooms.
    Watched(UserId, usize),
    /// No open room between `owner` and `abonent`, and the owner has fewer
    /// than `max` viewers.
    CanShow { owner: UserId, abonent: UserId, max: usize },
    /// The session is still registered.
    HasSession(UserId, SessionId),
    /// The meeting's revision is still this one (0: there is no such meeting).
    Meeting(MeetingId, u64),
    /// The user created exactly this many meetings that are not gone.
    Created(UserId, usize),
}

/// A session registration a step adds or removes.
#[derive(Debug, Clone)]
pub struct SessionWrite {
    pub user: UserId,
    pub session: SessionId,
    pub node: String,
    pub open: bool,
    /// On open: how the session connects and when it opened, for
    /// `admin/users/{id}` (None: a re-registration keeps what is there).
    pub info: Option<SessionInfo>,
}

/// How a session connects, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// `websocket` or `poll`.
    pub transport: &'static str,
    pub opened_at: DateTime<Utc>,
}

/// A meeting's new state. With no member left, it is gone after `gone_after`
/// unless someone joins first.
#[derive(Debug, Clone)]
pub struct MeetingWrite {
    pub meeting: Meeting,
    pub gone_after: Option<std::time::Duration>,
}

/// Everything one step writes and sends, applied at once.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub guards: Vec<Guard>,
    /// New user states (also added to the directory).
    pub users: Vec<UserState>,
    /// New room states; `created` rooms join their members' indexes (or their
    /// meeting's pairs), closed ones leave them.
    pub rooms: Vec<(Connection, bool)>,
    pub meetings: Vec<MeetingWrite>,
    /// A user joins (true) or leaves (false, with the reason) a meeting.
    pub memberships: Vec<(UserId, MeetingId, bool, String)>,
    /// A meeting its creator made, counted until it is gone.
    pub created: Option<(UserId, MeetingId)>,
    /// Signaling activity on an open room that changes nothing else (ice).
    pub touch: Option<(RoomId, DateTime<Utc>)>,
    pub sessions: Vec<SessionWrite>,
    /// A grace period that ends at the given time, or (None) is cancelled.
    pub expiries: Vec<(UserId, Option<DateTime<Utc>>)>,
    /// A change of `online` held back by `presence.flap_window_ms`, due at the
    /// given time, or (None) no longer pending.
    pub flaps: Vec<(UserId, Option<DateTime<Utc>>)>,
    /// When an offline user may be forgotten, or (None) no longer.
    pub forgets: Vec<(UserId, Option<DateTime<Utc>>)>,
    /// Users whose record goes: their state and their directory entry.
    pub forget: Vec<UserId>,
    /// Appended to each recipient's log and delivered live, in this order.
    pub events: Vec<(UserId, Event)>,
    /// `update_user` to every presence session; not logged.
    pub broadcast: Vec<Event>,
    /// The idempotent answer to keep.
    pub record: Option<Kept>,
    /// When the call that caused the step was accepted (µs), for latency metrics.
    pub accepted_us: i64,
    /// Webhooks, each recorded with the change it tells of (`crate::webhooks`).
    pub hooks: Vec<Hook>,
    /// Changes of the counters `admin/stats` reads, each kept in the shard of
    /// the id it names.
    pub counts: Vec<(Counter, String, i64)>,
}

/// A webhook as recorded: `subject` orders deliveries (one user's go in
/// order), `body` is the JSON sent and signed.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub subject: UserId,
    pub body: String,
}

/// A counter of `admin/stats`, kept by the steps that change what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    UsersOnline,
    CamerasOn,
    RoomsOpen,
    MeetingsOpen,
}

impl Counter {
    pub const ALL: [Counter; 4] = [Counter::UsersOnline, Counter::CamerasOn, Counter::RoomsOpen, Counter::MeetingsOpen];

    pub fn name(self) -> &'static str {
        match self {
            Counter::UsersOnline => "users_online",
            Counter::CamerasOn => "cameras_on",
            Counter::RoomsOpen => "rooms_open",
            Counter::MeetingsOpen => "meetings_open",
        }
    }
}

/// A webhook as its shard keeps it, until every receiver has it.
#[derive(Debug, Clone)]
pub struct HookEntry {
    /// Its place in the shard's queue (a stream id on Redis).
    pub id: String,
    pub subject: String,
    pub body: String,
    /// A replayed dead letter: for this receiver group only.
    pub only: Option<String>,
}

/// A webhook that one receiver never took within `webhooks.max_attempts`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadHook {
    /// Pass it to `admin/webhooks/dead/{id}/replay`.
    pub id: String,
    pub url: String,
    pub attempts: u32,
    /// The last failure: an HTTP status or why no answer came.
    pub error: String,
    /// When it was given up, RFC 3339.
    pub dead_at: String,
    /// The webhook as sent.
    #[schema(value_type = Object)]
    pub webhook: serde_json::Value,
}

/// An idempotent answer to keep for `RECORD_KEEP_S`. A user keeps at most
/// `per_user_max`; the oldest are dropped first, so one user sending fresh
/// keys at the rate limit holds a bounded amount.
#[derive(Debug, Clone)]
pub struct Kept {
    pub user: UserId,
    pub key: IdempotencyKey,
    pub record: String,
    pub per_user_max: usize,
}

impl Step {
    pub fn new(accepted_us: i64) -> Self {
        Self { accepted_us, ..Self::default() }
    }

    pub fn guard(mut self, g: Guard) -> Self {
        self.guards.push(g);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.rooms.is_empty()
            && self.meetings.is_empty()
            && self.memberships.is_empty()
            && self.created.is_none()
            && self.touch.is_none()
            && self.sessions.is_empty()
            && self.expiries.is_empty()
            && self.flaps.is_empty()
            && self.forgets.is_empty()
            && self.forget.is_empty()
            && self.events.is_empty()
            && self.broadcast.is_empty()
            && self.record.is_none()
    }
}

/// How a commit ended.
#[derive(Debug, PartialEq)]
pub enum Commit {
    Done,
    /// A guard failed because something changed since the read: read again.
    Conflict,
    /// An answer is already kept under the step's key: this is a retry.
    Recorded(String),
    /// `Guard::Open` found the room closed.
    Closed,
    /// `Guard::Open` found no such room.
    Missing,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One round trip.
    async fn read(&self, q: &Read) -> Result<Snapshot>;

    /// One round trip: all of the step, or (a guard failed) none of it.
    async fn commit(&self, step: &Step) -> Result<Commit>;

    async fn users(&self, q: &UserQuery) -> Result<UserPage>;

    /// Users whose grace period has ended, by the store's clock. Each is held
    /// for the caller for the claim hold; the expiry step itself removes it.
    async fn claim_expired(&self) -> Result<Vec<UserId>>;

    /// Users whose held-back `online` change is due, held for the caller
    /// like expiries.
    async fn claim_flaps(&self) -> Result<Vec<UserId>>;

    /// Users due to be forgotten, held for the caller like expiries.
    async fn claim_forgettable(&self) -> Result<Vec<UserId>>;

    /// Rooms still negotiating with no activity for `idle`, by the store's clock.
    async fn idle_rooms(&self, idle: std::time::Duration) -> Result<Vec<RoomId>>;

    /// Ok when the store can serve: read and write.
    async fn ping(&self) -> Result<()>;

    /// A new peer id for the peerconnection_client listener: 1, 2, ... over
    /// every node (`crate::compat`), and above `above` (the highest this node
    /// has seen), so that a store that came back empty hands out no id a
    /// peer still uses.
    async fn next_peer_id(&self, above: u64) -> Result<u64>;

    /// Raises the peer id counter to at least `at_least` (a node's highest id
    /// seen in use), so that after a store that came back empty no node hands
    /// out an id a peer anywhere still uses.
    async fn raise_peer_ids(&self, at_least: u64) -> Result<()>;

    /// Where a peer's next hanging GET resumes in its log (None: from its start).
    async fn peer_cursor(&self, user: &UserId) -> Result<Option<String>>;

    /// Moves a peer's cursor; it lasts `keep` after its last move.
    async fn set_peer_cursor(&self, user: &UserId, at: &str, keep: std::time::Duration) -> Result<()>;

    /// Renews a lease (one incarnation of a node, see `crate::lease`) for
    /// `valid` from now, by the store's clock; returns whether it was as this
    /// node left it (`held_until`; false when a peer swept it, or claimed it
    /// to sweep), and its new end. The memory store serves one node, which
    /// never outlives itself.
    async fn renew_lease(&self, _lease: &str, valid: std::time::Duration, _held_until: Option<DateTime<Utc>>) -> Result<(bool, DateTime<Utc>)> {
        Ok((true, Utc::now() + valid))
    }

    /// Every lease held or not yet swept.
    async fn leases(&self) -> Result<Vec<String>> {
        Ok(vec![])
    }

    /// Every lease held or not yet swept, with when it ends.
    async fn leases_until(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        Ok(vec![])
    }

    /// How many sessions are registered under a lease.
    async fn lease_session_count(&self, lease: &str) -> Result<usize> {
        Ok(self.lease_sessions(lease).await?.len())
    }

    /// Leases that have ended, by the store's clock, with when each ended.
    /// Each is held for the caller for the claim hold, until `forget_lease`.
    async fn claim_dead_leases(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        Ok(vec![])
    }

    /// The sessions registered under a lease.
    async fn lease_sessions(&self, _lease: &str) -> Result<Vec<(UserId, SessionId)>> {
        Ok(vec![])
    }

    /// Drops a lease whose sessions are all closed (swept, drained or replaced).
    async fn forget_lease(&self, _lease: &str) -> Result<()> {
        Ok(())
    }

    /// Finishes the writes a step left for other shards when the node that
    /// made it died before relaying them (Redis with `redis.shards` > 1).
    async fn relay_stale(&self) -> Result<()> {
        Ok(())
    }

    /// The `admin/stats` counters, summed over shards.
    async fn counters(&self) -> Result<HashMap<Counter, i64>>;

    /// A user's sessions, with how each connects and since when (`admin/users/{id}`).
    async fn session_infos(&self, user: &UserId) -> Result<HashMap<SessionId, SessionInfo>>;

    /// Bans `user` until `for_` from now, by the store's clock; returns when it ends.
    async fn ban(&self, user: &UserId, for_: std::time::Duration) -> Result<DateTime<Utc>>;

    /// Every ban not over yet, with when it ends (the ended ones go).
    async fn bans(&self) -> Result<Vec<(UserId, DateTime<Utc>)>>;

    // Webhook queues (`crate::webhooks`): one per shard, read by one
    // consumer group per receiver, delivered by the node holding the shard.

    /// Takes or renews shard `n`'s delivery for `holder` for `hold`; false
    /// while another node holds it.
    async fn hold_hooks(&self, n: u16, holder: &str, hold: std::time::Duration) -> Result<bool>;

    /// Lets shard `n`'s delivery go (a drain), if `holder` has it.
    async fn release_hooks(&self, n: u16, holder: &str) -> Result<()>;

    /// Up to `count` webhooks of shard `n` for receiver `group`: with
    /// `take_over`, those read before and not acked (by this holder or a
    /// previous one), oldest first; else new ones.
    async fn read_hooks(&self, n: u16, group: &str, holder: &str, count: usize, take_over: bool) -> Result<Vec<HookEntry>>;

    /// Receiver `group` has these webhooks of shard `n`.
    async fn ack_hooks(&self, n: u16, group: &str, ids: &[String]) -> Result<()>;

    /// Receiver `group` never took `e`: it leaves the queue for the dead
    /// letters, in one step.
    async fn bury_hook(&self, n: u16, group: &str, url: &str, e: &HookEntry, error: &str, attempts: u32) -> Result<()>;

    /// Drops what every one of `groups` has taken from shard `n`'s queue.
    async fn trim_hooks(&self, n: u16, groups: &[String]) -> Result<()>;

    /// The dead letters, newest first, at most `limit`.
    async fn dead_hooks(&self, limit: usize) -> Result<Vec<DeadHook>>;

    /// Puts dead letter `id` back in its queue, for its receiver only; false
    /// when there is no such dead letter.
    async fn replay_dead_hook(&self, id: &str) -> Result<bool>;

    /// How many shards hold webhook queues.
    fn hook_shards(&self) -> u16 {
        1
    }
}
