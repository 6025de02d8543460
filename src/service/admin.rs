//! The operators' operations (`/admin`): what the service holds, and acting
//! on a user or a room. Reads come from the counters the steps keep
//! (`changes`) and the leases; actions are steps like any other, with their
//! events and webhooks.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Plan, Service, close_rooms};
use crate::domain::connection::Reason;
use crate::domain::event::{KickedData, now_us};
use crate::domain::{Connection, Event, MeetingId, RoomId, UserId, UserState};
use crate::error::{Error, Result};
use crate::store::{Counter, Guard, Read, Step};

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Nodes holding a lease.
    pub nodes: usize,
    /// Sessions (sockets and long polls) open on them.
    pub sessions: usize,
    pub users_online: i64,
    pub cameras_on: i64,
    /// Connections not closed, meeting pairs included.
    pub rooms_open: i64,
    /// Meetings with at least one member.
    pub meetings_open: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeInfo {
    pub node_id: String,
    pub sessions: usize,
    /// When its lease ends unless renewed; a node that died is swept after it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Nodes {
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub node_id: String,
    /// `websocket` or `poll` (None: not known, for a session registered before this was kept).
    pub transport: Option<&'static str>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opened_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub user: UserState,
    pub sessions: Vec<SessionView>,
    /// Open connections where the user is owner or abonent.
    pub rooms: Vec<Connection>,
    #[schema(value_type = Vec<String>)]
    pub meetings: Vec<MeetingId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnected {
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// Sessions open when the operator acted (each closes with 4003).
    pub sessions: usize,
    /// When the ban ends, with `ban_s`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub banned_until: Option<DateTime<Utc>>,
}

/// The longest ban one call gives: a year.
pub const MAX_BAN_S: u64 = 365 * 24 * 3600;

impl Service {
    /// `local_sessions`: this node's, for the embedded store, which has no leases.
    pub async fn admin_stats(&self, local_sessions: usize) -> Result<Stats> {
        let counts = self.store.counters().await?;
        let nodes = self.admin_nodes(local_sessions).await?;
        let c = |k: Counter| counts.get(&k).copied().unwrap_or(0).max(0);
        Ok(Stats {
            nodes: nodes.nodes.len(),
            sessions: nodes.nodes.iter().map(|n| n.sessions).sum(),
            users_online: c(Counter::UsersOnline),
            cameras_on: c(Counter::CamerasOn),
            rooms_open: c(Counter::RoomsOpen),
            meetings_open: c(Counter::MeetingsOpen),
        })
    }

    pub async fn admin_nodes(&self, local_sessions: usize) -> Result<Nodes> {
        let leases = self.store.leases_until().await?;
        if leases.is_empty() {
            // The embedded store: this node alone.
            return Ok(Nodes { nodes: vec![NodeInfo { node_id: self.node_id.to_string(), sessions: local_sessions, lease_expires_at: None }] });
        }
        let mut nodes = Vec::with_capacity(leases.len());
        for (lease, until) in leases {
            let sessions = self.store.lease_session_count(&lease).await?;
            nodes.push(NodeInfo { node_id: super::lease::node_of(&lease).to_owned(), sessions, lease_expires_at: Some(until) });
        }
        Ok(Nodes { nodes })
    }

    pub async fn admin_user(&self, id: &str) -> Result<UserView> {
        let user = UserId::parse(id).map_err(|_| Error::UserNotFound)?;
        let s = self.store.read(&Read::all_of(&user)).await?;
        let infos = self.store.session_infos(&user).await?;
        let state = s.users.get(&user).cloned().ok_or(Error::UserNotFound)?;
        let mut sessions: Vec<SessionView> = s
            .sessions
            .iter()
            .map(|(id, lease)| {
                let info = infos.get(id);
                SessionView { session_id: id.to_string(), node_id: super::lease::node_of(lease).to_owned(), transport: info.map(|i| i.transport), opened_at: info.map(|i| i.opened_at) }
            })
            .collect();
        sessions.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then(a.session_id.cmp(&b.session_id)));
        let rooms = s.owned.iter().chain(&s.watched).filter(|r| r.room.is_open()).map(|r| r.room.clone()).collect();
        let meetings = s.member_of.into_iter().filter(|m| !m.is_lobby()).collect();
        Ok(UserView { user: state, sessions, rooms, meetings })
    }

    /// Disconnects a user everywhere: with `ban`, bans first (so a reconnect
    /// is refused); then the meetings are left (`kicked`), each a step; the
    /// last step turns the camera off, closes the rooms and logs `kicked`,
    /// on which every session open then closes with 4003 on its node. A node
    /// dying midway answers no 200: the operator's retry does the rest.
    pub async fn admin_disconnect(&self, id: &str, reason: Option<String>, ban: Option<std::time::Duration>) -> Result<Disconnected> {
        let user = UserId::parse(id).map_err(|_| Error::UserNotFound)?;
        let reason = Reason::parse(Some(reason.unwrap_or_else(|| "kicked".into())))?;
        let known = self.store.read(&Read { users: vec![user.clone()], sessions_of: Some(user.clone()), ..Read::default() }).await?;
        if !known.users.contains_key(&user) && known.sessions.is_empty() && ban.is_none() {
            return Err(Error::UserNotFound);
        }
        let banned_until = match ban {
            Some(d) => Some(self.ban(&user, d).await?),
            None => None,
        };
        self.leave_meetings_now(&user, "kicked").await?;
        let accepted = now_us();
        let mut sessions = 0;
        self.run(Read::all_of(&user), None, |s| {
            let now = s.now;
            sessions = s.sessions.len();
            let mut step = Step::new(accepted)
                .guard(Guard::User(user.clone(), s.version(&user)))
                .guard(Guard::Owned(user.clone(), s.owned.len()))
                .guard(Guard::Watched(user.clone(), s.watched.len()));
            if let Some(mut u) = s.users.get(&user).cloned() {
                let (off, gone) = (u.camera_off(now), u.set_online(false, now));
                if off || gone {
                    step.broadcast.push(Event::user(u.clone()));
                    step.users.push(u);
                }
                step.forgets.push((user.clone(), Some(now + self.settings.presence.forget_after)));
            }
            // No grace: the user is offline now, whatever sessions still close.
            step.expiries.push((user.clone(), None));
            step.flaps.push((user.clone(), None));
            close_rooms(&mut step, &s.owned, &user, "kicked", now);
            close_rooms(&mut step, &s.watched, &user, "kicked", now);
            step.events.push((user.clone(), Event::Kicked(KickedData { reason: reason.as_str().to_owned() })));
            Ok(Plan { step, reply: None })
        })
        .await?;
        tracing::info!(user_id = %user, sessions, banned = banned_until.is_some(), "disconnected by an operator");
        Ok(Disconnected { user_id: user, sessions, banned_until })
    }

    /// Closes a room as an operator: both sides hear `hangup` from `admin`.
    /// A room closed already is answered as it is.
    pub async fn admin_close_room(&self, admin: &UserId, id: &str, reason: Option<String>) -> Result<Connection> {
        let room = RoomId::parse(id).map_err(|_| Error::RoomNotFound)?;
        let reason = Reason::parse(Some(reason.unwrap_or_else(|| "closed".into())))?;
        let mut closed = None;
        self.run(Read { rooms: vec![room.clone()], ..Read::default() }, None, |s| {
            let r = s.rooms.get(&room).ok_or(Error::RoomNotFound)?;
            let mut c = r.room.clone();
            if !c.is_open() {
                closed = Some(c);
                return Ok(Plan { step: Step::new(now_us()), reply: None });
            }
            let mut step = Step::new(now_us()).guard(Guard::Room(room.clone(), r.rev));
            c.close(reason.as_str(), s.now);
            for to in [&c.owner, &c.abonent] {
                step.events.push((to.clone(), Event::hangup(&c, admin, reason.as_str())));
            }
            step.rooms.push((c.clone(), false));
            closed = Some(c);
            Ok(Plan { step, reply: None })
        })
        .await?;
        let mut c = closed.ok_or(Error::RoomNotFound)?;
        c.offer = None;
        c.answer = None;
        Ok(c)
    }
}

/// Bans (see `super::bans`): the store's, and this node's copy.
impl Service {
    pub fn bans(&self) -> &super::bans::Bans {
        &self.bans
    }

    /// Bans `user` for `for_` (in the store, and at once in this node's copy).
    pub(crate) async fn ban(&self, user: &UserId, for_: std::time::Duration) -> Result<chrono::DateTime<chrono::Utc>> {
        let until = self.store.ban(user, for_).await?;
        self.bans.add(user);
        Ok(until)
    }

    /// Reads the store's bans into this node's copy; returns the users banned
    /// since the last read, whose sessions here the caller closes (a session
    /// opened here between the ban and this read).
    pub async fn refresh_bans(&self) -> Result<Vec<UserId>> {
        let now = self.store.bans().await?;
        Ok(self.bans.replace(now.into_iter().map(|(u, _)| u).collect()))
    }
}
