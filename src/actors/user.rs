//! The per-user actor on one node: runs that user's operations one at a time,
//! knows their local sessions, and fans their events out to them.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{Instrument, Span};

use super::push::Push;
use super::registry::Registry;
use crate::config::Settings;
use crate::service::Service;
use crate::domain::{EventId, IdempotencyKey, SessionId, UserId};
use crate::error::{Error, Result};
use crate::service::command::Command;
use crate::service::presence::Opened;
use crate::service::reply::Executed;

/// How long an actor with no session and no timer lingers before it stops.
const IDLE_STOP_AFTER: Duration = Duration::from_secs(30);

/// Run one command as this user.
#[derive(Message, Clone)]
#[rtype(result = "Result<Executed>")]
pub struct Execute {
    pub cmd: Command,
    pub key: Option<IdempotencyKey>,
    pub span: Span,
}

/// A session of this user opens on this node.
#[derive(Message, Clone)]
#[rtype(result = "Result<Opened>")]
pub struct Attach {
    pub session: SessionId,
    pub to: Recipient<Push>,
    pub since: Option<EventId>,
    /// Registered before the handshake was answered (`Service::register_new`).
    pub registered: bool,
    /// The most bytes of events the replay after `since` may bring at once.
    pub budget: usize,
}

/// A long poll of this user waits on this node, woken by each of their events.
/// The answer is this actor, to send `Unlisten` to when the poll ends.
#[derive(Message, Clone)]
#[rtype(result = "Result<Addr<UserActor>>")]
pub struct Listen {
    pub id: SessionId,
    pub wake: Arc<PollWake>,
}

/// How a waiting poll is woken: by an event, or told to give way to a newer
/// poll of the same user (`limits.max_polls_per_user`).
#[derive(Default)]
pub struct PollWake {
    pub notify: Notify,
    evicted: std::sync::atomic::AtomicBool,
}

impl PollWake {
    /// A newer poll took this one's place: it answers at once, empty.
    pub fn evicted(&self) -> bool {
        self.evicted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn evict(&self) {
        self.evicted.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A long poll ended.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Unlisten {
    pub id: SessionId,
}

/// A session of this user ended on this node.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Detach {
    pub session: SessionId,
}

pub struct UserActor {
    user: UserId,
    node: Users,
    sessions: HashMap<SessionId, Recipient<Push>>,
    /// Long polls waiting right now, with the order they came in.
    waiters: HashMap<SessionId, (u64, Arc<PollWake>)>,
    next_poll: u64,
    /// Long polls keep the user online through one presence session per node,
    /// which ends when no poll has waited here for `ws.silent_after()`.
    poll_session: Option<SessionId>,
    linger: Option<SpawnHandle>,
    idle: Option<SpawnHandle>,
}

impl UserActor {
    pub fn new(user: UserId, node: Users) -> Self {
        Self {
            user,
            node,
            sessions: HashMap::new(),
            waiters: HashMap::new(),
            next_poll: 0,
            poll_session: None,
            linger: None,
            idle: None,
        }
    }

    /// Someone on this node receives this user's events.
    fn heard(&self) -> bool {
        !self.sessions.is_empty() || !self.waiters.is_empty()
    }

    /// No poll came back in time (or the node drains): the poll presence session ends.
    fn end_poll_session(&mut self, ctx: &mut Context<Self>, now: bool) {
        if let Some(h) = self.linger.take() {
            ctx.cancel_future(h);
        }
        if !now && !self.waiters.is_empty() {
            return;
        }
        let Some(session) = self.poll_session.take() else { return };
        self.node.registry.remove_session(&session);
        let (service, user) = (self.node.service.clone(), self.user.clone());
        // Wait: a poll arriving meanwhile opens its new session after this one closed.
        ctx.wait(
            async move {
                if let Err(e) = service.close_session(&user, &session).await {
                    tracing::warn!(error = %e, "could not record the end of a poll session");
                }
            }
            .instrument(self.span())
            .into_actor(self)
            .map(|_, act, ctx| act.settle(ctx)),
        );
    }

    fn span(&self) -> Span {
        tracing::info_span!("user", user_id = %self.user, node_id = %self.node.node_id)
    }

    /// Stops the actor later if it has nothing left to do.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.idle.take() {
            ctx.cancel_future(h);
        }
        let idle = |act: &Self| !act.heard() && act.poll_session.is_none();
        if idle(self) {
            self.idle = Some(ctx.run_later(IDLE_STOP_AFTER, move |act, ctx| {
                if idle(act) {
                    ctx.stop();
                }
            }));
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.settle(ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.node.registry.remove(&self.user, &ctx.address());
    }
}

impl Handler<Execute> for UserActor {
    type Result = AtomicResponse<Self, Result<Executed>>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Context<Self>) -> Self::Result {
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move { service.execute(&user, msg.key, msg.cmd).await }
                .instrument(msg.span)
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.settle(ctx);
                    res
                }),
        ))
    }
}

impl Handler<Attach> for UserActor {
    type Result = AtomicResponse<Self, Result<Opened>>;

    fn handle(&mut self, msg: Attach, _ctx: &mut Context<Self>) -> Self::Result {
        // Live first: events published from now on reach the session, and the
        // session drops by id whatever the replay below also carries.
        let first = !self.heard();
        self.sessions.insert(msg.session.clone(), msg.to);
        let (service, user, session) = (self.node.service.clone(), self.user.clone(), msg.session.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if first {
                    service.broker().subscribe(&user).await?;
                }
                service.open_session(&user, &session, msg.since, msg.registered, msg.budget).await
            }
            .instrument(self.span())
            .into_actor(self)
            .map(move |res: Result<Opened>, act, ctx| {
                if res.is_err() {
                    act.sessions.remove(&msg.session);
                }
                act.settle(ctx);
                res
            }),
        ))
    }
}

impl Handler<Detach> for UserActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Detach, _ctx: &mut Context<Self>) -> Self::Result {
        let last_here = self.sessions.remove(&msg.session).is_some() && !self.heard();
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if last_here && let Err(e) = service.broker().unsubscribe(&user).await {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
                crate::failpoint::here("session.end");
                if let Err(e) = service.close_session(&user, &msg.session).await {
                    tracing::warn!(error = %e, "could not record the end of a session");
                }
            }
            .instrument(self.span())
            .into_actor(self)
            .map(|_, act, ctx| act.settle(ctx)),
        ))
    }
}

impl Handler<Listen> for UserActor {
    type Result = AtomicResponse<Self, Result<Addr<UserActor>>>;

    fn handle(&mut self, msg: Listen, ctx: &mut Context<Self>) -> Self::Result {
        let first = !self.heard();
        // At most `max_polls_per_user` wait: the oldest gives way (each holds a
        // connection, and every event wakes them all).
        while self.waiters.len() >= self.node.settings.limits.max_polls_per_user {
            let Some(oldest) = self.waiters.iter().min_by_key(|(_, (n, _))| *n).map(|(id, _)| id.clone()) else { break };
            if let Some((_, wake)) = self.waiters.remove(&oldest) {
                wake.evict();
            }
        }
        self.next_poll += 1;
        self.waiters.insert(msg.id.clone(), (self.next_poll, msg.wake));
        if let Some(h) = self.linger.take() {
            ctx.cancel_future(h);
        }
        // Kept even if opening fails below: the registry re-registers it on reconnect.
        let open = self.poll_session.is_none().then(|| {
            let s = SessionId::new();
            self.node.registry.add_session(s.clone(), self.user.clone());
            self.poll_session = Some(s.clone());
            s
        });
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if first {
                    service.broker().subscribe(&user).await?;
                }
                if let Some(s) = &open {
                    service.open_session(&user, s, None, false, 0).await?;
                }
                Ok(())
            }
            .instrument(self.span())
            .into_actor(self)
            .map(move |res: Result<()>, act, ctx| {
                if let Err(e) = &res {
                    act.waiters.remove(&msg.id);
                    if matches!(e, Error::TooManySessions)
                        && let Some(s) = act.poll_session.take()
                    {
                        act.node.registry.remove_session(&s);
                    }
                }
                act.settle(ctx);
                res.map(|()| ctx.address())
            }),
        ))
    }
}

impl Handler<Unlisten> for UserActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Unlisten, ctx: &mut Context<Self>) -> Self::Result {
        let last_here = self.waiters.remove(&msg.id).is_some() && !self.heard();
        if self.waiters.is_empty() && self.poll_session.is_some() && self.linger.is_none() {
            self.linger = Some(ctx.run_later(self.node.settings.ws.silent_after(), |act, ctx| {
                act.linger = None;
                act.end_poll_session(ctx, false);
            }));
        }
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if last_here && let Err(e) = service.broker().unsubscribe(&user).await {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
            }
            .instrument(self.span())
            .into_actor(self)
            .map(|_, act, ctx| act.settle(ctx)),
        ))
    }
}

impl Handler<Push> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Context<Self>) {
        let kicked = matches!(&msg, Push::Event(f) if f.action == crate::domain::names::EventKind::Kicked.name());
        if matches!(msg, Push::Drain | Push::Banned) || kicked {
            // Polls see the drain (or the kick) when woken below; their
            // presence session ends now, so a poll after a kick opens a new one.
            self.end_poll_session(ctx, true);
        }
        for to in self.sessions.values() {
            to.do_send(msg.clone());
        }
        for (_, wake) in self.waiters.values() {
            wake.notify.notify_one();
        }
    }
}

/// What user actors need of their node, and how others reach them.
#[derive(Clone)]
pub struct Users {
    pub node_id: Arc<str>,
    pub settings: Arc<Settings>,
    pub service: Service,
    pub registry: Arc<Registry<UserActor>>,
}

impl Users {
    /// The user's actor on this node, started if needed.
    pub fn user_actor(&self, user: &UserId) -> Addr<UserActor> {
        self.registry.get_or_start(user, || UserActor::new(user.clone(), self.clone()).start())
    }
}

/// Sends `msg` to the user's actor, starting one if needed; retries once if the
/// actor stopped between lookup and delivery.
pub async fn ask<M>(node: &Users, user: &UserId, msg: M) -> Result<M::Result>
where
    M: Message + Clone + Send + 'static,
    M::Result: Send,
    UserActor: Handler<M>,
{
    for _ in 0..3 {
        let addr = node.user_actor(user);
        match addr.send(msg.clone()).await {
            Ok(r) => return Ok(r),
            Err(_) => node.registry.remove(user, &addr),
        }
    }
    Err(Error::Unexpected(anyhow::anyhow!("user actor for {user} keeps stopping")))
}
