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
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{
    CLOSED_ROOM_KEEP_S, Commit, Counter, DeadHook, Guard, HookEntry, MeetingRead, RECORD_KEEP_S, Read, RoomRead, SessionInfo, Snapshot, Step, Store, UserPage, UserQuery, listed,
};
use crate::broker::LogBounds;
use crate::domain::meeting::pair_key;
use crate::domain::{Connection, ConnState, MeetingId, RoomId, SessionId, UserId, UserState};
use crate::error::{Error, Result};
use crate::redis::keys::{SEP, Shard};
use crate::redis::step::{Program, Programs};
use crate::redis::{Keys, Redis};

/// A stream entry: its id and flat field-value pairs.
type Entry = (String, Vec<String>);

/// The error code of a Redis error reply (`NOGROUP`, `BUSYGROUP`), if that is what failed.
fn redis_code(e: &Error) -> Option<&str> {
    match e {
        Error::Unavailable(cause) => cause.downcast_ref::<redis::RedisError>().and_then(|r| r.code()),
        _ => None,
    }
}

/// A stream id (`ms-seq`), to compare.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// `update_user` entries kept for catching up after a pub/sub gap.
pub const PRESENCE_LOG_MAX: usize = 10_000;

pub struct RedisStore {
    r: Arc<Redis>,
    /// Each shard's outbox entries at the last sweep (`relay_stale`).
    seen: std::sync::Mutex<HashMap<Shard, HashSet<String>>>,
    bounds: LogBounds,
    /// `super::claim_hold`, in ms.
    claim_hold_ms: i64,
    /// `webhooks.max_backlog`.
    max_backlog: usize,
}

/// Dead letters kept per shard; past it the oldest go.
const MAX_DEAD: usize = 10_000;

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
    pub fn new(r: Arc<Redis>, bounds: LogBounds, claim_hold: std::time::Duration, max_backlog: usize) -> Self {
        Self { r, seen: std::sync::Mutex::default(), bounds, claim_hold_ms: claim_hold.as_millis() as i64, max_backlog }
    }

    async fn hooks_script(&self, keys: &[String], args: &[String]) -> Result<i64> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.clone().into_bytes()).collect();
        self.r.run(&self.r.scripts.hooks, keys, &args).await
    }

    fn keys(&self) -> &Keys {
        &self.r.keys
    }

    /// The shard a step runs in: its guards' (all but `Fresh`, which is
    /// checked wherever the step runs), else its first write's.
    fn home(&self, step: &Step) -> Shard {
        let k = self.keys();
        let of = |id: &str| k.shard_of(id);
        for g in &step.guards {
            match g {
                Guard::Fresh(..) => {}
                Guard::User(u, _) | Guard::Sessions(u, _) | Guard::Owned(u, _) | Guard::Watched(u, _) | Guard::HasSession(u, _) | Guard::Created(u, _) => return of(u.as_str()),
                Guard::CanShow { owner, .. } => return of(owner.as_str()),
                Guard::Room(r, _) | Guard::Open(r) => return of(r.as_str()),
                Guard::Meeting(m, _) => return of(m.as_str()),
            }
        }
        let first = step
            .users
            .first()
            .map(|u| u.user_id.to_string())
            .or_else(|| step.rooms.first().map(|(r, _)| r.room_id.to_string()))
            .or_else(|| step.meetings.first().map(|m| m.meeting.meeting_id.to_string()))
            .or_else(|| step.touch.as_ref().map(|(r, _)| r.to_string()))
            .or_else(|| step.sessions.first().map(|w| w.user.to_string()))
            .or_else(|| step.expiries.first().or(step.flaps.first()).or(step.forgets.first()).map(|(u, _)| u.to_string()))
            .or_else(|| step.forget.first().map(|u| u.to_string()))
            .or_else(|| step.memberships.first().map(|(u, ..)| u.to_string()))
            .or_else(|| step.events.first().map(|(u, _)| u.to_string()))
            .or_else(|| step.record.as_ref().map(|r| r.user.to_string()));
        first.map_or(0, |id| of(&id))
    }

    /// The programs of a step, one per shard it writes to: guards first (in
    /// its home shard; one in another shard cannot be checked in the same
    /// script and is left out, see `docs/contract.md`), then writes, records
    /// and events, each in the shard of its keys.
    fn compile(&self, step: &Step) -> (Shard, Programs) {
        let k = self.keys();
        let home = self.home(step);
        let of = |id: &str| k.shard_of(id);
        let mut ps = Programs::new(self.r.is_cluster());
        for g in &step.guards {
            let shard = match g {
                Guard::Fresh(..) => home,
                Guard::User(u, _) | Guard::Sessions(u, _) | Guard::Owned(u, _) | Guard::Watched(u, _) | Guard::HasSession(u, _) | Guard::Created(u, _) => of(u.as_str()),
                Guard::CanShow { owner, .. } => of(owner.as_str()),
                Guard::Room(r, _) | Guard::Open(r) => of(r.as_str()),
                Guard::Meeting(m, _) => of(m.as_str()),
            };
            if shard != home {
                continue;
            }
            let p = ps.at(home);
            match g {
                Guard::Fresh(u, key) => p.op("fresh").key(k.kept(u, home)).key(k.records(u, home)).arg(key.as_str()).arg(RECORD_KEEP_S * 1000),
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
            let n = of(u.user_id.as_str());
            ps.at(n).op("hset").key(k.user(&u.user_id)).arg(2).arg("doc").arg(to_json(u)).arg("v").arg(u.version);
            ps.at(n).op("zadd").key(k.users(n)).arg(0).arg(&u.user_id);
        }
        for (r, created) in &step.rooms {
            let (rk, id, open) = (k.room(&r.room_id), r.room_id.as_str(), r.is_open());
            let rs = of(id);
            let p = ps.at(rs);
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
                        ps.at(of(m.as_str())).op("hset").key(k.meeting_pairs(m)).arg(1).arg(&pair).arg(id);
                    }
                    if !open {
                        ps.at(of(m.as_str())).op("hdel").key(k.meeting_pairs(m)).arg(&pair);
                    }
                }
                None => {
                    let (os, ab) = (of(r.owner.as_str()), of(r.abonent.as_str()));
                    if *created {
                        ps.at(os).op("hset").key(k.viewers(&r.owner)).arg(1).arg(&r.abonent).arg(id);
                        ps.at(ab).op("hset").key(k.watching(&r.abonent)).arg(1).arg(&r.owner).arg(id);
                    }
                    if !open {
                        ps.at(os).op("hdel").key(k.viewers(&r.owner)).arg(&r.abonent);
                        ps.at(ab).op("hdel").key(k.watching(&r.abonent)).arg(&r.owner);
                    }
                    if open && matches!(r.state, ConnState::Requested | ConnState::Offered) {
                        ps.at(rs).op("zadd").key(k.negotiating(rs)).arg(ms(r.updated_at)).arg(id);
                    } else {
                        ps.at(rs).op("zrem").key(k.negotiating(rs)).arg(id);
                    }
                }
            }
        }
        // Before the meeting's own writes, which date it in this set.
        if let Some((u, m)) = &step.created {
            ps.at(of(u.as_str())).op("created").key(k.created(u)).arg(m);
        }
        for w in &step.meetings {
            let (mk, pk) = (k.meeting(&w.meeting.meeting_id), k.meeting_pairs(&w.meeting.meeting_id));
            let p = ps.at(of(w.meeting.meeting_id.as_str()));
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
            let c = &w.meeting.created_by;
            ps.at(of(c.as_str())).op("gone").key(k.created(c)).arg(&w.meeting.meeting_id).arg(gone);
        }
        for (u, m, joined, _) in &step.memberships {
            let p = ps.at(of(u.as_str()));
            if *joined {
                p.op("hset").key(k.memberships(u)).arg(1).arg(m).arg(1);
            } else {
                p.op("hdel").key(k.memberships(u)).arg(m);
            }
        }
        if let Some((r, _)) = &step.touch {
            let rs = of(r.as_str());
            ps.at(rs).op("touch").key(k.room(r)).key(k.negotiating(rs)).arg(r);
        }
        for w in &step.sessions {
            let member = Keys::node_session_member(&w.user, &w.session);
            let n = of(w.user.as_str());
            let p = ps.at(n);
            if w.open {
                p.op("hset").key(k.sessions(&w.user)).arg(1).arg(&w.session).arg(&w.node);
                p.op("sadd").key(k.lease_sessions(&w.node, n)).arg(member);
                if let Some(i) = &w.info {
                    p.op("hset").key(k.session_info(&w.user)).arg(1).arg(&w.session).arg(format!("{}{SEP}{}", i.transport, ms(i.opened_at)));
                }
            } else {
                p.op("hdel").key(k.sessions(&w.user)).arg(&w.session);
                p.op("srem").key(k.lease_sessions(&w.node, n)).arg(member);
                p.op("hdel").key(k.session_info(&w.user)).arg(&w.session);
            }
        }
        for (set, entries) in [(Keys::expiries as fn(&Keys, Shard) -> String, &step.expiries), (Keys::flaps, &step.flaps), (Keys::forgets, &step.forgets)] {
            for (u, at) in entries {
                let n = of(u.as_str());
                match at {
                    Some(at) => ps.at(n).op("zadd").key(set(k, n)).arg(ms(*at)).arg(u),
                    None => ps.at(n).op("zrem").key(set(k, n)).arg(u),
                };
            }
        }
        for u in &step.forget {
            let n = of(u.as_str());
            let p = ps.at(n);
            p.op("del").key(k.user(u));
            p.op("del").key(k.created(u));
            p.op("zrem").key(k.users(n)).arg(u);
            p.op("zrem").key(k.forgets(n)).arg(u);
            p.op("zrem").key(k.flaps(n)).arg(u);
        }
        if let Some(kept) = &step.record {
            // Where the step runs (its guard checks it there), and in the
            // caller's own shard, where a retry's read finds it.
            let u = &kept.user;
            let mut places = vec![home];
            if of(u.as_str()) != home {
                places.push(of(u.as_str()));
            }
            for n in places {
                ps.at(n)
                    .op("keep")
                    .key(k.kept(u, n))
                    .key(k.records(u, n))
                    .arg(kept.key.as_str())
                    .arg(&kept.record)
                    .arg(RECORD_KEEP_S * 1000)
                    .arg(kept.per_user_max);
            }
        }
        // Everyone hears the state change before its consequences (a camera
        // off before the hangups it causes), as the memory store sends them.
        for ev in &step.broadcast {
            let Some(user) = ev.presence_of() else { continue };
            let n = of(user.as_str());
            ps.at(n).op("plog").key(k.presence_log(n)).key(k.presence(n)).key(k.presence_of(user)).arg(step.accepted_us).arg(ev.to_json()).arg(PRESENCE_LOG_MAX);
        }
        for (c, id, d) in &step.counts {
            let n = of(id);
            ps.at(n).op("count").key(k.stats(n)).arg(c.name()).arg(d);
        }
        for h in &step.hooks {
            let n = of(h.subject.as_str());
            ps.at(n).op("hook").key(k.hooks(n)).arg(&h.subject).arg(&h.body).arg(self.max_backlog);
        }
        for (to, ev) in &step.events {
            let p = ps.at(of(to.as_str()));
            p.op("log").key(k.log(to)).key(k.channel(to)).arg(ev.name()).arg(step.accepted_us).arg(ev.to_json());
            p.arg(self.bounds.keep_max).arg(self.bounds.keep.as_millis() as u64);
        }
        (home, ps)
    }

    /// Runs outbox entry `id` of shard `from` (its program `prog`) in shard
    /// `to`, once however often it is relayed.
    async fn relay(&self, from: Shard, id: &str, to: Shard, prog: &str) -> Result<()> {
        let p = Program::relay(prog, self.keys().relayed(to), from, id).ok_or_else(|| corrupt(format!("outbox entry {id}")))?;
        let out: Vec<Value> = self.r.run_step(&self.r.scripts.commit, p.keys(), p.args()).await?;
        match out.first().and_then(text).as_deref() {
            Some("ok") => Ok(()),
            _ => Err(corrupt(format!("relay answered {out:?}"))),
        }
    }

    /// Relays shard `from`'s outbox, oldest first, and drops what it
    /// relayed: every entry, or (`upto`) those up to a step's last entry
    /// for that step's targets. Each target's entries go in order (`once`
    /// applies an entry only past the last one relayed from `from`), the
    /// targets at once; a target whose relay fails keeps the rest of its
    /// entries, and the call fails. Returns how many it relayed.
    async fn relay_outbox(&self, from: Shard, upto: Option<(&str, &HashSet<Shard>)>) -> Result<usize> {
        const PAGE: usize = 200;
        let k = self.keys();
        let mut start = "-".to_owned();
        let mut relayed = 0;
        let mut failed: HashMap<Shard, String> = HashMap::new();
        loop {
            let entries: Vec<Entry> = self.r.query(redis::cmd("XRANGE").arg(k.outbox(from)).arg(&start).arg("+").arg("COUNT").arg(PAGE)).await?;
            let last_page = entries.len() < PAGE;
            let mut past = false;
            let mut by: std::collections::BTreeMap<Shard, Vec<(&str, String)>> = Default::default();
            for (id, fields) in &entries {
                if upto.is_some_and(|(last, _)| stream_id(id) > stream_id(last)) {
                    past = true;
                    break;
                }
                let field = |name: &str| fields.chunks(2).find(|kv| kv[0] == name).and_then(|kv| kv.get(1)).cloned();
                let (Some(to), Some(prog)) = (field("t").and_then(|t| t.parse::<Shard>().ok()), field("p")) else { continue };
                if upto.is_some_and(|(_, targets)| !targets.contains(&to)) || failed.contains_key(&to) {
                    continue;
                }
                by.entry(to).or_default().push((id, prog));
            }
            let runs = by.into_iter().map(|(to, list)| async move {
                let mut done = Vec::new();
                for (id, prog) in list {
                    if let Err(e) = self.relay(from, id, to, &prog).await {
                        return (to, done, Some(e.to_string()));
                    }
                    done.push(id.to_owned());
                }
                (to, done, None)
            });
            let mut done = Vec::new();
            for (to, ids, err) in futures_util::future::join_all(runs).await {
                done.extend(ids);
                if let Some(e) = err {
                    failed.insert(to, e);
                }
            }
            if !done.is_empty() {
                relayed += done.len();
                self.r.query::<()>(redis::cmd("XDEL").arg(k.outbox(from)).arg(&done)).await?;
            }
            match entries.last() {
                Some((id, _)) if !past && !last_page => start = format!("({id}"),
                _ => break,
            }
        }
        match failed.into_iter().next() {
            Some((to, e)) => Err(Error::OutcomeUnknown(anyhow::anyhow!("relaying from shard {from} to shard {to}: {e}"))),
            None => Ok(relayed),
        }
    }

    /// Claims what is due in every shard's set of this kind.
    async fn claim_all(&self, set: fn(&Keys, Shard) -> String) -> Result<Vec<(String, i64)>> {
        let k = self.keys();
        let mut due = Vec::new();
        for d in futures_util::future::join_all((0..k.shards()).map(|n| self.claim(set(k, n)))).await {
            due.extend(d?);
        }
        Ok(due)
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
    /// The room ids of the rooms a user watches (their rooms are read next).
    WatchedIds,
    Pair,
    Sessions,
    Record,
    Meeting(MeetingId),
    Pairs,
    MemberOf,
    Created,
    Time,
}

type ReadPrograms = std::collections::BTreeMap<Shard, (Program, Vec<Slot>)>;

/// Shard `n`'s read program, with what its next instruction is for.
fn slot_at(ps: &mut ReadPrograms, n: Shard, slot: Slot) -> &mut Program {
    let e = ps.entry(n).or_default();
    e.1.push(slot);
    &mut e.0
}

fn rooms_of(v: &Value) -> Result<Vec<RoomRead>> {
    Ok(items(v).iter().map(|h| room_of(&hash(h))).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
}

/// Files one read instruction's answer in the snapshot.
fn file(s: &mut Snapshot, slot: Slot, v: &Value) -> Result<()> {
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
        Slot::Owned => s.owned = rooms_of(v)?,
        Slot::Watched => s.watched = rooms_of(v)?,
        Slot::WatchedIds => {}
        Slot::Pair => {
            let parts = items(v);
            s.viewers = parts.first().map(int).transpose()?.unwrap_or(0);
            s.pair_room = parts.get(1).map(|h| room_of(&hash(h))).transpose()?.flatten();
        }
        Slot::Sessions => s.sessions = hash(v).into_iter().map(|(id, node)| (SessionId::from_string(id), node)).collect(),
        Slot::Record => {
            if let Some(t) = text(v).filter(|t| !t.is_empty()) {
                s.record = Some(t);
            }
        }
        Slot::Meeting(m) => {
            if let Some(x) = meeting_of(&hash(v))? {
                s.meetings.insert(m, x);
            }
        }
        Slot::Pairs => s.pairs = rooms_of(v)?,
        Slot::Created => s.created = int(v)?,
        Slot::Time => {
            // TIME answers two strings: seconds and microseconds.
            let part = |i: usize| items(v).get(i).and_then(text).and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| corrupt(format!("TIME answered {v:?}")));
            s.now = Utc.timestamp_micros(part(0)? * 1_000_000 + part(1)?).single().ok_or_else(|| corrupt("TIME out of range"))?;
        }
        Slot::MemberOf => s.member_of = hash(v).into_keys().filter_map(|m| MeetingId::parse(&m).ok()).collect(),
    }
    Ok(())
}

#[async_trait]
impl Store for RedisStore {
    /// One `read.lua` per shard the read touches, all at once (with one
    /// shard: one round trip). With more, the rooms a user watches are in
    /// their owners' shards: a second read follows the first.
    async fn read(&self, q: &Read) -> Result<Snapshot> {
        let k = self.keys();
        let of = |id: &str| k.shard_of(id);
        let mut ps: ReadPrograms = std::collections::BTreeMap::new();
        let at = slot_at;
        for u in &q.users {
            at(&mut ps, of(u.as_str()), Slot::User(u.clone())).op("hash").key(k.user(u));
        }
        for r in &q.rooms {
            at(&mut ps, of(r.as_str()), Slot::Room(r.clone())).op("hash").key(k.room(r));
        }
        if let Some(u) = &q.owned_by {
            let n = of(u.as_str());
            at(&mut ps, n, Slot::Owned).op("index").key(k.viewers(u)).arg(k.room_prefix(n));
        }
        if let Some(u) = &q.watched_by {
            let n = of(u.as_str());
            if k.shards() == 1 {
                at(&mut ps, n, Slot::Watched).op("index").key(k.watching(u)).arg(k.room_prefix(n));
            } else {
                at(&mut ps, n, Slot::WatchedIds).op("hash").key(k.watching(u));
            }
        }
        if let Some((o, a)) = &q.pair {
            let n = of(o.as_str());
            at(&mut ps, n, Slot::Pair).op("pair").key(k.viewers(o)).arg(a).arg(k.room_prefix(n));
        }
        if let Some(u) = &q.sessions_of {
            at(&mut ps, of(u.as_str()), Slot::Sessions).op("hash").key(k.sessions(u));
        }
        for m in &q.meetings {
            at(&mut ps, of(m.as_str()), Slot::Meeting(m.clone())).op("hash").key(k.meeting(m));
        }
        if let Some(m) = &q.meeting_pairs {
            let n = of(m.as_str());
            at(&mut ps, n, Slot::Pairs).op("index").key(k.meeting_pairs(m)).arg(k.room_prefix(n));
        }
        if let Some(u) = &q.meetings_of {
            at(&mut ps, of(u.as_str()), Slot::MemberOf).op("hash").key(k.memberships(u));
        }
        if let Some(u) = &q.created_by {
            at(&mut ps, of(u.as_str()), Slot::Created).op("alive").key(k.created(u));
        }
        if let Some((u, key)) = &q.record {
            // A kept answer is in the shard its step ran in (one this read
            // reads: the step's guards are on what it read), and copied to
            // the caller's: a duplicate on another node finds it in either.
            let mut shards: Vec<Shard> = ps.keys().copied().collect();
            shards.push(of(u.as_str()));
            shards.sort_unstable();
            shards.dedup();
            for n in shards {
                at(&mut ps, n, Slot::Record).op("kept").key(k.kept(u, n)).key(k.records(u, n)).arg(key.as_str()).arg(RECORD_KEEP_S * 1000);
            }
        }
        let mut s = Snapshot::default();
        let Some(first) = ps.keys().next().copied() else {
            // Nothing read, nothing decided on: the time is only for what the step writes.
            s.now = Utc::now();
            return Ok(s);
        };
        // Redis's clock, in the same round trip: the step's time.
        at(&mut ps, first, Slot::Time).op("time");
        let outs = futures_util::future::join_all(ps.iter().map(|(_, (p, _))| self.r.run::<Vec<Value>>(&self.r.scripts.read, p.keys(), p.args()))).await;
        let mut watched_ids = Vec::new();
        for ((_, (_, slots)), out) in ps.into_iter().zip(outs) {
            let out = out?;
            for (slot, v) in slots.into_iter().zip(out.iter()) {
                if let Slot::WatchedIds = slot {
                    watched_ids = hash(v).into_values().filter_map(|id| RoomId::parse(&id).ok()).collect();
                } else {
                    file(&mut s, slot, v)?;
                }
            }
        }
        if !watched_ids.is_empty() {
            let rooms = self.read(&Read { rooms: watched_ids, ..Read::default() }).await?;
            s.watched = rooms.rooms.into_values().filter(|r| r.room.is_open()).collect();
            s.watched.sort_by(|a, b| a.room.room_id.cmp(&b.room.room_id));
        }
        Ok(s)
    }

    /// With one shard: one script. With more: one script in the step's home
    /// shard, which keeps the writes for other shards in its outbox; this
    /// node then relays them before it answers (so a client that waits for
    /// its answer keeps its order), and any node's sweeper relays what a
    /// node that died left behind.
    async fn commit(&self, step: &Step) -> Result<Commit> {
        let k = self.keys();
        let (home, ps) = self.compile(step);
        let (mut main, foreign) = ps.split(home);
        let foreign: Vec<(Shard, String)> = foreign.into_iter().map(|(n, p)| (n, p.to_json())).collect();
        for (n, json) in &foreign {
            main.op("outbox").key(k.outbox(home)).arg(n).arg(json);
        }
        if main.keys().is_empty() {
            return Ok(Commit::Done);
        }
        let out: Vec<Value> = self.r.run_step(&self.r.scripts.commit, main.keys(), main.args()).await?;
        match out.first().and_then(text).as_deref() {
            Some("ok") => {
                let ids: Vec<String> = out.get(2).map(items).unwrap_or_default().iter().filter_map(text).collect();
                if let Some(last) = ids.last() {
                    crate::failpoint::hit("commit.relay", step.record.is_some());
                    // Before the answer, with what came before it for the
                    // same targets: a client that waits keeps its order. A
                    // relay that fails leaves the entry for the sweeper; the
                    // call may have done all it will: 504, as for a lost answer.
                    let targets: HashSet<Shard> = foreign.iter().map(|(n, _)| *n).collect();
                    self.relay_outbox(home, Some((last, &targets))).await.map_err(|e| Error::OutcomeUnknown(anyhow::anyhow!("relaying to another shard: {e}")))?;
                }
                Ok(Commit::Done)
            }
            Some("conflict") => Ok(Commit::Conflict),
            Some("closed") => Ok(Commit::Closed),
            Some("missing") => Ok(Commit::Missing),
            Some("recorded") => {
                // A retry: what the first try left in the outbox goes first.
                if k.shards() > 1 {
                    self.relay_outbox(home, None).await.map_err(|e| Error::OutcomeUnknown(anyhow::anyhow!("relaying a retried step: {e}")))?;
                }
                Ok(Commit::Recorded(out.get(1).and_then(text).unwrap_or_default()))
            }
            _ => Err(corrupt(format!("commit answered {out:?}"))),
        }
    }

    async fn relay_stale(&self) -> Result<()> {
        let k = self.keys();
        if k.shards() == 1 {
            return Ok(());
        }
        for n in 0..k.shards() {
            let ids: Vec<Entry> = self.r.query(redis::cmd("XRANGE").arg(k.outbox(n)).arg("-").arg("+").arg("COUNT").arg(100)).await?;
            let now: HashSet<String> = ids.into_iter().map(|(id, _)| id).collect();
            // Only entries seen a sweep ago: a fresh one is its committer's to relay, in order.
            let before = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(n, now.clone()).unwrap_or_default();
            let stale: HashSet<String> = now.intersection(&before).cloned().collect();
            if !stale.is_empty() {
                // Everything, in order: what a dead node left goes before what came after it.
                let relayed = self.relay_outbox(n, None).await?;
                tracing::info!(shard = n, relayed, "relayed outbox entries a node left behind");
            }
        }
        Ok(())
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
            // Each shard's next ids, merged: the first `batch` of them all are
            // the directory's next, whichever shard each is in.
            let pages = (0..k.shards()).map(|n| {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(k.users(n)).arg(&start).arg("+").arg("BYLEX").arg("LIMIT").arg(0).arg(batch);
                async move { self.r.query::<Vec<String>>(&cmd).await }
            });
            let mut ids = Vec::new();
            for page in futures_util::future::join_all(pages).await {
                ids.extend(page?);
            }
            ids.sort();
            let more = ids.len() >= batch;
            ids.truncate(batch);
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
            if users.len() > q.limit || !more {
                break;
            }
            start = format!("({}", ids.last().expect("a full batch"));
        }
        Ok(UserPage::from_overfetch(users, q.limit))
    }

    async fn claim_expired(&self) -> Result<Vec<UserId>> {
        Ok(self.claim_all(Keys::expiries).await?.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn claim_flaps(&self) -> Result<Vec<UserId>> {
        Ok(self.claim_all(Keys::flaps).await?.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn claim_forgettable(&self) -> Result<Vec<UserId>> {
        Ok(self.claim_all(Keys::forgets).await?.into_iter().filter_map(|(u, _)| UserId::parse(&u).ok()).collect())
    }

    async fn idle_rooms(&self, idle: std::time::Duration) -> Result<Vec<RoomId>> {
        let k = self.keys();
        let args = [idle.as_millis().to_string().into_bytes()];
        let keys: Vec<[String; 1]> = (0..k.shards()).map(|n| [k.negotiating(n)]).collect();
        let mut rooms = Vec::new();
        for ids in futures_util::future::join_all(keys.iter().map(|key| self.r.run::<Vec<String>>(&self.r.scripts.idle, key, &args))).await {
            rooms.extend(ids?.iter().filter_map(|id| RoomId::parse(id).ok()));
        }
        Ok(rooms)
    }

    /// A write, not a PING: a Redis that answers but refuses writes
    /// (maxmemory, a read-only replica) cannot serve either.
    async fn ping(&self) -> Result<()> {
        self.r.query::<()>(redis::cmd("SET").arg(self.keys().ready()).arg(1).arg("PX").arg(10_000)).await
    }

    async fn next_peer_id(&self, above: u64) -> Result<u64> {
        let key = self.keys().peer_ids();
        let id: u64 = self.r.query(redis::cmd("INCR").arg(&key)).await?;
        if id > above {
            return Ok(id);
        }
        // Behind what peers still use (Redis came back empty): jump past it, atomically.
        self.r.query(redis::cmd("INCRBY").arg(&key).arg(above + 1 - id)).await
    }

    async fn raise_peer_ids(&self, at_least: u64) -> Result<()> {
        let key = self.keys().peer_ids();
        let now: Option<u64> = self.r.query(redis::cmd("GET").arg(&key)).await?;
        let now = now.unwrap_or(0);
        if now < at_least {
            // INCRBY, not SET: a sign-in racing this one still gets an id of its own.
            self.r.query::<()>(redis::cmd("INCRBY").arg(&key).arg(at_least - now)).await?;
        }
        Ok(())
    }

    async fn peer_cursor(&self, user: &UserId) -> Result<Option<String>> {
        self.r.query(redis::cmd("GET").arg(self.keys().peer_cursor(user))).await
    }

    async fn set_peer_cursor(&self, user: &UserId, at: &str, keep: std::time::Duration) -> Result<()> {
        let ms = keep.as_millis().max(1) as u64;
        self.r.query::<()>(redis::cmd("SET").arg(self.keys().peer_cursor(user)).arg(at).arg("PX").arg(ms)).await
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

    async fn leases_until(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let l: Vec<(String, i64)> = self.r.query(redis::cmd("ZRANGE").arg(self.keys().leases()).arg(0).arg(-1).arg("WITHSCORES")).await?;
        Ok(l.into_iter().filter_map(|(n, at)| Some((n, Utc.timestamp_millis_opt(at).single()?))).collect())
    }

    async fn lease_session_count(&self, lease: &str) -> Result<usize> {
        let k = self.keys();
        // One command per shard: on a Redis Cluster each is in its own slot.
        let counts = (0..k.shards()).map(|n| {
            let mut cmd = redis::cmd("SCARD");
            cmd.arg(k.lease_sessions(lease, n));
            async move { self.r.query::<usize>(&cmd).await }
        });
        let mut sum = 0;
        for c in futures_util::future::join_all(counts).await {
            sum += c?;
        }
        Ok(sum)
    }

    async fn claim_dead_leases(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let dead = self.claim(self.keys().leases()).await?;
        Ok(dead.into_iter().filter_map(|(n, at)| Some((n, Utc.timestamp_millis_opt(at).single()?))).collect())
    }

    async fn lease_sessions(&self, lease: &str) -> Result<Vec<(UserId, SessionId)>> {
        let k = self.keys();
        let sets = (0..k.shards()).map(|n| {
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(k.lease_sessions(lease, n));
            async move { self.r.query::<Vec<String>>(&cmd).await }
        });
        let mut all = Vec::new();
        for set in futures_util::future::join_all(sets).await {
            all.extend(set?);
        }
        Ok(all
            .iter()
            .filter_map(|e| e.split_once(SEP))
            .filter_map(|(u, s)| Some((UserId::parse(u).ok()?, SessionId::from_string(s.to_owned()))))
            .collect())
    }

    async fn forget_lease(&self, lease: &str) -> Result<()> {
        let k = self.keys();
        if k.shards() == 1 {
            return self.r.pipe(redis::pipe().atomic().cmd("ZREM").arg(k.leases()).arg(lease).ignore().cmd("DEL").arg(k.lease_sessions(lease, 0)).ignore()).await;
        }
        // The sessions' sets first: a node that dies in between leaves the
        // lease, which is swept again and finds nothing.
        let dels = (0..k.shards()).map(|n| {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(k.lease_sessions(lease, n));
            async move { self.r.query::<()>(&cmd).await }
        });
        for r in futures_util::future::join_all(dels).await {
            r?;
        }
        self.r.query(redis::cmd("ZREM").arg(k.leases()).arg(lease)).await
    }

    async fn counters(&self) -> Result<HashMap<Counter, i64>> {
        let k = self.keys();
        let reads = (0..k.shards()).map(|n| {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(k.stats(n));
            async move { self.r.query::<HashMap<String, i64>>(&cmd).await }
        });
        let mut out: HashMap<Counter, i64> = HashMap::new();
        for h in futures_util::future::join_all(reads).await {
            let h = h?;
            for c in Counter::ALL {
                *out.entry(c).or_default() += h.get(c.name()).copied().unwrap_or(0);
            }
        }
        Ok(out)
    }

    async fn session_infos(&self, user: &UserId) -> Result<HashMap<SessionId, SessionInfo>> {
        let h: HashMap<String, String> = self.r.query(redis::cmd("HGETALL").arg(self.keys().session_info(user))).await?;
        Ok(h.into_iter()
            .filter_map(|(s, v)| {
                let (t, at) = v.split_once(SEP)?;
                let transport = if t == "poll" { "poll" } else { "websocket" };
                Some((SessionId::from_string(s), SessionInfo { transport, opened_at: Utc.timestamp_millis_opt(at.parse().ok()?).single()? }))
            })
            .collect())
    }

    async fn ban(&self, user: &UserId, for_: std::time::Duration) -> Result<DateTime<Utc>> {
        let (s, us): (i64, i64) = self.r.query(&redis::cmd("TIME")).await?;
        let until = s * 1000 + us / 1000 + for_.as_millis() as i64;
        // GT: a shorter ban never cuts a longer one short.
        let k = self.keys().bans();
        let (_, end): ((), i64) = self.r.pipe(redis::pipe().cmd("ZADD").arg(&k).arg("GT").arg(until).arg(user.as_str()).cmd("ZSCORE").arg(&k).arg(user.as_str())).await?;
        Ok(Utc.timestamp_millis_opt(end).single().unwrap_or_else(Utc::now))
    }

    async fn bans(&self) -> Result<Vec<(UserId, DateTime<Utc>)>> {
        let k = self.keys().bans();
        let (s, us): (i64, i64) = self.r.query(&redis::cmd("TIME")).await?;
        let now = s * 1000 + us / 1000;
        let (_, live): ((), Vec<(String, i64)>) = self
            .r
            .pipe(redis::pipe().cmd("ZREMRANGEBYSCORE").arg(&k).arg("-inf").arg(now).cmd("ZRANGE").arg(&k).arg(0).arg(-1).arg("WITHSCORES"))
            .await?;
        Ok(live.into_iter().filter_map(|(u, at)| Some((UserId::parse(&u).ok()?, Utc.timestamp_millis_opt(at).single()?))).collect())
    }

    fn hook_shards(&self) -> u16 {
        self.keys().shards()
    }

    async fn hold_hooks(&self, n: u16, holder: &str, hold: std::time::Duration) -> Result<bool> {
        let got = self.hooks_script(&[self.keys().hooks_holder(n)], &["hold".into(), holder.into(), hold.as_millis().to_string()]).await?;
        Ok(got == 1)
    }

    async fn release_hooks(&self, n: u16, holder: &str) -> Result<()> {
        self.hooks_script(&[self.keys().hooks_holder(n)], &["release".into(), holder.into()]).await?;
        Ok(())
    }

    async fn read_hooks(&self, n: u16, group: &str, holder: &str, count: usize, take_over: bool) -> Result<Vec<HookEntry>> {
        let key = self.keys().hooks(n);
        let read = || async {
            if take_over {
                // Whatever any consumer of the group left unacked, oldest
                // first; min-idle 0, for only the holder of the shard delivers.
                let (_, entries, _): (String, Vec<Entry>, Vec<String>) =
                    self.r.query(redis::cmd("XAUTOCLAIM").arg(&key).arg(group).arg(holder).arg(0).arg("0-0").arg("COUNT").arg(count)).await?;
                Ok::<_, Error>(entries)
            } else {
                let reply: Option<Vec<(String, Vec<Entry>)>> =
                    self.r.query(redis::cmd("XREADGROUP").arg("GROUP").arg(group).arg(holder).arg("COUNT").arg(count).arg("STREAMS").arg(&key).arg(">")).await?;
                Ok(reply.into_iter().flatten().flat_map(|(_, e)| e).collect())
            }
        };
        let entries = match read().await {
            Err(e) if redis_code(&e) == Some("NOGROUP") => {
                // The first read of this receiver, or a Redis that came back
                // empty: the group reads from the stream's start, so what was
                // recorded before any node delivered is delivered too.
                match self.r.query::<()>(redis::cmd("XGROUP").arg("CREATE").arg(&key).arg(group).arg("0").arg("MKSTREAM")).await {
                    Err(e) if redis_code(&e) != Some("BUSYGROUP") => return Err(e),
                    _ => read().await?,
                }
            }
            r => r?,
        };
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let mut f: HashMap<String, String> = fields.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                Some(HookEntry { id, subject: f.remove("u")?, body: f.remove("b")?, only: f.remove("o") })
            })
            .collect())
    }

    async fn ack_hooks(&self, n: u16, group: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.r.query(redis::cmd("XACK").arg(self.keys().hooks(n)).arg(group).arg(ids)).await
    }

    async fn bury_hook(&self, n: u16, group: &str, url: &str, e: &HookEntry, error: &str, attempts: u32) -> Result<()> {
        let k = self.keys();
        let args = ["bury".into(), group.into(), e.id.clone(), e.subject.clone(), e.body.clone(), url.into(), error.into(), attempts.to_string(), MAX_DEAD.to_string()];
        self.hooks_script(&[k.hooks(n), k.hooks_dead(n)], &args).await?;
        Ok(())
    }

    async fn trim_hooks(&self, n: u16, groups: &[String]) -> Result<()> {
        let key = self.keys().hooks(n);
        let infos: Vec<HashMap<String, Value>> = match self.r.query(redis::cmd("XINFO").arg("GROUPS").arg(&key)).await {
            Ok(v) => v,
            Err(_) => return Ok(()),
        };
        let mut keep_from: Option<(u64, u64)> = None;
        for g in groups {
            let Some(info) = infos.iter().find(|i| i.get("name").and_then(text).as_deref() == Some(g)) else { return Ok(()) };
            let pending = info.get("pending").and_then(|v| int(v).ok()).unwrap_or(0);
            let from = if pending > 0 {
                let (_, oldest, _, _): (u64, Option<String>, Option<String>, Value) = self.r.query(redis::cmd("XPENDING").arg(&key).arg(g)).await?;
                stream_id(&oldest.unwrap_or_default())
            } else {
                let (ms, seq) = stream_id(&info.get("last-delivered-id").and_then(text).unwrap_or_default());
                (ms, seq + 1)
            };
            keep_from = Some(keep_from.map_or(from, |k| k.min(from)));
        }
        if let Some((ms, seq)) = keep_from {
            self.r.query::<()>(redis::cmd("XTRIM").arg(&key).arg("MINID").arg("~").arg(format!("{ms}-{seq}"))).await?;
        }
        Ok(())
    }

    async fn dead_hooks(&self, limit: usize) -> Result<Vec<DeadHook>> {
        let k = self.keys();
        let reads = (0..k.shards()).map(|n| {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(k.hooks_dead(n)).arg("+").arg("-").arg("COUNT").arg(limit);
            async move { self.r.query::<Vec<Entry>>(&cmd).await.map(|e| (n, e)) }
        });
        let mut all = Vec::new();
        for r in futures_util::future::join_all(reads).await {
            let (n, entries) = r?;
            for (id, fields) in entries {
                let f: HashMap<String, String> = fields.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                let at: i64 = f.get("at").and_then(|a| a.parse().ok()).unwrap_or(0);
                let dead_at = Utc.timestamp_millis_opt(at).single().unwrap_or_default();
                all.push((
                    at,
                    DeadHook {
                        id: format!("{n}:{id}"),
                        url: f.get("url").cloned().unwrap_or_default(),
                        attempts: f.get("n").and_then(|a| a.parse().ok()).unwrap_or(0),
                        error: f.get("err").cloned().unwrap_or_default(),
                        dead_at: dead_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        webhook: f.get("b").and_then(|b| serde_json::from_str(b).ok()).unwrap_or(serde_json::Value::Null),
                    },
                ));
            }
        }
        all.sort_by_key(|d| std::cmp::Reverse(d.0));
        Ok(all.into_iter().take(limit).map(|(_, d)| d).collect())
    }

    async fn replay_dead_hook(&self, id: &str) -> Result<bool> {
        let k = self.keys();
        let Some((n, sid)) = id.split_once(':').and_then(|(n, s)| Some((n.parse::<u16>().ok().filter(|n| *n < k.shards())?, s))) else { return Ok(false) };
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !sid.split_once('-').is_some_and(|(a, b)| digits(a) && digits(b)) {
            return Ok(false);
        }
        let done = self.hooks_script(&[k.hooks(n), k.hooks_dead(n)], &["replay".into(), sid.into(), self.max_backlog.to_string()]).await?;
        Ok(done == 1)
    }
}
