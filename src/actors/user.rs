//! The per-user actor on one node: runs that user's operations one at a time,
//! knows their local sessions, and fans their events out to them.

use actix::prelude::*;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{Instrument, Span};

use super::Push;
use crate::domain::{EventId, SessionId, UserId};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::service::{Command, Opened, Reply};

/// How long an actor with no session and no timer lingers before it stops.
const IDLE_STOP_AFTER: Duration = Duration::from_secs(30);

/// Run one command as this user.
#[derive(Message, Clone)]
#[rtype(result = "Result<Reply>")]
pub struct Execute {
    pub cmd: Command,
    pub span: Span,
}

/// A session of this user opens on this node.
#[derive(Message, Clone)]
#[rtype(result = "Result<Opened>")]
pub struct Attach {
    pub session: SessionId,
    pub to: Recipient<Push>,
    pub since: Option<EventId>,
}

/// A session of this user ended on this node.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Detach {
    pub session: SessionId,
}

pub struct UserActor {
    user: UserId,
    node: Node,
    sessions: HashMap<SessionId, Recipient<Push>>,
    idle: Option<SpawnHandle>,
}

impl UserActor {
    pub fn new(user: UserId, node: Node) -> Self {
        Self { user, node, sessions: HashMap::new(), idle: None }
    }

    fn span(&self) -> Span {
        tracing::info_span!("user", user_id = %self.user, node_id = %self.node.id)
    }

    /// Stops the actor later if it has nothing left to do.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.idle.take() {
            ctx.cancel_future(h);
        }
        if self.sessions.is_empty() {
            self.idle = Some(ctx.run_later(IDLE_STOP_AFTER, |act, ctx| {
                if act.sessions.is_empty() {
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
    type Result = AtomicResponse<Self, Result<Reply>>;

    fn handle(&mut self, msg: Execute, _ctx: &mut Context<Self>) -> Self::Result {
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move { service.execute(&user, msg.cmd).await }
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
        let first = self.sessions.is_empty();
        self.sessions.insert(msg.session.clone(), msg.to);
        let (service, user, session) = (self.node.service.clone(), self.user.clone(), msg.session.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if first {
                    service.broker().subscribe(&user).await?;
                }
                service.open_session(&user, &session, msg.since).await
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
        let last_here = self.sessions.remove(&msg.session).is_some() && self.sessions.is_empty();
        let (service, user) = (self.node.service.clone(), self.user.clone());
        AtomicResponse::new(Box::pin(
            async move {
                if last_here && let Err(e) = service.broker().unsubscribe(&user).await {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
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

impl Handler<Push> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Push, _ctx: &mut Context<Self>) {
        for to in self.sessions.values() {
            to.do_send(msg.clone());
        }
    }
}

/// Sends `msg` to the user's actor, starting one if needed; retries once if the
/// actor stopped between lookup and delivery.
pub async fn ask<M>(node: &Node, user: &UserId, msg: M) -> Result<M::Result>
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
