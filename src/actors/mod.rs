//! The actors of one node: a per-user actor that serializes that user's
//! operations and knows their local sessions, and the WebSocket session actors
//! that deliver. The registry maps users to their actor; it lives in app data.

pub mod flow;
pub mod frame_limit;
pub mod poll;
pub mod registry;
pub mod session;
pub mod user;

use actix::{Actor, Addr, Message};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::config::Settings;
use crate::domain::{Frame, IdempotencyKey, UserId};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::service::Service;
use crate::service::command::Command;
use crate::service::reply::Executed;

/// What the actors (and so every session) need of their node: its service,
/// registry, settings, auth, rate limits and metrics; not the node itself,
/// which also owns the brokers and the drain.
#[derive(Clone)]
pub struct Ctx {
    pub node_id: Arc<str>,
    pub settings: Arc<Settings>,
    pub service: Service,
    pub registry: Arc<registry::Registry>,
    pub auth: Arc<Auth>,
    pub rates: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
}

impl Ctx {
    /// The user's actor on this node, started if needed.
    pub fn user_actor(&self, user: &UserId) -> Addr<user::UserActor> {
        self.registry.get_or_start(user, || user::UserActor::new(user.clone(), self.clone()).start())
    }

    /// How long a long poll's presence session outlives the last poll.
    pub fn poll_linger(&self) -> Duration {
        self.settings.ws.silent_after()
    }

    /// Runs a command as `caller`, serialized with the caller's other
    /// operations by their user actor; with a `key`, at most once per key.
    /// The caller has passed `rates.check_call` already.
    pub async fn execute(&self, caller: &UserId, cmd: Command, key: Option<IdempotencyKey>) -> Result<Executed> {
        if cmd.is_presence() {
            self.rates.check_presence(caller)?;
        }
        // Before queueing: a duplicate must not wait behind the call it repeats.
        let _running = key.as_ref().map(|k| self.service.running(caller, k)).transpose()?;
        user::ask(self, caller, user::Execute { cmd, key, span: tracing::Span::current() }).await?
    }
}

/// What a session is handed (by its user actor, or presence by the registry).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum Push {
    /// An event to write.
    Event(Frame),
    /// Live delivery had a gap: write what the log has after the last event
    /// written, before any later frame.
    CatchUp,
    /// Presence changes were lost beyond recovery: `server-action:resync`
    /// with the last event id written, so the app reloads state through REST.
    Reload,
    /// The node drains: `server-action:reconnect`, then close with 1012.
    Drain,
}
