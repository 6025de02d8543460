//! The embedded single-node store: everything behind one mutex.
//!
//! A commit checks its guards, writes, and appends its events to the memory
//! broker's logs under that one lock, so no reader ever sees a state without
//! its events. Critical sections are short (no I/O, no await).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::hook_queue::HookQueue;
use super::{
    CLOSED_ROOM_KEEP_S, Commit, Counter, DeadHook, Guard, HookEntry, MeetingRead, RECORD_KEEP_S, Read, RoomRead, SessionInfo, Snapshot, Step, Store, UserPage, UserQuery, listed,
};
use crate::broker::memory::MemoryBroker;
use crate::domain::meeting::pair_key;
use crate::domain::{Connection, MeetingId, RoomId, SessionId, UserId, UserState};
use crate::error::Result;

#[derive(Default)]
struct Inner {
    /// The last peer id handed out (`Store::next_peer_id`).
    peer_ids: u64,
    /// Peers' cursors, each with when it lapses.
    peer_cursors: HashMap<UserId, (String, std::time::Instant)>,
    /// Sorted, so that listing pages by user id is a range scan.
    users: BTreeMap<UserId, UserState>,
    rooms: HashMap<RoomId, RoomRead>,
    /// Open rooms by owner, then abonent.
    viewers: HashMap<UserId, BTreeMap<UserId, RoomId>>,
    /// Open rooms by abonent, then owner.
    watching: HashMap<UserId, BTreeMap<UserId, RoomId>>,
    /// Open sessions by user: session → node.
    sessions: HashMap<UserId, HashMap<SessionId, String>>,
    /// Users in their grace period, and when it ends (or when a claim lapses).
    expiries: HashMap<UserId, DateTime<Utc>>,
    /// Users with a held-back `online` change, and when it is due.
    flaps: HashMap<UserId, DateTime<Utc>>,
    /// Offline users, and when they may be forgotten (or when a claim lapses).
    forgets: HashMap<UserId, DateTime<Utc>>,
    /// Idempotency records by (user, key), with when they lapse.
    records: HashMap<(UserId, String), (String, Instant)>,
    /// Each user's kept keys, oldest first, for `Kept::per_user_max`.
    record_order: HashMap<UserId, VecDeque<String>>,
    /// Meetings, and when an empty one is gone.
    meetings: HashMap<MeetingId, (MeetingRead, Option<Instant>)>,
    /// Open pair rooms by meeting, then pair key.
    pairs: HashMap<MeetingId, BTreeMap<String, RoomId>>,
    /// Meetings by member.
    memberships: HashMap<UserId, BTreeSet<MeetingId>>,
    /// Meetings by creator, pruned of gone ones when counted.
    created: HashMap<UserId, BTreeSet<MeetingId>>,
    counters: HashMap<Counter, i64>,
    session_infos: HashMap<UserId, HashMap<SessionId, SessionInfo>>,
    bans: HashMap<UserId, DateTime<Utc>>,
    hooks: HookQueue,
}

fn index_len(ix: &HashMap<UserId, BTreeMap<UserId, RoomId>>, u: &UserId) -> usize {
    ix.get(u).map_or(0, BTreeMap::len)
}

impl Inner {
    fn rooms_in(&self, ix: &HashMap<UserId, BTreeMap<UserId, RoomId>>, u: &UserId) -> Vec<RoomRead> {
        ix.get(u).into_iter().flatten().filter_map(|(_, id)| self.rooms.get(id).cloned()).collect()
    }

    fn meeting(&self, id: &MeetingId) -> Option<&MeetingRead> {
        let (m, gone_at) = self.meetings.get(id)?;
        gone_at.is_none_or(|t| t > Instant::now()).then_some(m)
    }

    /// Meetings `user` created that are not gone.
    fn created_by(&self, user: &UserId) -> usize {
        self.created.get(user).into_iter().flatten().filter(|m| self.meeting(m).is_some()).count()
    }

    fn record(&self, user: &UserId, key: &str) -> Option<String> {
        let (v, until) = self.records.get(&(user.clone(), key.to_owned()))?;
        (*until > Instant::now()).then(|| v.clone())
    }

    /// The first guard that fails, as the commit's outcome.
    fn check(&self, g: &Guard) -> Option<Commit> {
        let ok = match g {
            Guard::Fresh(u, k) => return self.record(u, k.as_str()).map(Commit::Recorded),
            Guard::User(u, v) => self.users.get(u).map_or(0, |s| s.version) == *v,
            Guard::Room(r, rev) => self.rooms.get(r).is_some_and(|x| x.rev == *rev),
            Guard::Open(r) => {
                return match self.rooms.get(r) {
                    None => Some(Commit::Missing),
                    Some(x) if !x.room.is_open() => Some(Commit::Closed),
                    Some(_) => None,
                };
            }
            Guard::Sessions(u, n) => self.sessions.get(u).map_or(0, HashMap::len) == *n,
            Guard::Owned(u, n) => index_len(&self.viewers, u) == *n,
            Guard::Watched(u, n) => index_len(&self.watching, u) == *n,
            Guard::CanShow { owner, abonent, max } => {
                let v = self.viewers.get(owner);
                !v.is_some_and(|v| v.contains_key(abonent)) && v.map_or(0, BTreeMap::len) < *max
            }
            Guard::HasSession(u, s) => self.sessions.get(u).is_some_and(|m| m.contains_key(s)),
            Guard::Meeting(id, rev) => self.meeting(id).map_or(0, |m| m.rev) == *rev,
            Guard::Created(u, n) => self.created_by(u) == *n,
        };
        (!ok).then_some(Commit::Conflict)
    }

    fn write_room(&mut self, room: &Connection, created: bool) {
        let rev = self.rooms.get(&room.room_id).map_or(0, |r| r.rev) + 1;
        self.rooms.insert(room.room_id.clone(), RoomRead { room: room.clone(), rev });
        let (o, a, id) = (&room.owner, &room.abonent, &room.room_id);
        if let Some(m) = &room.meeting_id {
            let key = pair_key(o, a);
            if created {
                self.pairs.entry(m.clone()).or_default().insert(key, id.clone());
            } else if !room.is_open()
                && let Some(p) = self.pairs.get_mut(m)
            {
                p.remove(&key);
            }
            return;
        }
        if created {
            self.viewers.entry(o.clone()).or_default().insert(a.clone(), id.clone());
            self.watching.entry(a.clone()).or_default().insert(o.clone(), id.clone());
        }
        if !room.is_open() {
            for (ix, k, v) in [(&mut self.viewers, o, a), (&mut self.watching, a, o)] {
                if let Some(m) = ix.get_mut(k) {
                    m.remove(v);
                    if m.is_empty() {
                        ix.remove(k);
                    }
                }
            }
        }
    }

    fn purge(&mut self, now: DateTime<Utc>) {
        let cutoff = now - Duration::seconds(CLOSED_ROOM_KEEP_S as i64);
        self.rooms.retain(|_, r| r.room.is_open() || r.room.updated_at >= cutoff);
        let now = Instant::now();
        self.records.retain(|_, (_, until)| *until > now);
        let records = &self.records;
        // Keys are kept in order, so the lapsed ones are at the front.
        self.record_order.retain(|u, keys| {
            while keys.front().is_some_and(|k| !records.contains_key(&(u.clone(), k.clone()))) {
                keys.pop_front();
            }
            !keys.is_empty()
        });
        let gone: Vec<MeetingId> = self.meetings.iter().filter(|(_, (_, t))| t.is_some_and(|t| t <= now)).map(|(id, _)| id.clone()).collect();
        for id in gone {
            self.meetings.remove(&id);
            self.pairs.remove(&id);
        }
    }
}

/// The due entries of a schedule, each re-dated to the claim hold from now
/// (as `claim_due.lua` does): the step that finishes the job removes it.
fn claim(schedule: &mut HashMap<UserId, DateTime<Utc>>, now: DateTime<Utc>, hold: Duration) -> Vec<UserId> {
    let hold = now + hold;
    let mut due = Vec::new();
    for (u, at) in schedule.iter_mut() {
        if *at <= now {
            *at = hold;
            due.push(u.clone());
        }
    }
    due
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    broker: Arc<MemoryBroker>,
    claim_hold: Duration,
    /// `webhooks.max_backlog`.
    max_backlog: usize,
}

impl MemoryStore {
    pub fn new(broker: Arc<MemoryBroker>, claim_hold: std::time::Duration, max_backlog: usize) -> Self {
        let claim_hold = Duration::from_std(claim_hold).unwrap_or(Duration::seconds(1));
        Self { inner: Mutex::new(Inner::default()), broker, claim_hold, max_backlog }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic under the lock is a bug; each step is checked before it writes.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn read(&self, q: &Read) -> Result<Snapshot> {
        let inner = self.lock();
        let mut s = Snapshot { now: Utc::now(), ..Snapshot::default() };
        for u in &q.users {
            if let Some(x) = inner.users.get(u) {
                s.users.insert(u.clone(), x.clone());
            }
        }
        for r in &q.rooms {
            if let Some(x) = inner.rooms.get(r) {
                s.rooms.insert(r.clone(), x.clone());
            }
        }
        if let Some(u) = &q.owned_by {
            s.owned = inner.rooms_in(&inner.viewers, u);
        }
        if let Some(u) = &q.watched_by {
            s.watched = inner.rooms_in(&inner.watching, u);
        }
        if let Some((o, a)) = &q.pair {
            let v = inner.viewers.get(o);
            s.viewers = v.map_or(0, BTreeMap::len);
            s.pair_room = v.and_then(|v| v.get(a)).and_then(|id| inner.rooms.get(id)).cloned();
        }
        if let Some(u) = &q.sessions_of {
            s.sessions = inner.sessions.get(u).cloned().unwrap_or_default();
        }
        if let Some((u, k)) = &q.record {
            s.record = inner.record(u, k.as_str());
        }
        for id in &q.meetings {
            if let Some(m) = inner.meeting(id) {
                s.meetings.insert(id.clone(), m.clone());
            }
        }
        if let Some(id) = &q.meeting_pairs {
            s.pairs = inner.pairs.get(id).into_iter().flatten().filter_map(|(_, r)| inner.rooms.get(r).cloned()).collect();
        }
        if let Some(u) = &q.meetings_of {
            s.member_of = inner.memberships.get(u).into_iter().flatten().filter(|m| inner.meeting(m).is_some()).cloned().collect();
        }
        if let Some(u) = &q.created_by {
            s.created = inner.created_by(u);
        }
        Ok(s)
    }

    async fn commit(&self, step: &Step) -> Result<Commit> {
        let mut inner = self.lock();
        if let Some(failed) = step.guards.iter().find_map(|g| inner.check(g)) {
            return Ok(failed);
        }
        for u in &step.users {
            inner.users.insert(u.user_id.clone(), u.clone());
        }
        for (room, created) in &step.rooms {
            inner.write_room(room, *created);
        }
        for w in &step.meetings {
            let id = w.meeting.meeting_id.clone();
            let rev = inner.meeting(&id).map_or(0, |m| m.rev) + 1;
            let gone_at = w.gone_after.map(|d| Instant::now() + d);
            inner.meetings.insert(id, (MeetingRead { meeting: w.meeting.clone(), rev }, gone_at));
        }
        if let Some((u, m)) = &step.created {
            let live: BTreeSet<MeetingId> = inner.created.get(u).into_iter().flatten().filter(|m| inner.meeting(m).is_some()).cloned().collect();
            let set = inner.created.entry(u.clone()).or_default();
            *set = live;
            set.insert(m.clone());
        }
        for (u, m, joined, _) in &step.memberships {
            let set = inner.memberships.entry(u.clone()).or_default();
            if *joined {
                set.insert(m.clone());
            } else {
                set.remove(m);
                if set.is_empty() {
                    inner.memberships.remove(u);
                }
            }
        }
        if let Some((id, at)) = &step.touch
            && let Some(r) = inner.rooms.get_mut(id)
        {
            r.room.updated_at = r.room.updated_at.max(*at);
        }
        for (c, _, d) in &step.counts {
            *inner.counters.entry(*c).or_default() += d;
        }
        for h in &step.hooks {
            inner.hooks.push(h.subject.as_str(), &h.body, None, self.max_backlog);
        }
        for w in &step.sessions {
            let infos = inner.session_infos.entry(w.user.clone()).or_default();
            match (&w.info, w.open) {
                (Some(i), true) => {
                    infos.insert(w.session.clone(), i.clone());
                }
                (_, false) => {
                    infos.remove(&w.session);
                }
                (None, true) => {}
            }
            if infos.is_empty() {
                inner.session_infos.remove(&w.user);
            }
            if w.open {
                inner.sessions.entry(w.user.clone()).or_default().insert(w.session.clone(), w.node.clone());
            } else if let Some(m) = inner.sessions.get_mut(&w.user) {
                m.remove(&w.session);
                if m.is_empty() {
                    inner.sessions.remove(&w.user);
                }
            }
        }
        for (u, at) in &step.expiries {
            match at {
                Some(at) => inner.expiries.insert(u.clone(), *at),
                None => inner.expiries.remove(u),
            };
        }
        for (u, at) in &step.flaps {
            match at {
                Some(at) => inner.flaps.insert(u.clone(), *at),
                None => inner.flaps.remove(u),
            };
        }
        for (u, at) in &step.forgets {
            match at {
                Some(at) => inner.forgets.insert(u.clone(), *at),
                None => inner.forgets.remove(u),
            };
        }
        for u in &step.forget {
            inner.flaps.remove(u);
            inner.users.remove(u);
            inner.forgets.remove(u);
            inner.created.remove(u);
        }
        if let Some(kept) = &step.record {
            let until = Instant::now() + std::time::Duration::from_secs(RECORD_KEEP_S);
            let key = kept.key.as_str().to_owned();
            inner.records.insert((kept.user.clone(), key.clone()), (kept.record.clone(), until));
            let order = inner.record_order.entry(kept.user.clone()).or_default();
            order.push_back(key);
            let over = order.len().saturating_sub(kept.per_user_max);
            let dropped: Vec<String> = order.drain(..over).collect();
            for k in dropped {
                inner.records.remove(&(kept.user.clone(), k));
            }
        }
        // Under the store lock: a reader sees the state only with its events.
        // The state change goes out before its consequences, as on Redis.
        for ev in &step.broadcast {
            if let Some(user) = ev.presence_of() {
                self.broker.broadcast_now(user, ev, step.accepted_us);
            }
        }
        for (to, ev) in &step.events {
            self.broker.append(to, ev, step.accepted_us);
        }
        Ok(Commit::Done)
    }

    async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        let inner = self.lock();
        let start = match &q.after {
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Unbounded,
        };
        let users: Vec<UserState> = inner
            .users
            .range((start, Bound::Unbounded))
            .map(|(_, u)| u)
            .filter(|u| listed(u, q.camera))
            .take(q.limit + 1)
            .cloned()
            .collect();
        Ok(UserPage::from_overfetch(users, q.limit))
    }

    async fn claim_expired(&self) -> Result<Vec<UserId>> {
        let now = Utc::now();
        let mut inner = self.lock();
        let due = claim(&mut inner.expiries, now, self.claim_hold);
        inner.purge(now);
        Ok(due)
    }

    async fn claim_forgettable(&self) -> Result<Vec<UserId>> {
        Ok(claim(&mut self.lock().forgets, Utc::now(), self.claim_hold))
    }

    async fn claim_flaps(&self) -> Result<Vec<UserId>> {
        Ok(claim(&mut self.lock().flaps, Utc::now(), self.claim_hold))
    }

    async fn idle_rooms(&self, idle: std::time::Duration) -> Result<Vec<RoomId>> {
        let cutoff = Utc::now() - idle;
        let inner = self.lock();
        Ok(inner
            .rooms
            .values()
            .filter(|r| r.room.is_idle(cutoff))
            .map(|r| r.room.room_id.clone())
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn next_peer_id(&self, above: u64) -> Result<u64> {
        let mut inner = self.lock();
        inner.peer_ids = inner.peer_ids.max(above) + 1;
        Ok(inner.peer_ids)
    }

    async fn raise_peer_ids(&self, at_least: u64) -> Result<()> {
        let mut inner = self.lock();
        inner.peer_ids = inner.peer_ids.max(at_least);
        Ok(())
    }

    async fn peer_cursor(&self, user: &UserId) -> Result<Option<String>> {
        let mut inner = self.lock();
        let now = std::time::Instant::now();
        inner.peer_cursors.retain(|_, (_, until)| *until > now);
        Ok(inner.peer_cursors.get(user).map(|(at, _)| at.clone()))
    }

    async fn set_peer_cursor(&self, user: &UserId, at: &str, keep: std::time::Duration) -> Result<()> {
        self.lock().peer_cursors.insert(user.clone(), (at.to_owned(), std::time::Instant::now() + keep));
        Ok(())
    }

    async fn counters(&self) -> Result<HashMap<Counter, i64>> {
        Ok(self.lock().counters.clone())
    }

    async fn session_infos(&self, user: &UserId) -> Result<HashMap<SessionId, SessionInfo>> {
        Ok(self.lock().session_infos.get(user).cloned().unwrap_or_default())
    }

    async fn ban(&self, user: &UserId, for_: std::time::Duration) -> Result<DateTime<Utc>> {
        let until = Utc::now() + for_;
        let mut inner = self.lock();
        let end = inner.bans.entry(user.clone()).or_insert(until);
        // A shorter ban never cuts a longer one short.
        *end = (*end).max(until);
        Ok(*end)
    }

    async fn bans(&self) -> Result<Vec<(UserId, DateTime<Utc>)>> {
        let now = Utc::now();
        let mut inner = self.lock();
        inner.bans.retain(|_, until| *until > now);
        Ok(inner.bans.iter().map(|(u, t)| (u.clone(), *t)).collect())
    }

    async fn hold_hooks(&self, _n: u16, _holder: &str, _hold: std::time::Duration) -> Result<bool> {
        Ok(true)
    }

    async fn release_hooks(&self, _n: u16, _holder: &str) -> Result<()> {
        Ok(())
    }

    async fn read_hooks(&self, _n: u16, group: &str, _holder: &str, count: usize, take_over: bool) -> Result<Vec<HookEntry>> {
        Ok(self.lock().hooks.read(group, count, take_over))
    }

    async fn ack_hooks(&self, _n: u16, group: &str, ids: &[String]) -> Result<()> {
        self.lock().hooks.ack(group, ids);
        Ok(())
    }

    async fn bury_hook(&self, _n: u16, group: &str, url: &str, e: &HookEntry, error: &str, attempts: u32) -> Result<()> {
        self.lock().hooks.bury(group, url, e, error, attempts, Utc::now());
        Ok(())
    }

    async fn trim_hooks(&self, _n: u16, groups: &[String]) -> Result<()> {
        self.lock().hooks.trim(groups);
        Ok(())
    }

    async fn dead_hooks(&self, limit: usize) -> Result<Vec<DeadHook>> {
        Ok(self.lock().hooks.dead(limit))
    }

    async fn replay_dead_hook(&self, id: &str) -> Result<bool> {
        let max = self.max_backlog;
        Ok(self.lock().hooks.replay(id, max))
    }
}
