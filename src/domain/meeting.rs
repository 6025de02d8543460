//! A meeting: a group call over a mesh, one Connection per pair of members.
//!
//! The server gives the roles: in each pair the member who was there first is
//! the `owner` (sends the offer), the newcomer the `abonent`, so two peers
//! never offer at once. Joining checks, in order: already a member (the same
//! pairs again), the name is free (409 `name_taken`), a seat is free (409
//! `meeting_full`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::UserId;
use crate::error::Error;

/// Longest meeting title and member name accepted.
pub const MAX_TITLE_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 64;

/// A checked meeting title: at most 128 characters, nothing hidden.
pub fn parse_title(t: Option<String>) -> Result<Option<String>, Error> {
    match t {
        Some(t) if t.chars().count() > MAX_TITLE_LEN || super::text::has_hidden_in_name(&t) => Err(Error::BadRequest(format!(
            "title is at most {MAX_TITLE_LEN} characters, without control or invisible formatting characters"
        ))),
        t => Ok(t),
    }
}

super::ids::ulid_id!(
    /// A meeting's id: a ULID.
    MeetingId,
    Error::MeetingNotFound
);

/// A member's display name: 1 to 64 characters, no control or format
/// characters but joiners (`text::has_hidden_in_name`), unique within the meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName(String);

impl MemberName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if s.is_empty() || s.chars().count() > MAX_NAME_LEN || super::text::has_hidden_in_name(s) || !super::text::has_letter_or_digit(s) {
            return Err(Error::BadRequest(format!(
                "name is 1 to {MAX_NAME_LEN} characters with a letter or digit, without control or invisible characters"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    #[schema(value_type = String, example = "42")]
    pub user_id: UserId,
    #[schema(example = "Ann")]
    pub name: String,
    #[serde(with = "super::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Meeting {
    #[schema(value_type = String, example = "01JD3Z5T8Q9W2E4R6T8Y0U2I4O")]
    pub meeting_id: MeetingId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Standup")]
    pub title: Option<String>,
    #[schema(value_type = String, example = "42")]
    pub created_by: UserId,
    pub max_members: usize,
    #[serde(with = "super::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// In the order they joined: each one's pairs with those before it have it as `abonent`.
    pub members: Vec<Member>,
}

/// What a join decided.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// A new member; these members were there before, each gets a pair.
    New { earlier: Vec<UserId> },
    /// Already a member: the same pairs are answered again.
    Again,
}

impl Meeting {
    pub fn new(created_by: UserId, title: Option<String>, max_members: usize, now: DateTime<Utc>) -> Self {
        Self { meeting_id: MeetingId::near(created_by.as_str()), title, created_by, max_members, created_at: now, members: vec![] }
    }

    pub fn is_member(&self, u: &UserId) -> bool {
        self.members.iter().any(|m| m.user_id == *u)
    }

    /// 403 unless `u` is a member.
    pub fn require_member(&self, u: &UserId) -> Result<(), Error> {
        if self.is_member(u) { Ok(()) } else { Err(Error::Forbidden("you are not a member of this meeting".into())) }
    }

    pub fn join(&mut self, u: &UserId, name: &MemberName, now: DateTime<Utc>) -> Result<Joined, Error> {
        if self.is_member(u) {
            return Ok(Joined::Again);
        }
        // Names that read alike are one name (`text::name_key`).
        let key = super::text::name_key(name.as_str());
        if self.members.iter().any(|m| super::text::name_key(&m.name) == key) {
            return Err(Error::NameTaken);
        }
        if self.members.len() >= self.max_members {
            return Err(Error::MeetingFull);
        }
        let earlier = self.members.iter().map(|m| m.user_id.clone()).collect();
        self.members.push(Member { user_id: u.clone(), name: name.as_str().to_owned(), joined_at: now });
        Ok(Joined::New { earlier })
    }

    /// Removes `u`; false when they were not a member.
    pub fn leave(&mut self, u: &UserId) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.user_id != *u);
        self.members.len() != before
    }
}

/// The key of a pair in a meeting, the same whichever side names it.
pub fn pair_key(a: &UserId, b: &UserId) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{x} {y}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn newcomers_pair_with_everyone_before_them_and_names_are_unique() {
        let now = Utc::now();
        let mut m = Meeting::new(u("host"), None, 3, now);
        let name = |s| MemberName::parse(s).unwrap();
        assert_eq!(m.join(&u("a"), &name("Ann"), now).unwrap(), Joined::New { earlier: vec![] });
        assert_eq!(m.join(&u("b"), &name("Bob"), now).unwrap(), Joined::New { earlier: vec![u("a")] });
        assert_eq!(m.join(&u("b"), &name("Bob"), now).unwrap(), Joined::Again);
        assert!(matches!(m.join(&u("c"), &name("Ann"), now), Err(Error::NameTaken)));
        assert_eq!(m.join(&u("c"), &name("Cat"), now).unwrap(), Joined::New { earlier: vec![u("a"), u("b")] });
        assert!(matches!(m.join(&u("d"), &name("Dan"), now), Err(Error::MeetingFull)));
        assert!(m.leave(&u("a")) && !m.leave(&u("a")));
        assert!(m.require_member(&u("a")).is_err() && m.require_member(&u("b")).is_ok());
        assert_eq!(pair_key(&u("b"), &u("a")), pair_key(&u("a"), &u("b")));
        assert!(MemberName::parse(" ").is_err() && MemberName::parse(&"x".repeat(65)).is_err());
        for hidden in ["Ann\u{202E}", "A\u{200B}nn", "\u{FEFF}Ann", "Ann\nBob"] {
            assert!(matches!(MemberName::parse(hidden), Err(Error::BadRequest(_))), "{hidden:?}");
        }
    }
}
