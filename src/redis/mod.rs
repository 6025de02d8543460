//! The Redis plumbing, in one place: the shared command connection, timeouts,
//! error mapping, round-trip counting, the Lua scripts and the key table.
//! `store::redis` and `broker::redis` build on it; nothing else talks to Redis.
//!
//! Scripts are invoked by SHA (`EVALSHA`); after a Redis restart wipes the
//! script cache, the `NOSCRIPT` answer makes the client load the script and
//! try once more.

pub mod backend;
pub mod keys;
pub mod link;
pub mod replicated;
pub mod step;

use prometheus::IntCounter;
use redis::{FromRedisValue, Script};
use std::time::Duration;

pub use backend::{Backend, Conn, OP_TIMEOUT, client};
pub use keys::Keys;

use crate::error::{Error, Result};

/// Calls in a row that time out before the command connection is replaced:
/// a half-open link (TCP up, no answers) never fails by itself.
const TIMEOUTS_TO_REPLACE: u32 = 3;
/// While Redis stays unreachable, one line this often.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// Whether Redis answers, for one line when it goes, one a minute while it
/// stays away, and one when it is back (not one per failed call).
#[derive(Default)]
struct Health {
    down_since: Option<std::time::Instant>,
    logged: Option<std::time::Instant>,
    timeouts: u32,
}

const LOG_LUA: &str = include_str!("lua/log.lua");
const PROGRAM_LUA: &str = include_str!("lua/program.lua");

pub fn redis_error(e: redis::RedisError) -> Error {
    Error::unavailable(e)
}

/// Whether a call that failed this way after it was sent may still have run:
/// no answer came (a timeout, a link lost on the way). An error reply, or a
/// connection refused, means Redis did not run it.
fn may_have_run(cause: &anyhow::Error) -> bool {
    match cause.downcast_ref::<redis::RedisError>() {
        None => true, // our own timeout
        Some(e) => e.is_timeout() || (e.is_io_error() && !e.is_connection_refusal()) || e.is_connection_dropped(),
    }
}

/// The scripts, each loaded once and invoked by SHA.
pub struct Scripts {
    pub commit: Script,
    pub read: Script,
    pub log_read: Script,
    pub claim_due: Script,
    pub lease: Script,
    pub idle: Script,
    pub hooks: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            commit: Script::new(&format!("{PROGRAM_LUA}\n{LOG_LUA}\n{}", include_str!("lua/commit.lua"))),
            read: Script::new(&format!("{PROGRAM_LUA}\n{}", include_str!("lua/read.lua"))),
            log_read: Script::new(&format!("{LOG_LUA}\n{}", include_str!("lua/log_read.lua"))),
            claim_due: Script::new(include_str!("lua/claim_due.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
            idle: Script::new(include_str!("lua/idle.lua")),
            hooks: Script::new(include_str!("lua/hooks.lua")),
        }
    }

    /// Each script with its name, for the key checker (tests/conformance/script_keys.rs).
    pub fn all(&self) -> [(&'static str, &Script); 7] {
        [("commit", &self.commit), ("read", &self.read), ("log_read", &self.log_read), ("claim_due", &self.claim_due), ("lease", &self.lease), ("idle", &self.idle), ("hooks", &self.hooks)]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

/// One node's handle on Redis for commands (pub/sub has its own connection,
/// in `broker::redis`).
pub struct Redis {
    backend: Backend,
    /// One multiplexed connection: concurrent calls share its pipeline, and no
    /// pool checkout costs a round trip. It reconnects by itself when closed,
    /// and is replaced when it stops answering; it is opened on first use, so
    /// a node starts without Redis. Never held across an await: a call that
    /// timed out drops it at once, whatever an opener is waiting on.
    cmds: std::sync::Mutex<Option<Conn>>,
    /// One opener at a time; the others wait within their own timeout.
    opening: tokio::sync::Mutex<()>,
    health: std::sync::Mutex<Health>,
    /// `host:port` (never the password), for the log.
    addr: String,
    pub keys: Keys,
    pub scripts: Scripts,
    round_trips: IntCounter,
    /// With `redis.min_replicas_acked`: what a step waits on before it is answered.
    waiter: Option<replicated::Waiter>,
}

impl Redis {
    /// On a cluster every key and channel carries a hash tag (`{camsig}`,
    /// or its shard's, `{camsig:n}`), so that each script's keys are in one slot.
    pub fn new(backend: Backend, prefix: &str, shards: u16, round_trips: IntCounter) -> Self {
        let addr = backend.addr();
        let keys = Keys::new(prefix, shards, backend.is_cluster());
        Self { backend, cmds: std::sync::Mutex::default(), opening: tokio::sync::Mutex::default(), health: std::sync::Mutex::default(), addr, keys, scripts: Scripts::new(), round_trips, waiter: None }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether this is a Redis Cluster (channels are sharded: `SPUBLISH`).
    pub fn is_cluster(&self) -> bool {
        self.backend.is_cluster()
    }

    /// Each step is answered only once `n` replicas have it (`WAIT`, a
    /// batch at a time: see `replicated`), so a failover loses nothing
    /// acknowledged. Starts the waiter's task.
    pub fn with_min_replicas_acked(mut self, n: u32) -> Self {
        if n > 0 {
            let marks = (0..self.keys.shards()).map(|s| self.keys.replicated(s)).collect();
            self.waiter = Some(replicated::Waiter::start(self.backend.clone(), marks, n, self.round_trips.clone()));
        }
        self
    }

    async fn conn(&self) -> Result<Conn> {
        let open = || self.backend.connect();
        let current = || self.cmds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = current() {
            return Ok(c);
        }
        let _opening = self.opening.lock().await;
        if let Some(c) = current() {
            return Ok(c);
        }
        let c = open().await.map_err(redis_error)?;
        *self.cmds.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Bounds a call by `OP_TIMEOUT`: an unreachable Redis answers `unavailable` at once.
    pub async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let r = tokio::time::timeout(OP_TIMEOUT, f).await;
        let timed_out = r.is_err();
        let r = r.unwrap_or_else(|_| Err(Error::unavailable(anyhow::anyhow!("Redis did not answer in {OP_TIMEOUT:?}"))));
        match &r {
            Ok(_) => self.answered(),
            // A consumer group's expected replies (a first read, a group made
            // twice) come from a Redis that answers: the link is fine.
            Err(Error::Unavailable(cause)) if cause.downcast_ref::<redis::RedisError>().and_then(redis::RedisError::code).is_some_and(|c| c == "NOGROUP" || c == "BUSYGROUP") => self.answered(),
            Err(Error::Unavailable(cause)) => {
                // Ours, or the connection's own response timeout (the same length).
                let timed_out = timed_out || cause.downcast_ref::<redis::RedisError>().is_some_and(redis::RedisError::is_timeout);
                if self.failed(cause, timed_out) {
                    // The next call opens a new connection; calls under way on the old one end by their timeout.
                    self.cmds.lock().unwrap_or_else(|p| p.into_inner()).take();
                    tracing::warn!(redis = %self.addr, "the Redis command connection stopped answering; replaced");
                }
            }
            Err(_) => {}
        }
        r
    }

    fn answered(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.timeouts = 0;
        if let Some(since) = h.down_since.take() {
            tracing::warn!(redis = %self.addr, down_s = since.elapsed().as_secs(), "Redis answers again");
            h.logged = None;
        }
    }

    /// Records a failed call; true when the connection should be replaced.
    fn failed(&self, cause: &anyhow::Error, timed_out: bool) -> bool {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match h.down_since {
            None => {
                h.down_since = Some(now);
                h.logged = Some(now);
                tracing::warn!(redis = %self.addr, cause = %format!("{cause:#}"), "Redis is unreachable; calls answer 503 until it is back");
            }
            Some(since) if h.logged.is_none_or(|t| now - t >= DOWN_LOG_EVERY) => {
                h.logged = Some(now);
                tracing::warn!(redis = %self.addr, down_s = (now - since).as_secs(), cause = %format!("{cause:#}"), "Redis is still unreachable");
            }
            Some(_) => {}
        }
        h.timeouts = if timed_out { h.timeouts + 1 } else { 0 };
        if h.timeouts >= TIMEOUTS_TO_REPLACE {
            h.timeouts = 0;
            return true;
        }
        false
    }

    /// Runs a script by SHA: one round trip (two more only after a script-cache loss).
    pub async fn run<T: FromRedisValue>(&self, script: &Script, keys: &[String], args: &[Vec<u8>]) -> Result<T> {
        self.run_sent(script, keys, args, &std::sync::atomic::AtomicBool::new(false)).await
    }

    /// Runs a state change's script. When it was sent and its answer did not
    /// come (a timeout, a connection lost on the way), it may have run: that
    /// is `OutcomeUnknown` (504), not `Unavailable` (503, nothing was done).
    ///
    /// With `redis.min_replicas_acked`, the step's answer waits until the
    /// replicas have it; a step that reached fewer in `WAIT_MS` ran on the
    /// master but may be lost to a failover: that is `OutcomeUnknown` too,
    /// and a retry with the same key tells.
    pub async fn run_step<T: FromRedisValue>(&self, script: &Script, keys: &[String], args: &[Vec<u8>]) -> Result<T> {
        let sent = std::sync::atomic::AtomicBool::new(false);
        let out = match self.run_sent(script, keys, args, &sent).await {
            Err(Error::Unavailable(cause)) if sent.load(std::sync::atomic::Ordering::SeqCst) && may_have_run(&cause) => Err(Error::OutcomeUnknown(cause)),
            r => r,
        }?;
        if let Some(w) = &self.waiter {
            let shard = keys.first().map_or(0, |k| self.keys.shard_of_key(k));
            w.replicated(shard as usize).await?;
        }
        Ok(out)
    }

    async fn run_sent<T: FromRedisValue>(&self, script: &Script, keys: &[String], args: &[Vec<u8>], sent: &std::sync::atomic::AtomicBool) -> Result<T> {
        self.bounded(async {
            let mut c = self.conn().await?;
            sent.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            for a in args {
                inv.arg(a.as_slice());
            }
            let r = inv.invoke_async(&mut c).await.map_err(redis_error);
            self.round_trips.inc();
            r
        })
        .await
    }

    /// One command: one round trip.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let r = cmd.query_async(&mut c).await.map_err(redis_error);
            self.round_trips.inc();
            r
        })
        .await
    }

    /// A pipeline (MULTI/EXEC when atomic): one round trip.
    pub async fn pipe<T: FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let r = p.query_async(&mut c).await.map_err(redis_error);
            self.round_trips.inc();
            r
        })
        .await
    }
}
