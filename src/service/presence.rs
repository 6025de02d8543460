//! Presence: who is online, the grace period, and forgetting.
//!
//! - A session opening or closing is one atomic step with its `update_user`.
//! - Flapping is coalesced: `online` changes at most once per
//!   `presence.flap_window_ms` after the user's last change. A change that
//!   comes sooner is held back (the `flaps` schedule) and settled when due,
//!   to what the sessions are by then: one `update_user`, or none if the user
//!   came back meanwhile.
//! - A user whose last session closed keeps the camera for `presence.grace_s`;
//!   the expiry (offline, camera off, rooms closed, all events) is one step,
//!   claimed by one node at a time and held, so a node dying mid-expiry hands
//!   it on. A session ended by a drain leaves its user online until then.
//! - A user offline with the camera off and no open room is forgotten after
//!   `presence.forget_after_s`.
//!
//! Sessions lost with their node are ended by `super::lease`.

use chrono::{DateTime, Utc};

use crate::broker::Replay;
use crate::domain::event::now_us;
use crate::domain::{Camera, Event, EventId, SessionId, UserId, UserState};
use crate::error::Result;
use super::{Plan, Service, close_rooms};
use crate::store::{Guard, Read, SessionInfo, SessionWrite, Step};

/// What a new session needs before it goes live.
pub struct Opened {
    pub last_id: EventId,
    /// Present when the session asked with `since`.
    pub replay: Option<Replay>,
}

impl Service {
    /// A session opens: record it, then read what it missed. The caller must already
    /// receive live events, so that nothing falls between replay and live.
    /// A session that cannot open is not left registered: its end is recorded
    /// before the error goes back. `registered`: `register_new` already ran
    /// (a WebSocket registers before its handshake is answered).
    /// `budget`: the most bytes of events the replay after `since` brings
    /// (0: all); the session reads on from the log as its client takes them.
    pub async fn open_session(&self, user: &UserId, session: &SessionId, since: Option<EventId>, registered: bool, budget: usize) -> Result<Opened> {
        // Online only now that the session hears events, so it hears its own `update_user` too.
        // Not registered before: a long poll's presence session.
        self.register_as(user, session, !registered, true, (!registered).then_some("poll")).await?;
        let read = async {
            let replay = match since {
                Some(since) => Some(self.broker.replay(user, since, budget).await?),
                None => None,
            };
            Ok(Opened { last_id: self.broker.last_id(user).await?, replay })
        };
        match read.await {
            Ok(opened) => Ok(opened),
            Err(e) => {
                if let Err(end) = self.close_session(user, session).await {
                    tracing::warn!(error = %end, "a session that could not open could not be ended either");
                }
                Err(e)
            }
        }
    }

    /// Records a new session of `user` on this node; 409 `too_many_sessions`
    /// when the user already holds `limits.max_sessions_per_user`, on any
    /// node. The count is a guard of the step that registers, so handshakes
    /// racing for the last place, on any nodes, cannot both pass.
    /// The user comes online when the session opens (`open_session`).
    pub async fn register_new(&self, user: &UserId, session: &SessionId) -> Result<()> {
        self.register_as(user, session, true, false, Some("websocket")).await
    }

    /// Records again a session this node holds (after a sweep): never refused.
    pub(crate) async fn register(&self, user: &UserId, session: &SessionId) -> Result<()> {
        self.register_as(user, session, false, true, None).await
    }

    /// Writes the session; with `online`, the user comes online with it.
    async fn register_as(&self, user: &UserId, session: &SessionId, capped: bool, online: bool, transport: Option<&'static str>) -> Result<()> {
        let read = Read { users: vec![user.clone()], sessions_of: capped.then(|| user.clone()), ..Read::default() };
        let accepted = now_us();
        let max = self.settings.limits.max_sessions_per_user;
        self.run(read, None, |s| {
            let now = s.now;
            let u = s.users.get(user).cloned().unwrap_or_else(|| UserState::new(user.clone(), now));
            let mut step = Step::new(accepted).guard(Guard::User(user.clone(), u.version));
            if capped && !s.sessions.contains_key(session) {
                if s.sessions.len() >= max {
                    return Err(crate::error::Error::TooManySessions);
                }
                step = step.guard(Guard::Sessions(user.clone(), s.sessions.len()));
            }
            let info = transport.filter(|_| !s.sessions.contains_key(session)).map(|transport| SessionInfo { transport, opened_at: now });
            step.sessions.push(SessionWrite { user: user.clone(), session: session.clone(), node: self.lease.to_string(), open: true, info });
            step.expiries.push((user.clone(), None));
            step.forgets.push((user.clone(), None));
            if online {
                step.flaps.push((user.clone(), None));
                if !u.online {
                    self.change_online(&mut step, u, true, now);
                }
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }

    /// A session ends; if it was the user's last, they go offline and their
    /// grace period starts. While the node drains, they stay online through
    /// the grace period, so a client reconnecting elsewhere changes nothing.
    ///
    /// An end that cannot be recorded (Redis away, or its answer lost) is
    /// kept here and recorded again by every sweep until Redis takes it
    /// (`record_pending_ends`): it never lives only in a log line.
    pub async fn close_session(&self, user: &UserId, session: &SessionId) -> Result<()> {
        let keep_online = self.is_draining();
        let ended = self.end_session(user, session, None, keep_online).await;
        if ended.is_err() {
            self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()).insert(session.clone(), (user.clone(), keep_online));
        }
        ended
    }

    /// Session ends not recorded yet.
    pub fn pending_ends(&self) -> usize {
        self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Records the session ends that could not be recorded when they
    /// happened; each stays pending until it is. Returns how many remain.
    pub async fn record_pending_ends(&self) -> usize {
        let pending: Vec<_> = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(s, (u, k))| (s.clone(), u.clone(), *k)).collect();
        for (session, user, keep_online) in pending {
            // The grace period runs from when the end is recorded: until then
            // the user has been shown online, so nobody saw it start.
            if self.end_session(&user, &session, None, keep_online).await.is_ok() {
                self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
                tracing::info!(user_id = %user, session_id = %session, "recorded a session end that had failed");
            }
        }
        self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets a session; if it was the user's last, everyone hears they went
    /// offline (unless `keep_online`), and the camera goes off at `expire_at`
    /// (by default `presence.grace_s` from now, by the store's clock) unless
    /// they come back.
    pub(crate) async fn end_session(&self, user: &UserId, session: &SessionId, expire_at: Option<DateTime<Utc>>, keep_online: bool) -> Result<()> {
        let read = Read { users: vec![user.clone()], sessions_of: Some(user.clone()), ..Read::default() };
        let accepted = now_us();
        self.run(read, None, |s| {
            let mut step = Step::new(accepted);
            let Some(node) = s.sessions.get(session) else { return Ok(Plan { step, reply: None }) };
            step = step.guard(Guard::HasSession(user.clone(), session.clone())).guard(Guard::Sessions(user.clone(), s.sessions.len()));
            step.sessions.push(SessionWrite { user: user.clone(), session: session.clone(), node: node.clone(), open: false, info: None });
            if s.sessions.len() == 1 {
                step.expiries.push((user.clone(), Some(expire_at.unwrap_or(s.now + self.grace()))));
                // Kept online (a drain): nothing is held back either.
                step.flaps.push((user.clone(), None));
                if !keep_online && let Some(u) = s.users.get(user).cloned() {
                    step = step.guard(Guard::User(user.clone(), u.version));
                    if u.online {
                        self.change_online(&mut step, u, false, s.now);
                    }
                }
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }

    /// Sets `u`'s `online` in `step` with its broadcast, or holds the change
    /// back (the `flaps` schedule) when it comes within
    /// `presence.flap_window_ms` of the last one.
    fn change_online(&self, step: &mut Step, mut u: UserState, online: bool, now: DateTime<Utc>) {
        match self.flap_due(&u, now) {
            Some(due) => step.flaps = vec![(u.user_id.clone(), Some(due))],
            None => {
                u.set_online(online, now);
                step.broadcast.push(Event::user(u.clone()));
                step.users.push(u);
            }
        }
    }

    /// When `u`'s `online` may change next, if not now: `presence.flap_window_ms`
    /// after their last change. A user seen for the first time changes at once.
    fn flap_due(&self, u: &UserState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let due = u.updated_at + self.settings.presence.flap_window;
        (u.version > 0 && now < due).then_some(due)
    }

    /// Settles every held-back `online` change that is due: each user's
    /// `online` becomes what their sessions are now. Returns how many were due.
    pub async fn settle_flaps(&self) -> Result<usize> {
        let due = self.store.claim_flaps().await?;
        if !due.is_empty() {
            crate::failpoint::here("flaps.claimed");
        }
        self.each(&due, |u| self.settle_flap(u)).await?;
        Ok(due.len())
    }

    async fn settle_flap(&self, user: &UserId) -> Result<()> {
        let read = Read { users: vec![user.clone()], sessions_of: Some(user.clone()), ..Read::default() };
        let accepted = now_us();
        self.run(read, None, |s| {
            let now = s.now;
            let mut step = Step::new(accepted).guard(Guard::Sessions(user.clone(), s.sessions.len())).guard(Guard::User(user.clone(), s.version(user)));
            step.flaps.push((user.clone(), None));
            if let Some(u) = s.users.get(user).cloned()
                && u.online == s.sessions.is_empty()
            {
                self.change_online(&mut step, u, !s.sessions.is_empty(), now);
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
        let due = self.store.claim_expired().await?;
        if !due.is_empty() {
            crate::failpoint::here("expire.claimed");
        }
        self.each(&due, |u| self.expire(u)).await?;
        Ok(due.len())
    }

    /// The meetings go first, each a step of its own that checks the user is
    /// still gone; the expiry's own step (offline, camera off, rooms closed)
    /// comes last and removes the claim. So a node dying anywhere between
    /// leaves the expiry claimed, and whoever claims it next finishes it.
    async fn expire(&self, user: &UserId) -> Result<()> {
        let read = Read::all_of(user);
        let accepted = now_us();
        // Twice at most: once finding meetings to leave, once after leaving them.
        for _ in 0..2 {
            let mut in_meetings = false;
            self.run(read.clone(), None, |s| {
                let now = s.now;
                in_meetings = false;
                let mut step = Step::new(accepted).guard(Guard::Sessions(user.clone(), s.sessions.len()));
                step.expiries.push((user.clone(), None));
                if !s.sessions.is_empty() {
                    // A held-back change stays due: it settles to online.
                    // Back in time: only the claim goes.
                    return Ok(Plan { step, reply: None });
                }
                if !s.member_of.is_empty() {
                    in_meetings = true;
                    return Ok(Plan { step: Step::new(accepted), reply: None });
                }
                step = step
                    .guard(Guard::User(user.clone(), s.version(user)))
                    .guard(Guard::Owned(user.clone(), s.owned.len()))
                    .guard(Guard::Watched(user.clone(), s.watched.len()));
                // Offline now, whatever was held back.
                step.flaps.push((user.clone(), None));
                if let Some(mut u) = s.users.get(user).cloned() {
                    // Both, for a session ended by a drain; one update_user either way.
                    let (off, gone) = (u.camera_off(now), u.set_online(false, now));
                    if off || gone {
                        step.broadcast.push(Event::user(u.clone()));
                        step.users.push(u);
                    }
                    step.forgets.push((user.clone(), Some(now + self.forget_after())));
                }
                close_rooms(&mut step, &s.owned, user, "camera_off", now);
                close_rooms(&mut step, &s.watched, user, "gone", now);
                Ok(Plan { step, reply: None })
            })
            .await?;
            if !in_meetings {
                return Ok(());
            }
            self.leave_meetings(user, "gone").await?;
            crate::failpoint::here("expire.between");
        }
        // Joined again meanwhile, with no session: the claim stays, and comes due again.
        Ok(())
    }

    /// Forgets every user whose time came: their state and directory entry go.
    /// Returns how many were due.
    pub async fn forget_due(&self) -> Result<usize> {
        let due = self.store.claim_forgettable().await?;
        self.each(&due, |u| self.forget(u)).await?;
        Ok(due.len())
    }

    async fn forget(&self, user: &UserId) -> Result<()> {
        let read = Read::all_of(user);
        let accepted = now_us();
        self.run(read, None, |s| {
            let mut step = Step::new(accepted);
            let idle = s.users.get(user).is_some_and(|u| !u.online && u.camera == Camera::Off);
            if idle && s.sessions.is_empty() && s.owned.is_empty() && s.watched.is_empty() && s.member_of.is_empty() {
                step = step
                    .guard(Guard::User(user.clone(), s.version(user)))
                    .guard(Guard::Sessions(user.clone(), 0))
                    .guard(Guard::Owned(user.clone(), 0))
                    .guard(Guard::Watched(user.clone(), 0));
                step.forget.push(user.clone());
            } else {
                // Back meanwhile: the next expiry schedules it again.
                step.forgets.push((user.clone(), None));
            }
            Ok(Plan { step, reply: None })
        })
        .await?;
        Ok(())
    }

    fn forget_after(&self) -> std::time::Duration {
        self.settings.presence.forget_after
    }
}
