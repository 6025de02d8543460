//! Presence: who is online, the grace period, and the leases of nodes.
//!
//! - A session opening or closing is one atomic step with its `update_user`.
//! - A user whose last session closed keeps the camera for `presence.grace_s`;
//!   the expiry (camera off, rooms closed, all events) is one step, claimed by
//!   one node at a time and held, so a node dying mid-expiry hands it on.
//! - Each node holds a lease; a node whose lease ran out is reaped by one
//!   other node, which closes its sessions as if they had ended then.
//! - After Redis comes back (maybe empty), a node re-registers its sessions.

use chrono::{DateTime, Utc};

use crate::broker::Replay;
use crate::domain::event::now_us;
use crate::domain::{Event, EventId, SessionId, UserId, UserState};
use crate::error::Result;
use crate::service::{Plan, Service, close_rooms};
use crate::store::{Guard, Read, SessionWrite, Step};

/// What a new session needs before it goes live.
pub struct Opened {
    pub last_id: EventId,
    /// Present when the session asked with `since`.
    pub replay: Option<Replay>,
}

impl Service {
    /// A session opens: record it, then read what it missed. The caller must already
    /// receive live events, so that nothing falls between replay and live.
    pub async fn open_session(&self, user: &UserId, session: &SessionId, since: Option<EventId>) -> Result<Opened> {
        self.register(user, session).await?;
        let replay = match since {
            Some(since) => Some(self.broker.replay(user, since).await?),
            None => None,
        };
        let last_id = self.broker.last_id(user).await?;
        Ok(Opened { last_id, replay })
    }

    /// Records a live session of `user` on this node; the user comes online.
    async fn register(&self, user: &UserId, session: &SessionId) -> Result<()> {
        let read = Read { users: vec![user.clone()], ..Read::default() };
        let accepted = now_us();
        self.run(read, None, |s| {
            let now = Utc::now();
            let mut u = s.users.get(user).cloned().unwrap_or_else(|| UserState::new(user.clone(), now));
            let mut step = Step::new(accepted).guard(Guard::User(user.clone(), u.version));
            step.sessions.push(SessionWrite { user: user.clone(), session: session.clone(), node: self.node_id.to_string(), open: true });
            step.expiries.push((user.clone(), None));
            if u.set_online(true, now) {
                step.broadcast.push(Event::user(u.clone()));
                step.users.push(u);
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }

    /// A session ends; if it was the user's last, they go offline and their grace period starts.
    pub async fn close_session(&self, user: &UserId, session: &SessionId) -> Result<()> {
        self.end_session(user, session, Utc::now() + self.grace()).await
    }

    /// Forgets a session; if it was the user's last, everyone hears they went
    /// offline, and the camera goes off at `expire_at` unless they come back.
    async fn end_session(&self, user: &UserId, session: &SessionId, expire_at: DateTime<Utc>) -> Result<()> {
        let read = Read { users: vec![user.clone()], sessions_of: Some(user.clone()), ..Read::default() };
        let accepted = now_us();
        self.run(read, None, |s| {
            let mut step = Step::new(accepted);
            let Some(node) = s.sessions.get(session) else { return Ok(Plan { step, reply: None }) };
            step = step.guard(Guard::HasSession(user.clone(), session.clone())).guard(Guard::Sessions(user.clone(), s.sessions.len()));
            step.sessions.push(SessionWrite { user: user.clone(), session: session.clone(), node: node.clone(), open: false });
            if s.sessions.len() == 1 {
                step.expiries.push((user.clone(), Some(expire_at)));
                if let Some(mut u) = s.users.get(user).cloned() {
                    step = step.guard(Guard::User(user.clone(), u.version));
                    if u.set_online(false, Utc::now()) {
                        step.broadcast.push(Event::user(u.clone()));
                        step.users.push(u);
                    }
                }
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }

    /// Expires every user whose grace period has ended: with no session back,
    /// their camera goes off with every effect of cameraOff, and rooms they
    /// watch close with `gone`. Returns how many were due.
    pub async fn expire_due(&self) -> Result<usize> {
        let due = self.store.claim_expired(Utc::now()).await?;
        for user in &due {
            self.expire(user).await?;
        }
        Ok(due.len())
    }

    async fn expire(&self, user: &UserId) -> Result<()> {
        let read = Read {
            users: vec![user.clone()],
            sessions_of: Some(user.clone()),
            owned_by: Some(user.clone()),
            watched_by: Some(user.clone()),
            ..Read::default()
        };
        let accepted = now_us();
        self.run(read, None, |s| {
            let now = Utc::now();
            let mut step = Step::new(accepted).guard(Guard::Sessions(user.clone(), s.sessions.len()));
            step.expiries.push((user.clone(), None));
            if !s.sessions.is_empty() {
                // Back in time: only the claim goes.
                return Ok(Plan { step, reply: None });
            }
            step = step
                .guard(Guard::User(user.clone(), s.version(user)))
                .guard(Guard::Owned(user.clone(), s.owned.len()))
                .guard(Guard::Watched(user.clone(), s.watched.len()));
            if let Some(mut u) = s.users.get(user).cloned()
                && u.camera_off(now)
            {
                step.broadcast.push(Event::user(u.clone()));
                step.users.push(u);
            }
            close_rooms(&mut step, &s.owned, user, "camera_off", now);
            close_rooms(&mut step, &s.watched, user, "gone", now);
            Ok(Plan { step, reply: None })
        })
        .await?;
        // Each meeting is a step of its own; each checks the user is still gone.
        self.leave_meetings(user, "gone").await
    }

    /// Closes the sessions of nodes whose lease ran out; their users' grace
    /// periods count from when the lease ended. A node that finds itself
    /// declared dead (it stalled) re-registers instead.
    pub async fn reap_dead_nodes(&self, local: impl Fn() -> Vec<(UserId, SessionId)>) -> Result<()> {
        for (node, lease_end) in self.store.claim_dead_nodes(Utc::now()).await? {
            if *node == *self.node_id {
                self.reconcile(&local()).await?;
                continue;
            }
            let sessions = self.store.node_sessions(&node).await?;
            tracing::warn!(dead_node = %node, sessions = sessions.len(), "node lease ended; closing its sessions");
            for (user, session) in sessions {
                self.end_session(&user, &session, lease_end + self.grace()).await?;
            }
            // Only once every session is closed: a reaper dying half-way leaves the
            // node claimed, and another node takes it over when the claim lapses.
            self.store.forget_node(&node).await?;
        }
        Ok(())
    }

    /// Makes the store's list of this node's sessions equal to `local`: after
    /// Redis comes back (maybe empty) or after ends it could not record.
    pub async fn reconcile(&self, local: &[(UserId, SessionId)]) -> Result<()> {
        let known = self.store.node_sessions(&self.node_id).await?;
        let stale: Vec<_> = known.iter().filter(|k| !local.contains(k)).collect();
        for (user, session) in &stale {
            self.close_session(user, session).await?;
        }
        for (user, session) in local {
            self.register(user, session).await?;
        }
        tracing::info!(sessions = local.len(), stale = stale.len(), "sessions re-registered");
        Ok(())
    }
}
