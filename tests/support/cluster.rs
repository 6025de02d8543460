//! A `redis-server` each test owns (stop, restart, same port), nodes on it,
//! and a node in a child process that a test can SIGKILL.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::process::Process;
use super::{SECRET, TestApp, Ws, spawn_app_with, wait_until};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` consecutive free ports below the ephemeral range (32768 and up), so
/// that no outgoing connection takes one before its server binds it.
pub fn free_port_run(n: u16) -> u16 {
    let seed = std::process::id() as u64 ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for i in 0..1000u64 {
        let base = 20_000 + ((seed.wrapping_mul(6364136223846793005).wrapping_add(i * 7919)) % 12_000) as u16;
        if (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// `--replicaof` arguments: this server replicates another.
    replica_of: Option<u16>,
}

impl Redis {
    /// On a port picked here: another process may take it before
    /// redis-server binds it, so the server that answers must be ours (its
    /// `process_id`), and a start that lost the port tries another.
    pub async fn start() -> Redis {
        for _ in 0..5 {
            let mut r = Redis { port: free_port(), child: None, replica_of: None };
            if r.try_start().await {
                return r;
            }
        }
        panic!("redis-server could not get a port in five tries");
    }

    /// A replica of `master`, once its link to the master is up and synced.
    pub async fn start_replica_of(master: &Redis) -> Redis {
        for _ in 0..5 {
            let mut r = Redis { port: free_port(), child: None, replica_of: Some(master.port) };
            if r.try_start().await {
                let mut c = r.conn().await;
                wait_until(Duration::from_secs(10), "the replica to sync with its master", async || {
                    let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.unwrap_or_default();
                    info.lines().any(|l| l.trim() == "master_link_status:up")
                })
                .await;
                return r;
            }
        }
        panic!("redis-server could not get a port in five tries");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection of the test's own, to look at (or change) what the nodes stored.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Starts it (again, empty) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.try_start().await, "redis-server could not bind its port {} again", self.port);
    }

    /// Whether our redis-server came up on `port` (false: it exited, the port was taken).
    async fn try_start(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local"]);
        if let Some(m) = self.replica_of {
            // A replica writes the master's snapshot to its directory: its own, not the cwd.
            let dir = std::env::temp_dir().join(format!("camsig-replica-{}-{}", std::process::id(), self.port));
            std::fs::create_dir_all(&dir).unwrap();
            cmd.args(["--replicaof", "127.0.0.1", &m.to_string(), "--dir", &dir.display().to_string()]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let pid = child.id();
        self.child = Some(child);
        let url = self.url();
        let mut ours = false;
        wait_until(Duration::from_secs(10), "redis-server to answer or exit", async || {
            if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return true;
            }
            let Ok(client) = redis::Client::open(url.as_str()) else { return false };
            let Ok(mut c) = client.get_multiplexed_async_connection().await else { return false };
            let Ok(info) = redis::cmd("INFO").arg("server").query_async::<String>(&mut c).await else { return false };
            ours = info.lines().any(|l| l.trim() == format!("process_id:{pid}"));
            // Someone else's server on this port: ours is about to exit.
            ours
        })
        .await;
        if !ours {
            self.stop();
        }
        ours
    }

    /// SIGSTOP: Redis freezes, every connection stays open and silent.
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("running").id(), "STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("running").id(), "CONT");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("kill runs").success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Short presence timings so the failure tests run in seconds.
pub const TTL_S: u64 = 2;
pub const GRACE_S: u64 = 1;

/// What nodes share: one Redis, or a Redis Cluster; a test written over it
/// runs on both.
pub trait Backing {
    /// Points a node's settings at it.
    fn apply(&self, s: &mut camsig::config::Settings);
    /// The same, as a child node's environment.
    fn env(&self) -> Vec<(&'static str, String)>;
}

impl<T: Backing> Backing for &T {
    fn apply(&self, s: &mut camsig::config::Settings) {
        (*self).apply(s)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        (*self).env()
    }
}

impl Backing for Redis {
    fn apply(&self, s: &mut camsig::config::Settings) {
        s.redis.url = Some(SecretString::from(self.url()));
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("CAMSIG__REDIS__URL", self.url())]
    }
}

impl Backing for RedisCluster {
    fn apply(&self, s: &mut camsig::config::Settings) {
        s.redis.url = None;
        s.redis.cluster_urls = self.urls().into_iter().map(SecretString::from).collect();
        s.redis.shards = self.shards;
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("CAMSIG__REDIS__CLUSTER_URLS", self.urls().join(",")), ("CAMSIG__REDIS__SHARDS", self.shards.to_string())]
    }
}

/// An in-process node on `redis`.
pub async fn node(redis: &impl Backing, name: &str) -> TestApp {
    node_with(redis, name, |_| {}).await
}

/// An in-process node on `redis`, with settings changed by `f`.
pub async fn node_with(redis: &impl Backing, name: &str, f: impl FnOnce(&mut camsig::config::Settings)) -> TestApp {
    let mut at = camsig::config::Settings::default();
    redis.apply(&mut at);
    let (url, cluster_urls, shards) = (at.redis.url, at.redis.cluster_urls, at.redis.shards);
    let name = name.to_owned();
    spawn_app_with(move |s| {
        s.redis.url = url;
        s.redis.cluster_urls = cluster_urls;
        s.redis.shards = shards;
        s.node.id = Some(name);
        s.presence.ttl = std::time::Duration::from_secs(TTL_S);
        s.presence.grace = std::time::Duration::from_secs(GRACE_S);
        f(s);
    })
    .await
}

pub async fn three_nodes(redis: &impl Backing) -> Vec<TestApp> {
    vec![node(redis, "n1").await, node(redis, "n2").await, node(redis, "n3").await]
}

/// A node in its own process, so that it can die without a word.
pub struct ProcNode(Process);

impl std::ops::Deref for ProcNode {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl ProcNode {
    pub async fn start(redis: &impl Backing, name: &str) -> ProcNode {
        Self::start_with(redis, name, &[]).await
    }

    /// With extra environment, e.g. `CAMSIG_FAILPOINT`.
    pub async fn start_with(redis: &impl Backing, name: &str, env: &[(&str, &str)]) -> ProcNode {
        let (backing, ttl, grace) = (redis.env(), TTL_S.to_string(), GRACE_S.to_string());
        let mut all: Vec<(&str, &str)> = backing.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend([
            ("CAMSIG__AUTH__JWT_SECRET", SECRET),
            ("CAMSIG__NODE__ID", name),
            ("CAMSIG__PRESENCE__TTL_S", ttl.as_str()),
            ("CAMSIG__PRESENCE__GRACE_S", grace.as_str()),
            ("CAMSIG__LIMITS__RATE_PER_S", "10000"),
            ("CAMSIG__LIMITS__PRESENCE_PER_MIN", "100000"),
            ("RUST_LOG", "warn,camsig::startup=info"),
        ]);
        all.extend_from_slice(env);
        let node = ProcNode(Process::spawn(&all).await);
        let http = awc::Client::default();
        let url = node.url("/readyz");
        wait_until(Duration::from_secs(20), "the child node to be ready", async || {
            matches!(http.get(&url).send().await, Ok(r) if r.status().is_success())
        })
        .await;
        node
    }

    pub async fn ws(&self, token: &str) -> Ws {
        self.ws_query(token, "").await
    }

    pub async fn ws_query(&self, token: &str, query: &str) -> Ws {
        Ws::connect(&format!("ws://127.0.0.1:{}/ws{query}", self.port), Some(token)).await
    }

    /// POST `/webrtc/<op>` with an `Idempotency-Key`; Err when the node died before answering.
    pub async fn post_once(&self, op: &str, token: &str, key: &str, body: serde_json::Value) -> Result<u16, String> {
        let req = awc::Client::default().post(self.url(&format!("/webrtc/{op}"))).insert_header(("Authorization", format!("Bearer {token}"))).insert_header(("Idempotency-Key", key));
        req.send_json(&body).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    }

    /// POST `/webrtc/<op>`: status and JSON body.
    pub async fn post_json(&self, op: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut r = http.post(self.url(&format!("/webrtc/{op}"))).insert_header(("Authorization", format!("Bearer {token}"))).send_json(&body).await.expect("the node answers");
        let v = r.json::<serde_json::Value>().limit(1 << 20).await.unwrap_or(serde_json::Value::Null);
        (r.status().as_u16(), v)
    }

    /// Whether the process has ended (by itself, e.g. at a failpoint).
    pub fn exited(&mut self) -> bool {
        self.0.exited()
    }

    /// SIGTERM: the node drains, then exits; returns how long that took.
    pub async fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        self.0.signal("TERM");
        wait_until(Duration::from_secs(30), "the node to exit after SIGTERM", async || self.exited()).await;
        start.elapsed()
    }

    /// SIGKILL: no goodbye to Redis, no closed sessions.
    pub fn kill(&mut self) {
        self.0.kill();
    }
}

/// A Redis Cluster each test owns: `masters` masters, each with `replicas`
/// replicas, on free ports (and free cluster-bus ports), a short node
/// timeout so a failover takes a second or two.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// `redis.shards` for the nodes on it (16: the state spread over the masters).
    pub shards: u16,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let n = masters * (1 + replicas);
        // Ports below the ephemeral range, so that no outgoing connection of a
        // test running beside takes one first; a start that lost one anyway
        // (another test's server) tries another run.
        let c = 'started: {
            for _ in 0..3 {
                let base = free_port_run(2 * n as u16);
                let dir = std::env::temp_dir().join(format!("camsig-cluster-{}-{base}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let mut c = RedisCluster { ports: vec![], shards: 16, children: vec![], dir };
                for i in 0..n as u16 {
                    let (port, bus) = (base + i, base + n as u16 + i);
                    let child = Command::new("redis-server")
                        .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--cluster-config-file", &format!("nodes-{port}.conf")])
                        .args(["--dir", &c.dir.display().to_string(), "--enable-debug-command", "local"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("redis-server is installed (scripts/test installs it)");
                    c.ports.push(port);
                    c.children.push(Some(child));
                }
                let mut all = true;
                for i in 0..n {
                    let url = c.url(i);
                    let end = Instant::now() + Duration::from_secs(10);
                    let up = loop {
                        let ok = match redis::Client::open(url.as_str()) {
                            Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok || Instant::now() > end || c.children[i].as_mut().is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_)))) {
                            break ok;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    };
                    all &= up;
                }
                if all {
                    break 'started c;
                }
                drop(c); // stops what it started
            }
            panic!("a Redis Cluster could not get its ports in three tries");
        };
        let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for i in 0..n {
            let mut conn = c.conn(i).await;
            wait_until(Duration::from_secs(20), "every node to see the cluster ok", async || {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap_or_default();
                info.lines().any(|l| l.trim() == "cluster_state:ok")
            })
            .await;
            wait_until(Duration::from_secs(20), "each replica to sync with its master", async || {
                let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap_or_default();
                info.lines().any(|l| l.trim() == "role:master") || info.lines().any(|l| l.trim() == "master_link_status:up")
            })
            .await;
        }
        c
    }

    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[i])
    }

    pub fn urls(&self) -> Vec<String> {
        (0..self.ports.len()).map(|i| self.url(i)).collect()
    }

    /// A plain connection to node `i`.
    pub async fn conn(&self, i: usize) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url(i)).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// The index of the node that is master of `key`'s slot now.
    pub async fn master_of(&self, key: &str) -> usize {
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut self.conn(self.alive()).await).await.unwrap();
        for i in 0..self.ports.len() {
            if self.children[i].is_none() {
                continue;
            }
            let mut c = self.conn(i).await;
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.unwrap();
            if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                continue;
            }
            let shards: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await.unwrap();
            let mine = shards.lines().find(|l| l.contains("myself")).unwrap().to_owned();
            for range in mine.split_whitespace().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<i64>(), hi.parse::<i64>())
                    && (lo..=hi).contains(&slot)
                {
                    return i;
                }
            }
        }
        panic!("no master holds the slot of {key}");
    }

    /// Moves `key`'s slot, with its keys, from its master to another master
    /// (as `redis-cli --cluster reshard` does, one slot): returns the new
    /// master's index.
    pub async fn move_slot(&self, key: &str) -> usize {
        let from = self.master_of(key).await;
        let mut to = None;
        for i in 0..self.ports.len() {
            if i == from || self.children[i].is_none() {
                continue;
            }
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut self.conn(i).await).await.unwrap();
            if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                to = Some(i);
                break;
            }
        }
        let to = to.expect("another master");
        let (mut f, mut t) = (self.conn(from).await, self.conn(to).await);
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut f).await.unwrap();
        let from_id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut f).await.unwrap();
        let to_id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut t).await.unwrap();
        let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("IMPORTING").arg(&from_id).query_async(&mut t).await.unwrap();
        let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("MIGRATING").arg(&to_id).query_async(&mut f).await.unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100).query_async(&mut f).await.unwrap();
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE").arg("127.0.0.1").arg(self.ports[to]).arg("").arg(0).arg(5000).arg("KEYS").arg(&keys).query_async(&mut f).await.unwrap();
        }
        for i in [to, from] {
            let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("NODE").arg(&to_id).query_async(&mut self.conn(i).await).await.unwrap();
        }
        to
    }

    fn alive(&self) -> usize {
        self.children.iter().position(Option::is_some).expect("a node alive")
    }

    /// The index of a replica of node `i`.
    pub async fn replica_of(&self, i: usize) -> usize {
        for j in 0..self.ports.len() {
            if j == i || self.children[j].is_none() {
                continue;
            }
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut self.conn(j).await).await.unwrap();
            let port = match role.get(2) {
                Some(redis::Value::Int(p)) => *p as u16,
                _ => continue,
            };
            if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"slave") && port == self.ports[i] {
                return j;
            }
        }
        panic!("node {i} has no replica");
    }

    /// SIGSTOP node `i`: it holds its connections and answers nothing.
    pub fn pause(&self, i: usize) {
        if let Some(c) = &self.children[i] {
            let _ = Command::new("kill").args(["-STOP", &c.id().to_string()]).status();
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) {
        if let Some(c) = &self.children[i] {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
