//! The broker on Redis, for many nodes.
//!
//! Each user's log is a capped stream; one Lua script appends to it and
//! publishes the event on the user's channel, so the id order and the live
//! order agree. Live delivery runs on one dedicated pub/sub connection (never a
//! pooled one): the node subscribes to a user's channel while it has a local
//! session of theirs, plus one presence channel for `update_user`. When that
//! connection drops, the task reconnects with backoff, resubscribes, and
//! bumps `reconnects` so the node can re-register what Redis may have lost.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use futures_util::StreamExt;
use redis::Script;
use redis::aio::PubSubSink;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use super::{Broker, LogBounds, Replay, Sink};
use crate::domain::event::action_name;
use crate::domain::{Event, EventId, Frame, UserId};
use crate::error::{Error, Result};
use crate::store::redis::{OP_TIMEOUT, redis_error};

const PRESENCE: &str = "camsig:presence";
const USER_CHANNEL_PREFIX: &str = "camsig:u:";
const MAX_BACKOFF: Duration = Duration::from_secs(1);

fn log_key(u: &UserId) -> String {
    format!("camsig:log:{u}")
}
fn channel(u: &UserId) -> String {
    format!("{USER_CHANNEL_PREFIX}{u}")
}

/// Append + trim + publish, atomically. Returns the new id.
const PUBLISH: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep_ms = tonumber(ARGV[5])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', 'a', ARGV[1], 't', ARGV[2], 'e', ARGV[3])
redis.call('XTRIM', KEYS[1], 'MINID', now_ms - keep_ms)
redis.call('PEXPIRE', KEYS[1], keep_ms)
redis.call('PUBLISH', KEYS[2], id .. '\n' .. ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return id
";

/// `{last_generated_id, max_deleted_id, first_id, entries}` after trimming by
/// age; entries after ARGV[1] only when ARGV[3] is '1'.
const READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0-0', '0-0', '0-0', {}} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', now_ms - tonumber(ARGV[2]))
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, maxdel = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then maxdel = info[i + 1] end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first_id = '0-0'
if #first > 0 then first_id = first[1][1] end
local entries = {}
if ARGV[3] == '1' then entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+') end
return {last, maxdel, first_id, entries}
";

type Entry = (String, Vec<String>);

struct Shared {
    sink: Arc<dyn Sink>,
    /// Users this node wants events for; resubscribed after every reconnect.
    subs: Mutex<HashSet<UserId>>,
    /// The live connection's command half; None while Redis is unreachable.
    pubsub: watch::Sender<Option<PubSubSink>>,
    reconnects: watch::Sender<u64>,
}

pub struct RedisBroker {
    client: redis::Client,
    /// One multiplexed connection for publishing and reading logs: concurrent
    /// calls share its pipeline, and no pool check costs a round trip. It
    /// reconnects by itself; it is opened on first use, so a node starts without Redis.
    cmds: tokio::sync::OnceCell<ConnectionManager>,
    bounds: LogBounds,
    publish: Script,
    read: Script,
    shared: Arc<Shared>,
}

impl RedisBroker {
    /// Starts the pub/sub task on the current runtime.
    pub fn start(client: redis::Client, sink: Arc<dyn Sink>, bounds: LogBounds) -> Self {
        let shared = Arc::new(Shared {
            sink,
            subs: Mutex::new(HashSet::new()),
            pubsub: watch::channel(None).0,
            reconnects: watch::channel(0).0,
        });
        actix_web::rt::spawn(listen(client.clone(), shared.clone()));
        Self { client, cmds: tokio::sync::OnceCell::new(), bounds, publish: Script::new(PUBLISH), read: Script::new(READ), shared }
    }

    /// The shared command connection (a cheap clone of one multiplexed connection).
    async fn conn(&self) -> Result<ConnectionManager> {
        let open = || {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), cfg)
        };
        let c = self.cmds.get_or_try_init(open).await.map_err(redis_error)?;
        Ok(c.clone())
    }

    /// Bumped each time the pub/sub connection comes back after a loss.
    pub fn reconnects(&self) -> watch::Receiver<u64> {
        self.shared.reconnects.subscribe()
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(OP_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(Error::unavailable(anyhow::anyhow!("Redis did not answer in {OP_TIMEOUT:?}"))))
    }

    /// The log's last id, newest deleted id, first kept id, and the entries after `since`.
    async fn read(&self, user: &UserId, since: Option<EventId>) -> Result<(EventId, EventId, EventId, Vec<Entry>)> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let keep_ms = self.bounds.keep_s * 1000;
            let (last, maxdel, first, entries): (String, String, String, Vec<Entry>) = self
                .read
                .key(log_key(user))
                .arg(since.unwrap_or_default().to_string())
                .arg(keep_ms)
                .arg(if since.is_some() { "1" } else { "0" })
                .invoke_async(&mut c)
                .await
                .map_err(redis_error)?;
            let parse = |s: &str| s.parse::<EventId>().map_err(|_| Error::Unexpected(anyhow::anyhow!("bad stream id {s}")));
            Ok((parse(&last)?, parse(&maxdel)?, parse(&first)?, entries))
        })
        .await
    }
}

/// A stream entry back into a frame.
fn entry_frame((id, fields): &Entry) -> Option<Frame> {
    let mut action = None;
    let mut accepted = 0;
    let mut json = None;
    for kv in fields.chunks(2) {
        match (kv[0].as_str(), kv.get(1)) {
            ("a", Some(v)) => action = Some(action_name(v)),
            ("t", Some(v)) => accepted = v.parse().unwrap_or(0),
            ("e", Some(v)) => json = Some(v.as_str()),
            _ => {}
        }
    }
    Some(Frame::new(Some(id.parse().ok()?), action?, json?, accepted))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, user: &UserId, event: &Event, accepted_us: i64) -> Result<EventId> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let id: String = self
                .publish
                .key(log_key(user))
                .key(channel(user))
                .arg(event.name())
                .arg(accepted_us)
                .arg(event.to_json())
                .arg(self.bounds.keep_max)
                .arg(self.bounds.keep_s * 1000)
                .invoke_async(&mut c)
                .await
                .map_err(redis_error)?;
            id.parse().map_err(|_| Error::Unexpected(anyhow::anyhow!("bad stream id {id}")))
        })
        .await
    }

    async fn broadcast(&self, event: &Event, accepted_us: i64) -> Result<()> {
        self.bounded(async {
            let mut c = self.conn().await?;
            redis::cmd("PUBLISH")
                .arg(PRESENCE)
                .arg(format!("{accepted_us}\n{}", event.to_json()))
                .query_async::<()>(&mut c)
                .await
                .map_err(redis_error)
        })
        .await
    }

    async fn replay(&self, user: &UserId, since: EventId) -> Result<Replay> {
        let (last, maxdel, first, entries) = self.read(user, Some(since)).await?;
        // With nothing deleted, history starts at the first entry: an older
        // `since` names a log that expired before this one began.
        let before_log = maxdel == EventId::START && since != EventId::START && since < first;
        if since > last || since < maxdel || before_log {
            return Ok(Replay::Gone { last_id: last });
        }
        Ok(Replay::Events(entries.iter().filter_map(entry_frame).collect()))
    }

    async fn last_id(&self, user: &UserId) -> Result<EventId> {
        Ok(self.read(user, None).await?.0)
    }

    async fn subscribe(&self, user: &UserId) -> Result<()> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner()).insert(user.clone());
        // Waits for the connection while it is (re)established, e.g. right after start.
        let mut rx = self.shared.pubsub.subscribe();
        self.bounded(async {
            let mut sink = rx
                .wait_for(Option::is_some)
                .await
                .map_err(Error::unavailable)?
                .clone()
                .expect("waited for Some");
            sink.subscribe(channel(user)).await.map_err(redis_error)
        })
        .await
    }

    async fn unsubscribe(&self, user: &UserId) -> Result<()> {
        self.shared.subs.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
        let sink = self.shared.pubsub.borrow().clone();
        if let Some(mut sink) = sink {
            self.bounded(async { sink.unsubscribe(channel(user)).await.map_err(redis_error) }).await?;
        }
        Ok(())
    }
}

/// Holds the pub/sub connection for the node's lifetime, reconnecting forever.
async fn listen(client: redis::Client, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    let mut lost = false;
    loop {
        let conn = tokio::time::timeout(OP_TIMEOUT, client.get_async_pubsub()).await;
        let Ok(Ok(conn)) = conn else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let (mut sink, mut stream) = conn.split();
        // Publish the sink first so no subscribe() falls between snapshot and resubscribe.
        shared.pubsub.send_replace(Some(sink.clone()));
        let mut channels = vec![PRESENCE.to_owned()];
        channels.extend(shared.subs.lock().unwrap_or_else(|p| p.into_inner()).iter().map(channel));
        let mut ok = true;
        for chunk in channels.chunks(1000) {
            if sink.subscribe(chunk).await.is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            backoff = Duration::from_millis(50);
            if lost {
                tracing::info!(channels = channels.len(), "pub/sub reconnected to Redis and resubscribed");
                shared.reconnects.send_modify(|n| *n += 1);
            }
            while let Some(msg) = stream.next().await {
                deliver(&shared, msg.get_channel_name(), msg.get_payload_bytes());
            }
        }
        tracing::warn!("pub/sub connection to Redis lost; reconnecting");
        shared.pubsub.send_replace(None);
        lost = true;
    }
}

fn deliver(shared: &Shared, channel: &str, payload: &[u8]) {
    let Ok(payload) = std::str::from_utf8(payload) else { return };
    if channel == PRESENCE {
        if let Some((accepted, json)) = payload.split_once('\n') {
            shared.sink.to_all(Frame::new(None, "update_user", json, accepted.parse().unwrap_or(0)));
        }
        return;
    }
    let Some(user) = channel.strip_prefix(USER_CHANNEL_PREFIX).and_then(|u| UserId::parse(u).ok()) else { return };
    let mut parts = payload.splitn(4, '\n');
    let (Some(id), Some(action), Some(accepted), Some(json)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(id) = id.parse::<EventId>() else { return };
    shared.sink.to_user(&user, Frame::new(Some(id), action_name(action), json, accepted.parse().unwrap_or(0)));
}
