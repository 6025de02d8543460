//! The system under test: its own `redis-server` and camsig nodes on loopback,
//! as child processes, so a run never touches anything else on the machine;
//! a lone node on its embedded broker; and the competitors camsig is measured
//! against: the Socket.IO relay on the same Redis, and the PeerJS server.

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "camsig-bench-secret-camsig-bench-secret";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Proc {
    child: Child,
    pub port: u16,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub redis: Proc,
    pub nodes: Vec<Proc>,
    /// A replica of `redis`, in the `replicas` scenario.
    pub replica: Option<Proc>,
    /// On a Redis Cluster: its other masters (`redis` is the first).
    pub masters: Vec<Proc>,
}

impl Cluster {
    pub async fn start(camsig: &Path, nodes: usize) -> Result<Cluster> {
        Self::start_with(camsig, nodes, &[]).await
    }

    /// With extra camsig settings (`CAMSIG__...` variables) on every node.
    pub async fn start_with(camsig: &Path, nodes: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        Self::start_full(camsig, nodes, env, false).await
    }

    /// Redis with one replica (synced before the nodes start), and the nodes on the master.
    pub async fn start_replicated(camsig: &Path, nodes: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        Self::start_full(camsig, nodes, env, true).await
    }

    async fn start_full(camsig: &Path, nodes: usize, env: &[(&str, &str)], replicated: bool) -> Result<Cluster> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be installed")?;
        let redis = Proc { child, port };
        wait_until("redis", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await?;
        let mut replica = None;
        if replicated {
            let rport = free_port();
            // A replica writes the master's snapshot to its directory: its own, not the cwd.
            let dir = std::env::temp_dir().join(format!("camsig-bench-replica-{rport}"));
            std::fs::create_dir_all(&dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &rport.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &port.to_string(), "--dir", &dir.display().to_string()])
                .stdout(Stdio::null())
                .spawn()
                .context("redis-server must be installed")?;
            replica = Some(Proc { child, port: rport });
            let start = Instant::now();
            loop {
                let info = async {
                    let mut c = redis::Client::open(format!("redis://127.0.0.1:{rport}/")).ok()?.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("INFO").arg("replication").query_async::<String>(&mut c).await.ok()
                };
                if info.await.is_some_and(|i| i.lines().any(|l| l.trim() == "master_link_status:up")) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("the replica did not sync with its master");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut procs = Vec::new();
        for i in 0..nodes {
            procs.push(spawn_camsig(camsig, &format!("bench-{i}"), Some(redis.port), env)?);
        }
        for n in &mut procs {
            wait_ready(n, "/readyz", "camsig node").await?;
        }
        Ok(Cluster { redis, nodes: procs, replica, masters: vec![] })
    }

    /// `nodes` camsig nodes on a Redis Cluster of `masters` masters, no replicas
    /// (`redis.cluster_urls`), the state spread over 16 shards.
    pub async fn start_on_redis_cluster(camsig: &Path, nodes: usize, masters: usize) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("camsig-bench-cluster-{}", free_port()));
        std::fs::create_dir_all(&dir)?;
        let mut procs = Vec::new();
        for _ in 0..masters {
            let (port, bus) = (free_port(), free_port());
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf"), "--dir", &dir.display().to_string()])
                .stdout(Stdio::null())
                .spawn()
                .context("redis-server must be installed")?;
            procs.push(Proc { child, port });
            wait_until("redis", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await?;
        }
        let addrs: Vec<String> = procs.iter().map(|p| format!("127.0.0.1:{}", p.port)).collect();
        let out = Command::new("redis-cli").args(["--cluster", "create"]).args(&addrs).args(["--cluster-replicas", "0", "--cluster-yes"]).output()?;
        if !out.status.success() {
            bail!("redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        }
        for p in &procs {
            let start = Instant::now();
            loop {
                let info = async {
                    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", p.port)).ok()?.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut c).await.ok()
                };
                if info.await.is_some_and(|i| i.lines().any(|l| l.trim() == "cluster_state:ok")) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    bail!("the cluster did not come up");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let urls = procs.iter().map(|p| format!("redis://127.0.0.1:{}/", p.port)).collect::<Vec<_>>().join(",");
        let mut nodes_ = Vec::new();
        for i in 0..nodes {
            nodes_.push(spawn_camsig(camsig, &format!("bench-{i}"), None, &[("CAMSIG__REDIS__CLUSTER_URLS", &urls), ("CAMSIG__REDIS__SHARDS", "16")])?);
        }
        for n in &mut nodes_ {
            wait_ready(n, "/readyz", "camsig node").await?;
        }
        let mut procs = procs.into_iter();
        let redis = procs.next().context("a master")?;
        Ok(Cluster { redis, nodes: nodes_, replica: None, masters: procs.collect() })
    }

    /// Every Redis process: the server, or each master of a cluster.
    pub fn redis_procs(&self) -> Vec<&Proc> {
        std::iter::once(&self.redis).chain(&self.masters).collect()
    }

    /// One node with no Redis: the embedded broker, as `cargo run` gives.
    pub async fn solo(camsig: &Path) -> Result<Proc> {
        Self::solo_with(camsig, &[]).await
    }

    /// The same, with extra camsig settings (`CAMSIG__...` variables).
    pub async fn solo_with(camsig: &Path, env: &[(&str, &str)]) -> Result<Proc> {
        let mut node = spawn_camsig(camsig, "bench-solo", None, env)?;
        wait_ready(&mut node, "/readyz", "camsig node").await?;
        Ok(node)
    }
}

/// Open descriptors of process `pid`, from /proc (0 once it is gone).
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

fn spawn_camsig(camsig: &Path, id: &str, redis: Option<u16>, env: &[(&str, &str)]) -> Result<Proc> {
    let port = free_port();
    let mut cmd = Command::new(camsig);
    cmd.env("CAMSIG__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("CAMSIG__AUTH__JWT_SECRET", SECRET)
        .env("CAMSIG__NODE__ID", id)
        .env("CAMSIG__LIMITS__RATE_PER_S", "1000000")
        .env("CAMSIG__LIMITS__PRESENCE_PER_MIN", "1000000")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null());
    if let Some(r) = redis {
        cmd.env("CAMSIG__REDIS__URL", format!("redis://127.0.0.1:{r}/"));
    }
    let child = cmd.spawn().with_context(|| format!("cannot start {}", camsig.display()))?;
    Ok(Proc { child, port })
}

/// Waits until `GET path` on `p` answers 2xx; fails if the process exits or 20 s pass.
async fn wait_ready(p: &mut Proc, path: &str, what: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", p.http());
    let start = Instant::now();
    loop {
        if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{what} on port {} exited: {status}", p.port);
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("{what} on port {} never became ready", p.port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A token for `user`, signed with the cluster's secret.
pub fn token(user: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let exp = chrono::Utc::now().timestamp() as u64 + 6 * 3600;
    jsonwebtoken::encode(&Default::default(), &Claims { sub: user, exp }, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("tokens encode")
}

/// Raises this process's open-file limit to its hard limit; children inherit it.
pub fn raise_nofile() -> u64 {
    let out = Command::new("sh").args(["-c", "ulimit -Hn"]).output().ok();
    let hard: u64 = out.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(1024);
    // SAFETY: setrlimit with a valid struct; failure only leaves the limit as it was.
    unsafe {
        let lim = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    hard
}

/// Commands Redis has processed so far (`INFO stats`), to count commands per call.
pub async fn redis_commands(port: u16) -> u64 {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else { return 0 };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else { return 0 };
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut c).await.unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("total_commands_processed:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Sums a Prometheus counter over every node's `GET /metrics` (all label sets);
/// None when no node exposes it, or a node cannot be read.
pub async fn metric_total(nodes: &[Proc], name: &str) -> Option<f64> {
    let http = reqwest::Client::new();
    let mut total = None;
    for n in nodes {
        let res = http.get(format!("{}/metrics", n.http())).timeout(Duration::from_secs(5)).send().await.ok()?;
        let text = res.text().await.ok()?;
        if let Some(v) = counter(&text, name) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The sum of every sample of `name` in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !rest.starts_with([' ', '{']) {
            continue; // another metric with this name as a prefix
        }
        let value = rest.rsplit_once('}').map_or(rest, |(_, v)| v).split_whitespace().next();
        if let Some(v) = value.and_then(|v| v.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The reference competitor: `benches/socketio-relay`, a Socket.IO server with
/// the Redis adapter (Node.js), one process per node, on the cluster's Redis.
pub struct Relay {
    pub nodes: Vec<Proc>,
}

impl Relay {
    /// The relay's directory in this repository.
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../socketio-relay")
    }

    /// Why the relay cannot run on this machine, or None.
    pub fn missing_tools(dir: &Path) -> Option<String> {
        node_app_missing(dir, "server.js", RELAY_PACKAGES)
    }

    /// Installs the relay's packages if they are missing, then starts `nodes`
    /// relay processes on `redis_port`.
    pub async fn start(dir: &Path, redis_port: u16, nodes: usize) -> Result<Relay> {
        npm_ci(dir, RELAY_PACKAGES).await?;
        let mut procs = Vec::new();
        for _ in 0..nodes {
            let port = free_port();
            let child = Command::new("node")
                .arg("server.js")
                .current_dir(dir)
                .env("PORT", port.to_string())
                .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}/"))
                .env("NODE_ENV", "production")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start node")?;
            procs.push(Proc { child, port });
        }
        for n in &mut procs {
            wait_ready(n, "/healthz", "socketio relay").await?;
        }
        Ok(Relay { nodes: procs })
    }
}

const RELAY_PACKAGES: &[&str] = &["socket.io", "@socket.io/redis-adapter", "redis"];
const PEERJS_PACKAGES: &[&str] = &["peer"];

/// The one-node competitor: the PeerJS server (`benches/peerjs-server`, npm
/// package `peer`), started by its own `peerjs` command with its defaults,
/// bar the connection cap (5 000) which the idle scenario goes past.
pub struct PeerJs;

impl PeerJs {
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../peerjs-server")
    }

    pub fn missing_tools(dir: &Path) -> Option<String> {
        node_app_missing(dir, "package.json", PEERJS_PACKAGES)
    }

    pub async fn start(dir: &Path) -> Result<Proc> {
        npm_ci(dir, PEERJS_PACKAGES).await?;
        let port = free_port();
        let child = Command::new("node")
            .arg("node_modules/peer/dist/bin/peerjs.js")
            .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--key", crate::peerjs::KEY, "--path", "/", "--concurrent_limit", "1000000"])
            .current_dir(dir)
            .env("NODE_ENV", "production")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start node")?;
        let mut p = Proc { child, port };
        wait_ready(&mut p, "/", "peerjs server").await?;
        Ok(p)
    }
}

/// Why the Node.js app in `dir` cannot run here (no `entry` file, no `node`,
/// or its packages missing and no `npm` to install them), or None.
fn node_app_missing(dir: &Path, entry: &str, packages: &[&str]) -> Option<String> {
    let works = |cmd: &str| Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !dir.join(entry).is_file() {
        return Some(format!("no {entry} in {}", dir.display()));
    }
    if !works("node") {
        return Some("`node` is not installed".into());
    }
    if !npm_installed(dir, packages) && !works("npm") {
        return Some(format!("`npm` is not installed and {} has no node_modules", dir.display()));
    }
    None
}

fn npm_installed(dir: &Path, packages: &[&str]) -> bool {
    packages.iter().all(|p| dir.join("node_modules").join(p).join("package.json").is_file())
}

/// `npm ci` from the committed lock file, when `packages` are not installed yet.
async fn npm_ci(dir: &Path, packages: &[&str]) -> Result<()> {
    if npm_installed(dir, packages) {
        return Ok(());
    }
    eprintln!("npm ci in {}", dir.display());
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .await
        .context("npm ci")?;
    if !status.success() || !npm_installed(dir, packages) {
        bail!("npm ci in {} failed ({status})", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn counter_sums_every_label_set_and_skips_longer_names() {
        let text = "# HELP camsig_redis_round_trips_total Round trips\n# TYPE camsig_redis_round_trips_total counter\n\
                    camsig_redis_round_trips_total{node=\"bench-0\"} 1200\n\
                    camsig_redis_round_trips_total{node=\"bench-0\",kind=\"script\"} 3e+02 1700000000\n\
                    camsig_redis_round_trips_total_created 5\n";
        assert_eq!(counter(text, "camsig_redis_round_trips_total"), Some(1500.0));
        assert_eq!(counter("camsig_redis_round_trips_total 7\n", "camsig_redis_round_trips_total"), Some(7.0));
        assert_eq!(counter("camsig_http_requests_total{route=\"/x\"} 3\n", "camsig_redis_round_trips_total"), None);
    }
}
