//! Meetings: create, join, leave, read. Joining is one atomic step: the
//! membership, the name and seat checks, every pair Connection and every
//! `member_joined` are written together, guarded by the meeting's revision.
//! Leaving closes the leaver's pairs and tells the others, in one step too.

use std::time::Duration;

use super::idempotency::Idem;
use super::reply::{Executed, JoinReply, MeetingReply, Reply};
use super::{Plan, Service, close_rooms};
use crate::domain::event::{MemberJoinedData, MemberLeftData};
use crate::domain::meeting::Joined;
use crate::domain::{Connection, Event, Meeting, MeetingId, MemberName, UserId};
use crate::error::{Error, Result};
use crate::store::{Guard, MeetingWrite, Read, Snapshot, Step};

impl Service {
    fn empty_meeting_ttl(&self) -> Duration {
        self.settings.connections.idle_ttl
    }

    pub(super) async fn meeting_create(&self, caller: &UserId, title: Option<String>, max: Option<usize>, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        let limit = self.settings.limits.max_meeting_members;
        let max = max.unwrap_or(limit);
        if !(1..=limit).contains(&max) {
            return Err(Error::BadRequest(format!("max_members is 1 to {limit}")));
        }
        let ttl = self.empty_meeting_ttl();
        let most = self.settings.limits.max_meetings_per_user;
        let read = Read { created_by: Some(caller.clone()), ..Read::default() };
        self
            .call(read, idem, |s| {
                // The count is a guard of the step: creates racing on any nodes cannot pass it together.
                if s.created >= most {
                    return Err(Error::TooManyMeetings);
                }
                let meeting = Meeting::new(caller.clone(), title.clone(), max, s.now);
                let mut step = Step::new(accepted).guard(Guard::Meeting(meeting.meeting_id.clone(), 0)).guard(Guard::Created(caller.clone(), s.created));
                step.created = Some((caller.clone(), meeting.meeting_id.clone()));
                step.meetings.push(MeetingWrite { meeting: meeting.clone(), gone_after: Some(ttl) });
                Ok(Plan { step, reply: Some(Reply::MeetingCreated(MeetingReply { meeting: meeting.clone() })) })
            })
            .await
    }

    pub(super) async fn meeting_join(&self, caller: &UserId, id: MeetingId, name: MemberName, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        if id.is_lobby() {
            return Err(Error::MeetingNotFound);
        }
        let read = Read { meetings: vec![id.clone()], meeting_pairs: Some(id.clone()), sessions_of: Some(caller.clone()), ..Read::default() };
        self
            .call(read, idem, |s| {
                let (now, expire_at) = (s.now, s.now + self.grace());
                let m = s.meetings.get(&id).ok_or(Error::MeetingNotFound)?;
                let mut meeting = m.meeting.clone();
                let mut step = Step::new(accepted);
                let connections = match meeting.join(caller, &name, now)? {
                    Joined::Again => pairs_of(s, &meeting, caller),
                    Joined::New { earlier } => {
                        step = step.guard(Guard::Meeting(id.clone(), m.rev));
                        let mut rooms = Vec::new();
                        for owner in earlier {
                            let room = Connection::in_meeting(id.clone(), owner.clone(), caller.clone(), now);
                            let data = MemberJoinedData { meeting_id: id.clone(), user_id: caller.clone(), name: name.as_str().to_owned(), room_id: room.room_id.clone() };
                            step.events.push((owner, Event::MemberJoined(data)));
                            step.rooms.push((room.clone(), true));
                            rooms.push(room);
                        }
                        step.meetings.push(MeetingWrite { meeting: meeting.clone(), gone_after: None });
                        step.memberships.push((caller.clone(), id.clone(), true, String::new()));
                        if s.sessions.is_empty() {
                            // As cameraOn: with no session anywhere, the grace period runs from now.
                            step.expiries.push((caller.clone(), Some(expire_at)));
                        }
                        rooms
                    }
                };
                Ok(Plan { step, reply: Some(Reply::MeetingJoined(JoinReply { meeting, connections })) })
            })
            .await
    }

    pub(super) async fn meeting_leave(&self, caller: &UserId, id: MeetingId, accepted: i64, idem: Option<&Idem>) -> Result<Executed> {
        if id.is_lobby() {
            return Err(Error::MeetingNotFound);
        }
        let done = self.leave(caller, &id, "left", false, accepted, idem).await?;
        Ok(done.expect("leave always answers"))
    }

    /// `user` leaves a meeting: their pairs close with `reason`, the others hear
    /// `hangup` and `member_left`. With `only_if_gone`, nothing happens if the
    /// user has a session again (the grace period ended, but they came back).
    async fn leave(&self, user: &UserId, id: &MeetingId, reason: &str, only_if_gone: bool, accepted: i64, idem: Option<&Idem>) -> Result<Option<Executed>> {
        let mut read = Read { meetings: vec![id.clone()], meeting_pairs: Some(id.clone()), ..Read::default() };
        if only_if_gone {
            read.sessions_of = Some(user.clone());
        }
        let ttl = self.empty_meeting_ttl();
        self.run(read, idem, |s| {
            let now = s.now;
            let m = s.meetings.get(id).ok_or(Error::MeetingNotFound)?;
            let mut meeting = m.meeting.clone();
            meeting.require_member(user)?;
            let mut step = Step::new(accepted).guard(Guard::Meeting(id.clone(), m.rev));
            if only_if_gone {
                if !s.sessions.is_empty() {
                    return Ok(Plan { step: Step::new(accepted), reply: None });
                }
                step = step.guard(Guard::Sessions(user.clone(), 0));
            }
            if id.is_lobby() {
                // Peers hear the sample protocol's `name,id,0`, not member_left.
                if let Some(left) = meeting.members.iter().find(|m| m.user_id == *user) {
                    super::peers::peer_left(&mut step, &meeting, left);
                }
            }
            meeting.leave(user);
            close_rooms(&mut step, &s.pairs, user, reason, now);
            if !id.is_lobby() {
                for other in &meeting.members {
                    let data = MemberLeftData { meeting_id: id.clone(), user_id: user.clone(), reason: reason.to_owned() };
                    step.events.push((other.user_id.clone(), Event::MemberLeft(data)));
                }
            }
            let gone_after = meeting.members.is_empty().then_some(ttl);
            step.meetings.push(MeetingWrite { meeting: meeting.clone(), gone_after });
            step.memberships.push((user.clone(), id.clone(), false, reason.to_owned()));
            Ok(Plan { step, reply: Some(Reply::MeetingLeft(MeetingReply { meeting })) })
        })
        .await
    }

    /// A user whose grace period ended without a session leaves every meeting (`gone`).
    pub(crate) async fn leave_meetings(&self, user: &UserId, reason: &str) -> Result<()> {
        self.leave_all(user, reason, true).await
    }

    /// A user an operator disconnected leaves every meeting, sessions or not.
    pub(crate) async fn leave_meetings_now(&self, user: &UserId, reason: &str) -> Result<()> {
        self.leave_all(user, reason, false).await
    }

    async fn leave_all(&self, user: &UserId, reason: &str, only_if_gone: bool) -> Result<()> {
        let s = self.store.read(&Read { meetings_of: Some(user.clone()), ..Read::default() }).await?;
        // A kicked peer of the lobby leaves it when its sessions end, as a gone one does.
        for id in s.member_of.iter().filter(|m| only_if_gone || !m.is_lobby()) {
            match self.leave(user, id, reason, only_if_gone, crate::domain::event::now_us(), None).await {
                // Gone meanwhile, or already left: nothing to do.
                Ok(_) | Err(Error::MeetingNotFound | Error::Forbidden(_)) => {}
                Err(e) => return Err(e),
            }
            crate::failpoint::here("leave.between");
        }
        Ok(())
    }

    /// The lobby of the peerconnection_client peers (see `peers`): `user` leaves it.
    pub(crate) async fn leave_lobby(&self, user: &UserId, reason: &str) -> Result<()> {
        let lobby = MeetingId::lobby();
        self.leave(user, &lobby, reason, false, crate::domain::event::now_us(), None).await?;
        Ok(())
    }

    /// A meeting, for its members.
    pub async fn meeting(&self, caller: &UserId, id: &str) -> Result<Meeting> {
        let id = MeetingId::parse(id)?;
        if id.is_lobby() {
            return Err(Error::MeetingNotFound);
        }
        let s = self.store.read(&Read { meetings: vec![id.clone()], ..Read::default() }).await?;
        let m = s.meetings.get(&id).ok_or(Error::MeetingNotFound)?;
        m.meeting.require_member(caller)?;
        Ok(m.meeting.clone())
    }
}

/// The caller's open pairs with earlier members, in the members' order (as the first join answered).
fn pairs_of(s: &Snapshot, meeting: &Meeting, caller: &UserId) -> Vec<Connection> {
    let mut rooms: Vec<Connection> = s.pairs.iter().filter(|r| r.room.is_open() && r.room.abonent == *caller).map(|r| r.room.clone()).collect();
    let at = |u: &UserId| meeting.members.iter().position(|m| m.user_id == *u);
    rooms.sort_by_key(|c| at(&c.owner));
    rooms
}
