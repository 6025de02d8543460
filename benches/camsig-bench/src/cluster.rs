//! The system under test: its own `redis-server` and camsig nodes on loopback,
//! as child processes, so a run never touches anything else on the machine.

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::Path;
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
}

impl Cluster {
    pub async fn start(camsig: &Path, nodes: usize) -> Result<Cluster> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be installed")?;
        let redis = Proc { child, port };
        wait_until("redis", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await?;
        let mut procs = Vec::new();
        for i in 0..nodes {
            let port = free_port();
            let child = Command::new(camsig)
                .env("CAMSIG__SERVER__BIND", format!("127.0.0.1:{port}"))
                .env("CAMSIG__REDIS__URL", format!("redis://127.0.0.1:{}/", redis.port))
                .env("CAMSIG__AUTH__JWT_SECRET", SECRET)
                .env("CAMSIG__NODE__ID", format!("bench-{i}"))
                .env("CAMSIG__LIMITS__RATE_PER_S", "1000000")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", camsig.display()))?;
            procs.push(Proc { child, port });
        }
        let http = reqwest::Client::new();
        for n in &procs {
            let url = format!("{}/readyz", n.http());
            let start = Instant::now();
            loop {
                if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    bail!("node on port {} never became ready", n.port);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Cluster { redis, nodes: procs })
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

/// Commands Redis has processed so far (`INFO stats`), to count round trips per call.
pub async fn redis_commands(port: u16) -> u64 {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else { return 0 };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else { return 0 };
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut c).await.unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("total_commands_processed:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}
