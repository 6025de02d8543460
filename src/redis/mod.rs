//! The Redis plumbing, in one place: the shared command connection, timeouts,
//! error mapping, round-trip counting, the Lua scripts and the key table.
//! `store::redis` and `broker::redis` build on it; nothing else talks to Redis.
//!
//! Scripts are invoked by SHA (`EVALSHA`); after a Redis restart wipes the
//! script cache, the `NOSCRIPT` answer makes the client load the script and
//! try once more.

pub mod keys;
pub mod step;

use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script};
use std::time::Duration;

pub use keys::Keys;

use crate::error::{Error, Result};

/// Longest any Redis call may take before it counts as unreachable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

const LOG_LUA: &str = include_str!("lua/log.lua");
const PROGRAM_LUA: &str = include_str!("lua/program.lua");

pub fn redis_error(e: redis::RedisError) -> Error {
    Error::unavailable(e)
}

/// The scripts, each loaded once and invoked by SHA.
pub struct Scripts {
    pub commit: Script,
    pub read: Script,
    pub log_read: Script,
    pub claim_due: Script,
    pub lease: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            commit: Script::new(&format!("{PROGRAM_LUA}\n{LOG_LUA}\n{}", include_str!("lua/commit.lua"))),
            read: Script::new(&format!("{PROGRAM_LUA}\n{}", include_str!("lua/read.lua"))),
            log_read: Script::new(&format!("{LOG_LUA}\n{}", include_str!("lua/log_read.lua"))),
            claim_due: Script::new(include_str!("lua/claim_due.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
        }
    }
}

/// One node's handle on Redis for commands (pub/sub has its own connection,
/// in `broker::redis`).
pub struct Redis {
    client: redis::Client,
    /// One multiplexed connection: concurrent calls share its pipeline, and no
    /// pool checkout costs a round trip. It reconnects by itself; it is opened
    /// on first use, so a node starts without Redis.
    cmds: tokio::sync::OnceCell<ConnectionManager>,
    pub keys: Keys,
    pub scripts: Scripts,
    round_trips: IntCounter,
}

impl Redis {
    pub fn new(client: redis::Client, prefix: &str, round_trips: IntCounter) -> Self {
        Self { client, cmds: tokio::sync::OnceCell::new(), keys: Keys::new(prefix), scripts: Scripts::new(), round_trips }
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let open = || {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), cfg)
        };
        Ok(self.cmds.get_or_try_init(open).await.map_err(redis_error)?.clone())
    }

    /// Bounds a call by `OP_TIMEOUT`: an unreachable Redis answers `unavailable` at once.
    pub async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(OP_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(Error::unavailable(anyhow::anyhow!("Redis did not answer in {OP_TIMEOUT:?}"))))
    }

    /// Runs a script by SHA: one round trip (two more only after a script-cache loss).
    pub async fn run<T: FromRedisValue>(&self, script: &Script, keys: &[String], args: &[Vec<u8>]) -> Result<T> {
        self.bounded(async {
            let mut c = self.conn().await?;
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
