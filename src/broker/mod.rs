//! Moving events to sessions: a per-user event log plus live delivery.
//! One trait, with a `memory` implementation for the single node and a `redis`
//! one for many nodes.
//!
//! The broker hands live frames to this node's `Sink` (the actor registry),
//! which knows the local sessions.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::domain::{Event, EventId, Frame, UserId};
use crate::error::Result;

/// Where a broker hands live frames on this node.
pub trait Sink: Send + Sync + 'static {
    /// To every local session of `user`.
    fn to_user(&self, user: &UserId, frame: Frame);
    /// To every local session that asked for presence (`update_user`).
    fn to_all(&self, frame: Frame);
}

/// What a session that comes back with `since` gets first.
#[derive(Debug)]
pub enum Replay {
    /// Everything after `since`, oldest first (maybe nothing).
    Events(Vec<Frame>),
    /// Some events after `since` are gone (or `since` was never issued): reload state.
    Gone { last_id: EventId },
}

/// Bounds of a user's log: events older than `keep_s` or past the newest `keep_max` go.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    pub keep_s: u64,
    pub keep_max: usize,
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends `event` to `user`'s log and hands it to their sessions on every node,
    /// as one step; events for one user arrive in the order they were published.
    async fn publish(&self, user: &UserId, event: &Event, accepted_us: i64) -> Result<EventId>;

    /// Hands an `update_user` to every presence session on every node. Not logged:
    /// at most once, and ordered by the user's `version`.
    async fn broadcast(&self, event: &Event, accepted_us: i64) -> Result<()>;

    /// The user's events after `since`.
    async fn replay(&self, user: &UserId, since: EventId) -> Result<Replay>;

    /// The newest id in the user's log; `EventId::START` when it is empty.
    async fn last_id(&self, user: &UserId) -> Result<EventId>;

    /// This node has its first local session of `user`: start receiving their events.
    async fn subscribe(&self, user: &UserId) -> Result<()>;

    /// This node's last local session of `user` is gone.
    async fn unsubscribe(&self, user: &UserId) -> Result<()>;
}
