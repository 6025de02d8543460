//! The long poll (`GET /webrtc/events`): a user's events after `since`,
//! answered as soon as one is logged on any node. While it waits, the poll
//! listens on the user's actor, which keeps the user online through a poll
//! presence session (see `UserActor`).
//!
//! Bounded: one answer carries at most `limits.poll_max_bytes` of events (the
//! rest waits behind its `last_id`), and at most `limits.max_polls_per_user`
//! polls of one user wait on a node; a newer one answers the oldest, empty.

use std::sync::Arc;
use std::time::Duration;

use super::Ctx;
use super::user::{Listen, PollWake, Unlisten, ask};
use crate::broker::Replay;
use crate::domain::event::{ResyncData, now_us};
use crate::domain::{Event, EventId, Frame, SessionId, UserId};
use crate::error::Result;

/// What a long poll returns.
pub struct Polled {
    /// Oldest first; or one `resync` when events after `since` are gone.
    pub events: Vec<Frame>,
    /// The `since` for the next poll.
    pub last_id: EventId,
}

/// `user`'s events after `since` (from now when absent), waiting up to `wait`
/// for the first one. Woken by the event itself, not a timer.
pub async fn poll(node: &Ctx, user: &UserId, since: Option<EventId>, wait: Duration) -> Result<Polled> {
    let id = SessionId::new();
    let wake = Arc::new(PollWake::default());
    // Listen first, read next: an event between the two still wakes the wait.
    let actor = ask(node, user, Listen { id: id.clone(), wake: wake.clone() }).await??;
    // Dropped however the poll ends, the client going away included.
    let _listening = scopeguard::guard((), move |()| actor.do_send(Unlisten { id }));
    let broker = node.service.broker();
    let since = match since {
        Some(s) => s,
        None => broker.last_id(user).await?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    // From here an event for `user` is answered, whenever it comes.
    node.metrics.polls_waiting.inc();
    let _waiting = scopeguard::guard(node.metrics.polls_waiting.clone(), |g| g.dec());
    let max_bytes = node.settings.limits.poll_max_bytes;
    loop {
        if wake.evicted() {
            return Ok(Polled { events: vec![], last_id: since });
        }
        match broker.replay(user, since, max_bytes).await? {
            Replay::Gone { last_id } => {
                let ev = Event::Resync(ResyncData { last_id: last_id.to_string() });
                return Ok(Polled { events: vec![Frame::from_event(None, &ev, now_us())], last_id });
            }
            Replay::Events(events) if !events.is_empty() => {
                let last_id = events.last().and_then(|f| f.id).unwrap_or(since);
                return Ok(Polled { events, last_id });
            }
            // A draining node answers at once; the next poll goes to another node.
            Replay::Events(_) if tokio::time::Instant::now() >= deadline || node.service.is_draining() => {
                return Ok(Polled { events: vec![], last_id: since });
            }
            Replay::Events(_) => {
                let _ = tokio::time::timeout_at(deadline, wake.notify.notified()).await;
            }
        }
    }
}
