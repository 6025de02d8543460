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

use crate::domain::{Frame, UserId};
use crate::service::Service;

/// What actors need of their node: a narrow handle, not the node itself.
#[derive(Clone)]
pub struct Ctx {
    pub node_id: Arc<str>,
    pub service: Service,
    pub registry: Arc<registry::Registry>,
    /// How long a long poll's presence session outlives the last poll.
    pub poll_linger: Duration,
}

impl Ctx {
    /// The user's actor on this node, started if needed.
    pub fn user_actor(&self, user: &UserId) -> Addr<user::UserActor> {
        self.registry.get_or_start(user, || user::UserActor::new(user.clone(), self.clone()).start())
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
