//! The actors of one node: a per-user actor that serializes that user's
//! operations and knows their local sessions, and the WebSocket session actors
//! that deliver. The registry maps users to their actor; it lives in app data.

pub mod flow;
pub mod frame_limit;
pub mod poll;
pub mod push;
pub mod registry;
pub mod session;
pub mod user;

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::Auth;
use crate::domain::{IdempotencyKey, UserId};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::service::command::Command;
use crate::service::reply::Executed;
use user::Users;

/// What sessions and polls need of their node: what user actors need
/// (`Users`: service, registry, settings), plus auth, rate limits and
/// metrics; not the node itself, which also owns the brokers and the drain.
#[derive(Clone)]
pub struct Ctx {
    pub users: Users,
    pub auth: Arc<Auth>,
    pub rates: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
}

/// `ctx.service`, `ctx.registry`, `ctx.settings`: the user actors' part is
/// read through, as one context.
impl Deref for Ctx {
    type Target = Users;
    fn deref(&self) -> &Users {
        &self.users
    }
}

impl Ctx {
    /// Runs a command as `caller`, serialized with the caller's other
    /// operations by their user actor; with a `key`, at most once per key.
    /// The caller has passed `rates.check_call` already.
    pub async fn execute(&self, caller: &UserId, cmd: Command, key: Option<IdempotencyKey>) -> Result<Executed> {
        if cmd.is_presence() {
            self.rates.check_presence(caller)?;
        }
        // Before queueing: a duplicate must not wait behind the call it repeats.
        let _running = key.as_ref().map(|k| self.service.running(caller, k)).transpose()?;
        user::ask(&self.users, caller, user::Execute { cmd, key, span: tracing::Span::current() }).await?
    }
}
