//! A connection (room): one viewer of one camera, and its signaling state machine.
//!
//! `requested` → `offered` → `answered` → `closed`; a new offer in `answered`
//! goes back to `offered`. Checks run in the contract's order: who you are
//! (403), then state (409), then the content of the SDP or candidate (422).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::{RoomId, UserId};
use super::meeting::MeetingId;
use super::sdp::{IceCandidate, SdpKind, SessionDescription};
use crate::error::Error;

/// Longest hangup reason accepted.
pub const MAX_REASON_LEN: usize = 64;

/// Why a room ended: 1 to `MAX_REASON_LEN` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(s: Option<String>) -> Result<Self, Error> {
        let s = s.unwrap_or_else(|| "hangup".into());
        if s.is_empty() || s.chars().count() > MAX_REASON_LEN {
            return Err(Error::BadRequest(format!("reason is 1 to {MAX_REASON_LEN} characters")));
        }
        if super::text::has_hidden(&s) {
            return Err(Error::BadRequest("a reason has no control or invisible formatting characters".into()));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    Requested,
    Offered,
    Answered,
    Closed,
}

/// Which side of a room a user is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user whose camera is shown.
    Owner,
    /// The viewer.
    Abonent,
}

impl Role {
    pub fn other(self) -> Role {
        match self {
            Role::Owner => Role::Abonent,
            Role::Abonent => Role::Owner,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Connection {
    #[schema(value_type = String, example = "01JD3Z5T8Q9W2E4R6T8Y0U2I4O")]
    pub room_id: RoomId,
    #[schema(value_type = String, example = "42")]
    pub owner: UserId,
    #[schema(value_type = String, example = "7")]
    pub abonent: UserId,
    pub state: ConnState,
    #[serde(with = "super::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last signaling activity; a room idle in `requested` or `offered` is closed.
    #[serde(with = "super::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<SessionDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<SessionDescription>,
    /// Why the room was closed, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set on a pair of a meeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub meeting_id: Option<MeetingId>,
}

impl Connection {
    /// A room placed beside its owner.
    pub fn new(owner: UserId, abonent: UserId, now: DateTime<Utc>) -> Self {
        Self::placed(RoomId::near(owner.as_str()), owner, abonent, now)
    }

    fn placed(room_id: RoomId, owner: UserId, abonent: UserId, now: DateTime<Utc>) -> Self {
        Self {
            room_id,
            owner,
            abonent,
            state: ConnState::Requested,
            created_at: now,
            updated_at: now,
            offer: None,
            answer: None,
            reason: None,
            meeting_id: None,
        }
    }

    /// A pair of a meeting: `owner` was there first, `abonent` is the newcomer.
    pub fn in_meeting(meeting: MeetingId, owner: UserId, abonent: UserId, now: DateTime<Utc>) -> Self {
        // Placed beside its meeting, whose steps write it.
        let room = RoomId::near(meeting.as_str());
        Self { meeting_id: Some(meeting), ..Self::placed(room, owner, abonent, now) }
    }

    pub fn is_open(&self) -> bool {
        self.state != ConnState::Closed
    }

    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        if *user == self.owner {
            Some(Role::Owner)
        } else if *user == self.abonent {
            Some(Role::Abonent)
        } else {
            None
        }
    }

    pub fn user(&self, role: Role) -> &UserId {
        match role {
            Role::Owner => &self.owner,
            Role::Abonent => &self.abonent,
        }
    }

    fn participant(&self, caller: &UserId) -> Result<Role, Error> {
        self.role_of(caller)
            .ok_or_else(|| Error::Forbidden("you are not a participant of this room".into()))
    }

    fn require(&self, caller: &UserId, role: Role, what: &str) -> Result<(), Error> {
        if self.participant(caller)? != role {
            return Err(Error::Forbidden(format!("only the {role:?} of the room sends {what}").to_lowercase()));
        }
        Ok(())
    }

    fn require_open(&self) -> Result<(), Error> {
        if self.is_open() { Ok(()) } else { Err(Error::RoomClosed) }
    }

    /// The owner (re)offers: from any open state to `offered`.
    pub fn offer(&mut self, caller: &UserId, desc: SessionDescription, now: DateTime<Utc>) -> Result<(), Error> {
        self.require(caller, Role::Owner, "an offer")?;
        self.require_open()?;
        desc.validate(SdpKind::Offer)?;
        self.state = ConnState::Offered;
        self.offer = Some(desc);
        self.answer = None;
        self.updated_at = now;
        Ok(())
    }

    /// The abonent answers the pending offer.
    pub fn answer(&mut self, caller: &UserId, desc: SessionDescription, now: DateTime<Utc>) -> Result<(), Error> {
        self.require(caller, Role::Abonent, "an answer")?;
        self.require_open()?;
        if self.state != ConnState::Offered {
            return Err(Error::NoOffer);
        }
        desc.validate(SdpKind::Answer)?;
        self.state = ConnState::Answered;
        self.answer = Some(desc);
        self.updated_at = now;
        Ok(())
    }

    /// A candidate from either side, in any open state. Returns the side it goes to.
    pub fn ice(&mut self, caller: &UserId, dest: Option<Role>, cand: &IceCandidate, now: DateTime<Utc>) -> Result<Role, Error> {
        let to = Self::ice_route(&self.owner, &self.abonent, caller, dest)?;
        self.require_open()?;
        cand.validate()?;
        self.updated_at = now;
        Ok(to)
    }

    /// Who a candidate goes to, from the room's two members alone (they never
    /// change, so a node may know them without reading the room).
    pub fn ice_route(owner: &UserId, abonent: &UserId, caller: &UserId, dest: Option<Role>) -> Result<Role, Error> {
        let from = if caller == owner {
            Role::Owner
        } else if caller == abonent {
            Role::Abonent
        } else {
            return Err(Error::Forbidden("you are not a participant of this room".into()));
        };
        if dest == Some(from) {
            return Err(Error::Forbidden("dest must be the other side of the room".into()));
        }
        Ok(from.other())
    }

    /// Either side ends the room. Returns the side to tell.
    pub fn hangup(&mut self, caller: &UserId, reason: &str, now: DateTime<Utc>) -> Result<Role, Error> {
        let from = self.participant(caller)?;
        self.require_open()?;
        self.close(reason, now);
        Ok(from.other())
    }

    pub fn close(&mut self, reason: &str, now: DateTime<Utc>) {
        self.state = ConnState::Closed;
        self.reason = Some(reason.to_owned());
        self.updated_at = now;
    }

    /// Negotiation that never completed holds a viewer slot; it is closed after
    /// the idle TTL. A meeting's pair lives as long as its members stay.
    pub fn is_idle(&self, cutoff: DateTime<Utc>) -> bool {
        self.meeting_id.is_none() && matches!(self.state, ConnState::Requested | ConnState::Offered) && self.updated_at < cutoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sdp::tests::OFFER;

    fn ids() -> (UserId, UserId, UserId) {
        (UserId::parse("o").unwrap(), UserId::parse("a").unwrap(), UserId::parse("x").unwrap())
    }

    fn sd(kind: &str) -> SessionDescription {
        SessionDescription { kind: kind.into(), sdp: OFFER.into() }
    }

    #[test]
    fn reasons() {
        assert_eq!(Reason::parse(None).unwrap().as_str(), "hangup");
        assert_eq!(Reason::parse(Some("done, bye".into())).unwrap().as_str(), "done, bye");
        for bad in ["", "a\nb", "ok\u{202E}", "\u{200B}", "x\u{FEFF}", "tab\there"] {
            assert!(matches!(Reason::parse(Some(bad.into())), Err(Error::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn full_negotiation_and_renegotiation() {
        let (o, a, _) = ids();
        let now = Utc::now();
        let mut c = Connection::new(o.clone(), a.clone(), now);
        assert!(matches!(c.answer(&a, sd("answer"), now), Err(Error::NoOffer)));
        c.offer(&o, sd("offer"), now).unwrap();
        assert_eq!(c.state, ConnState::Offered);
        c.answer(&a, sd("answer"), now).unwrap();
        assert_eq!(c.state, ConnState::Answered);
        assert!(matches!(c.answer(&a, sd("answer"), now), Err(Error::NoOffer)));
        c.offer(&o, sd("offer"), now).unwrap();
        assert_eq!(c.state, ConnState::Offered);
        assert!(c.answer.is_none());
        assert_eq!(c.hangup(&a, "bye", now).unwrap(), Role::Owner);
        assert!(matches!(c.offer(&o, sd("offer"), now), Err(Error::RoomClosed)));
        assert!(matches!(c.hangup(&o, "bye", now), Err(Error::RoomClosed)));
    }

    #[test]
    fn only_a_camera_room_is_ever_idle() {
        let (o, a, _) = ids();
        let then = Utc::now();
        let later = then + chrono::Duration::seconds(1);
        assert!(Connection::new(o.clone(), a.clone(), then).is_idle(later));
        let pair = Connection::in_meeting(crate::domain::MeetingId::new(), o, a, then);
        assert!(!pair.is_idle(later), "a meeting's pair lives as long as its members stay");
    }

    #[test]
    fn roles_are_checked_before_state_and_content() {
        let (o, a, x) = ids();
        let now = Utc::now();
        let mut c = Connection::new(o.clone(), a.clone(), now);
        assert!(matches!(c.offer(&a, sd("offer"), now), Err(Error::Forbidden(_))));
        assert!(matches!(c.answer(&o, sd("answer"), now), Err(Error::Forbidden(_))));
        assert!(matches!(c.hangup(&x, "", now), Err(Error::Forbidden(_))));
        assert!(matches!(c.offer(&o, sd("answer"), now), Err(Error::InvalidSdp(_))));
        assert_eq!(c.state, ConnState::Requested, "a refused call changes nothing");
        let cand = IceCandidate { candidate: String::new(), sdp_mid: None, sdp_m_line_index: None, username_fragment: None };
        assert_eq!(c.ice(&o, None, &cand, now).unwrap(), Role::Abonent);
        assert_eq!(c.ice(&a, Some(Role::Owner), &cand, now).unwrap(), Role::Owner);
        assert!(matches!(c.ice(&a, Some(Role::Abonent), &cand, now), Err(Error::Forbidden(_))));
    }
}
