//! Peers of the peerconnection_client listener (`crate::compat`), as camsig
//! sees them: each peer is a user `pc-<id>`, a member of one lobby (a meeting
//! with no pairs, under a fixed id no app can name), so signing in and out
//! are one atomic step each with their notifications, and a peer that stops
//! polling leaves the lobby (`gone`) like any meeting member whose grace
//! period ran out. Messages are events in the receiver's log.

use super::{Plan, Service};
use crate::domain::event::{PeerData, PeerMessageData, now_us};
use crate::domain::meeting::{Member, MeetingId};
use crate::domain::{Event, Meeting, UserId};
use crate::error::{Error, Result};
use crate::store::{Guard, MeetingWrite, Read, Step};

/// The lobby's id: a ULID no `MeetingId::new` draws; meeting calls refuse it.
const LOBBY: &str = "0000000000000000000000PEER";
/// Longest name kept (the sample server keeps 512 bytes; a lobby of many
/// peers is read whole at each sign-in).
pub const MAX_PEER_NAME: usize = 256;

impl MeetingId {
    pub fn lobby() -> MeetingId {
        MeetingId::parse(LOBBY).expect("the lobby's id is a ULID")
    }

    pub fn is_lobby(&self) -> bool {
        self.as_str() == LOBBY
    }
}

/// A peer's user id.
pub fn peer_user(id: u64) -> UserId {
    UserId::parse(&format!("pc-{id}")).expect("pc-<number> is a user id")
}

/// The peer id of a peer's user id.
pub fn peer_id_of(u: &UserId) -> Option<u64> {
    u.as_str().strip_prefix("pc-")?.parse().ok()
}

/// A peer as the sample protocol lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: u64,
    pub name: String,
}

impl Service {
    /// Signs peer `id` in as `name`: it joins the lobby (at most `max_peers`,
    /// a guard of the step) and every peer there hears `peer` (connected).
    /// Answers every peer signed in, this one first.
    pub async fn peer_sign_in(&self, id: u64, name: &str) -> Result<Vec<Peer>> {
        let me = peer_user(id);
        let lobby = MeetingId::lobby();
        let max = self.settings.compat.peerconnection.max_peers;
        let read = Read { meetings: vec![lobby.clone()], sessions_of: Some(me.clone()), ..Read::default() };
        let accepted = now_us();
        let mut listed = Vec::new();
        self.run(read, None, |s| {
            let now = s.now;
            let (mut meeting, rev) = match s.meetings.get(&lobby) {
                Some(m) => (m.meeting.clone(), m.rev),
                None => {
                    let mut m = Meeting::new(me.clone(), Some("peerconnection_client peers".into()), max, now);
                    m.meeting_id = lobby.clone();
                    (m, 0)
                }
            };
            if meeting.members.len() >= max {
                return Err(Error::MeetingFull);
            }
            let mut step = Step::new(accepted).guard(Guard::Meeting(lobby.clone(), rev));
            let data = PeerData { peer_id: id, name: name.to_owned(), connected: true };
            for m in &meeting.members {
                step.events.push((m.user_id.clone(), Event::Peer(data.clone())));
            }
            listed = std::iter::once(Peer { id, name: name.to_owned() })
                .chain(meeting.members.iter().filter_map(|m| Some(Peer { id: peer_id_of(&m.user_id)?, name: m.name.clone() })))
                .collect();
            meeting.members.push(Member { user_id: me.clone(), name: name.to_owned(), joined_at: now });
            step.meetings.push(MeetingWrite { meeting, gone_after: None });
            step.memberships.push((me.clone(), lobby.clone(), true, String::new()));
            if s.sessions.is_empty() {
                // As a meeting join: with no session anywhere yet, the grace period runs from now.
                step.expiries.push((me.clone(), Some(now + self.grace())));
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(listed)
    }

    /// Signs peer `id` out: it leaves the lobby, and the others hear `peer`
    /// (not connected). An unknown or signed-out peer is `Forbidden`.
    pub async fn peer_sign_out(&self, id: u64) -> Result<()> {
        self.leave_lobby(&peer_user(id), "left").await
    }

    /// Whether peer `id` is signed in.
    pub async fn peer_signed_in(&self, id: u64) -> Result<bool> {
        let s = self.store.read(&Read { meetings_of: Some(peer_user(id)), ..Read::default() }).await?;
        Ok(s.member_of.iter().any(MeetingId::is_lobby))
    }

    /// A message from peer `from` to peer `to`, into `to`'s log; `Forbidden`
    /// when `to` is not signed in.
    pub async fn peer_message(&self, from: u64, to: u64, content_type: &str, data: String) -> Result<()> {
        let target = peer_user(to);
        let read = Read { meetings_of: Some(target.clone()), ..Read::default() };
        let accepted = now_us();
        let ev = Event::PeerMessage(PeerMessageData { peer_id: from, content_type: content_type.to_owned(), data });
        self.run(read, None, |s| {
            if !s.member_of.iter().any(MeetingId::is_lobby) {
                return Err(Error::Forbidden("that peer is not signed in".into()));
            }
            let mut step = Step::new(accepted);
            step.events.push((target.clone(), ev.clone()));
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }
}

/// The lobby's `peer` event for a member who left, to each who stays.
pub(crate) fn peer_left(step: &mut Step, meeting: &Meeting, left: &Member) {
    let Some(id) = peer_id_of(&left.user_id) else { return };
    let data = PeerData { peer_id: id, name: left.name.clone(), connected: false };
    for m in meeting.members.iter().filter(|m| m.user_id != left.user_id) {
        step.events.push((m.user_id.clone(), Event::Peer(data.clone())));
    }
}
