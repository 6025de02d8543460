//! The request bodies of the REST calls, which are also the fields of the
//! same WebSocket commands (plus `refresh`, the socket's own), and where they
//! become typed `Command`s: ids, reasons, titles, names and meta are parsed
//! here, at the edge, so the service never sees a raw string. Bounds that
//! depend on configuration (`max_members`) are the service's.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::domain::names::CommandKind;
use crate::domain::{IceCandidate, MeetingId, MemberName, Meta, Reason, Role, RoomId, SessionDescription, UserId};
use crate::error::{Error, Result};
use crate::service::command::Command;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CameraOnBody {
    /// Free-form JSON object shown to others (at most 1 KiB).
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>, example = json!({"name": "Ann"}))]
    pub meta: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CameraOffBody {}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ShowBody {
    /// The owner of the camera to see.
    #[schema(example = "42", min_length = 1, max_length = 128)]
    pub user_id: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OfferBody {
    pub room_id: String,
    pub offer: SessionDescription,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AnswerBody {
    pub room_id: String,
    pub answer: SessionDescription,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct IceBody {
    pub room_id: String,
    pub candidate: IceCandidate,
    /// Who the candidate is for; when given it must be the other side.
    #[serde(default)]
    pub dest: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HangupBody {
    pub room_id: String,
    /// Defaults to `hangup`; 1 to 64 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct MeetingCreateBody {
    /// At most 128 characters.
    #[schema(example = "Standup", max_length = 128)]
    pub title: Option<String>,
    /// 1 to `limits.max_meeting_members` (8 unless configured; default: that limit).
    #[schema(minimum = 1, maximum = 8)]
    pub max_members: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MeetingJoinBody {
    /// Your display name in the meeting: 1 to 64 characters, unique in it.
    #[schema(example = "Ann", min_length = 1, max_length = 64)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MeetingJoinFields {
    pub meeting_id: String,
    /// Your display name in the meeting: 1 to 64 characters, unique in it.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

/// An empty body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct MeetingLeaveBody {}

/// The `refresh` command's fields (WebSocket only).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// A new JWT for the same `sub`, with a later `exp`.
    pub token: String,
}

#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct RefreshReply {
    /// The session now lives until this `exp`.
    pub exp: u64,
}

/// The `watch` and `unwatch` commands' fields (WebSocket only).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchBody {
    /// The users to watch (or stop watching).
    #[schema(example = json!(["42", "43"]))]
    pub user_ids: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct WatchReply {
    /// The watched users' state now (users never seen are left out).
    pub users: Vec<crate::domain::UserState>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MeetingRef {
    pub meeting_id: String,
}

impl MeetingCreateBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::MeetingCreate { title: crate::domain::meeting::parse_title(self.title)?, max_members: self.max_members })
    }
}

impl MeetingJoinBody {
    pub fn command(self, meeting: &str) -> Result<Command> {
        let meeting = MeetingId::parse(meeting)?;
        Ok(Command::MeetingJoin { meeting, name: MemberName::parse(&self.name)? })
    }
}

/// A meeting id from a path.
pub fn meeting_leave(meeting: &str) -> Result<Command> {
    Ok(Command::MeetingLeave { meeting: MeetingId::parse(meeting)? })
}

impl CameraOnBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::CameraOn { meta: self.meta.map(Meta::parse).transpose()? })
    }
}

impl ShowBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::CameraShow { owner: UserId::parse(&self.user_id)? })
    }
}

impl OfferBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::Offer { room: RoomId::parse(&self.room_id)?, offer: self.offer })
    }
}

impl AnswerBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::Answer { room: RoomId::parse(&self.room_id)?, answer: self.answer })
    }
}

impl IceBody {
    pub fn command(self) -> Result<Command> {
        Ok(Command::Ice { room: RoomId::parse(&self.room_id)?, candidate: self.candidate, dest: self.dest })
    }
}

impl HangupBody {
    pub fn command(self) -> Result<Command> {
        // The reason is checked first: a bad one is a 400 whatever the room.
        let reason = Reason::parse(self.reason)?;
        Ok(Command::Hangup { room: RoomId::parse(&self.room_id)?, reason })
    }
}

/// The fields of one WebSocket text frame: a JSON object with no repeated key.
pub fn command_fields(text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    match super::json::parse(text.as_bytes())? {
        serde_json::Value::Object(fields) => Ok(fields),
        _ => Err(Error::BadRequest("a command is a JSON object".into())),
    }
}

/// A WebSocket command from its name and JSON fields.
pub fn command(name: &str, fields: serde_json::Value) -> Result<Command> {
    fn body<T: DeserializeOwned>(v: serde_json::Value) -> Result<T> {
        super::json::from_value(v)
    }
    use CommandKind as K;
    match CommandKind::parse(name) {
        Some(K::CameraOn) => body::<CameraOnBody>(fields)?.command(),
        Some(K::CameraOff) => Ok(Command::CameraOff),
        Some(K::CameraShow) => body::<ShowBody>(fields)?.command(),
        Some(K::Offer) => body::<OfferBody>(fields)?.command(),
        Some(K::Answer) => body::<AnswerBody>(fields)?.command(),
        Some(K::Ice) => body::<IceBody>(fields)?.command(),
        Some(K::Hangup) => body::<HangupBody>(fields)?.command(),
        Some(K::MeetingCreate) => body::<MeetingCreateBody>(fields)?.command(),
        Some(K::MeetingJoin) => {
            let f = body::<MeetingJoinFields>(fields)?;
            MeetingJoinBody { name: f.name }.command(&f.meeting_id)
        }
        Some(K::MeetingLeave) => meeting_leave(&body::<MeetingRef>(fields)?.meeting_id),
        // The socket's own, answered by the session before it gets here.
        Some(K::Ping | K::Refresh | K::Watch | K::Unwatch) | None => Err(Error::BadRequest(format!("unknown cmd {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::names::COMMANDS;

    /// Every service command of the table parses here (an empty body may be
    /// refused, never as unknown), and comes back with its own name.
    #[test]
    fn every_command_of_the_table_is_parsed() {
        for c in COMMANDS.iter().filter(|c| !matches!(c.kind, CommandKind::Ping | CommandKind::Refresh | CommandKind::Watch | CommandKind::Unwatch)) {
            match command(c.name, serde_json::json!({})) {
                Ok(cmd) => assert_eq!(cmd.name(), c.name),
                Err(e) => assert!(!e.to_string().contains("unknown cmd"), "{}: {e}", c.name),
            }
        }
        assert!(command("nope", serde_json::json!({})).unwrap_err().to_string().contains("unknown cmd"));
    }
}
