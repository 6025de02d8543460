//! One camsig node, the composition root: its id, configuration, service,
//! actor registry, auth, rate limiter and metrics. Cloned into app data;
//! several can live in one process.
//!
//! `Node::build` is the one factory that picks the implementations: the
//! embedded memory store and broker when `redis.url` is unset.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::actors::registry::Registry;
use crate::actors::session::MISSED_HEARTBEATS;
use crate::actors::user::{Execute, ask};
use crate::auth::Auth;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, LogBounds};
use crate::config::Settings;
use crate::domain::{IdempotencyKey, UserId};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::redis::Redis;
use crate::service::{Command, Executed, Service};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

pub struct NodeInner {
    pub id: Arc<str>,
    pub settings: Arc<Settings>,
    pub service: Service,
    pub registry: Arc<Registry>,
    /// The narrow handle the actors get.
    pub actors: crate::actors::Ctx,
    pub auth: Auth,
    pub metrics: Metrics,
    limiter: DefaultKeyedRateLimiter<UserId>,
    /// cameraOn/cameraOff: each is broadcast to every session, so tighter.
    presence_limiter: DefaultKeyedRateLimiter<UserId>,
    drain: tokio::sync::Notify,
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
        let metrics = Metrics::new(&id);
        let bounds = LogBounds { keep_s: settings.events.keep_s, keep_max: settings.events.keep_max };
        let (store, broker, memory_broker, redis_broker): (Arc<dyn Store>, Arc<dyn Broker>, _, _) = match &settings.redis.url {
            Some(url) => {
                let url = secrecy::ExposeSecret::expose_secret(url);
                let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis.url: {e}"))?;
                let r = Arc::new(Redis::new(client, &settings.redis.prefix, metrics.redis_round_trips.clone()));
                let probe = Duration::from_secs(settings.redis.probe_s);
                let b = Arc::new(RedisBroker::start(r.clone(), registry.clone(), bounds, probe));
                (Arc::new(RedisStore::new(r, bounds)), b.clone(), None, Some(b))
            }
            None => {
                let b = Arc::new(MemoryBroker::new(registry.clone(), bounds));
                (Arc::new(MemoryStore::new(b.clone())), b.clone(), Some(b), None)
            }
        };
        let rate = NonZeroU32::new(settings.limits.rate_per_s).expect("validated at load");
        let presence_rate = NonZeroU32::new(settings.limits.presence_per_min).expect("validated at load");
        let service = Service::new(store, broker, settings.clone(), id.clone());
        let actors = crate::actors::Ctx {
            node_id: id.clone(),
            service: service.clone(),
            registry: registry.clone(),
            poll_linger: Duration::from_secs(settings.ws.heartbeat_s * MISSED_HEARTBEATS as u64),
        };
        let inner = NodeInner {
            service,
            actors,
            auth: Auth::new(&settings),
            metrics,
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            presence_limiter: RateLimiter::keyed(Quota::per_minute(presence_rate)),
            drain: tokio::sync::Notify::new(),
            id,
            settings,
            registry,
            memory_broker,
            redis_broker,
        };
        tracing::info!(node_id = %inner.id, broker = if inner.memory_broker.is_some() { "memory" } else { "redis" }, "node ready");
        Ok(Node(Arc::new(inner)))
    }

    /// Ok when the node can serve: not draining, the store answers, and on
    /// Redis the pub/sub link is up.
    pub async fn ready(&self) -> Result<()> {
        if self.service.is_draining() {
            return Err(Error::Draining);
        }
        if self.redis_broker.as_ref().is_some_and(|b| !b.is_live()) {
            return Err(Error::unavailable(anyhow::anyhow!("the Redis pub/sub link is down")));
        }
        self.service.store().ping().await
    }

    /// Starts a drain, as SIGTERM does (see `crate::drain`).
    pub fn request_drain(&self) {
        self.drain.notify_one();
    }

    pub async fn drain_requested(&self) {
        self.drain.notified().await
    }

    /// This node's own housekeeping: rate-limiter keys and, on one node, old logs.
    pub fn sweep_local(&self) {
        self.limiter.retain_recent();
        self.presence_limiter.retain_recent();
        if let Some(b) = &self.memory_broker {
            b.sweep();
        }
    }

    /// 429 when `user` is over `limits.rate_per_s`.
    pub fn check_rate(&self, user: &UserId) -> Result<()> {
        Self::check(&self.limiter, user)
    }

    fn check(limiter: &DefaultKeyedRateLimiter<UserId>, user: &UserId) -> Result<()> {
        limiter.check_key(user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited { retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// Runs a command as `caller`, serialized with the caller's other operations;
    /// with a `key`, at most once per key.
    pub async fn execute(&self, caller: &UserId, cmd: Command, key: Option<IdempotencyKey>) -> Result<Executed> {
        if matches!(cmd, Command::CameraOn { .. } | Command::CameraOff) {
            // Counted per node: behind a load balancer a user gets up to
            // (nodes × limits.presence_per_min); see docs/security.md.
            Self::check(&self.presence_limiter, caller)?;
        }
        // Before queueing: a duplicate must not wait behind the call it repeats.
        let _running = key.as_ref().map(|k| self.service.running(caller, k)).transpose()?;
        ask(&self.actors, caller, Execute { cmd, key, span: tracing::Span::current() }).await?
    }
}
