//! The shared store on Redis, for many nodes.
//!
//! A `Read` is one `read.lua` call; a `Step` is one `commit.lua` call, which
//! checks the step's guards and then writes the state, appends each event to
//! its recipient's log and publishes it, and keeps the idempotent answer, all
//! inside one script: atomic, and one round trip. No WATCH, no MULTI.
//! The keys are in `crate::redis::keys`.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::Value;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

use super::{
    CLOSED_ROOM_KEEP_S, Commit, Guard, MeetingRead, RECORD_KEEP_S, Read, RoomRead, Snapshot, Step, Store, UserPage, UserQuery, listed,
};
use crate::broker::LogBounds;
use crate::domain::meeting::pair_key;
use crate::domain::{Connection, ConnState, MeetingId, RoomId, SessionId, UserId, UserState};
use crate::error::{Error, Result};
use crate::redis::step::Program;
use crate::redis::{Keys, Redis, keys::SEP};

/// `update_user` entries kept for catching up after a pub/sub gap.
pub const PRESENCE_LOG_MAX: usize = 10_000;

pub struct RedisStore {
    r: Arc<Redis>,
    bounds: LogBounds,
    /// `super::claim_hold`, in ms.
    claim_hold_ms: i64,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Unexpected(anyhow::anyhow!("unexpected value in Redis: {what}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Result<usize> {
    match v {
        Value::Int(i) => Ok(*i as usize),
        other => Err(corrupt(format!("{other:?} is not a count"))),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

/// A flat `HGETALL` answer as a map.
fn hash(v: &Value) -> HashMap<String, String> {
    items(v).chunks(2).filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?))).collect()
}

fn json<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(corrupt)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values serialize")
}

fn user_of(h: &HashMap<String, String>) -> Result<Option<UserState>> {
    h.get("doc").map(|d| json(d)).transpose()
}

fn meeting_of(h: &HashMap<String, String>) -> Result<Option<MeetingRead>> {
    let Some(doc) = h.get("doc") else { return Ok(None) };
    let rev = h.get("rev").and_then(|r| r.parse().ok()).unwrap_or(0);
    Ok(Some(MeetingRead { meeting: json(doc)?, rev }))
}

fn room_of(h: &HashMap<String, String>) -> Result<Option<RoomRead>> {
    let Some(doc) = h.get("doc") else { return Ok(None) };
    let mut room: Connection = json(doc)?;
    // ICE touches `t` without rewriting the document.
    if let Some(t) = h.get("t").and_then(|t| t.parse::<i64>().ok()).and_then(|t| Utc.timestamp_millis_opt(t).single()) {
        room.updated_at = room.updated_at.max(t);
    }
    let rev = h.get("rev").and_then(|r| r.parse().ok()).unwrap_or(0);
    Ok(Some(RoomRead { room, rev }))
}

impl RedisStore {
    pub fn new(r: Arc<Redis>, bounds: LogBounds, claim_hold: std::time::Duration) -> Self {
        Self { r, bounds, claim_hold_ms: claim_hold.as_millis() as i64 }
    }

    fn keys(&self) -> &Keys {
        &self.r.keys
    }

    /// The commit program of a step: guards first, then writes, records and events.
    fn compile(&self, step: &Step) -> Program {
        let k = self.keys();
        let mut p = Program::new();
        if self.r.is_cluster() {
            p.op("sharded");
        }
        for g in &step.guards {
            match g {
                Guard::Fresh(u, key) => p.op("fresh").key(k.kept(u)).key(k.records(u)).arg(key.as_str()).arg(RECORD_KEEP_S * 1000),
                Guard::User(u, v) => p.op("feq").key(k.user(u)).arg("v").arg(v),
                Guard::Room(r, rev) => p.op("feq").key(k.room(r)).arg("rev").arg(rev),
                Guard::Open(r) => p.op("open").key(k.room(r)),
                Guard::Sessions(u, n) => p.op("len").key(k.sessions(u)).arg(n),
                Guard::Owned(u, n) => p.op("len").key(k.viewers(u)).arg(n),
                Guard::Watched(u, n) => p.op("len").key(k.watching(u)).arg(n),
                Guard::CanShow { owner, abonent, max } => p.op("canshow").key(k.viewers(owner)).arg(abonent).arg(max),
                Guard::HasSession(u, s) => p.op("has").key(k.sessions(u)).arg(s),
                Guard::Meeting(m, rev) => p.op("feq").key(k.meeting(m)).arg("rev").arg(rev),
                Guard::Created(u, n) => p.op("alive").key(k.created(u)).arg(n),
            };
        }
        for u in &step.users {
            p.op("hset").key(k.user(&u.user_id)).arg(2).arg("doc").arg(to_json(u)).arg("v").arg(u.version);
            p.op("zadd").key(k.users()).arg(0).arg(&u.user_id);
        }
        for (r, created) in &step.rooms {
            let (rk, id, open) = (k.room(&r.room_id), r.room_id.as_str(), r.is_open());
            p.op("hset").key(rk.clone()).arg(1).arg("doc").arg(to_json(r));
            p.op("hincr").key(rk.clone()).arg("rev");
            if *created {
                p.op("hset").key(rk.clone()).arg(1).arg("open").arg(1);
            }
            if !open {
                p.op("hdel").key(rk.clone()).arg("open");
                p.op("pexpire").key(rk).arg(CLOSED_ROOM_KEEP_S * 1000);
            }
            match &r.meeting_id {
                // A meeting's pair: indexed by its meeting, never idle-closed.
                Some(m) => {
                    let pair = pair_key(&r.owner, &r.abonent);
                    if *created {
                        p.op("hset").key(k.meeting_pairs(m)).arg(1).arg(&pair).arg(id);
                    }
                    if !open {
                        p.op("hdel").key(k.meeting_pairs(m)).arg(&pair);
                    }
                }
                None => {
                    if *created {
                        p.op("hset").key(k.viewers(&r.owner)).arg(1).arg(&r.abonent).arg(id);
                        p.op("hset").key(k.watching(&r.abonent)).arg(1).arg(&r.owner).arg(id);
                    }
                    if !open {
                        p.op("hdel").key(k.viewers(&r.owner)).arg(&r.abonent);
                        p.op("hdel").key(k.watching(&r.abonent)).arg(&r.owner);
                    }
                    if open && matches!(r.state, ConnState::Requested | ConnState::Offered) {
                        p.op("zadd").key(k.negotiating()).arg(ms(r.updated_at)).arg(id);
                    } else {
                        p.op("zrem").key(k.negotiating()).arg(id);
                    }
                }
            }
        }
        // Before the meeting's own writes, which date it in this set.
        if let Some((u, m)) = &step.created {
            p.op("created").key(k.created(u)).arg(m);
        }
        for w in &step.meetings {
            let (mk, pk) = (k.meeting(&w.meeting.meeting_id), k.meeting_pairs(&w.meeting.meeting_id));
            p.op("hset").key(mk.clone()).arg(1).arg("doc").arg(to_json(&w.meeting));
            p.op("hincr").key(mk.clone()).arg("rev");
            let gone = w.gone_after.map_or(String::new(), |d| d.as_millis().to_string());
            match w.gone_after {
                Some(d) => {
                    p.op("pexpire").key(mk).arg(d.as_millis());
                    p.op("pexpire").key(pk).arg(d.as_millis());
                }
                None => {
                    p.op("persist").key(mk);
                    p.op("persist").key(pk);
                }
            }
            // The creator's count of meetings not gone, by the same date.
            p.op("gone").key(k.created(&w.meeting.created_by)).arg(&w.meeting.meeting_id).arg(gone);
        }
        for (u, m, joined) in &step.memberships {
            if *joined {
                p.op("hset").key(k.memberships(u)).arg(1).arg(m).arg(1);
            } else {
                p.op("hdel").key(k.memberships(u)).arg(m);
            }
        }
        if let Some((r, _)) = &step.touch {
            p.op("touch").key(k.room(r)).key(k.negotiating()).arg(r);
        }
        for w in &step.sessions {
            let member = Keys::node_session_member(&w.user, &w.session);
            if w.open {
                p.op("hset").key(k.sessions(&w.user)).arg(1).arg(&w.session).arg(&w.node);
                p.op("sadd").key(k.lease_sessions(&w.node)).arg(member);
            } else {
                p.op("hdel").key(k.sessions(&w.user)).arg(&w.session);
                p.op("srem").key(k.lease_sessions(&w.node)).arg(member);
            }
        }
        for (u, at) in &step.expiries {
            match at {
                Some(at) => p.op("zadd").key(k.expiries()).arg(ms(*at)).arg(u),
                None => p.op("zrem").key(k.expiries()).arg(u),
            };
        }
        for (u, at) in &step.flaps {
            match at {
                Some(at) => p.op("zadd").key(k.flaps()).arg(ms(*at)).arg(u),
                None => p.op("zrem").key(k.flaps()).arg(u),
            };
        }
        for (u, at) in &step.forgets {
            match at {
                Some(at) => p.op("zadd").key(k.forgets()).arg(ms(*at)).arg(u),
                None => p.op("zrem").key(k.forgets()).arg(u),
            };
        }
        for u in &step.forget {
            p.op("del").key(k.user(u));
            p.op("del").key(k.created(u));
            p.op("zrem").key(k.users()).arg(u);
            p.op("zrem").key(k.forgets()).arg(u);
            p.op("zrem").key(k.flaps()).arg(u);
        }
        if let Some(kept) = &step.record {
            let u = &kept.user;
            p.op("keep")
                .key(k.kept(u))
                .key(k.records(u))
                .arg(kept.key.as_str())
                .arg(&kept.record)
                .arg(RECORD_KEEP_S * 1000)
                .arg(kept.per_user_max);
        }
        // Everyone hears the state change before its consequences (a camera
        // off before the hangups it causes), as the memory store sends them.
        for ev in &step.broadcast {
            let Some(user) = ev.presence_of() else { continue };
            p.op("plog").key(k.presence_log()).key(k.presence()).key(k.presence_of(user)).arg(step.accepted_us).arg(ev.to_json()).arg(PRESENCE_LOG_MAX);
        }
        for (to, ev) in &step.events {
            p.op("log").key(k.log(to)).key(k.channel(to)).arg(ev.name()).arg(step.accepted_us).arg(ev.to_json());
            p.arg(self.bounds.keep_max).arg(self.bounds.keep.as_millis() as u64);
        }
        p
    }

    async fn claim(&self, key: String) -> Result<Vec<(String, i64)>> {
        let args = [self.claim_hold_ms.to_string().into_bytes()];
        let flat: Vec<String> = self.r.run(&self.r.scripts.claim_due, &[key], &args).await?;
        Ok(flat.chunks(2).map(|p| (p[0].clone(), p[1].parse::<f64>().unwrap_or(0.0) as i64)).collect())
    }
}

/// What each read instruction is for, to file its answer.
enum Slot {
    User(UserId),
    Room(RoomId),
    Owned,
    Watched,
    Pair,
    Sessions,
    Record,
    Meeting(MeetingId),
    Pairs,
    MemberOf,
    Created,
    Time,
}

#[async_trait]
impl Store for RedisStore {
    async fn read(&self, q: &Read) -> Result<Snapshot> {
        let k = self.keys();
        let mut p = Program::new();
        let mut slots = Vec::new();
        for u in &q.users {
            p.op("hash").key(k.user(u));
            slots.push(Slot::User(u.clone()));
        }
        for r in &q.rooms {
            p.op("hash").key(k.room(r));
            slots.push(Slot::Room(r.clone()));
        }
        if let Some(u) = &q.owned_by {
            p.op("index").key(k.viewers(u)).arg(k.room_prefix());
            slots.push(Slot::Owned);
        }
        if let Some(u) = &q.watched_by {
            p.op("index").key(k.watching(u)).arg(k.room_prefix());
            slots.push(Slot::Watched);
        }
        if let Some((o, a)) = &q.pair {
            p.op("pair").key(k.viewers(o)).arg(a).arg(k.room_prefix());
            slots.push(Slot::Pair);
        }
        if let Some(u) = &q.sessions_of {
            p.op("hash").key(k.sessions(u));
            slots.push(Slot::Sessions);
        }
        if let Some((u, key)) = &q.record {
            p.op("kept").key(k.kept(u)).key(k.records(u)).arg(key.as_str()).arg(RECORD_KEEP_S * 1000);
            slots.push(Slot::Record);
        }
        for m in &q.meetings {
            p.op("hash").key(k.meeting(m));
            slots.push(Slot::Meeting(m.clone()));
        }
        if let Some(m) = &q.meeting_pairs {
            p.op("index").key(k.meeting_pairs(m)).arg(k.room_prefix());
            slots.push(Slot::Pairs);
        }
        if let Some(u) = &q.meetings_of {
            p.op("hash").key(k.memberships(u));
            slots.push(Slot::MemberOf);
        }
        if let Some(u) = &q.created_by {
            p.op("alive").key(k.created(u));
            slots.push(Slot::Created);
        }
        let mut s = Snapshot::default();
        if p.is_empty() {
            // Nothing read, nothing decided on: the time is only for what the step writes.
            s.now = Utc::now();
            return Ok(s);
        }
        // Redis's clock, in the same round trip: the step's time.
        p.op("time");
        slots.push(Slot::Time);
        let out: Vec<Value> = self.r.run(&self.r.scripts.read, p.keys(), p.args()).await?;
        let rooms = |v: &Value| -> Result<Vec<RoomRead>> { Ok(items(v).iter().map(|h| room_of(&hash(h))).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect()) };
        for (slot, v) in slots.into_iter().zip(out.iter()) {
            match slot {
                Slot::User(u) => {
                    if let Some(x) = user_of(&hash(v))? {
                        s.users.insert(u, x);
                    }
                }
                Slot::Room(r) => {
                    if let Some(x) = room_of(&hash(v))? {
                        s.rooms.insert(r, x);
                    }
                }
                Slot::Owned => s.owned = rooms(v)?,
                Slot::Watched => s.watched = rooms(v)?,
                Slot::Pair => {
                    let parts = items(v);
                    s.viewers = parts.first().map(int).transpose()?.unwrap_or(0);
                    s.pair_room = parts.get(1).map(|h| room_of(&hash(h))).transpose()?.flatten();
                }
                Slot::Sessions => s.sessions = hash(v).into_iter().map(|(id, node)| (SessionId::from_string(id), node)).collect(),
                Slot::Record => s.record = text(v).filter(|t| !t.is_empty()),
                Slot::Meeting(m) => {
                    if let Some(x) = meeting_of(&hash(v))? {
                        s.meetings.insert(m, x);
                    }
                }
                Slot::Pairs => s.pairs = rooms(v)?,
                Slot::Created => s.created = int(v)?,
                Slot::Time => {
                    // TIME answers two strings: seconds and microseconds.
                    let part = |i: usize| items(v).get(i).and_then(text).and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| corrupt(format!("TIME answered {v:?}")));
                    s.now = Utc.timestamp_micros(part(0)? * 1_000_000 + part(1)?).single().ok_or_else(|| corrupt("TIME out of range"))?;
                }
                Slot::MemberOf => s.member_of = hash(v).into_keys().filter_map(|m| MeetingId::parse(&m).ok()).collect(),
            }
        }
        Ok(s)
    }

    async fn commit(&self, step: &Step) -> Result<Commit> {
        let p = self.compile(step);
        if p.keys().is_empty() {
            return Ok(Commit::Done);
        }
        let out: Vec<Value> = self.r.run_step(&self.r.scripts.commit, p.keys(), p.args()).await?;
        match out.first().and_then(text).as_deref() {
            Some("ok") => Ok(Commit::Done),
            Some("conflict") => Ok(Commit::Conflict),
            Some("closed") => Ok(Commit::Closed),
            Some("missing") => Ok(Commit::Missing),
            Some("recorded") => Ok(Commit::Recorded(out.get(1).and_then(text).unwrap_or_default())),
            _ => Err(corrupt(format!("commit answered {out:?}"))),
        }
    }

    async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        let k = self.keys();
        let batch = (q.limit * 2).max(100);
        let mut start = match &q.after {
            Some(a) => format!("({a}"),
            None => "-".into(),
        };
        let mut users = Vec::new();
        loop {
            let ids: Vec<String> = self.r.query(redis::cmd("ZRANGE").arg(k.users()).arg(&start).arg("+").arg("BYLEX").arg("LIMIT").arg(0).arg(batch)).await?;
            if !ids.is_empty() {
                let read = Read { users: ids.iter().filter_map(|id| UserId::parse(id).ok()).collect(), ..Read::default() };
                let snap = self.read(&read).await?;
                for id in &read.users {
                    if let Some(u) = snap.users.get(id)
                        && listed(u, q.camera)
                    {
                        users.push(u.clone());
                    }
                }
            }
            if users.len() > q.limit || ids.len() < batch {
                break;
            }
            start = format!("({}", ids.last().expect("a full batch"));
        }
        Ok(UserPage::from_overfetch(users, q.limit))
    }

    async fn claim_expired(&self) -> Result<Vec<UserId>> {
        let due = self.claim(self.keys().expiries()).await?;
        Ok(due.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn claim_flaps(&self) -> Result<Vec<UserId>> {
        let due = self.claim(self.keys().flaps()).await?;
        Ok(due.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn claim_forgettable(&self) -> Result<Vec<UserId>> {
        let due = self.claim(self.keys().forgets()).await?;
        Ok(due.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn idle_rooms(&self, idle: std::time::Duration) -> Result<Vec<RoomId>> {
        let args = [idle.as_millis().to_string().into_bytes()];
        let ids: Vec<String> = self.r.run(&self.r.scripts.idle, &[self.keys().negotiating()], &args).await?;
        Ok(ids.iter().filter_map(|id| RoomId::parse(id).ok()).collect())
    }

    /// A write, not a PING: a Redis that answers but refuses writes
    /// (maxmemory, a read-only replica) cannot serve either.
    async fn ping(&self) -> Result<()> {
        self.r.query::<()>(redis::cmd("SET").arg(self.keys().ready()).arg(1).arg("PX").arg(10_000)).await
    }

    async fn renew_lease(&self, lease: &str, valid: std::time::Duration, held_until: Option<DateTime<Utc>>) -> Result<(bool, DateTime<Utc>)> {
        let held = held_until.map(|t| ms(t).to_string()).unwrap_or_default();
        let args = [lease.as_bytes().to_vec(), valid.as_millis().to_string().into_bytes(), held.into_bytes()];
        let (kept, until): (i64, i64) = self.r.run(&self.r.scripts.lease, &[self.keys().leases()], &args).await?;
        let until = Utc.timestamp_millis_opt(until).single().ok_or_else(|| corrupt("lease end out of range"))?;
        Ok((kept == 1, until))
    }

    async fn leases(&self) -> Result<Vec<String>> {
        self.r.query(redis::cmd("ZRANGE").arg(self.keys().leases()).arg(0).arg(-1)).await
    }

    async fn claim_dead_leases(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let dead = self.claim(self.keys().leases()).await?;
        Ok(dead.into_iter().filter_map(|(n, at)| Some((n, Utc.timestamp_millis_opt(at).single()?))).collect())
    }

    async fn lease_sessions(&self, lease: &str) -> Result<Vec<(UserId, SessionId)>> {
        let all: Vec<String> = self.r.query(redis::cmd("SMEMBERS").arg(self.keys().lease_sessions(lease))).await?;
        Ok(all
            .iter()
            .filter_map(|e| e.split_once(SEP))
            .filter_map(|(u, s)| Some((UserId::parse(u).ok()?, SessionId::from_string(s.to_owned()))))
            .collect())
    }

    async fn forget_lease(&self, lease: &str) -> Result<()> {
        let k = self.keys();
        self.r.pipe(redis::pipe().atomic().cmd("ZREM").arg(k.leases()).arg(lease).ignore().cmd("DEL").arg(k.lease_sessions(lease)).ignore()).await
    }
}
