//! The broker on Redis, for many nodes.
//!
//! Each user's log is a capped stream; the store's commit script appends to
//! it and publishes the event on the user's channel, so the id order and the
//! live order agree. Live delivery runs on one dedicated pub/sub connection (never a
//! pooled one): the node subscribes to a user's channel while it has a local
//! session of theirs; to everyone's presence channel while it has a session
//! that hears everyone; and to a user's own presence channel while one of
//! its sessions watches that user (`presence=watched`). When that
//! connection drops, the task reconnects with backoff, resubscribes, and
//! bumps `reconnects` so the node can re-register what Redis may have lost.

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use super::{Broker, LogBounds, Replay, Sink};
use crate::domain::names::event_name;
use crate::domain::{EventId, Frame, SessionId, UserId};
use crate::error::{Error, Result};
use crate::redis::keys::{Channel, Shard};
use crate::redis::link::{self, Heard, LinkSink};
use crate::redis::{Keys, OP_TIMEOUT, Redis, redis_error};

const MAX_BACKOFF: Duration = Duration::from_secs(1);

type Entry = (String, Vec<String>);

struct Shared {
    sink: Arc<dyn Sink>,
    keys: Keys,
    /// Every shard's everyone-channel (`keys.presence(n)`), built once.
    presence: Vec<String>,
    /// Which presence this node's sessions want; resubscribed after every reconnect.
    wants: tokio::sync::Mutex<Wants>,
    /// Users this node wants events for; resubscribed after every reconnect.
    subs: Mutex<HashSet<UserId>>,
    /// The live connection's command half; None while it is down.
    pubsub: watch::Sender<Option<LinkSink>>,
    /// Subscribed and caught up: the node is ready.
    live: AtomicBool,
    /// Per shard, the newest `update_user` delivered (its id in that shard's
    /// presence log): where presence catches up from.
    presence_last: Mutex<HashMap<Shard, EventId>>,
    probe: Duration,
}

/// Presence this node's sessions want: counts of sessions, and whether the
/// channel is subscribed on the current link (a failed subscribe is tried
/// again by the next session that wants it, and by every reconnect).
#[derive(Default)]
struct Wants {
    all: (HashSet<SessionId>, bool),
    watched: HashMap<UserId, (HashSet<SessionId>, bool)>,
}

pub struct RedisBroker {
    r: Arc<Redis>,
    bounds: LogBounds,
    shared: Arc<Shared>,
}

impl RedisBroker {
    /// Starts the pub/sub task on the current runtime.
    pub fn start(r: Arc<Redis>, sink: Arc<dyn Sink>, bounds: LogBounds, probe: Duration) -> Self {
        let shared = Arc::new(Shared {
            sink,
            keys: r.keys.clone(),
            presence: (0..r.keys.shards()).map(|n| r.keys.presence(n)).collect(),
            wants: tokio::sync::Mutex::default(),
            subs: Mutex::new(HashSet::new()),
            pubsub: watch::channel(None).0,
            presence_last: Mutex::default(),
            live: AtomicBool::new(false),
            probe,
        });
        actix_web::rt::spawn(listen(r.clone(), shared.clone()));
        Self { r, bounds, shared }
    }

    /// Whether the pub/sub connection is up (the node is not ready without it).
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// The log's last id, newest deleted id, and (with `since`) the entries
    /// after it, within `max_bytes` (0: all; Redis stops reading past it).
    async fn read(&self, user: &UserId, since: Option<EventId>, max_bytes: usize) -> Result<(EventId, EventId, Vec<Entry>)> {
        let args = [
            since.unwrap_or_default().to_string().into_bytes(),
            self.bounds.keep.as_millis().to_string().into_bytes(),
            if since.is_some() { b"1".to_vec() } else { b"0".to_vec() },
            self.bounds.keep_max.to_string().into_bytes(),
            max_bytes.to_string().into_bytes(),
        ];
        let (last, maxdel, entries): (String, String, Vec<Entry>) = self.r.run(&self.r.scripts.log_read, &[self.r.keys.log(user)], &args).await?;
        let parse = |s: &str| s.parse::<EventId>().map_err(|_| Error::Unexpected(anyhow::anyhow!("bad stream id {s}")));
        Ok((parse(&last)?, parse(&maxdel)?, entries))
    }
}

/// A stream entry back into a frame.
fn entry_frame((id, fields): &Entry) -> Option<Frame> {
    let mut action = None;
    let mut accepted = 0;
    let mut json = None;
    for kv in fields.chunks(2) {
        match (kv[0].as_str(), kv.get(1)) {
            ("a", Some(v)) => action = Some(event_name(v)),
            ("t", Some(v)) => accepted = v.parse().unwrap_or(0),
            ("e", Some(v)) => json = Some(v.as_str()),
            _ => {}
        }
    }
    Some(Frame::new(Some(id.parse().ok()?), action?, json?, accepted))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn replay(&self, user: &UserId, since: EventId, max_bytes: usize) -> Result<Replay> {
        if since == EventId::MAX {
            // Past any log (Redis refuses an exclusive range after it).
            return Ok(Replay::Gone { last_id: self.last_id(user).await? });
        }
        let (last, maxdel, entries) = self.read(user, Some(since), max_bytes).await?;
        // Every log starts at a deleted marker, so `maxdel` bounds what is known.
        if since > last || since < maxdel {
            return Ok(Replay::Gone { last_id: last });
        }
        Ok(Replay::Events(entries.iter().filter_map(entry_frame).collect()))
    }

    async fn last_id(&self, user: &UserId) -> Result<EventId> {
        Ok(self.read(user, None, 0).await?.0)
    }

    async fn subscribe(&self, user: &UserId) -> Result<()> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner()).insert(user.clone());
        self.sub(self.shared.keys.channel(user)).await
    }

    async fn unsubscribe(&self, user: &UserId) -> Result<()> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
        self.unsub(self.shared.keys.channel(user)).await
    }

    // The wants lock is held across the (un)subscribe, so a last session
    // leaving and a first one coming cannot reorder the two on the link.
    async fn presence_all(&self, session: &SessionId, on: bool) -> Result<()> {
        let mut w = self.shared.wants.lock().await;
        if on {
            w.all.0.insert(session.clone());
            if !w.all.1 {
                self.sub_many(self.shared.presence.clone()).await?;
                w.all.1 = true;
            }
        } else if w.all.0.remove(session) && w.all.0.is_empty() {
            w.all.1 = false;
            self.unsub_many(self.shared.presence.clone()).await?;
        }
        Ok(())
    }

    async fn watch(&self, session: &SessionId, users: &[UserId]) -> Result<()> {
        let mut w = self.shared.wants.lock().await;
        let mut new = Vec::new();
        for u in users {
            let e = w.watched.entry(u.clone()).or_default();
            e.0.insert(session.clone());
            if !e.1 {
                new.push(u);
            }
        }
        // One SUBSCRIBE for all of them (a watch may name `limits.max_watch` users).
        if !new.is_empty() {
            self.sub_many(new.iter().map(|u| self.shared.keys.presence_of(u)).collect()).await?;
            for u in new {
                if let Some(e) = w.watched.get_mut(u) {
                    e.1 = true;
                }
            }
        }
        Ok(())
    }

    async fn unwatch(&self, session: &SessionId, users: &[UserId]) {
        let mut w = self.shared.wants.lock().await;
        let mut last = Vec::new();
        for u in users {
            if let Some(e) = w.watched.get_mut(u)
                && e.0.remove(session)
                && e.0.is_empty()
            {
                w.watched.remove(u);
                last.push(self.shared.keys.presence_of(u));
            }
        }
        // One UNSUBSCRIBE for all of them. Left subscribed when it fails:
        // their frames reach no session, and the next link drops them.
        if !last.is_empty()
            && let Err(e) = self.unsub_many(last).await
        {
            tracing::debug!(error = %e, "could not unsubscribe watched users' presence");
        }
    }
}

impl RedisBroker {
    /// Subscribes the live link to `channel`, waiting for the link while it
    /// is (re)established, e.g. right after start.
    async fn sub(&self, channel: String) -> Result<()> {
        self.sub_many(vec![channel]).await
    }

    async fn sub_many(&self, channels: Vec<String>) -> Result<()> {
        let mut rx = self.shared.pubsub.subscribe();
        self.r
            .bounded(async {
                let mut sink = rx.wait_for(Option::is_some).await.map_err(Error::unavailable)?.clone().expect("waited for Some");
                sink.subscribe(&channels).await.map_err(redis_error)
            })
            .await
    }

    async fn unsub(&self, channel: String) -> Result<()> {
        self.unsub_many(vec![channel]).await
    }

    async fn unsub_many(&self, channels: Vec<String>) -> Result<()> {
        let sink = self.shared.pubsub.borrow().clone();
        if let Some(mut sink) = sink {
            self.r.bounded(async { sink.unsubscribe(&channels).await.map_err(redis_error) }).await?;
        }
        Ok(())
    }
}

/// Holds the pub/sub connection for the node's lifetime, replacing it forever.
async fn listen(r: Arc<Redis>, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    let mut lost = false;
    loop {
        let conn = tokio::time::timeout(OP_TIMEOUT, link::open(r.backend())).await;
        let Ok(Ok(conn)) = conn else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let (mut sink, mut stream) = conn;
        // Publish the sink first so no subscribe() falls between snapshot and resubscribe.
        shared.pubsub.send_replace(Some(sink.clone()));
        let mut channels: Vec<String> = shared.subs.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|u| shared.keys.channel(u)).collect();
        {
            let w = shared.wants.lock().await;
            if !w.all.0.is_empty() {
                channels.extend(shared.presence.iter().cloned());
            }
            channels.extend(w.watched.keys().map(|u| shared.keys.presence_of(u)));
        }
        let mut ok = true;
        for chunk in channels.chunks(1000) {
            if !matches!(tokio::time::timeout(OP_TIMEOUT, sink.subscribe(chunk)).await, Ok(Ok(()))) {
                ok = false;
                break;
            }
        }
        {
            let mut w = shared.wants.lock().await;
            w.all.1 = ok && !w.all.0.is_empty();
            for e in w.watched.values_mut() {
                e.1 = ok;
            }
        }
        // Subscribed: from here every event is either live or in a log.
        if ok && let Err(e) = catch_up(&r, &shared, lost).await {
            tracing::warn!(error = %e, "could not catch up after the pub/sub link came back; replacing it");
            ok = false;
        }
        if ok {
            backoff = Duration::from_millis(50);
            if lost {
                tracing::info!(channels = channels.len(), "pub/sub link to Redis replaced; sessions caught up from the logs");
            }
            shared.live.store(true, Ordering::SeqCst);
            let (covered_tx, mut covered) = tokio::sync::mpsc::unbounded_channel();
            let probe = probe(&r, &shared.keys, sink.clone(), shared.probe, covered_tx);
            tokio::pin!(probe);
            loop {
                tokio::select! {
                    // Messages first: those that came before a probe's PONG
                    // are delivered before its mark moves past them.
                    biased;
                    heard = stream.next() => match heard {
                        Some(Heard::Message(channel, payload)) => deliver(&shared, &channel, &payload),
                        Some(Heard::Dropped(channel)) => {
                            if wanted(&shared, &channel).await {
                                tracing::warn!(channel, "Redis dropped a wanted channel (its slot moved); replacing the link");
                                break;
                            }
                        }
                        None => break,
                    },
                    Some((n, id)) = covered.recv() => cover(&shared, n, id),
                    () = &mut probe => break,
                }
            }
        }
        tracing::warn!("pub/sub link to Redis lost or silent; replacing it");
        shared.live.store(false, Ordering::SeqCst);
        shared.pubsub.send_replace(None);
        lost = true;
        tokio::time::sleep(backoff).await;
    }
}

/// Returns when the link stops answering a PING within `every`. Before each
/// PING it reads each shard's presence log's newest id: once the PONG is
/// back, every change up to that id has reached this link (or was on a
/// channel nobody here wants), so it is sent to `covered`.
async fn probe(r: &Redis, keys: &Keys, mut sink: LinkSink, every: Duration, covered: tokio::sync::mpsc::UnboundedSender<(Shard, EventId)>) {
    loop {
        tokio::time::sleep(every).await;
        let mut newest = Vec::new();
        for n in 0..keys.shards() {
            if let Ok(e) = r.query::<Vec<Entry>>(redis::cmd("XREVRANGE").arg(keys.presence_log(n)).arg("+").arg("-").arg("COUNT").arg(1)).await
                && let Some(id) = e.first().and_then(|(id, _)| id.parse::<EventId>().ok())
            {
                newest.push((n, id));
            }
        }
        if !matches!(tokio::time::timeout(every, sink.ping()).await, Ok(Ok(()))) {
            return;
        }
        for n in newest {
            let _ = covered.send(n);
        }
    }
}

/// Moves shard `n`'s presence catch-up mark up to `id`: a node whose
/// sessions only watch some users hears few changes, and without this, its
/// mark would stay behind until the log is trimmed past it, and a gap would
/// tell every session to reload.
fn cover(shared: &Shared, n: Shard, id: EventId) {
    let mut last = shared.presence_last.lock().unwrap_or_else(|p| p.into_inner());
    let at = last.entry(n).or_default();
    *at = (*at).max(id);
}

/// Right after (re)subscribing. On the first link: notes where each shard's
/// presence log stands. After a gap: every local session catches up from
/// its user's log, and each presence log's entries since the last one
/// delivered go to the presence sessions, before anything newer.
async fn catch_up(r: &Redis, shared: &Shared, after_gap: bool) -> Result<()> {
    let mut told = false;
    for n in 0..shared.keys.shards() {
        let log = shared.keys.presence_log(n);
        let last = shared.presence_last.lock().unwrap_or_else(|p| p.into_inner()).get(&n).copied();
        let Some(last) = last.filter(|_| after_gap) else {
            let newest: Vec<Entry> = r.query(redis::cmd("XREVRANGE").arg(&log).arg("+").arg("-").arg("COUNT").arg(1)).await?;
            let id = newest.first().and_then(|(id, _)| id.parse().ok()).unwrap_or_default();
            cover(shared, n, id);
            continue;
        };
        let (oldest, missed): (Vec<Entry>, Vec<Entry>) = r
            .pipe(redis::pipe().cmd("XRANGE").arg(&log).arg("-").arg("+").arg("COUNT").arg(1).cmd("XRANGE").arg(&log).arg(format!("({last}")).arg("+"))
            .await?;
        if !told {
            // Redis answers commands again: the sessions can read their logs now.
            shared.sink.catch_up();
            told = true;
        }
        if oldest.first().and_then(|(id, _)| id.parse::<EventId>().ok()).is_some_and(|first| first > last) {
            // Trimmed past what this node last saw: some changes cannot be told again.
            shared.sink.presence_gap();
        }
        for (id, fields) in &missed {
            let (t, e) = (field(fields, "t"), field(fields, "e"));
            if let (Ok(id), Some(e)) = (id.parse::<EventId>(), e) {
                deliver_presence(shared, n, id, t.unwrap_or("0"), e);
            }
        }
    }
    if after_gap && !told {
        // No presence baseline yet (it could not be read before); Redis
        // answered, so the sessions can still catch up from their logs.
        shared.sink.catch_up();
    }
    Ok(())
}

fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields.chunks(2).find(|kv| kv[0] == name).and_then(|kv| kv.get(1)).map(String::as_str)
}

/// Whose change an `update_user`'s JSON (`{"action", "data": {"user"}}`) is.
#[derive(serde::Deserialize)]
struct Whose {
    data: WhoseData,
}

#[derive(serde::Deserialize)]
struct WhoseData {
    user: WhoseUser,
}

#[derive(serde::Deserialize)]
struct WhoseUser {
    user_id: String,
}

/// An `update_user` of shard `n` to the sessions that hear everyone and
/// those that watch its user, unless it was already delivered: it comes on
/// everyone's channel and on the user's own, published in that order, and a
/// gap's catch-up reads them again from the presence log.
fn deliver_presence(shared: &Shared, n: Shard, id: EventId, accepted: &str, json: &str) {
    {
        let mut last = shared.presence_last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(&n).is_some_and(|l| id <= *l) {
            return;
        }
        last.insert(n, id);
    }
    let Some(user) = serde_json::from_str::<Whose>(json).ok().and_then(|w| UserId::parse(&w.data.user.user_id).ok()) else { return };
    shared.sink.to_presence(&user, Frame::new(None, "update_user", json, accepted.parse().unwrap_or(0)));
}

/// Whether a session here still wants `channel`.
async fn wanted(shared: &Shared, channel: &str) -> bool {
    match shared.keys.parse_channel(channel) {
        Some(Channel::User(u)) => UserId::parse(u).is_ok_and(|u| shared.subs.lock().unwrap_or_else(|p| p.into_inner()).contains(&u)),
        Some(Channel::Presence(_)) => !shared.wants.lock().await.all.0.is_empty(),
        Some(Channel::PresenceOf(u)) => match UserId::parse(u) {
            Ok(u) => shared.wants.lock().await.watched.contains_key(&u),
            Err(_) => false,
        },
        None => false,
    }
}

fn deliver(shared: &Shared, channel: &str, payload: &[u8]) {
    let Ok(payload) = std::str::from_utf8(payload) else { return };
    let presence = match shared.keys.parse_channel(channel) {
        Some(Channel::Presence(n)) => Some(n),
        Some(Channel::PresenceOf(u)) => Some(shared.keys.shard_of(u)),
        Some(Channel::User(u)) => {
            let Ok(user) = UserId::parse(u) else { return };
            let mut parts = payload.splitn(4, '\n');
            let (Some(id), Some(action), Some(accepted), Some(json)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return;
            };
            let Ok(id) = id.parse::<EventId>() else { return };
            shared.sink.to_user(&user, Frame::new(Some(id), event_name(action), json, accepted.parse().unwrap_or(0)));
            None
        }
        None => None,
    };
    if let Some(n) = presence {
        let mut parts = payload.splitn(3, '\n');
        if let (Some(id), Some(accepted), Some(json)) = (parts.next(), parts.next(), parts.next())
            && let Ok(id) = id.parse::<EventId>()
        {
            deliver_presence(shared, n, id, accepted, json);
        }
    }
}
