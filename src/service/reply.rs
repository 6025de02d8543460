//! What a command answers: the reply bodies of the contract, and `Reply`, the
//! whole answer kept under an `Idempotency-Key` and replayed to a retry.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Connection, Meeting, UserState};
use crate::domain::ice_servers::IceServer;

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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeetingReply {
    pub meeting: Meeting,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinReply {
    pub meeting: Meeting,
    /// Your pair with each earlier member: you are the `abonent`, they offer.
    pub connections: Vec<Connection>,
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
    MeetingCreated(MeetingReply),
    MeetingJoined(JoinReply),
    MeetingLeft(MeetingReply),
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
