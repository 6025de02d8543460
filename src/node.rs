//! One camsig node, the composition root: its id, configuration, service,
//! actor registry, auth, rate limits and metrics (handed to the actors as
//! `actors::Ctx`), its brokers and its drain signal. Cloned into app data;
//! several can live in one process.
//!
//! `Node::build` is the one factory that picks the implementations: the
//! embedded memory store and broker when `redis.url` is unset.

use std::ops::Deref;
use std::sync::Arc;

use crate::actors::registry::Registry;
use crate::actors::user::{UserActor, Users};
use crate::auth::Auth;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, LogBounds};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::redis::{Backend, Redis};
use crate::service::Service;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

pub struct NodeInner {
    pub id: Arc<str>,
    pub settings: Arc<Settings>,
    pub service: Service,
    pub registry: Arc<Registry<UserActor>>,
    /// What the actors and sessions get of this node.
    pub actors: crate::actors::Ctx,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub rates: Arc<RateLimits>,
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
        let metrics = Arc::new(Metrics::new(&id));
        metrics.webhook_receivers(&settings.webhooks.urls);
        let bounds = LogBounds { keep: settings.events.keep, keep_max: settings.events.keep_max };
        let claim_hold = crate::store::claim_hold(settings.presence.grace);
        let backend = match &settings.redis.url {
            Some(url) => {
                let url = secrecy::ExposeSecret::expose_secret(url);
                Some(Backend::Single(crate::redis::client(url).map_err(|e| anyhow::anyhow!("redis.url: {e}"))?))
            }
            None if !settings.redis.cluster_urls.is_empty() => {
                let urls: Vec<&str> = settings.redis.cluster_urls.iter().map(|u| secrecy::ExposeSecret::expose_secret(u)).collect();
                Some(Backend::cluster(&urls).map_err(|e| anyhow::anyhow!("redis.cluster_urls: {e}"))?)
            }
            None => None,
        };
        let (store, broker, memory_broker, redis_broker): (Arc<dyn Store>, Arc<dyn Broker>, _, _) = match backend {
            Some(backend) => {
                let r = Arc::new(Redis::new(backend, &settings.redis.prefix, settings.redis.shards, metrics.redis_round_trips.clone()).with_min_replicas_acked(settings.redis.min_replicas_acked));
                let probe = settings.redis.probe;
                let b = Arc::new(RedisBroker::start(r.clone(), registry.clone(), bounds, probe));
                (Arc::new(RedisStore::new(r, bounds, claim_hold, settings.webhooks.max_backlog)), b.clone(), None, Some(b))
            }
            None => {
                let b = Arc::new(MemoryBroker::new(registry.clone(), bounds));
                (Arc::new(MemoryStore::new(b.clone(), claim_hold, settings.webhooks.max_backlog)), b.clone(), Some(b), None)
            }
        };
        let service = Service::new(store, broker, settings.clone(), id.clone());
        let auth = Arc::new(Auth::new(&settings));
        let rates = Arc::new(RateLimits::new(&settings.limits));
        let users = Users { node_id: id.clone(), settings: settings.clone(), service: service.clone(), registry: registry.clone() };
        let actors = crate::actors::Ctx {
            users,
            auth: auth.clone(),
            rates: rates.clone(),
            metrics: metrics.clone(),
        };
        let inner = NodeInner {
            service,
            actors,
            auth,
            metrics,
            rates,
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
        self.rates.retain_recent();
        if let Some(b) = &self.memory_broker {
            b.sweep();
        }
    }

}
