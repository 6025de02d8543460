//! Pure domain types: ids, user state, connections and their state machine,
//! SDP and ICE candidates, events. No I/O here; everything is unit-tested in place.

pub mod connection;
pub mod event;
pub mod ice_servers;
pub mod ids;
pub mod meeting;
pub mod names;
pub mod sdp;
pub mod text;
pub mod user;

pub use connection::{Connection, ConnState, Reason, Role};
pub use event::{Event, EventId, Frame};
pub use ids::{IdempotencyKey, RoomId, SessionId, UserId};
pub use meeting::{Meeting, MeetingId, MemberName};
pub use sdp::{IceCandidate, SessionDescription};
pub use user::{Camera, Meta, UserState};

/// Timestamps are RFC 3339 in UTC with milliseconds, as the contract shows them.
pub mod ts {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}
