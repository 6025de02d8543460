//! The operations of the contract. REST handlers and WebSocket commands both
//! call `Service::execute` with a typed `Command`, so the two never disagree.
//!
//! Every operation is a read and one atomic `commit` (`store::Step`) that
//! writes the new state together with every event it causes and, with an
//! `Idempotency-Key`, its answer. The rules are the pure `domain` ones; when a
//! guard finds that another node changed what was read, the operation reads
//! again and decides again. Presence (sessions, grace, dead nodes) is in
//! `crate::presence`, idempotency in `crate::idempotency`, meetings in
//! `meetings`.

pub mod meetings;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Span;
use utoipa::ToSchema;

use crate::broker::Broker;
use crate::config::Settings;
use crate::domain::event::{PutAnswerData, PutIceData, PutOfferData, ShowCamData};
use crate::domain::{Connection, Event, IceCandidate, IdempotencyKey, MeetingId, MemberName, Meta, Reason, Role, RoomId, SessionDescription, UserId, UserState};
use crate::error::{Error, Result};
use crate::idempotency::{Idem, InFlight};
use crate::store::{Commit, Guard, Read, Snapshot, Step, Store, UserPage, UserQuery};
use crate::turn::{self, IceServer, IceServers};

/// Reads and decisions one operation may repeat when other nodes keep
/// changing what it read. Each repeat means another call went through, so
/// this is only reached under extreme contention on one user or room.
const MAX_TRIES: usize = 64;
/// Rooms whose members this node remembers (members never change), so that
/// `ice` needs no read.
const MEMBERS_CACHE: usize = 100_000;
/// How many users one sweep works on at once.
const SWEEP_PARALLELISM: usize = 16;

/// Every call that changes something, parsed and typed at the edge.
#[derive(Debug, Clone)]
pub enum Command {
    CameraOn { meta: Option<Meta> },
    CameraOff,
    CameraShow { owner: UserId },
    Offer { room: RoomId, offer: SessionDescription },
    Answer { room: RoomId, answer: SessionDescription },
    Ice { room: RoomId, candidate: IceCandidate, dest: Option<Role> },
    Hangup { room: RoomId, reason: Reason },
    MeetingCreate { title: Option<String>, max_members: Option<usize> },
    MeetingJoin { meeting: MeetingId, name: MemberName },
    MeetingLeave { meeting: MeetingId },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::CameraOn { .. } => "cameraOn",
            Command::CameraOff => "cameraOff",
            Command::CameraShow { .. } => "cameraShow",
            Command::Offer { .. } => "offer",
            Command::Answer { .. } => "answer",
            Command::Ice { .. } => "ice",
            Command::Hangup { .. } => "hangup",
            Command::MeetingCreate { .. } => "meetingCreate",
            Command::MeetingJoin { .. } => "meetingJoin",
            Command::MeetingLeave { .. } => "meetingLeave",
        }
    }

    pub fn room_id(&self) -> Option<&RoomId> {
        match self {
            Command::Offer { room, .. } | Command::Answer { room, .. } | Command::Ice { room, .. } | Command::Hangup { room, .. } => Some(room),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserReply {
    pub user: UserState,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShowReply {
    pub connection: Connection,
    pub ice_servers: Vec<IceServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConnectionReply {
    pub connection: Connection,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IceReply {
    pub room_id: String,
}

/// The result of a command. It is kept whole under an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Reply {
    User(UserReply),
    /// `created`: a new room (false: the one already open).
    Show { reply: ShowReply, created: bool },
    Offer(ConnectionReply),
    Answer(ConnectionReply),
    Ice(IceReply),
    Hangup(ConnectionReply),
    MeetingCreated(meetings::MeetingReply),
    MeetingJoined(meetings::JoinReply),
    MeetingLeft(meetings::MeetingReply),
}

impl Reply {
    /// The JSON a client gets.
    pub fn body(&self) -> serde_json::Value {
        let v = match self {
            Reply::User(r) => serde_json::to_value(r),
            Reply::Show { reply, .. } => serde_json::to_value(reply),
            Reply::Offer(r) | Reply::Answer(r) | Reply::Hangup(r) => serde_json::to_value(r),
            Reply::Ice(r) => serde_json::to_value(r),
            Reply::MeetingCreated(r) | Reply::MeetingLeft(r) => serde_json::to_value(r),
            Reply::MeetingJoined(r) => serde_json::to_value(r),
        };
        v.expect("replies always serialize")
    }
}

/// A command's reply, and whether it is the kept answer of an earlier call.
#[derive(Debug)]
pub struct Executed {
    pub reply: Reply,
    pub replayed: bool,
}

/// What one try of an operation decided from what it read.
pub(crate) struct Plan {
    pub step: Step,
    pub reply: Option<Reply>,
}

#[derive(Clone)]
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) node_id: Arc<str>,
    /// This incarnation's lease, under which its sessions are registered (see `crate::lease`).
    pub(crate) lease: Arc<str>,
    /// Set once when the node starts draining (see `crate::drain`).
    draining: Arc<AtomicBool>,
    members: Arc<Mutex<HashMap<RoomId, (UserId, UserId)>>>,
    in_flight: Arc<InFlight>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, settings: Arc<Settings>, node_id: Arc<str>) -> Self {
        let lease = crate::lease::new_lease(&node_id).into();
        Self { store, broker, settings, node_id, lease, draining: Arc::default(), members: Arc::default(), in_flight: Arc::default() }
    }

    /// This incarnation's lease name.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on, sessions that end leave their users online for the grace period.
    pub(crate) fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Runs a command as `caller`; with a `key`, at most once per key.
    pub async fn execute(&self, caller: &UserId, key: Option<IdempotencyKey>, cmd: Command) -> Result<Executed> {
        if let Some(room) = cmd.room_id() {
            Span::current().record("room_id", room.as_str());
        }
        let accepted = crate::domain::event::now_us();
        let idem = key.map(|k| Idem::new(caller, k, &cmd, self.settings.limits.max_idempotency_keys));
        let idem = idem.as_ref();
        let now = Utc::now();
        match cmd {
            Command::CameraOn { meta } => self.camera_on(caller, meta, now, accepted, idem).await,
            Command::CameraOff => self.camera_off(caller, now, accepted, idem).await,
            Command::CameraShow { owner } => self.show(caller, owner, now, accepted, idem).await,
            Command::Offer { room, offer } => {
                let ev = |c: &Connection| Event::PutOffer(PutOfferData { room_id: c.room_id.clone(), user_id: caller.clone(), offer: offer.clone() });
                self.room_op(room, accepted, idem, |c| c.offer(caller, offer.clone(), now).map(|()| Role::Abonent), ev, Reply::Offer).await
            }
            Command::Answer { room, answer } => {
                let ev = |c: &Connection| Event::PutAnswer(PutAnswerData { room_id: c.room_id.clone(), user_id: caller.clone(), answer: answer.clone() });
                self.room_op(room, accepted, idem, |c| c.answer(caller, answer.clone(), now).map(|()| Role::Owner), ev, Reply::Answer).await
            }
            Command::Hangup { room, reason } => {
                let ev = |c: &Connection| Event::hangup(c, caller, reason.as_str());
                self.room_op(room, accepted, idem, |c| c.hangup(caller, reason.as_str(), now), ev, Reply::Hangup).await
            }
            Command::Ice { room, candidate, dest } => self.ice(caller, room, candidate, dest, now, accepted, idem).await,
            Command::MeetingCreate { title, max_members } => self.meeting_create(caller, title, max_members, now, accepted, idem).await,
            Command::MeetingJoin { meeting, name } => self.meeting_join(caller, meeting, name, now, accepted, idem).await,
            Command::MeetingLeave { meeting } => self.meeting_leave(caller, meeting, accepted, idem).await,
        }
    }

    /// Holds `key` as running on this node until the guard drops: a duplicate
    /// meanwhile gets 409 `request_in_progress`.
    pub fn running(&self, caller: &UserId, key: &IdempotencyKey) -> Result<crate::idempotency::Running> {
        self.in_flight.enter(caller, key)
    }

    /// Reads, decides, commits; reads again when a guard says another node
    /// changed what was read. With `idem`, the answer is kept in the same
    /// commit, and a kept answer found on the way is returned instead.
    pub(crate) async fn run(&self, read: Read, idem: Option<&Idem>, mut decide: impl FnMut(&Snapshot) -> Result<Plan>) -> Result<Option<Executed>> {
        let mut read = read;
        if let Some(i) = idem {
            read.record = Some((i.user.clone(), i.key.clone()));
        }
        for _ in 0..MAX_TRIES {
            let snap = self.store.read(&read).await?;
            if let (Some(i), Some(raw)) = (idem, &snap.record) {
                return i.replay(raw).map(Some);
            }
            let Plan { mut step, reply } = decide(&snap)?;
            if let (Some(i), Some(reply)) = (idem, &reply) {
                i.seal(&mut step, reply);
            }
            let fresh = |reply: Option<Reply>| Ok(reply.map(|reply| Executed { reply, replayed: false }));
            if step.is_empty() {
                return fresh(reply);
            }
            match self.commit(&step).await? {
                Commit::Done => return fresh(reply),
                Commit::Conflict => continue,
                Commit::Recorded(raw) => match idem {
                    Some(i) => return i.replay(&raw).map(Some),
                    None => continue,
                },
                Commit::Closed => return Err(Error::RoomClosed),
                Commit::Missing => return Err(Error::RoomNotFound),
            }
        }
        tracing::warn!("gave up after {MAX_TRIES} conflicting tries");
        Err(Error::unavailable(anyhow::anyhow!("too many concurrent changes; retry")))
    }

    /// Runs `job` for each item, a few at a time: a sweep after many sessions
    /// ended at once (a node died) must finish within the sweep's bound.
    pub(crate) async fn each<'a, T: 'a, F>(&self, items: &'a [T], job: impl Fn(&'a T) -> F) -> Result<()>
    where
        F: Future<Output = Result<()>>,
    {
        let results: Vec<Result<()>> = futures_util::stream::iter(items).map(job).buffer_unordered(SWEEP_PARALLELISM).collect().await;
        results.into_iter().collect()
    }

    /// `run` for a client's call, whose every plan carries its reply.
    pub(crate) async fn call(&self, read: Read, idem: Option<&Idem>, decide: impl FnMut(&Snapshot) -> Result<Plan>) -> Result<Executed> {
        Ok(self.run(read, idem, decide).await?.expect("a call's plan always carries its reply"))
    }

    /// The one place a step is committed, so that test builds can fail around it.
    async fn commit(&self, step: &Step) -> Result<Commit> {
        let keyed = step.record.is_some();
        crate::failpoint::hit("before_commit", keyed);
        let c = self.store.commit(step).await?;
        if c == Commit::Done {
            crate::failpoint::hit("after_commit", keyed);
        }
        Ok(c)
    }

    pub(crate) fn grace(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.settings.presence.grace_s as i64)
    }

    async fn camera_on(&self, caller: &UserId, meta: Option<Meta>, now: DateTime<Utc>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let read = Read { users: vec![caller.clone()], sessions_of: Some(caller.clone()), ..Read::default() };
        let meta = meta.map(Meta::into_value);
        let expire_at = now + self.grace();
        self
            .call(read, idem, |s| {
                let mut u = s.users.get(caller).cloned().unwrap_or_else(|| UserState::new(caller.clone(), now));
                let mut step = Step::new(accepted).guard(Guard::User(caller.clone(), u.version));
                if s.sessions.is_empty() {
                    // No session anywhere: the grace period runs from now.
                    step.expiries.push((caller.clone(), Some(expire_at)));
                }
                // The same state again is answered, but not broadcast again.
                if u.camera_on(meta.clone(), now) {
                    step.broadcast.push(Event::user(u.clone()));
                    step.users.push(u.clone());
                }
                Ok(Plan { step, reply: Some(Reply::User(UserReply { user: u })) })
            })
            .await
    }

    async fn camera_off(&self, caller: &UserId, now: DateTime<Utc>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let read = Read { users: vec![caller.clone()], owned_by: Some(caller.clone()), ..Read::default() };
        self
            .call(read, idem, |s| {
                let mut u = s.users.get(caller).cloned().unwrap_or_else(|| UserState::new(caller.clone(), now));
                let mut step = Step::new(accepted);
                if u.camera_off(now) {
                    step = step.guard(Guard::User(caller.clone(), s.version(caller))).guard(Guard::Owned(caller.clone(), s.owned.len()));
                    close_rooms(&mut step, &s.owned, caller, "camera_off", now);
                    step.broadcast.push(Event::user(u.clone()));
                    step.users.push(u.clone());
                }
                Ok(Plan { step, reply: Some(Reply::User(UserReply { user: u })) })
            })
            .await
    }

    async fn show(&self, caller: &UserId, owner: UserId, now: DateTime<Utc>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        if owner == *caller {
            return Err(Error::CannotShowSelf);
        }
        let max = self.settings.limits.max_viewers;
        let ice_servers = self.ice_servers(caller).ice_servers;
        let read = Read { users: vec![owner.clone()], pair: Some((owner.clone(), caller.clone())), ..Read::default() };
        let done = self
            .call(read, idem, |s| {
                let o = s.users.get(&owner).ok_or(Error::UserNotFound)?;
                if o.camera != crate::domain::Camera::On {
                    return Err(Error::CameraOff);
                }
                let reply = |connection: Connection, created| Reply::Show { reply: ShowReply { connection, ice_servers: ice_servers.clone() }, created };
                if let Some(r) = s.pair_room.as_ref().filter(|r| r.room.is_open()) {
                    return Ok(Plan { step: Step::new(accepted), reply: Some(reply(r.room.clone(), false)) });
                }
                if s.viewers >= max {
                    return Err(Error::TooManyViewers);
                }
                let room = Connection::new(owner.clone(), caller.clone(), now);
                let mut step = Step::new(accepted)
                    .guard(Guard::User(owner.clone(), o.version))
                    .guard(Guard::CanShow { owner: owner.clone(), abonent: caller.clone(), max });
                step.events.push((owner.clone(), Event::ShowCam(ShowCamData { room_id: room.room_id.clone(), user_id: caller.clone() })));
                step.rooms.push((room.clone(), true));
                Ok(Plan { step, reply: Some(reply(room, true)) })
            })
            .await?;
        if let Reply::Show { reply, .. } = &done.reply {
            Span::current().record("room_id", reply.connection.room_id.as_str());
            self.remember(&reply.connection);
        }
        Ok(done)
    }

    /// A transition of one room by one of its members; the other side hears `event`.
    async fn room_op(
        &self,
        room: RoomId,
        accepted: i64,
        idem: Option<&Idem>,
        op: impl Fn(&mut Connection) -> Result<Role>,
        event: impl Fn(&Connection) -> Event,
        reply: fn(ConnectionReply) -> Reply,
    ) -> Result<Executed> {
        let read = Read { rooms: vec![room.clone()], ..Read::default() };
        self
            .call(read, idem, |s| {
                let r = s.rooms.get(&room).ok_or(Error::RoomNotFound)?;
                self.remember(&r.room);
                let mut c = r.room.clone();
                let to = op(&mut c)?;
                let mut step = Step::new(accepted).guard(Guard::Room(room.clone(), r.rev));
                step.events.push((c.user(to).clone(), event(&c)));
                step.rooms.push((c.clone(), false));
                Ok(Plan { step, reply: Some(reply(ConnectionReply { connection: c })) })
            })
            .await
    }

    /// One round trip when this node knows the room's members: the commit
    /// checks that the room is still open, touches it, and sends the candidate.
    #[allow(clippy::too_many_arguments)]
    async fn ice(&self, caller: &UserId, room: RoomId, candidate: IceCandidate, dest: Option<Role>, now: DateTime<Utc>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let (owner, abonent) = match self.members(&room) {
            Some(m) => m,
            None => {
                let s = self.store.read(&Read { rooms: vec![room.clone()], ..Read::default() }).await?;
                let r = s.rooms.get(&room).ok_or(Error::RoomNotFound)?;
                self.remember(&r.room);
                (r.room.owner.clone(), r.room.abonent.clone())
            }
        };
        let to = Connection::ice_route(&owner, &abonent, caller, dest)?;
        if let Err(e) = candidate.validate() {
            // The contract checks state (409) before content (422).
            let s = self.store.read(&Read { rooms: vec![room.clone()], ..Read::default() }).await?;
            return Err(match s.rooms.get(&room) {
                Some(r) if !r.room.is_open() => Error::RoomClosed,
                _ => e,
            });
        }
        let reply = Reply::Ice(IceReply { room_id: room.to_string() });
        let to = if to == Role::Owner { owner } else { abonent };
        let mut step = Step::new(accepted).guard(Guard::Open(room.clone()));
        if let Some(i) = idem {
            i.seal(&mut step, &reply);
        }
        step.touch = Some((room.clone(), now));
        step.events.push((to, Event::PutIce(PutIceData { room_id: room.clone(), user_id: caller.clone(), candidate })));
        match self.commit(&step).await? {
            Commit::Done => Ok(Executed { reply, replayed: false }),
            Commit::Recorded(raw) => idem.expect("only a keyed step is recorded").replay(&raw),
            Commit::Closed => Err(Error::RoomClosed),
            Commit::Missing => Err(Error::RoomNotFound),
            Commit::Conflict => Err(Error::Unexpected(anyhow::anyhow!("ice has no conflicting guard"))),
        }
    }

    fn members(&self, room: &RoomId) -> Option<(UserId, UserId)> {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).get(room).cloned()
    }

    fn remember(&self, c: &Connection) {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MEMBERS_CACHE {
            m.clear();
        }
        m.insert(c.room_id.clone(), (c.owner.clone(), c.abonent.clone()));
    }

    pub async fn user(&self, id: &str) -> Result<UserState> {
        let id = UserId::parse(id).map_err(|_| Error::UserNotFound)?;
        let s = self.store.read(&Read { users: vec![id.clone()], ..Read::default() }).await?;
        s.users.get(&id).cloned().ok_or(Error::UserNotFound)
    }

    pub async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        self.store.users(q).await
    }

    pub async fn room(&self, caller: &UserId, id: &str) -> Result<Connection> {
        Span::current().record("room_id", id);
        let id = RoomId::parse(id)?;
        let s = self.store.read(&Read { rooms: vec![id.clone()], ..Read::default() }).await?;
        let c = s.rooms.get(&id).map(|r| r.room.clone()).ok_or(Error::RoomNotFound)?;
        if c.role_of(caller).is_none() {
            return Err(Error::Forbidden("you are not a participant of this room".into()));
        }
        Ok(c)
    }

    pub fn ice_servers(&self, caller: &UserId) -> IceServers {
        turn::ice_servers(&self.settings.ice, caller)
    }

    /// Closes rooms stuck negotiating; both sides hear `hangup` with reason `timeout`.
    pub async fn close_idle(&self) -> Result<usize> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::seconds(self.settings.connections.idle_ttl_s as i64);
        let mut closed = 0;
        for room in self.store.idle_rooms(cutoff).await? {
            let read = Read { rooms: vec![room.clone()], ..Read::default() };
            let accepted = crate::domain::event::now_us();
            let mut closes = false;
            self.run(read, None, |s| {
                let mut step = Step::new(accepted);
                closes = false;
                if let Some(r) = s.rooms.get(&room).filter(|r| r.room.is_idle(cutoff)) {
                    let mut c = r.room.clone();
                    c.close("timeout", now);
                    step = step.guard(Guard::Room(room.clone(), r.rev));
                    // Closed by the server: both sides hear it, each naming the other.
                    for role in [Role::Owner, Role::Abonent] {
                        step.events.push((c.user(role).clone(), Event::hangup(&c, c.user(role.other()), "timeout")));
                    }
                    step.rooms.push((c, false));
                    closes = true;
                }
                Ok(Plan { step, reply: None })
            })
            .await?;
            closed += usize::from(closes);
        }
        Ok(closed)
    }
}

/// Closes the open rooms in `rooms` (where `user` has a role), into `step`:
/// each guarded by its revision, and the other side hears `hangup` from `user`.
pub(crate) fn close_rooms(step: &mut Step, rooms: &[crate::store::RoomRead], user: &UserId, reason: &str, now: DateTime<Utc>) {
    for r in rooms.iter().filter(|r| r.room.is_open()) {
        let Some(role) = r.room.role_of(user) else { continue };
        let mut c = r.room.clone();
        c.close(reason, now);
        step.guards.push(Guard::Room(c.room_id.clone(), r.rev));
        step.events.push((c.user(role.other()).clone(), Event::hangup(&c, user, reason)));
        step.rooms.push((c, false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_kind_through_a_record() {
        let r = Reply::Ice(IceReply { room_id: "r".into() });
        let back: Reply = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(matches!(back, Reply::Ice(IceReply { room_id }) if room_id == "r"));
    }
}
