//! The shared store on Redis, for many nodes.
//!
//! Every method is one optimistic transaction: WATCH the keys it reads, apply
//! the same pure `domain` rules as the memory store, then MULTI/EXEC; a
//! concurrent change on another node aborts EXEC and the step runs again.
//! Every call is bounded by `OP_TIMEOUT`, so an unreachable Redis answers
//! `unavailable` at once instead of hanging.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use deadpool_redis::{Connection, Pool};
use redis::{Pipeline, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

use super::{Change, RoomOp, Show, Store, UserPage, UserQuery, listed};
use crate::domain::{Camera, ConnState, Connection as Room, Role, RoomId, SessionId, UserId, UserState};
use crate::error::{Error, Result};

/// Longest any store call may take before it counts as unreachable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Optimistic retries before a step gives up under contention.
const MAX_TRIES: usize = 32;
/// How long a closed room stays readable.
const CLOSED_ROOM_KEEP_S: u64 = 600;

const USERS: &str = "camsig:users";
const EXPIRIES: &str = "camsig:expiries";
const NODES: &str = "camsig:nodes";
const NEGOTIATING: &str = "camsig:negotiating";

fn user_key(u: &UserId) -> String {
    format!("camsig:user:{u}")
}
fn room_key(r: &RoomId) -> String {
    format!("camsig:room:{r}")
}
fn open_key(u: &UserId) -> String {
    format!("camsig:open:{u}")
}
fn sessions_key(u: &UserId) -> String {
    format!("camsig:sessions:{u}")
}
/// User ids hold no spaces, so the space keeps (user, key) pairs apart.
fn record_key(u: &UserId, key: &str) -> String {
    format!("camsig:idem:{u}{SEP}{key}")
}

fn node_sessions_key(node: &str) -> String {
    format!("camsig:node:{node}:sessions")
}
/// A node's session list holds `user SEP session`; neither may contain it.
const SEP: char = ' ';

pub fn redis_error(e: redis::RedisError) -> Error {
    Error::unavailable(e)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values serialize")
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Unexpected(anyhow::anyhow!("corrupt value in Redis: {e}")))
}

async fn watch(c: &mut Connection, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    redis::cmd("WATCH").arg(keys).query_async::<()>(c).await.map_err(redis_error)
}

/// WATCH `key` and read it, in one round trip.
async fn watch_get<T: DeserializeOwned>(c: &mut Connection, key: &str) -> Result<Option<T>> {
    let (s,): (Option<String>,) = redis::pipe().cmd("WATCH").arg(key).ignore().cmd("GET").arg(key).query_async(c).await.map_err(redis_error)?;
    s.as_deref().map(from_json).transpose()
}

async fn get<T: DeserializeOwned>(c: &mut Connection, key: &str) -> Result<Option<T>> {
    let s: Option<String> = redis::cmd("GET").arg(key).query_async(c).await.map_err(redis_error)?;
    s.as_deref().map(from_json).transpose()
}

async fn mget<T: DeserializeOwned>(c: &mut Connection, keys: &[String]) -> Result<Vec<Option<T>>> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let vals: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query_async(c).await.map_err(redis_error)?;
    vals.iter().map(|v| v.as_deref().map(from_json).transpose()).collect()
}

async fn members(c: &mut Connection, key: &str) -> Result<Vec<String>> {
    redis::cmd("SMEMBERS").arg(key).query_async(c).await.map_err(redis_error)
}

/// Runs the MULTI/EXEC; false when a watched key changed (run the step again).
async fn exec(c: &mut Connection, p: &Pipeline) -> Result<bool> {
    let r: Option<redis::Value> = p.query_async(c).await.map_err(redis_error)?;
    Ok(r.is_some())
}

/// Writes a room and keeps the open and negotiating indexes true to its state.
fn write_room(p: &mut Pipeline, r: &Room) {
    let key = room_key(&r.room_id);
    if r.is_open() {
        p.cmd("SET").arg(&key).arg(to_json(r)).ignore();
        if matches!(r.state, ConnState::Requested | ConnState::Offered) {
            p.cmd("ZADD").arg(NEGOTIATING).arg(ms(r.updated_at)).arg(r.room_id.as_str()).ignore();
        } else {
            p.cmd("ZREM").arg(NEGOTIATING).arg(r.room_id.as_str()).ignore();
        }
    } else {
        p.cmd("SET").arg(&key).arg(to_json(r)).arg("EX").arg(CLOSED_ROOM_KEEP_S).ignore();
        p.cmd("ZREM").arg(NEGOTIATING).arg(r.room_id.as_str()).ignore();
        for u in [&r.owner, &r.abonent] {
            p.cmd("SREM").arg(open_key(u)).arg(r.room_id.as_str()).ignore();
        }
    }
}

fn write_user(p: &mut Pipeline, u: &UserState) {
    p.cmd("SET").arg(user_key(&u.user_id)).arg(to_json(u)).ignore();
    p.cmd("ZADD").arg(USERS).arg(0).arg(u.user_id.as_str()).ignore();
}

/// Watches and reads the user's open rooms (the open set must already be watched).
async fn open_rooms(c: &mut Connection, user: &UserId) -> Result<Vec<Room>> {
    let ids = members(c, &open_key(user)).await?;
    let keys: Vec<String> = ids.iter().map(|id| format!("camsig:room:{id}")).collect();
    watch(c, &keys).await?;
    Ok(mget::<Room>(c, &keys).await?.into_iter().flatten().filter(Room::is_open).collect())
}

/// Closes the rooms where `user` has `role`, into `p`.
fn close_rooms(p: &mut Pipeline, rooms: &[Room], user: &UserId, role: Role, reason: &str, now: DateTime<Utc>) -> Vec<Room> {
    let mut closed = Vec::new();
    for r in rooms.iter().filter(|r| r.role_of(user) == Some(role)) {
        let mut r = r.clone();
        r.close(reason, now);
        write_room(p, &r);
        closed.push(r);
    }
    closed
}

/// Pops members of a sorted set scored at most `max`: each goes to one caller.
const CLAIM_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 500)
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
";

/// Runs `$body` (with `$c: &mut Connection`) until its EXEC goes through,
/// bounded by `OP_TIMEOUT`. The body returns `Ok(None)` when EXEC was aborted
/// by a concurrent change on a watched key, and the step runs again.
macro_rules! atomically {
    ($store:expr, |$c:ident| $body:block) => {
        $store
            .bounded(async {
                let mut conn = $store.conn().await?;
                for _ in 0..MAX_TRIES {
                    let step = async {
                        let $c: &mut Connection = &mut conn;
                        $body
                    }
                    .await;
                    match step {
                        Ok(Some(t)) => return Ok(t),
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = redis::cmd("UNWATCH").query_async::<()>(&mut conn).await;
                            return Err(e);
                        }
                    }
                }
                Err(Error::Unexpected(anyhow::anyhow!("gave up after {MAX_TRIES} conflicting tries")))
            })
            .await
    };
}

pub struct RedisStore {
    pool: Pool,
    claim_due: Script,
}

impl RedisStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool, claim_due: Script::new(CLAIM_DUE) }
    }

    async fn conn(&self) -> Result<Connection> {
        self.pool.get().await.map_err(Error::unavailable)
    }

    /// Bounds a call by `OP_TIMEOUT`.
    async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(OP_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(Error::unavailable(anyhow::anyhow!("Redis did not answer in {OP_TIMEOUT:?}"))))
    }

    async fn claim(&self, key: &'static str, now: DateTime<Utc>) -> Result<Vec<(String, i64)>> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let flat: Vec<String> = self.claim_due.key(key).arg(ms(now)).invoke_async(&mut c).await.map_err(redis_error)?;
            Ok(flat.chunks(2).map(|p| (p[0].clone(), p[1].parse::<f64>().unwrap_or(0.0) as i64)).collect())
        })
        .await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn user(&self, id: &UserId) -> Result<Option<UserState>> {
        self.bounded(async { get(&mut self.conn().await?, &user_key(id)).await }).await
    }

    async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let batch = (q.limit * 2).max(100);
            let mut start = match &q.after {
                Some(a) => format!("({a}"),
                None => "-".into(),
            };
            let mut users = Vec::new();
            loop {
                let ids: Vec<String> = redis::cmd("ZRANGE").arg(USERS).arg(&start).arg("+").arg("BYLEX").arg("LIMIT").arg(0).arg(batch)
                    .query_async(&mut c).await.map_err(redis_error)?;
                let keys: Vec<String> = ids.iter().map(|id| format!("camsig:user:{id}")).collect();
                for u in mget::<UserState>(&mut c, &keys).await?.into_iter().flatten() {
                    if listed(&u, q.camera) {
                        users.push(u);
                    }
                }
                if users.len() > q.limit || ids.len() < batch {
                    break;
                }
                start = format!("({}", ids.last().expect("a full batch"));
            }
            Ok(UserPage::from_overfetch(users, q.limit))
        })
        .await
    }

    async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        self.bounded(async { get(&mut self.conn().await?, &room_key(id)).await }).await
    }

    async fn camera_on(&self, id: &UserId, meta: Option<serde_json::Value>, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<UserState> {
        atomically!(self, |c| {
                let (uk, sk) = (user_key(id), sessions_key(id));
                watch(c, &[uk.clone(), sk.clone()]).await?;
                let mut u = get::<UserState>(c, &uk).await?.unwrap_or_else(|| UserState::new(id.clone(), now));
                let sessions: usize = redis::cmd("HLEN").arg(&sk).query_async(c).await.map_err(redis_error)?;
                u.camera_on(meta.clone(), now);
                let mut p = redis::pipe();
                p.atomic();
                write_user(&mut p, &u);
                if sessions == 0 {
                    p.cmd("ZADD").arg(EXPIRIES).arg(ms(expire_at)).arg(id.as_str()).ignore();
                }
                Ok(exec(c, &p).await?.then_some(u))
        })
    }

    async fn camera_off(&self, id: &UserId, now: DateTime<Utc>) -> Result<Change> {
        atomically!(self, |c| {
                let uk = user_key(id);
                watch(c, &[uk.clone(), open_key(id)]).await?;
                let Some(mut u) = get::<UserState>(c, &uk).await? else {
                    redis::cmd("UNWATCH").query_async::<()>(c).await.map_err(redis_error)?;
                    return Ok(Some(Change::default()));
                };
                if !u.camera_off(now) {
                    redis::cmd("UNWATCH").query_async::<()>(c).await.map_err(redis_error)?;
                    return Ok(Some(Change::default()));
                }
                let rooms = open_rooms(c, id).await?;
                let mut p = redis::pipe();
                p.atomic();
                write_user(&mut p, &u);
                let closed = close_rooms(&mut p, &rooms, id, Role::Owner, "camera_off", now);
                Ok(exec(c, &p).await?.then_some(Change { user: Some(u), closed }))
        })
    }

    async fn show(&self, owner: &UserId, abonent: &UserId, max_viewers: usize, now: DateTime<Utc>) -> Result<Show> {
        atomically!(self, |c| {
                let uk = user_key(owner);
                watch(c, &[uk.clone(), open_key(owner)]).await?;
                let o = get::<UserState>(c, &uk).await?.ok_or(Error::UserNotFound)?;
                if o.camera != Camera::On {
                    return Err(Error::CameraOff);
                }
                let rooms = open_rooms(c, owner).await?;
                let owned: Vec<&Room> = rooms.iter().filter(|r| r.owner == *owner).collect();
                if let Some(r) = owned.iter().find(|r| r.abonent == *abonent) {
                    redis::cmd("UNWATCH").query_async::<()>(c).await.map_err(redis_error)?;
                    return Ok(Some(Show::Existing((*r).clone())));
                }
                if owned.len() >= max_viewers {
                    return Err(Error::TooManyViewers);
                }
                let r = Room::new(owner.clone(), abonent.clone(), now);
                let mut p = redis::pipe();
                p.atomic();
                write_room(&mut p, &r);
                for u in [owner, abonent] {
                    p.cmd("SADD").arg(open_key(u)).arg(r.room_id.as_str()).ignore();
                }
                Ok(exec(c, &p).await?.then_some(Show::Created(r)))
        })
    }

    async fn update_room(&self, id: &RoomId, op: RoomOp<'_>) -> Result<(Room, Role)> {
        let key = room_key(id);
        atomically!(self, |c| {
            let mut r = watch_get::<Room>(c, &key).await?.ok_or(Error::RoomNotFound)?;
            let to = op(&mut r)?;
            let mut p = redis::pipe();
            p.atomic();
            write_room(&mut p, &r);
            Ok(exec(c, &p).await?.then_some((r, to)))
        })
    }

    async fn session_opened(&self, user: &UserId, session: &SessionId, node: &str, now: DateTime<Utc>) -> Result<Option<UserState>> {
        atomically!(self, |c| {
                let (uk, sk) = (user_key(user), sessions_key(user));
                watch(c, &[uk.clone(), sk.clone()]).await?;
                let mut u = get::<UserState>(c, &uk).await?.unwrap_or_else(|| UserState::new(user.clone(), now));
                let changed = u.set_online(true, now);
                let mut p = redis::pipe();
                p.atomic();
                p.cmd("HSET").arg(&sk).arg(session.as_str()).arg(node).ignore();
                p.cmd("SADD").arg(node_sessions_key(node)).arg(format!("{user}{SEP}{session}")).ignore();
                p.cmd("ZREM").arg(EXPIRIES).arg(user.as_str()).ignore();
                write_user(&mut p, &u);
                Ok(exec(c, &p).await?.then(|| changed.then_some(u)))
        })
    }

    async fn session_closed(&self, user: &UserId, session: &SessionId, now: DateTime<Utc>, expire_at: DateTime<Utc>) -> Result<Option<UserState>> {
        atomically!(self, |c| {
                let (uk, sk) = (user_key(user), sessions_key(user));
                watch(c, &[uk.clone(), sk.clone()]).await?;
                let node: Option<String> = redis::cmd("HGET").arg(&sk).arg(session.as_str()).query_async(c).await.map_err(redis_error)?;
                let Some(node) = node else {
                    redis::cmd("UNWATCH").query_async::<()>(c).await.map_err(redis_error)?;
                    return Ok(Some(None));
                };
                let left: usize = redis::cmd("HLEN").arg(&sk).query_async(c).await.map_err(redis_error)?;
                let mut p = redis::pipe();
                p.atomic();
                p.cmd("HDEL").arg(&sk).arg(session.as_str()).ignore();
                p.cmd("SREM").arg(node_sessions_key(&node)).arg(format!("{user}{SEP}{session}")).ignore();
                let mut offline = None;
                if left <= 1 {
                    p.cmd("ZADD").arg(EXPIRIES).arg(ms(expire_at)).arg(user.as_str()).ignore();
                    if let Some(mut u) = get::<UserState>(c, &uk).await?
                        && u.set_online(false, now)
                    {
                        write_user(&mut p, &u);
                        offline = Some(u);
                    }
                }
                Ok(exec(c, &p).await?.then_some(offline))
        })
    }

    async fn claim_expired(&self, now: DateTime<Utc>) -> Result<Vec<UserId>> {
        let due = self.claim(EXPIRIES, now).await?;
        Ok(due.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn expire(&self, user: &UserId, now: DateTime<Utc>) -> Result<Change> {
        atomically!(self, |c| {
                let (uk, sk) = (user_key(user), sessions_key(user));
                watch(c, &[uk.clone(), sk.clone(), open_key(user)]).await?;
                let sessions: usize = redis::cmd("HLEN").arg(&sk).query_async(c).await.map_err(redis_error)?;
                if sessions > 0 {
                    redis::cmd("UNWATCH").query_async::<()>(c).await.map_err(redis_error)?;
                    return Ok(Some(Change::default()));
                }
                let mut p = redis::pipe();
                p.atomic();
                let mut change = Change::default();
                if let Some(mut u) = get::<UserState>(c, &uk).await?
                    && u.camera_off(now)
                {
                    write_user(&mut p, &u);
                    change.user = Some(u);
                }
                let rooms = open_rooms(c, user).await?;
                change.closed = close_rooms(&mut p, &rooms, user, Role::Owner, "camera_off", now);
                change.closed.extend(close_rooms(&mut p, &rooms, user, Role::Abonent, "gone", now));
                Ok(exec(c, &p).await?.then_some(change))
        })
    }

    async fn close_idle(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<Room>> {
        let ids: Vec<String> = self
            .bounded(async {
                let mut c = self.conn().await?;
                redis::cmd("ZRANGEBYSCORE").arg(NEGOTIATING).arg("-inf").arg(ms(cutoff)).arg("LIMIT").arg(0).arg(100)
                    .query_async(&mut c).await.map_err(redis_error)
            })
            .await?;
        let mut closed = Vec::new();
        for id in ids {
            let Ok(id) = RoomId::parse(&id) else { continue };
            let op = |r: &mut Room| {
                if !r.is_idle(cutoff) {
                    return Err(Error::RoomClosed);
                }
                r.close("timeout", now);
                Ok(Role::Owner)
            };
            match self.update_room(&id, &op).await {
                Ok((r, _)) => closed.push(r),
                // Another node closed it, or it moved on: nothing to do.
                Err(Error::RoomClosed | Error::RoomNotFound) => {
                    let _ = self.bounded(async {
                        let mut c = self.conn().await?;
                        redis::cmd("ZREM").arg(NEGOTIATING).arg(id.as_str()).query_async::<()>(&mut c).await.map_err(redis_error)
                    }).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(closed)
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(async { redis::cmd("PING").query_async::<()>(&mut self.conn().await?).await.map_err(redis_error) }).await
    }

    async fn record_once(&self, user: &UserId, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        self.bounded(async {
            let mut c = self.conn().await?;
            redis::cmd("SET").arg(record_key(user, key)).arg(value).arg("NX").arg("GET").arg("PX").arg(ttl.as_millis() as u64)
                .query_async(&mut c).await.map_err(redis_error)
        })
        .await
    }

    async fn record(&self, user: &UserId, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.bounded(async {
            let mut c = self.conn().await?;
            redis::cmd("SET").arg(record_key(user, key)).arg(value).arg("PX").arg(ttl.as_millis() as u64)
                .query_async(&mut c).await.map_err(redis_error)
        })
        .await
    }

    async fn forget_record(&self, user: &UserId, key: &str) -> Result<()> {
        self.bounded(async { redis::cmd("DEL").arg(record_key(user, key)).query_async(&mut self.conn().await?).await.map_err(redis_error) }).await
    }

    async fn renew_lease(&self, node: &str, until: DateTime<Utc>) -> Result<()> {
        self.bounded(async {
            let mut c = self.conn().await?;
            redis::cmd("ZADD").arg(NODES).arg(ms(until)).arg(node).query_async::<()>(&mut c).await.map_err(redis_error)
        })
        .await
    }

    async fn claim_dead_nodes(&self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>> {
        let dead = self.claim(NODES, now).await?;
        Ok(dead.into_iter().map(|(n, at)| (n, Utc.timestamp_millis_opt(at).single().unwrap_or(now))).collect())
    }

    async fn take_node_sessions(&self, node: &str) -> Result<Vec<(UserId, SessionId)>> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let all: Vec<String> = redis::cmd("SPOP").arg(node_sessions_key(node)).arg(100_000).query_async(&mut c).await.map_err(redis_error)?;
            Ok(all
                .iter()
                .filter_map(|e| e.split_once(SEP))
                .filter_map(|(u, s)| Some((UserId::parse(u).ok()?, SessionId::from_string(s.to_owned()))))
                .collect())
        })
        .await
    }
}
