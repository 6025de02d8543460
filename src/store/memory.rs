//! The embedded single-node store: everything behind one mutex.
//!
//! One lock makes every method trivially atomic; critical sections are short
//! (no I/O, no await), so contention stays low at single-node scale.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Instant;

use super::{Change, RoomOp, Show, Store, UserPage, UserQuery, listed};
use crate::domain::{Camera, Connection, Role, RoomId, SessionId, UserId, UserState};
use crate::error::{Error, Result};

/// How long a closed room stays readable through `GET connections/{id}`.
const CLOSED_ROOM_KEEP_S: i64 = 600;

#[derive(Default)]
struct Inner {
    /// Sorted, so that listing pages by user id is a range scan.
    users: BTreeMap<UserId, UserState>,
    rooms: HashMap<RoomId, Connection>,
    /// Open rooms by participant (owner or abonent).
    open: HashMap<UserId, BTreeSet<RoomId>>,
    sessions: HashMap<UserId, HashSet<SessionId>>,
    /// Users in their grace period, and when it ends.
    expiries: HashMap<UserId, DateTime<Utc>>,
    /// Idempotency records by (user, key), with when they lapse.
    records: HashMap<(UserId, String), (String, Instant)>,
}

impl Inner {
    fn open_rooms(&self, user: &UserId) -> Vec<RoomId> {
        self.open.get(user).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    fn unindex(&mut self, c: &Connection) {
        for u in [&c.owner, &c.abonent] {
            if let Some(set) = self.open.get_mut(u) {
                set.remove(&c.room_id);
                if set.is_empty() {
                    self.open.remove(u);
                }
            }
        }
    }

    /// Closes the user's open rooms where they have `role`, with `reason`.
    fn close_rooms(&mut self, user: &UserId, role: Role, reason: &str, now: DateTime<Utc>) -> Vec<Connection> {
        let mut closed = Vec::new();
        for id in self.open_rooms(user) {
            let Some(c) = self.rooms.get_mut(&id) else { continue };
            if c.role_of(user) != Some(role) {
                continue;
            }
            c.close(reason, now);
            let c = c.clone();
            self.unindex(&c);
            closed.push(c);
        }
        closed
    }

    fn user_mut(&mut self, id: &UserId, now: DateTime<Utc>) -> &mut UserState {
        self.users.entry(id.clone()).or_insert_with(|| UserState::new(id.clone(), now))
    }

    fn purge_closed(&mut self, now: DateTime<Utc>) {
        let cutoff = now - Duration::seconds(CLOSED_ROOM_KEEP_S);
        self.rooms.retain(|_, c| c.is_open() || c.updated_at >= cutoff);
        let now = Instant::now();
        self.records.retain(|_, (_, until)| *until > now);
    }
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic under the lock is a bug; the data is still consistent per step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn user(&self, id: &UserId) -> Result<Option<UserState>> {
        Ok(self.lock().users.get(id).cloned())
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

    async fn room(&self, id: &RoomId) -> Result<Option<Connection>> {
        Ok(self.lock().rooms.get(id).cloned())
    }

    async fn camera_on(&self, id: &UserId, meta: Option<serde_json::Value>, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<UserState> {
        let mut inner = self.lock();
        if !inner.sessions.contains_key(id) {
            inner.expiries.insert(id.clone(), expire_at);
        }
        let u = inner.user_mut(id, now);
        u.camera_on(meta, now);
        Ok(u.clone())
    }

    async fn camera_off(&self, id: &UserId, now: DateTime<Utc>) -> Result<Change> {
        let mut inner = self.lock();
        let Some(u) = inner.users.get_mut(id) else { return Ok(Change::default()) };
        if !u.camera_off(now) {
            return Ok(Change::default());
        }
        let user = Some(u.clone());
        let closed = inner.close_rooms(id, Role::Owner, "camera_off", now);
        Ok(Change { user, closed })
    }

    async fn show(&self, owner: &UserId, abonent: &UserId, max_viewers: usize, now: DateTime<Utc>) -> Result<Show> {
        let mut inner = self.lock();
        let o = inner.users.get(owner).ok_or(Error::UserNotFound)?;
        if o.camera != Camera::On {
            return Err(Error::CameraOff);
        }
        let mut viewers = 0;
        for id in inner.open.get(owner).into_iter().flatten() {
            let c = &inner.rooms[id];
            if c.owner == *owner {
                if c.abonent == *abonent {
                    return Ok(Show::Existing(c.clone()));
                }
                viewers += 1;
            }
        }
        if viewers >= max_viewers {
            return Err(Error::TooManyViewers);
        }
        inner.purge_closed(now);
        let c = Connection::new(owner.clone(), abonent.clone(), now);
        for u in [owner, abonent] {
            inner.open.entry(u.clone()).or_default().insert(c.room_id.clone());
        }
        inner.rooms.insert(c.room_id.clone(), c.clone());
        Ok(Show::Created(c))
    }

    async fn update_room(&self, id: &RoomId, op: RoomOp<'_>) -> Result<(Connection, Role)> {
        let mut inner = self.lock();
        let c = inner.rooms.get(id).ok_or(Error::RoomNotFound)?;
        // Apply to a copy so that a refused op leaves nothing behind.
        let mut next = c.clone();
        let to = op(&mut next)?;
        if !next.is_open() {
            inner.unindex(&next);
        }
        inner.rooms.insert(id.clone(), next.clone());
        Ok((next, to))
    }

    async fn session_opened(&self, user: &UserId, session: &SessionId, _node: &str, now: DateTime<Utc>) -> Result<Option<UserState>> {
        let mut inner = self.lock();
        inner.sessions.entry(user.clone()).or_default().insert(session.clone());
        inner.expiries.remove(user);
        let u = inner.user_mut(user, now);
        Ok(u.set_online(true, now).then(|| u.clone()))
    }

    async fn session_closed(&self, user: &UserId, session: &SessionId, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<Option<UserState>> {
        let mut inner = self.lock();
        let Some(set) = inner.sessions.get_mut(user) else { return Ok(None) };
        if !set.remove(session) || !set.is_empty() {
            return Ok(None);
        }
        inner.sessions.remove(user);
        inner.expiries.insert(user.clone(), expire_at);
        let u = inner.user_mut(user, now);
        Ok(u.set_online(false, now).then(|| u.clone()))
    }

    async fn claim_expired(&self, now: DateTime<Utc>) -> Result<Vec<UserId>> {
        let mut inner = self.lock();
        let due: Vec<UserId> = inner.expiries.iter().filter(|(_, at)| **at <= now).map(|(u, _)| u.clone()).collect();
        for u in &due {
            inner.expiries.remove(u);
        }
        Ok(due)
    }

    async fn expire(&self, user: &UserId, now: DateTime<Utc>) -> Result<Change> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(user) {
            return Ok(Change::default());
        }
        let mut change = Change::default();
        if let Some(u) = inner.users.get_mut(user)
            && u.camera_off(now)
        {
            change.user = Some(u.clone());
        }
        change.closed = inner.close_rooms(user, Role::Owner, "camera_off", now);
        change.closed.extend(inner.close_rooms(user, Role::Abonent, "gone", now));
        Ok(change)
    }

    async fn close_idle(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Connection>> {
        let mut inner = self.lock();
        let idle: Vec<RoomId> = inner.rooms.values().filter(|c| c.is_idle(cutoff)).map(|c| c.room_id.clone()).collect();
        let mut closed = Vec::with_capacity(idle.len());
        for id in idle {
            let c = inner.rooms.get_mut(&id).expect("listed above");
            c.close("timeout", now);
            let c = c.clone();
            inner.unindex(&c);
            closed.push(c);
        }
        inner.purge_closed(now);
        Ok(closed)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn record_once(&self, user: &UserId, key: &str, value: &str, ttl: std::time::Duration) -> Result<Option<String>> {
        let mut inner = self.lock();
        let now = Instant::now();
        let k = (user.clone(), key.to_owned());
        if let Some((v, until)) = inner.records.get(&k)
            && *until > now
        {
            return Ok(Some(v.clone()));
        }
        inner.records.insert(k, (value.to_owned(), now + ttl));
        Ok(None)
    }

    async fn record(&self, user: &UserId, key: &str, value: &str, ttl: std::time::Duration) -> Result<()> {
        self.lock().records.insert((user.clone(), key.to_owned()), (value.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn forget_record(&self, user: &UserId, key: &str) -> Result<()> {
        self.lock().records.remove(&(user.clone(), key.to_owned()));
        Ok(())
    }
}
