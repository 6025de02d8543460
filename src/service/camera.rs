//! Cameras: turning one on or off (broadcast to everyone), and asking to see
//! one, which opens a room between owner and viewer.

use tracing::Span;

use super::idempotency::Idem;
use super::reply::{Executed, Reply, ShowReply, UserReply};
use super::{Plan, Service, close_rooms};
use crate::domain::event::ShowCamData;
use crate::domain::{Camera, Connection, Event, Meta, UserId, UserState};
use crate::error::{Error, Result};
use crate::store::{Guard, Read, Step};

impl Service {
    pub(super) async fn camera_on(&self, caller: &UserId, meta: Option<Meta>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let read = Read { users: vec![caller.clone()], sessions_of: Some(caller.clone()), ..Read::default() };
        let meta = meta.map(Meta::into_value);
        self
            .call(read, idem, |s| {
                let now = s.now;
                let expire_at = now + self.grace();
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

    pub(super) async fn camera_off(&self, caller: &UserId, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let read = Read { users: vec![caller.clone()], owned_by: Some(caller.clone()), ..Read::default() };
        self
            .call(read, idem, |s| {
                let now = s.now;
                let mut u = s.users.get(caller).cloned().unwrap_or_else(|| UserState::new(caller.clone(), now));
                let mut step = Step::new(accepted);
                if u.camera_off(now) {
                    step = step.guard(Guard::User(caller.clone(), s.version(caller))).guard(Guard::Owned(caller.clone(), s.owned.len()));
                    close_rooms(&mut step, &s.owned, caller, "camera_off", now);
                    step.broadcast.push(Event::user(u.clone()));
                    step.users.push(u.clone());
                } else if u.first_seen(now) {
                    // Unknown to the store: the answer's version is a real one, and kept.
                    step = step.guard(Guard::User(caller.clone(), 0));
                    step.users.push(u.clone());
                }
                Ok(Plan { step, reply: Some(Reply::User(UserReply { user: u })) })
            })
            .await
    }

    pub(super) async fn show(&self, caller: &UserId, owner: UserId, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        if owner == *caller {
            return Err(Error::CannotShowSelf);
        }
        let max = self.settings.limits.max_viewers;
        let ice_servers = self.ice_servers(caller).ice_servers;
        let read = Read { users: vec![owner.clone()], pair: Some((owner.clone(), caller.clone())), sessions_of: Some(caller.clone()), ..Read::default() };
        let done = self
            .call(read, idem, |s| {
                let o = s.users.get(&owner).ok_or(Error::UserNotFound)?;
                if o.camera != Camera::On {
                    return Err(Error::CameraOff);
                }
                let reply = |connection: Connection, created| Reply::Show { reply: ShowReply { connection, ice_servers: ice_servers.clone() }, created };
                if let Some(r) = s.pair_room.as_ref().filter(|r| r.room.is_open()) {
                    return Ok(Plan { step: Step::new(accepted), reply: Some(reply(r.room.clone(), false)) });
                }
                if s.viewers >= max {
                    return Err(Error::TooManyViewers);
                }
                let room = Connection::new(owner.clone(), caller.clone(), s.now);
                let mut step = Step::new(accepted)
                    .guard(Guard::User(owner.clone(), o.version))
                    .guard(Guard::CanShow { owner: owner.clone(), abonent: caller.clone(), max });
                step.events.push((owner.clone(), Event::ShowCam(ShowCamData { room_id: room.room_id.clone(), user_id: caller.clone() })));
                step.rooms.push((room.clone(), true));
                if s.sessions.is_empty() {
                    // As cameraOn: a viewer with no session anywhere has a grace
                    // period from now, whose end closes the rooms they watch.
                    step.expiries.push((caller.clone(), Some(s.now + self.grace())));
                }
                Ok(Plan { step, reply: Some(reply(room, true)) })
            })
            .await?;
        if let Reply::Show { reply, .. } = &done.reply {
            Span::current().record("room_id", reply.connection.room_id.as_str());
            self.remember(&reply.connection);
        }
        Ok(done)
    }
}
