//! One camsig node: its id, configuration, service, actor registry, auth,
//! rate limiter and metrics. Cloned into app data; several can live in one process.
//!
//! `Node::build` is the one factory that picks the implementations: the
//! embedded memory store and broker when `redis.url` is unset.

use actix::{Actor, Addr};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::actors::registry::Registry;
use crate::actors::user::{Execute, Listen, Unlisten, UserActor, ask};
use crate::auth::Auth;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, LogBounds, Replay};
use crate::domain::event::{ResyncData, now_us};
use crate::domain::{Event, EventId, Frame, SessionId};
use crate::config::Settings;
use crate::domain::{IdempotencyKey, UserId};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::service::{Command, Reply, Service};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::{OP_TIMEOUT, RedisStore};

/// Pooled Redis connections per node; pub/sub has its own, outside the pool.
const REDIS_POOL_SIZE: usize = 32;

/// How often housekeeping runs: grace expiries, idle rooms, rate-limiter keys,
/// expired logs. It bounds how late a grace period may end.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What a long poll returns.
pub struct Polled {
    /// Oldest first; or one `resync` when events after `since` are gone.
    pub events: Vec<Frame>,
    /// The `since` for the next poll.
    pub last_id: EventId,
}

pub struct NodeInner {
    pub id: Arc<str>,
    pub settings: Arc<Settings>,
    pub service: Service,
    pub registry: Arc<Registry>,
    pub auth: Auth,
    pub metrics: Metrics,
    limiter: DefaultKeyedRateLimiter<UserId>,
    memory_broker: Option<Arc<MemoryBroker>>,
    redis_broker: Option<Arc<RedisBroker>>,
}

#[derive(Clone)]
pub struct Node(Arc<NodeInner>);

impl Deref for Node {
    type Target = NodeInner;
    fn deref(&self) -> &NodeInner {
        &self.0
    }
}

impl Node {
    pub async fn build(settings: Settings) -> anyhow::Result<Node> {
        let settings = Arc::new(settings);
        let id: Arc<str> = settings.node_id().into();
        let registry = Arc::new(Registry::new());
        let bounds = LogBounds { keep_s: settings.events.keep_s, keep_max: settings.events.keep_max };
        let (store, broker, memory_broker, redis_broker): (Arc<dyn Store>, Arc<dyn Broker>, _, _) = match &settings.redis.url {
            Some(url) => {
                let url = secrecy::ExposeSecret::expose_secret(url);
                let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                let mut cfg = deadpool_redis::Config::from_url(url);
                let mut pool_cfg = deadpool_redis::PoolConfig::new(REDIS_POOL_SIZE);
                pool_cfg.timeouts = deadpool_redis::Timeouts { wait: Some(OP_TIMEOUT), create: Some(OP_TIMEOUT), recycle: Some(OP_TIMEOUT) };
                cfg.pool = Some(pool_cfg);
                let pool = cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1)).map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                let b = Arc::new(RedisBroker::start(client, registry.clone(), bounds));
                (Arc::new(RedisStore::new(pool)), b.clone(), None, Some(b))
            }
            None => {
                let b = Arc::new(MemoryBroker::new(registry.clone(), bounds));
                (Arc::new(MemoryStore::new()), b.clone(), Some(b), None)
            }
        };
        let rate = NonZeroU32::new(settings.limits.rate_per_s).expect("validated at load");
        let inner = NodeInner {
            service: Service::new(store, broker, settings.clone(), id.clone()),
            auth: Auth::new(&settings.auth),
            metrics: Metrics::new(&id),
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            id,
            settings,
            registry,
            memory_broker,
            redis_broker,
        };
        tracing::info!(node_id = %inner.id, broker = if inner.memory_broker.is_some() { "memory" } else { "redis" }, "node ready");
        Ok(Node(Arc::new(inner)))
    }

    /// 429 when `user` is over `limits.rate_per_s`.
    pub fn check_rate(&self, user: &UserId) -> Result<()> {
        self.limiter.check_key(user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited { retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// The user's actor on this node, started if needed.
    pub fn user_actor(&self, user: &UserId) -> Addr<UserActor> {
        self.registry.get_or_start(user, || UserActor::new(user.clone(), self.clone()).start())
    }

    /// Runs a command as `caller`, serialized with the caller's other operations;
    /// with a `key`, at most once per key.
    pub async fn execute(&self, caller: &UserId, cmd: Command, key: Option<IdempotencyKey>) -> Result<Reply> {
        ask(self, caller, Execute { cmd, key, span: tracing::Span::current() }).await?
    }

    /// A long poll: `user`'s events after `since` (from now when absent), waiting
    /// up to `wait` for the first one. Woken by the event itself, not a timer.
    pub async fn poll(&self, user: &UserId, since: Option<EventId>, wait: Duration) -> Result<Polled> {
        let id = SessionId::new();
        let wake = Arc::new(Notify::new());
        // Listen first, read next: an event between the two still wakes the wait.
        let actor = ask(self, user, Listen { id: id.clone(), wake: wake.clone() }).await??;
        // Dropped however the poll ends, the client going away included.
        let _listening = scopeguard::guard((), move |()| actor.do_send(Unlisten { id }));
        let broker = self.service.broker();
        let since = match since {
            Some(s) => s,
            None => broker.last_id(user).await?,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match broker.replay(user, since).await? {
                Replay::Gone { last_id } => {
                    let ev = Event::Resync(ResyncData { last_id: last_id.to_string() });
                    return Ok(Polled { events: vec![Frame::from_event(None, &ev, now_us())], last_id });
                }
                Replay::Events(events) if !events.is_empty() => {
                    let last_id = events.last().and_then(|f| f.id).unwrap_or(since);
                    return Ok(Polled { events, last_id });
                }
                Replay::Events(_) if tokio::time::Instant::now() >= deadline => return Ok(Polled { events: vec![], last_id: since }),
                Replay::Events(_) => {
                    let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
                }
            }
        }
    }

    /// Starts housekeeping on the current runtime; it ends with the returned handle.
    pub fn spawn_sweeper(&self) -> actix_web::rt::task::JoinHandle<()> {
        let node = self.clone();
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
            let mut reconnects = node.redis_broker.as_ref().map(|b| b.reconnects());
            let ttl = Duration::from_secs(node.settings.presence.ttl_s);
            let mut renewed: Option<std::time::Instant> = None;
            loop {
                tick.tick().await;
                if renewed.is_none_or(|t| t.elapsed() >= ttl / 3) {
                    let until = chrono::Utc::now() + ttl;
                    match node.service.store().renew_lease(&node.id, until).await {
                        Ok(()) => renewed = Some(std::time::Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "could not renew the node lease"),
                    }
                }
                if let Some(rx) = &mut reconnects
                    && rx.has_changed().unwrap_or(false)
                {
                    rx.mark_unchanged();
                    renewed = None;
                    if let Err(e) = node.service.reconcile(&node.registry.local_sessions()).await {
                        tracing::warn!(error = %e, "could not re-register sessions");
                        rx.mark_changed();
                    }
                }
                if let Err(e) = node.service.reap_dead_nodes(|| node.registry.local_sessions()).await {
                    tracing::warn!(error = %e, "dead-node sweep failed");
                }
                if let Err(e) = node.service.expire_due().await {
                    tracing::warn!(error = %e, "presence expiry failed");
                }
                match node.service.close_idle().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rooms = n, "closed idle rooms"),
                    Err(e) => tracing::warn!(error = %e, "idle sweep failed"),
                }
                node.limiter.retain_recent();
                if let Some(b) = &node.memory_broker {
                    b.sweep();
                }
            }
        })
    }
}
