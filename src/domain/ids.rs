//! Identifier newtypes, parsed once at the edge so the rest never sees a raw string.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::Error;

/// Longest user id accepted; ids are keys in Redis and appear in every event.
const MAX_USER_ID_LEN: usize = 128;

/// A user id: the JWT `sub`. Numeric ids travel as strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.chars().count() > MAX_USER_ID_LEN {
            return Err(Error::BadRequest(format!(
                "a user id is 1 to {MAX_USER_ID_LEN} characters"
            )));
        }
        if s.chars().any(|c| c.is_whitespace() || super::text::is_hidden(c)) {
            return Err(Error::BadRequest("a user id has no spaces, control or invisible formatting characters".into()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest `Idempotency-Key` accepted (a UUID is 36).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadRequest(format!(
                "an Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Placements: ids with the same placement are stored together (on Redis
/// Cluster, in one slot). An id's placement is its Redis Cluster slot
/// (crc16) folded onto `PLACEMENTS`, so a shard (placement mod a power of
/// two up to `PLACEMENTS`) is a set of whole slots.
pub const PLACEMENTS: u16 = 1024;

pub fn placement(id: &str) -> u16 {
    (crc16::State::<crc16::XMODEM>::calculate(id.as_bytes()) % 16384) % PLACEMENTS
}

/// A ULID id that only the server makes. One that is not a ULID names
/// nothing: `parse` answers the kind's "not found", not 400, so that probing
/// learns nothing from the shape.
macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $not_found:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new() -> Self {
                Self(ulid::Ulid::new().to_string())
            }

            /// A new id with the same placement as `key` (drawn: about
            /// `PLACEMENTS` tries), so that it is stored beside it.
            pub fn near(key: &str) -> Self {
                let want = $crate::domain::ids::placement(key);
                loop {
                    let id = ulid::Ulid::new().to_string();
                    if $crate::domain::ids::placement(&id) == want {
                        return Self(id);
                    }
                }
            }

            pub fn parse(s: &str) -> Result<Self, $crate::error::Error> {
                ulid::Ulid::from_string(s).map_err(|_| $not_found)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use ulid_id;

ulid_id!(
    /// A room (one viewer of one camera): a ULID, so rooms sort by creation time.
    RoomId,
    Error::RoomNotFound
);

/// One WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn new() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    /// A session id read back from a store.
    pub fn from_string(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_drawn_near_a_user_shares_its_placement_and_is_a_ulid() {
        let start = std::time::Instant::now();
        for u in ["ann", "bob", "a-much-longer-user-id-with-dashes", "Ωmega"] {
            let r = RoomId::near(u);
            assert_eq!(placement(r.as_str()), placement(u));
            assert!(RoomId::parse(r.as_str()).is_ok());
        }
        // About PLACEMENTS draws each; cheap beside the step that stores the room.
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    }

    #[test]
    fn user_ids() {
        assert!(UserId::parse("42").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
        for hidden in ["a\u{202E}b", "\u{200B}ann", "ann\u{FEFF}", "a\u{E0041}", "a\nb"] {
            assert!(matches!(UserId::parse(hidden), Err(Error::BadRequest(_))), "{hidden:?}");
        }
    }

    #[test]
    fn room_ids() {
        let r = RoomId::new();
        assert_eq!(RoomId::parse(r.as_str()).unwrap(), r);
        assert!(matches!(RoomId::parse("nope"), Err(Error::RoomNotFound)));
    }

    mod props {
        use super::*;
        use crate::domain::MeetingId;
        use crate::domain::text::is_hidden;
        use crate::error::ErrorCode;
        use proptest::prelude::*;

        /// Short strings that mix ASCII, spaces and the refused characters.
        fn tricky() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[ -~]{0,140}",
                "[a-z0-9\\u{00AD}\\u{200B}-\\u{200F}\\u{202A}-\\u{202E}\\u{2066}-\\u{2069}\\u{FEFF}\\u{E0020}-\\u{E007F}\\t\\n ]{0,16}",
                "[0-9A-HJKMNP-TV-Z]{24,28}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn user_ids_are_visible_bounded_or_bad_request(s in tricky()) {
                match UserId::parse(&s) {
                    Ok(id) => {
                        prop_assert_eq!(id.as_str(), s.as_str());
                        prop_assert!((1..=MAX_USER_ID_LEN).contains(&s.chars().count()));
                        prop_assert!(!s.chars().any(|c| c.is_whitespace() || is_hidden(c)));
                    }
                    Err(e) => prop_assert_eq!(e.code(), ErrorCode::BadRequest),
                }
            }

            #[test]
            fn idempotency_keys_are_visible_ascii_or_bad_request(s in tricky()) {
                match IdempotencyKey::parse(&s) {
                    Ok(k) => prop_assert!(k.as_str().bytes().all(|b| b.is_ascii_graphic()) && !s.is_empty()),
                    Err(e) => prop_assert_eq!(e.code(), ErrorCode::BadRequest),
                }
            }

            #[test]
            fn server_ids_are_ulids_or_not_found(s in tricky()) {
                match RoomId::parse(&s) {
                    Ok(r) => prop_assert!(ulid::Ulid::from_string(r.as_str()).is_ok()),
                    Err(e) => prop_assert_eq!(e.code(), ErrorCode::RoomNotFound),
                }
                match MeetingId::parse(&s) {
                    Ok(m) => prop_assert!(ulid::Ulid::from_string(m.as_str()).is_ok()),
                    Err(e) => prop_assert_eq!(e.code(), ErrorCode::MeetingNotFound),
                }
            }
        }
    }
}
