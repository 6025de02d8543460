//! Commands: every call that changes something, typed at the edge (REST body
//! or WebSocket frame), and `Service::execute`, the one entry both take.

use tracing::Span;

use super::Service;
use super::idempotency::{Idem, Running};
use super::reply::{Executed, Reply};
use crate::domain::event::{PutAnswerData, PutOfferData};
use crate::domain::names::CommandKind;
use crate::domain::{Connection, Event, IceCandidate, IdempotencyKey, MeetingId, MemberName, Meta, Reason, Role, RoomId, SessionDescription, UserId};
use crate::error::Result;

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
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::CameraOn { .. } => CommandKind::CameraOn,
            Command::CameraOff => CommandKind::CameraOff,
            Command::CameraShow { .. } => CommandKind::CameraShow,
            Command::Offer { .. } => CommandKind::Offer,
            Command::Answer { .. } => CommandKind::Answer,
            Command::Ice { .. } => CommandKind::Ice,
            Command::Hangup { .. } => CommandKind::Hangup,
            Command::MeetingCreate { .. } => CommandKind::MeetingCreate,
            Command::MeetingJoin { .. } => CommandKind::MeetingJoin,
            Command::MeetingLeave { .. } => CommandKind::MeetingLeave,
        }
    }

    /// The `cmd` name, from `names::COMMANDS`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn room_id(&self) -> Option<&RoomId> {
        match self {
            Command::Offer { room, .. } | Command::Answer { room, .. } | Command::Ice { room, .. } | Command::Hangup { room, .. } => Some(room),
            _ => None,
        }
    }

    /// Whether it is broadcast to everyone (rate-limited tighter).
    pub fn is_presence(&self) -> bool {
        matches!(self, Command::CameraOn { .. } | Command::CameraOff)
    }

    /// The SDP the call carries (offer or answer), which a kept answer need not hold twice.
    fn sent_sdp(&self) -> Option<SessionDescription> {
        match self {
            Command::Offer { offer, .. } => Some(offer.clone()),
            Command::Answer { answer, .. } => Some(answer.clone()),
            _ => None,
        }
    }
}

impl Service {
    /// Runs a command as `caller`; with a `key`, at most once per key.
    pub async fn execute(&self, caller: &UserId, key: Option<IdempotencyKey>, cmd: Command) -> Result<Executed> {
        if let Some(room) = cmd.room_id() {
            Span::current().record("room_id", room.as_str());
        }
        let accepted = crate::domain::event::now_us();
        let idem = key.map(|k| Idem::new(caller, k, &cmd, cmd.sent_sdp(), self.settings.limits.max_idempotency_keys));
        let idem = idem.as_ref();
        // Every time a step writes is the store's (`Snapshot::now`), never this node's.
        match cmd {
            Command::CameraOn { meta } => self.camera_on(caller, meta, accepted, idem).await,
            Command::CameraOff => self.camera_off(caller, accepted, idem).await,
            Command::CameraShow { owner } => self.show(caller, owner, accepted, idem).await,
            Command::Offer { room, offer } => {
                let ev = |c: &Connection| Event::PutOffer(PutOfferData { room_id: c.room_id.clone(), user_id: caller.clone(), offer: offer.clone() });
                self.room_op(room, accepted, idem, |c, now| c.offer(caller, offer.clone(), now).map(|()| Role::Abonent), ev, Reply::Offer).await
            }
            Command::Answer { room, answer } => {
                let ev = |c: &Connection| Event::PutAnswer(PutAnswerData { room_id: c.room_id.clone(), user_id: caller.clone(), answer: answer.clone() });
                self.room_op(room, accepted, idem, |c, now| c.answer(caller, answer.clone(), now).map(|()| Role::Owner), ev, Reply::Answer).await
            }
            Command::Hangup { room, reason } => {
                let ev = |c: &Connection| Event::hangup(c, caller, reason.as_str());
                self.room_op(room, accepted, idem, |c, now| c.hangup(caller, reason.as_str(), now), ev, Reply::Hangup).await
            }
            Command::Ice { room, candidate, dest } => self.ice(caller, room, candidate, dest, accepted, idem).await,
            Command::MeetingCreate { title, max_members } => self.meeting_create(caller, title, max_members, accepted, idem).await,
            Command::MeetingJoin { meeting, name } => self.meeting_join(caller, meeting, name, accepted, idem).await,
            Command::MeetingLeave { meeting } => self.meeting_leave(caller, meeting, accepted, idem).await,
        }
    }

    /// Holds `key` as running on this node until the guard drops: a duplicate
    /// meanwhile gets 409 `request_in_progress`.
    pub fn running(&self, caller: &UserId, key: &IdempotencyKey) -> Result<Running> {
        self.in_flight.enter(caller, key)
    }
}
