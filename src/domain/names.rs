//! The protocol's names, in one table: every command a client sends and every
//! event the server pushes, with the schemas and words the documents give
//! them. Code turns names into kinds and back only through these tables;
//! `http::wsdoc` builds the AsyncAPI document and the OpenAPI schemas from
//! them; tests hold `Event`'s serde names and the command parser to them.

/// Every command a client can send on `/ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    CameraOn,
    CameraOff,
    CameraShow,
    Offer,
    Answer,
    Ice,
    Hangup,
    MeetingCreate,
    MeetingJoin,
    MeetingLeave,
    Ping,
    Refresh,
    Watch,
    Unwatch,
}

/// A command frame: `cmd`, the schema of its fields (the REST body), and the
/// schema of `result` in its ack (the REST reply).
pub struct CommandSpec {
    pub kind: CommandKind,
    pub name: &'static str,
    pub body: Option<&'static str>,
    pub reply: Option<&'static str>,
    pub doc: &'static str,
}

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        kind: CommandKind::CameraOn,
        name: "cameraOn",
        body: Some("CameraOnBody"),
        reply: Some("UserReply"),
        doc: "As POST /webrtc/cameraOn.",
    },
    CommandSpec {
        kind: CommandKind::CameraOff,
        name: "cameraOff",
        body: None,
        reply: Some("UserReply"),
        doc: "As POST /webrtc/cameraOff.",
    },
    CommandSpec {
        kind: CommandKind::CameraShow,
        name: "cameraShow",
        body: Some("ShowBody"),
        reply: Some("ShowReply"),
        doc: "As POST /webrtc/cameraShow.",
    },
    CommandSpec {
        kind: CommandKind::Offer,
        name: "offer",
        body: Some("OfferBody"),
        reply: Some("ConnectionReply"),
        doc: "As POST /webrtc/offer.",
    },
    CommandSpec {
        kind: CommandKind::Answer,
        name: "answer",
        body: Some("AnswerBody"),
        reply: Some("ConnectionReply"),
        doc: "As POST /webrtc/answer.",
    },
    CommandSpec {
        kind: CommandKind::Ice,
        name: "ice",
        body: Some("IceBody"),
        reply: Some("IceReply"),
        doc: "As POST /webrtc/ice.",
    },
    CommandSpec {
        kind: CommandKind::Hangup,
        name: "hangup",
        body: Some("HangupBody"),
        reply: Some("ConnectionReply"),
        doc: "As POST /webrtc/hangup.",
    },
    CommandSpec {
        kind: CommandKind::MeetingCreate,
        name: "meetingCreate",
        body: Some("MeetingCreateBody"),
        reply: Some("MeetingReply"),
        doc: "As POST /webrtc/meetings.",
    },
    CommandSpec {
        kind: CommandKind::MeetingJoin,
        name: "meetingJoin",
        body: Some("MeetingJoinFields"),
        reply: Some("JoinReply"),
        doc: "As POST /webrtc/meetings/{meeting_id}/join.",
    },
    CommandSpec {
        kind: CommandKind::MeetingLeave,
        name: "meetingLeave",
        body: Some("MeetingRef"),
        reply: Some("MeetingReply"),
        doc: "As POST /webrtc/meetings/{meeting_id}/leave.",
    },
    CommandSpec {
        kind: CommandKind::Ping,
        name: "ping",
        body: None,
        reply: None,
        doc: "Acked with an empty result and no effect; counts against `limits.rate_per_s` like any command.",
    },
    CommandSpec {
        kind: CommandKind::Refresh,
        name: "refresh",
        body: Some("RefreshBody"),
        reply: Some("RefreshReply"),
        doc: "A new token for this session: same `sub`, later `exp`. A token for another user is refused with `forbidden` and changes nothing.",
    },
    CommandSpec {
        kind: CommandKind::Watch,
        name: "watch",
        body: Some("WatchBody"),
        reply: Some("WatchReply"),
        doc: "Adds users to this session's watch list (a `presence=watched` session hears `update_user` of these only), acked with their state now, so nothing falls between. At most `limits.max_watch` per session: 409 `too_many_watched`, and nothing is added. WebSocket only.",
    },
    CommandSpec {
        kind: CommandKind::Unwatch,
        name: "unwatch",
        body: Some("WatchBody"),
        reply: None,
        doc: "Removes users from this session's watch list; acked with an empty result. WebSocket only.",
    },
];

impl CommandKind {
    pub fn spec(self) -> &'static CommandSpec {
        COMMANDS.iter().find(|c| c.kind == self).expect("every command kind is in the table")
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind a `cmd` names; None for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        COMMANDS.iter().find(|c| c.name == name).map(|c| c.kind)
    }
}

/// Every event the server pushes (`action` is `server-action:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Hello,
    UpdateUser,
    ShowCam,
    PutOffer,
    PutAnswer,
    PutIce,
    Hangup,
    Resync,
    Reconnect,
    TokenExpiring,
    IceServers,
    MemberJoined,
    MemberLeft,
    Peer,
    PeerMessage,
    Kicked,
}

/// An event: its name, the schema of its `data`, whether it carries a log
/// `id`, and who gets it.
pub struct EventSpec {
    pub kind: EventKind,
    pub name: &'static str,
    pub data: &'static str,
    pub logged: bool,
    pub doc: &'static str,
}

pub const EVENTS: &[EventSpec] = &[
    EventSpec {
        kind: EventKind::Hello,
        name: "hello",
        data: "Hello",
        logged: false,
        doc: "The first frame of every session.",
    },
    EventSpec {
        kind: EventKind::UpdateUser,
        name: "update_user",
        data: "UserEventData",
        logged: false,
        doc: "To every session not opened with `presence=false`: a user's state changed. Not logged; drop one whose `user.version` is older than what you have.",
    },
    EventSpec {
        kind: EventKind::ShowCam,
        name: "show_cam",
        data: "ShowCamData",
        logged: true,
        doc: "To the owner: a viewer asked to see the camera. Send an offer.",
    },
    EventSpec {
        kind: EventKind::PutOffer,
        name: "put_offer",
        data: "PutOfferData",
        logged: true,
        doc: "To the abonent: the owner's offer. Answer it.",
    },
    EventSpec {
        kind: EventKind::PutAnswer,
        name: "put_answer",
        data: "PutAnswerData",
        logged: true,
        doc: "To the owner: the abonent's answer.",
    },
    EventSpec {
        kind: EventKind::PutIce,
        name: "put_ice",
        data: "PutIceData",
        logged: true,
        doc: "To the other side: an ICE candidate; an empty `candidate` ends them.",
    },
    EventSpec {
        kind: EventKind::Hangup,
        name: "hangup",
        data: "HangupData",
        logged: true,
        doc: "To the other side: the room is closed.",
    },
    EventSpec {
        kind: EventKind::Resync,
        name: "resync",
        data: "ResyncData",
        logged: false,
        doc: "Right after hello (or as a long poll's only event) when `since` is older than the log: reload state through REST, then resume from `data.last_id`.",
    },
    EventSpec {
        kind: EventKind::Reconnect,
        name: "reconnect",
        data: "ReconnectData",
        logged: false,
        doc: "The node is draining (a deploy, not a crash): the session closes next with code 1012. Reconnect to any node with `?since=data.last_id`; you stay online meanwhile.",
    },
    EventSpec {
        kind: EventKind::TokenExpiring,
        name: "token_expiring",
        data: "TokenExpiringData",
        logged: false,
        doc: "`auth.refresh_before_s` before the token's `exp`: send `refresh` with a new token, or the session closes with 4001 at `exp`.",
    },
    EventSpec {
        kind: EventKind::IceServers,
        name: "ice_servers",
        data: "IceServers",
        logged: false,
        doc: "While TURN is configured, at 80 % of `ttl_s`: fresh TURN credentials, for the ICE restarts of long calls.",
    },
    EventSpec {
        kind: EventKind::MemberJoined,
        name: "member_joined",
        data: "MemberJoinedData",
        logged: true,
        doc: "To every earlier member of a meeting: someone joined. You own your pair with them: send your offer in `data.room_id`.",
    },
    EventSpec {
        kind: EventKind::MemberLeft,
        name: "member_left",
        data: "MemberLeftData",
        logged: true,
        doc: "To every remaining member: someone left the meeting (`left`, `gone` or `kicked`); your pair with them is closed.",
    },
    EventSpec {
        kind: EventKind::Peer,
        name: "peer",
        data: "PeerData",
        logged: true,
        doc: "Only to the peers of the peerconnection_client listener (their user ids are `pc-<peer id>`): another peer signed in or out. Its listener answers a hanging GET with it.",
    },
    EventSpec {
        kind: EventKind::PeerMessage,
        name: "peer_message",
        data: "PeerMessageData",
        logged: true,
        doc: "Only to the peers of the peerconnection_client listener: a message from another peer, passed on byte for byte by a hanging GET.",
    },
    EventSpec {
        kind: EventKind::Kicked,
        name: "kicked",
        data: "KickedData",
        logged: true,
        doc: "An operator disconnected this user (`POST /admin/users/{id}/disconnect`): every session that was open then gets it and is closed with code 4003. A session opened later (a replay with `since`) gets it and stays open.",
    },
];

impl EventKind {
    pub fn spec(self) -> &'static EventSpec {
        EVENTS.iter().find(|e| e.kind == self).expect("every event kind is in the table")
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

/// The static name for a short action name read back from a store.
pub fn event_name(s: &str) -> &'static str {
    EVENTS.iter().find(|e| e.name == s).map_or("unknown", |e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_kinds_are_each_once() {
        assert_eq!(COMMANDS.iter().map(|c| c.name).collect::<HashSet<_>>().len(), COMMANDS.len());
        assert_eq!(COMMANDS.iter().map(|c| c.kind).collect::<HashSet<_>>().len(), COMMANDS.len());
        assert_eq!(EVENTS.iter().map(|e| e.name).collect::<HashSet<_>>().len(), EVENTS.len());
        assert_eq!(EVENTS.iter().map(|e| e.kind).collect::<HashSet<_>>().len(), EVENTS.len());
        for c in COMMANDS {
            assert_eq!(CommandKind::parse(c.name), Some(c.kind));
        }
    }

    /// `Event`'s serde tags are literals (serde needs them so); they must be the table's names.
    #[test]
    fn event_serde_names_are_the_tables() {
        let schema = serde_json::to_string(&<super::super::Event as utoipa::PartialSchema>::schema()).unwrap();
        let tagged: HashSet<String> = schema.split('"').filter_map(|s| s.strip_prefix("server-action:"))
            .filter(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
            .collect();
        let table: HashSet<String> = EVENTS.iter().map(|e| e.name.to_owned()).collect();
        assert_eq!(tagged, table);
    }
}
