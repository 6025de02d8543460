//! What a step changes as an operator sees it: the webhooks it records and
//! the `admin/stats` counters it moves. Derived once, in `Service::run`, from
//! the snapshot (before) and the step (after), so no operation can forget
//! them, and committed in the same atomic step as the change itself.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::domain::{Camera, Connection, MeetingId, RoomId, UserId, UserState};
use crate::store::{Counter, Hook, RoomRead, Snapshot, Step};

/// Adds to `step` its counter changes and, with `hooks`, its webhooks.
pub(crate) fn derive(s: &Snapshot, step: &mut Step, hooks: bool) {
    let mut out = Changes { at: s.now, hooks, list: vec![], counts: vec![] };
    for u in &step.users {
        let before = s.users.get(&u.user_id);
        let (was_online, was_on) = before.map_or((false, false), |b| (b.online, b.camera == Camera::On));
        if u.online != was_online {
            out.count(Counter::UsersOnline, u.user_id.as_str(), u.online);
            out.hook(if u.online { "user.online" } else { "user.offline" }, &u.user_id, || user_data(u));
        }
        let on = u.camera == Camera::On;
        if on != was_on {
            out.count(Counter::CamerasOn, u.user_id.as_str(), on);
            out.hook(if on { "camera.on" } else { "camera.off" }, &u.user_id, || user_data(u));
        }
    }
    for (c, created) in &step.rooms {
        let was_open = !created && room_before(s, &c.room_id).is_none_or(|r| r.room.is_open());
        if c.is_open() != was_open {
            out.count(Counter::RoomsOpen, c.room_id.as_str(), c.is_open());
            out.hook(if c.is_open() { "room.opened" } else { "room.closed" }, &c.owner, || room_data(c));
        }
    }
    for w in step.meetings.iter().filter(|w| !w.meeting.meeting_id.is_lobby()) {
        let id = &w.meeting.meeting_id;
        let before = s.meetings.get(id).map_or(0, |m| m.meeting.members.len());
        let (was, is) = (before > 0, !w.meeting.members.is_empty());
        if was != is {
            out.count(Counter::MeetingsOpen, id.as_str(), is);
        }
    }
    for (u, m, joined, reason) in step.memberships.iter().filter(|(_, m, ..)| !m.is_lobby()) {
        let member = |meeting: Option<&crate::domain::Meeting>| meeting.and_then(|mt| mt.members.iter().find(|x| x.user_id == *u)).map(|x| x.name.clone());
        if *joined {
            let name = member(step.meetings.iter().map(|w| &w.meeting).find(|mt| mt.meeting_id == *m));
            out.hook("meeting.member_joined", u, || member_data(m, u, name, None));
        } else {
            let name = member(s.meetings.get(m).map(|r| &r.meeting));
            out.hook("meeting.member_left", u, || member_data(m, u, name, Some(reason)));
        }
    }
    step.counts.extend(out.counts);
    step.hooks.extend(out.list);
}

struct Changes {
    at: DateTime<Utc>,
    hooks: bool,
    list: Vec<Hook>,
    counts: Vec<(Counter, String, i64)>,
}

impl Changes {
    fn count(&mut self, c: Counter, id: &str, up: bool) {
        self.counts.push((c, id.to_owned(), if up { 1 } else { -1 }));
    }

    fn hook(&mut self, kind: &str, subject: &UserId, data: impl FnOnce() -> Value) {
        if !self.hooks {
            return;
        }
        let body = json!({
            "id": ulid::Ulid::new().to_string(),
            "type": kind,
            "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data(),
        });
        self.list.push(Hook { subject: subject.clone(), body: body.to_string() });
    }
}

/// The room as the step's read found it, wherever the read put it.
fn room_before<'a>(s: &'a Snapshot, id: &RoomId) -> Option<&'a RoomRead> {
    s.rooms
        .get(id)
        .or_else(|| s.owned.iter().chain(&s.watched).chain(&s.pairs).chain(&s.pair_room).find(|r| r.room.room_id == *id))
}

fn user_data(u: &UserState) -> Value {
    serde_json::to_value(u).unwrap_or(Value::Null)
}

/// A Connection without its SDPs: they carry the peers' addresses, and a
/// receiver needs who, when and why.
fn room_data(c: &Connection) -> Value {
    let mut c = c.clone();
    c.offer = None;
    c.answer = None;
    serde_json::to_value(&c).unwrap_or(Value::Null)
}

fn member_data(m: &MeetingId, u: &UserId, name: Option<String>, reason: Option<&String>) -> Value {
    let mut v = json!({"meeting_id": m, "user_id": u, "name": name});
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, online: bool, camera: Camera) -> UserState {
        let mut u = UserState::new(UserId::parse(id).unwrap(), Utc::now());
        u.online = online;
        u.camera = camera;
        u
    }

    fn kinds(step: &Step) -> Vec<String> {
        step.hooks.iter().map(|h| serde_json::from_str::<Value>(&h.body).unwrap()["type"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_user_change_gives_one_hook_per_fact_that_changed_and_moves_the_counters() {
        let mut s = Snapshot::default();
        s.users.insert(UserId::parse("a").unwrap(), user("a", false, Camera::Off));
        let mut step = Step::default();
        step.users.push(user("a", true, Camera::On));
        derive(&s, &mut step, true);
        assert_eq!(kinds(&step), ["user.online", "camera.on"]);
        assert_eq!(step.counts, [(Counter::UsersOnline, "a".into(), 1), (Counter::CamerasOn, "a".into(), 1)]);
    }

    #[test]
    fn the_same_state_again_gives_nothing_and_hooks_off_still_counts() {
        let mut s = Snapshot::default();
        s.users.insert(UserId::parse("a").unwrap(), user("a", true, Camera::On));
        let mut step = Step::default();
        step.users.push(user("a", true, Camera::On));
        derive(&s, &mut step, true);
        assert!(step.hooks.is_empty() && step.counts.is_empty());
        let mut step = Step::default();
        step.users.push(user("a", false, Camera::On));
        derive(&s, &mut step, false);
        assert!(step.hooks.is_empty());
        assert_eq!(step.counts, [(Counter::UsersOnline, "a".into(), -1)]);
    }
}
