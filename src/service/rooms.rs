//! Rooms: the signaling between the two sides of one (offer, answer, ICE,
//! hangup), the ICE servers handed to them, and closing rooms left negotiating.

use chrono::{DateTime, Utc};
use tracing::Span;

use super::idempotency::Idem;
use super::reply::{ConnectionReply, Executed, IceReply, Reply};
use super::{Plan, Service};
use crate::domain::event::PutIceData;
use crate::domain::{Connection, Event, IceCandidate, Role, RoomId, UserId};
use crate::error::{Error, Result};
use crate::store::{Commit, Guard, Read, Step};
use crate::domain::ice_servers::IceServers;
use crate::turn;

/// Rooms whose members this node remembers (members never change), so that
/// `ice` needs no read.
const MEMBERS_CACHE: usize = 100_000;

impl Service {
    /// A transition of one room by one of its members; the other side hears `event`.
    pub(super) async fn room_op(
        &self,
        room: RoomId,
        accepted: i64,
        idem: Option<&Idem>,
        op: impl Fn(&mut Connection, DateTime<Utc>) -> Result<Role>,
        event: impl Fn(&Connection) -> Event,
        reply: fn(ConnectionReply) -> Reply,
    ) -> Result<Executed> {
        let read = Read { rooms: vec![room.clone()], ..Read::default() };
        self
            .call(read, idem, |s| {
                let r = s.rooms.get(&room).ok_or(Error::RoomNotFound)?;
                self.remember(&r.room);
                let mut c = r.room.clone();
                let to = op(&mut c, s.now)?;
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
    pub(super) async fn ice(&self, caller: &UserId, room: RoomId, candidate: IceCandidate, dest: Option<Role>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
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
        // No read, so no store clock here: Redis touches the room by its own
        // (`touch`); the memory store's clock is this process's.
        step.touch = Some((room.clone(), Utc::now()));
        step.events.push((to, Event::PutIce(PutIceData { room_id: room.clone(), user_id: caller.clone(), candidate })));
        match self.commit(&step).await? {
            Commit::Done => Ok(Executed { reply, replayed: false }),
            Commit::Recorded(raw) => idem.expect("only a keyed step is recorded").replay(&raw, None),
            Commit::Closed => Err(Error::RoomClosed),
            Commit::Missing => Err(Error::RoomNotFound),
            Commit::Conflict => Err(Error::Unexpected(anyhow::anyhow!("ice has no conflicting guard"))),
        }
    }

    fn members(&self, room: &RoomId) -> Option<(UserId, UserId)> {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).get(room).cloned()
    }

    pub(super) fn remember(&self, c: &Connection) {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MEMBERS_CACHE {
            m.clear();
        }
        m.insert(c.room_id.clone(), (c.owner.clone(), c.abonent.clone()));
    }

    /// One room, for its two users.
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
        let idle = self.settings.connections.idle_ttl;
        let mut closed = 0;
        for room in self.store.idle_rooms(idle).await? {
            let read = Read { rooms: vec![room.clone()], ..Read::default() };
            let accepted = crate::domain::event::now_us();
            let mut closes = false;
            self.run(read, None, |s| {
                let mut step = Step::new(accepted);
                closes = false;
                if let Some(r) = s.rooms.get(&room).filter(|r| r.room.is_idle(s.now - idle)) {
                    let mut c = r.room.clone();
                    c.close("timeout", s.now);
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
