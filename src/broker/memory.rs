//! The embedded single-node broker: a bounded ring per user, delivered in-process.
//!
//! Append and hand-off happen under one lock, so ids and delivery order agree.
//! The memory store appends as part of its commits (`append`).

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{Broker, LogBounds, Replay, Sink};
use crate::domain::{Event, EventId, Frame, UserId};
use crate::error::Result;

struct Log {
    events: VecDeque<Frame>,
    /// The newest id ever issued, even if its event has been trimmed.
    last: EventId,
    /// The newest id no longer in the log: a `since` before it missed events.
    /// A new log starts with a marker id here, so a `since` from before the log
    /// existed (or `0-0`) never passes for complete.
    trimmed: EventId,
    /// When it was last read or written: a log read within `keep` stays, as a
    /// Redis read refreshes the stream's expiry, so a reader that is up to
    /// date is never told its `since` is gone.
    touched_ms: u64,
}

impl Log {
    fn new(now_ms: u64) -> Self {
        let marker = EventId::next(EventId::START, now_ms);
        Self { events: VecDeque::new(), last: marker, trimmed: marker, touched_ms: now_ms }
    }

    fn trim(&mut self, bounds: LogBounds, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(bounds.keep.as_millis() as u64);
        while let Some(f) = self.events.front() {
            let id = f.id.expect("logged frames have ids");
            if self.events.len() > bounds.keep_max || id.ms < cutoff {
                self.trimmed = id;
                self.events.pop_front();
            } else {
                break;
            }
        }
    }
}

pub struct MemoryBroker {
    sink: Arc<dyn Sink>,
    bounds: LogBounds,
    logs: Mutex<HashMap<UserId, Log>>,
}

impl MemoryBroker {
    pub fn new(sink: Arc<dyn Sink>, bounds: LogBounds) -> Self {
        Self { sink, bounds, logs: Mutex::new(HashMap::new()) }
    }

    fn now_ms() -> u64 {
        chrono::Utc::now().timestamp_millis() as u64
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Log>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops logs whose every event has expired, so idle users cost nothing.
    pub fn sweep(&self) {
        let now = Self::now_ms();
        self.logs().retain(|_, log| {
            log.trim(self.bounds, now);
            !log.events.is_empty() || u128::from(now.saturating_sub(log.last.ms.max(log.touched_ms))) < self.bounds.keep.as_millis()
        });
    }

    /// Appends `event` to `user`'s log and hands it to their sessions. Called by
    /// the memory store under its lock, as part of a commit.
    pub fn append(&self, user: &UserId, event: &Event, accepted_us: i64) -> EventId {
        let now = Self::now_ms();
        let mut logs = self.logs();
        let log = logs.entry(user.clone()).or_insert_with(|| Log::new(now));
        let id = EventId::next(log.last, now);
        log.last = id;
        let frame = Frame::from_event(Some(id), event, accepted_us);
        log.events.push_back(frame.clone());
        log.trim(self.bounds, now);
        // Under the lock: the sink only enqueues, and order must match ids.
        self.sink.to_user(user, frame);
        id
    }

    /// Hands an `update_user` to every presence session.
    pub fn broadcast_now(&self, user: &UserId, event: &Event, accepted_us: i64) {
        self.sink.to_presence(user, Frame::from_event(None, event, accepted_us));
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn replay(&self, user: &UserId, since: EventId, max_bytes: usize) -> Result<Replay> {
        let now = Self::now_ms();
        let mut logs = self.logs();
        let log = logs.entry(user.clone()).or_insert_with(|| Log::new(now));
        log.trim(self.bounds, now);
        log.touched_ms = now;
        if since > log.last || since < log.trimmed {
            return Ok(Replay::Gone { last_id: log.last });
        }
        let mut budget = super::Budget::new(max_bytes);
        Ok(Replay::Events(log.events.iter().filter(|f| f.id > Some(since)).take_while(|f| budget.take(f.json.len())).cloned().collect()))
    }

    async fn last_id(&self, user: &UserId) -> Result<EventId> {
        let now = Self::now_ms();
        let mut logs = self.logs();
        let log = logs.entry(user.clone()).or_insert_with(|| Log::new(now));
        log.touched_ms = now;
        Ok(log.last)
    }

    async fn subscribe(&self, _user: &UserId) -> Result<()> {
        Ok(())
    }

    async fn unsubscribe(&self, _user: &UserId) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ResyncData;

    #[derive(Default)]
    struct Nowhere;
    impl Sink for Nowhere {
        fn to_user(&self, _: &UserId, _: Frame) {}
        fn to_presence(&self, _: &UserId, _: Frame) {}
    }

    fn ev() -> Event {
        Event::Resync(ResyncData { last_id: String::new() })
    }

    #[tokio::test]
    async fn a_log_read_within_keep_outlives_a_sweep_so_an_up_to_date_reader_is_not_told_gone() {
        let b = MemoryBroker::new(Arc::new(Nowhere), LogBounds { keep: std::time::Duration::from_millis(400), keep_max: 8 });
        let u = UserId::parse("idle").unwrap();
        let since = b.last_id(&u).await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            assert!(matches!(b.replay(&u, since, 0).await.unwrap(), Replay::Events(e) if e.is_empty()), "read, nothing new");
            b.sweep();
        }
        // Unread for longer than keep: swept, and a `since` from before is gone.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        b.sweep();
        assert!(matches!(b.replay(&u, since, 0).await.unwrap(), Replay::Gone { .. }));
    }

    #[actix_web::test]
    async fn replays_after_since_and_detects_gaps() {
        let b = MemoryBroker::new(Arc::new(Nowhere), LogBounds { keep: std::time::Duration::from_secs(60), keep_max: 3 });
        let u = UserId::parse("u").unwrap();
        let start = b.last_id(&u).await.unwrap();
        assert!(start > EventId::START, "a new log starts at a marker, not at 0-0");
        let mut ids = vec![];
        for _ in 0..5 {
            ids.push(b.append(&u, &ev(), 0));
        }
        assert_eq!(b.last_id(&u).await.unwrap(), ids[4]);
        match b.replay(&u, ids[2], 0).await.unwrap() {
            Replay::Events(fs) => assert_eq!(fs.iter().map(|f| f.id.unwrap()).collect::<Vec<_>>(), ids[3..].to_vec()),
            Replay::Gone { .. } => panic!("nothing was lost after ids[2]"),
        }
        assert!(matches!(b.replay(&u, ids[0], 0).await.unwrap(), Replay::Gone { .. }));
        assert!(matches!(b.replay(&u, EventId { ms: u64::MAX, seq: 0 }, 0).await.unwrap(), Replay::Gone { .. }));
        let other = UserId::parse("v").unwrap();
        assert!(matches!(b.replay(&other, EventId::START, 0).await.unwrap(), Replay::Gone { .. }), "0-0 may predate the log");
        let marker = b.last_id(&other).await.unwrap();
        assert!(matches!(b.replay(&other, marker, 0).await.unwrap(), Replay::Events(v) if v.is_empty()));
    }
}
