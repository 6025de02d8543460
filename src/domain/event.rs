//! Events pushed to WebSocket sessions, their ids, and the ready-to-send frame.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use utoipa::ToSchema;

use super::connection::Connection;
use super::ids::{RoomId, UserId};
use super::meeting::MeetingId;
use super::names::EventKind;
use super::sdp::{IceCandidate, SessionDescription};
use super::user::UserState;
use super::ice_servers::{IceServer, IceServers};

/// The position of an event in a user's log, `"<ms>-<seq>"` like a Redis stream id.
/// `0-0` is the start: before any event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const START: EventId = EventId { ms: 0, seq: 0 };
    /// The last id there can be: nothing comes after it (Redis cannot even ask).
    pub const MAX: EventId = EventId { ms: u64::MAX, seq: u64::MAX };

    /// The id after `last` at time `now_ms`, never going backwards.
    pub fn next(last: EventId, now_ms: u64) -> EventId {
        if now_ms > last.ms {
            EventId { ms: now_ms, seq: 0 }
        } else {
            EventId { ms: last.ms, seq: last.seq + 1 }
        }
    }
}

impl EventId {
    /// A client's `since`: 400 when it is not an event id.
    pub fn parse_since(s: &str) -> Result<EventId, crate::error::Error> {
        s.parse().map_err(|()| crate::error::Error::BadRequest(format!("since {s:?} is not an event id like \"1732212000123-0\"")))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(EventId { ms: ms.parse().map_err(|_| ())?, seq: seq.parse().map_err(|_| ())? })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Hello {
    pub session_id: String,
    pub user_id: String,
    pub node_id: String,
    pub heartbeat_s: u64,
    /// The newest event id in the user's log: what to pass as `since` on a reconnect.
    pub last_id: String,
    /// As `GET /webrtc/iceServers`; renewed by `ice_servers` events while TURN is configured.
    pub ice_servers: Vec<IceServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenExpiringData {
    /// The token's `exp`: send `refresh` with a new token before then, or the session closes with 4001.
    pub exp: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserEventData {
    pub user: UserState,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShowCamData {
    #[schema(value_type = String)]
    pub room_id: RoomId,
    /// The viewer who asked.
    #[schema(value_type = String)]
    pub user_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutOfferData {
    #[schema(value_type = String)]
    pub room_id: RoomId,
    /// The owner.
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub offer: SessionDescription,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutAnswerData {
    #[schema(value_type = String)]
    pub room_id: RoomId,
    /// The abonent.
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub answer: SessionDescription,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PutIceData {
    #[schema(value_type = String)]
    pub room_id: RoomId,
    /// The sender.
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub candidate: IceCandidate,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HangupData {
    #[schema(value_type = String)]
    pub room_id: RoomId,
    /// Who ended it; for `camera_off`, `timeout` and `gone` that is the owner or the user who left.
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberJoinedData {
    #[schema(value_type = String)]
    pub meeting_id: MeetingId,
    /// The newcomer.
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub name: String,
    /// Your pair with the newcomer: you are its `owner`, send your offer here.
    #[schema(value_type = String)]
    pub room_id: RoomId,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberLeftData {
    #[schema(value_type = String)]
    pub meeting_id: MeetingId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// `left`, `gone` or `kicked`.
    pub reason: String,
}

/// For the peers of the peerconnection_client listener (`crate::compat`): a
/// peer signed in (`connected`) or out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerData {
    pub peer_id: u64,
    pub name: String,
    pub connected: bool,
}

/// For the peers of the peerconnection_client listener: a message from
/// another peer, its body as sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerMessageData {
    /// The sender.
    pub peer_id: u64,
    pub content_type: String,
    pub data: String,
}

/// An operator disconnected the user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KickedData {
    /// As the operator gave it (default `kicked`).
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResyncData {
    /// Events after `since` are gone; reload state through REST and resume from here.
    pub last_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReconnectData {
    /// `drain`: this node is shutting down.
    pub reason: String,
    /// Reconnect (to any node) with `?since=` this id, and nothing is lost.
    pub last_id: String,
}

/// Everything the server pushes. Serialized as `{"action": "server-action:<name>", "data": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", content = "data")]
pub enum Event {
    #[serde(rename = "server-action:hello")]
    Hello(Hello),
    #[serde(rename = "server-action:update_user")]
    UpdateUser(UserEventData),
    #[serde(rename = "server-action:show_cam")]
    ShowCam(ShowCamData),
    #[serde(rename = "server-action:put_offer")]
    PutOffer(PutOfferData),
    #[serde(rename = "server-action:put_answer")]
    PutAnswer(PutAnswerData),
    #[serde(rename = "server-action:put_ice")]
    PutIce(PutIceData),
    #[serde(rename = "server-action:hangup")]
    Hangup(HangupData),
    #[serde(rename = "server-action:resync")]
    Resync(ResyncData),
    #[serde(rename = "server-action:reconnect")]
    Reconnect(ReconnectData),
    #[serde(rename = "server-action:token_expiring")]
    TokenExpiring(TokenExpiringData),
    #[serde(rename = "server-action:ice_servers")]
    IceServers(IceServers),
    #[serde(rename = "server-action:member_joined")]
    MemberJoined(MemberJoinedData),
    #[serde(rename = "server-action:member_left")]
    MemberLeft(MemberLeftData),
    #[serde(rename = "server-action:peer")]
    Peer(PeerData),
    #[serde(rename = "server-action:peer_message")]
    PeerMessage(PeerMessageData),
    #[serde(rename = "server-action:kicked")]
    Kicked(KickedData),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Hello(_) => EventKind::Hello,
            Event::UpdateUser(_) => EventKind::UpdateUser,
            Event::ShowCam(_) => EventKind::ShowCam,
            Event::PutOffer(_) => EventKind::PutOffer,
            Event::PutAnswer(_) => EventKind::PutAnswer,
            Event::PutIce(_) => EventKind::PutIce,
            Event::Hangup(_) => EventKind::Hangup,
            Event::Resync(_) => EventKind::Resync,
            Event::Reconnect(_) => EventKind::Reconnect,
            Event::TokenExpiring(_) => EventKind::TokenExpiring,
            Event::IceServers(_) => EventKind::IceServers,
            Event::MemberJoined(_) => EventKind::MemberJoined,
            Event::MemberLeft(_) => EventKind::MemberLeft,
            Event::Peer(_) => EventKind::Peer,
            Event::PeerMessage(_) => EventKind::PeerMessage,
            Event::Kicked(_) => EventKind::Kicked,
        }
    }

    /// The short name (`action` without `server-action:`), from `names::EVENTS`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn user(user: UserState) -> Self {
        Event::UpdateUser(UserEventData { user })
    }

    /// Whose change an `update_user` is (None for any other event).
    pub fn presence_of(&self) -> Option<&UserId> {
        match self {
            Event::UpdateUser(d) => Some(&d.user.user_id),
            _ => None,
        }
    }

    pub fn hangup(conn: &Connection, by: &UserId, reason: &str) -> Self {
        Event::Hangup(HangupData { room_id: conn.room_id.clone(), user_id: by.clone(), reason: reason.into() })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }
}

/// An event ready for the socket: serialized once, shared by every session it goes to.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Set on events from a user's log; `update_user` and `hello` have none.
    pub id: Option<EventId>,
    pub action: &'static str,
    pub json: Arc<str>,
    /// Wall clock (µs since the epoch) when the call that caused it was accepted.
    pub accepted_us: i64,
}

impl Frame {
    /// Builds the envelope from an event's JSON, adding `"id"` when it has one.
    pub fn new(id: Option<EventId>, action: &'static str, event_json: &str, accepted_us: i64) -> Self {
        let json: Arc<str> = match id {
            Some(id) => format!("{{\"id\":\"{id}\",{}", &event_json[1..]).into(),
            None => event_json.into(),
        };
        Frame { id, action, json, accepted_us }
    }

    pub fn from_event(id: Option<EventId>, event: &Event, accepted_us: i64) -> Self {
        Frame::new(id, event.name(), &event.to_json(), accepted_us)
    }
}

/// Wall clock in µs since the epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_round_trip() {
        let a = EventId::next(EventId::START, 5);
        let b = EventId::next(a, 5);
        let c = EventId::next(b, 3);
        assert!(a < b && b < c);
        assert_eq!("5-1".parse::<EventId>(), Ok(b));
        assert_eq!(c.to_string().parse::<EventId>(), Ok(c));
        assert!("x".parse::<EventId>().is_err());
    }

    #[test]
    fn frame_envelope_has_action_id_and_data() {
        let ev = Event::Resync(ResyncData { last_id: "1-0".into() });
        let f = Frame::from_event(Some(EventId { ms: 9, seq: 2 }), &ev, 0);
        let v: serde_json::Value = serde_json::from_str(&f.json).unwrap();
        assert_eq!(v["action"], "server-action:resync");
        assert_eq!(v["id"], "9-2");
        assert_eq!(v["data"]["last_id"], "1-0");
    }
}
