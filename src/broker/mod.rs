//! Moving events to sessions: reading a user's event log, and live delivery.
//! Events are written by the store's commit (one step with the state change);
//! the broker replays them and subscribes this node to the users it serves.
//! One trait, with a `memory` implementation for the single node and a `redis`
//! one for many nodes.
//!
//! The broker hands live frames to this node's `Sink` (the actor registry),
//! which knows the local sessions.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::domain::{EventId, Frame, SessionId, UserId};
use crate::error::Result;

/// Where a broker hands live frames on this node.
pub trait Sink: Send + Sync + 'static {
    /// To every local session of `user`.
    fn to_user(&self, user: &UserId, frame: Frame);
    /// An `update_user` of `user`: to every local session that hears
    /// everyone, and to those that watch `user`.
    fn to_presence(&self, user: &UserId, frame: Frame);
    /// Live delivery had a gap (the pub/sub link was lost): every local session
    /// catches up from its user's log before it takes the next live frame.
    fn catch_up(&self) {}
    /// Presence frames from the gap could not all be found again: every
    /// presence session is told to reload (`resync`).
    fn presence_gap(&self) {}
}

/// What a session that comes back with `since` gets first.
#[derive(Debug)]
pub enum Replay {
    /// Everything after `since`, oldest first (maybe nothing).
    Events(Vec<Frame>),
    /// Some events after `since` are gone (or `since` was never issued): reload state.
    Gone { last_id: EventId },
}

/// Bounds of a user's log: events older than `keep` or past the newest `keep_max` go.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    pub keep: std::time::Duration,
    pub keep_max: usize,
}

/// A byte budget that always lets the first item through (0: no budget).
pub(crate) struct Budget {
    left: usize,
    first: bool,
    unbounded: bool,
}

impl Budget {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self { left: max_bytes, first: true, unbounded: max_bytes == 0 }
    }

    /// Whether an item of `len` bytes still fits.
    pub(crate) fn take(&mut self, len: usize) -> bool {
        let fits = self.unbounded || self.first || len <= self.left;
        if fits {
            self.left = self.left.saturating_sub(len);
            self.first = false;
        }
        fits
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The user's events after `since`: all of them (`max_bytes` 0), or the
    /// oldest that fit in `max_bytes` of event JSON (at least one).
    async fn replay(&self, user: &UserId, since: EventId, max_bytes: usize) -> Result<Replay>;

    /// The newest id in the user's log. A user with no log gets one that starts
    /// at a marker id, so the value handed out is never `0-0`.
    async fn last_id(&self, user: &UserId) -> Result<EventId>;

    /// This node has its first local session of `user`: start receiving their events.
    async fn subscribe(&self, user: &UserId) -> Result<()>;

    /// This node's last local session of `user` is gone.
    async fn unsubscribe(&self, user: &UserId) -> Result<()>;

    /// A session that hears everyone's presence opens (`true`) or ends
    /// (`false`); the node receives every `update_user` while it has one.
    /// Returns once receiving, so nothing after it is missed. Idempotent per
    /// session, so an end that comes without its start changes nothing.
    async fn presence_all(&self, _session: &SessionId, _on: bool) -> Result<()> {
        Ok(())
    }

    /// A session starts watching `users`; the node receives their
    /// `update_user`s while one does. Returns once receiving, so a state
    /// read after it misses nothing.
    async fn watch(&self, _session: &SessionId, _users: &[UserId]) -> Result<()> {
        Ok(())
    }

    /// A session stops watching `users`.
    async fn unwatch(&self, _session: &SessionId, _users: &[UserId]) {}
}
