//! The faults: owns Redis, one proxy per node (nodes reach Redis only
//! through it) and the node processes; draws the fault schedule from the
//! seed, injects each fault, heals it and restarts nodes under their ids.
//!
//! Faults run one episode at a time, each healed before the next, so the
//! schedule a seed draws does not depend on timing; the workload runs
//! throughout, so client actions land in every phase of every fault.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::support::SECRET;
use crate::support::cluster::Redis;
use crate::support::process::Process;
use crate::{Rng, Shared, at, note};

pub const NODES: usize = 3;
/// `presence.ttl_s` and `presence.grace_s` of every node.
pub const TTL_S: u64 = 3;
pub const GRACE_S: u64 = 2;
/// `redis.probe_s`: a dead pub/sub link is replaced within 3 probes.
const PROBE_S: u64 = 1;

/// Every failpoint the source has: the names passed to `failpoint::here`
/// and `failpoint::hit` under src/. src/failpoint.rs lists them in words,
/// but the calls are the truth when the two drift (a renamed point would
/// otherwise be armed and never reached). Sorted, so a seed draws the same
/// schedule on the same source.
pub fn failpoints() -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for pat in ["failpoint::here(\"", "failpoint::hit(\""] {
                    for (i, _) in text.match_indices(pat) {
                        let rest = &text[i + pat.len()..];
                        if let Some(end) = rest.find('"') {
                            names.insert(rest[..end].to_owned());
                        }
                    }
                }
            }
        }
    }
    assert!(!names.is_empty(), "no failpoint::here/hit calls found under src/");
    names.into_iter().collect()
}
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How long an armed node may take to reach its failpoint before the
/// episode gives up and restarts it.
const FAILPOINT_WAIT: Duration = Duration::from_secs(12);

struct Slot {
    id: String,
    proc: Option<Process>,
    /// What this incarnation runs with: "normal", "failpoint X", "clock +2s".
    how: String,
    started: Instant,
    incarnation: u32,
}

pub struct Cluster {
    pub redis: Redis,
    proxies: Vec<Proxy>,
    slots: Vec<Slot>,
    shared: Rc<Shared>,
    dir: PathBuf,
    http: awc::Client,
    /// Nodes that exited when no fault asked them to (a panic, an abort at no failpoint).
    pub crashes: Vec<(Instant, String)>,
    /// Failpoints reached, and those the episode waited for in vain.
    pub failpoints: Vec<(String, bool)>,
    /// Faults injected, by kind, for the summary.
    pub injected: Vec<String>,
    /// Drains that did not end within their bound.
    pub slow_drains: Vec<(Instant, String)>,
    /// What `LoseAnswer` waits for: the commit script's SHA once known.
    lose_pattern: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Fault {
    Kill { node: usize, down: Duration },
    Term { node: usize, down: Duration },
    RedisStop(Duration),
    /// A node dies in the middle of a Redis stall, and comes back after it.
    RedisStopAndKill { hold: Duration, node: usize },
    RedisSleep(Duration),
    RedisRestart(Duration),
    RedisRestartEmpty(Duration),
    MaxMemory(Duration),
    PubsubCut(usize),
    PubsubHalfOpen(usize),
    CommandsHalfOpen(usize),
    CommandsCut,
    LoseAnswer(usize),
    Partition { node: usize, hold: Duration },
    RefuseAndCut { node: usize, hold: Duration },
    Failpoint { node: usize, name: String, other: usize },
    Skew { node: usize, ahead: bool, hold: Duration, term: bool },
}

impl Fault {
    fn kind(&self) -> String {
        match self {
            Fault::Failpoint { name, .. } => format!("failpoint {name}"),
            other => format!("{other:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned(),
        }
    }
}

/// Draws the next fault. Every draw is made whatever the fault, so the
/// sequence depends on the seed only.
fn pick(rng: &mut Rng, failpoints: &[String]) -> Fault {
    let node = rng.below(NODES as u64) as usize;
    let other = (node + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
    let short = rng.ms(300, 3000);
    let long = rng.ms(1000, 6000);
    let roll = rng.below(100);
    let name = failpoints[rng.below(failpoints.len() as u64) as usize].clone();
    let flag = rng.chance(50);
    let flag2 = rng.chance(50);
    match roll {
        0..=9 => Fault::Kill { node, down: if flag { Duration::ZERO } else { short } },
        10..=15 => Fault::Term { node, down: short / 3 },
        16..=19 => Fault::RedisStop(long),
        20..=21 => Fault::RedisStopAndKill { hold: long, node },
        22..=26 => Fault::RedisSleep(short.max(Duration::from_millis(800)).min(Duration::from_millis(3500))),
        27..=30 => Fault::RedisRestart(short / 2),
        31..=33 => Fault::RedisRestartEmpty(short / 2),
        34..=38 => Fault::MaxMemory(long.min(Duration::from_secs(4))),
        39..=43 => Fault::PubsubCut(node),
        44..=48 => Fault::PubsubHalfOpen(node),
        49..=53 => Fault::CommandsHalfOpen(node),
        54..=56 => Fault::CommandsCut,
        57..=61 => Fault::LoseAnswer(node),
        62..=67 => Fault::Partition { node, hold: long },
        68..=71 => Fault::RefuseAndCut { node, hold: short.max(Duration::from_secs(1)) },
        72..=91 => Fault::Failpoint { node, name, other },
        _ => Fault::Skew { node, ahead: flag, hold: long + Duration::from_secs(4), term: flag2 },
    }
}

/// Runs the fault phase for `length`, then heals everything.
pub async fn run(c: &mut Cluster, mut rng: Rng, length: Duration) {
    let failpoints = failpoints();
    note(format!("failpoints in src/: {failpoints:?}"));
    let end = Instant::now() + length;
    while Instant::now() < end {
        tokio::time::sleep(rng.ms(300, 2000)).await;
        c.reap().await;
        let f = pick(&mut rng, &failpoints);
        c.injected.push(f.kind());
        c.inject(f).await;
    }
    c.heal().await;
}

impl Cluster {
    pub async fn start(dir: &Path, shared: Rc<Shared>) -> Cluster {
        let redis = Redis::start().await;
        let mut proxies = Vec::new();
        for _ in 0..NODES {
            proxies.push(Proxy::start(&redis).await);
        }
        let slots = (0..NODES).map(|i| Slot { id: format!("n{}", i + 1), proc: None, how: String::new(), started: Instant::now(), incarnation: 0 }).collect();
        let http = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let mut c = Cluster {
            redis,
            proxies,
            slots,
            shared,
            dir: dir.to_owned(),
            http,
            crashes: Vec::new(),
            failpoints: Vec::new(),
            injected: Vec::new(),
            slow_drains: Vec::new(),
            lose_pattern: None,
        };
        note(format!("redis on :{}; proxies on {:?}", c.redis.port, c.proxies.iter().map(|p| p.port).collect::<Vec<_>>()));
        for i in 0..NODES {
            c.spawn(i, &[], "normal").await;
        }
        c.wait_ready(Duration::from_secs(30)).await;
        c
    }

    /// The port each node listens on now.
    pub fn ports(&self) -> std::cell::Ref<'_, [u16; NODES]> {
        self.shared.ports.borrow()
    }

    /// When Redis lost its data.
    pub fn data_lost(&self) -> Vec<Instant> {
        self.shared.data_lost.borrow().clone()
    }

    pub fn id(&self, i: usize) -> &str {
        &self.slots[i].id
    }

    fn env(&self, i: usize) -> Vec<(String, String)> {
        [
            ("CAMSIG__REDIS__URL", self.proxies[i].url()),
            ("CAMSIG__AUTH__JWT_SECRET", SECRET.to_owned()),
            ("CAMSIG__NODE__ID", self.slots[i].id.clone()),
            ("CAMSIG__PRESENCE__TTL_S", TTL_S.to_string()),
            ("CAMSIG__PRESENCE__GRACE_S", GRACE_S.to_string()),
            ("CAMSIG__REDIS__PROBE_S", PROBE_S.to_string()),
            ("CAMSIG__LIMITS__RATE_PER_S", "10000".into()),
            ("CAMSIG__LIMITS__PRESENCE_PER_MIN", "100000".into()),
            // The logs never trim during a run: a `resync` can then only
            // mean that Redis lost its data, which is what the checker asks.
            ("CAMSIG__EVENTS__KEEP_S", "3600".into()),
            ("CAMSIG__EVENTS__KEEP_MAX", "100000".into()),
            ("CAMSIG__SERVER__WORKERS", "1".into()),
            ("CAMSIG__SERVER__DRAIN_S", "5".into()),
            ("RUST_LOG", "warn,camsig::startup=info,camsig::sweeper=info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts node `i` (again, under its id) with `extra` environment.
    async fn spawn(&mut self, i: usize, extra: &[(&str, &str)], how: &str) {
        let mut env = self.env(i);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = Process::spawn(&refs).await;
        self.shared.ports.borrow_mut()[i] = p.port;
        let s = &mut self.slots[i];
        s.incarnation += 1;
        s.how = how.to_owned();
        s.started = Instant::now();
        note(format!("  {} up on :{} (incarnation {}, {how})", s.id, p.port, s.incarnation));
        s.proc = Some(p);
    }

    /// Appends an incarnation's whole log to `<dir>/<id>.log`.
    fn save_log(&self, i: usize, p: &Process, end: &str) {
        use std::io::Write;
        let s = &self.slots[i];
        let path = self.dir.join(format!("{}.log", s.id));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        let _ = writeln!(f, "=== {} incarnation {} ({}) on :{}, started {}, {end} at {}", s.id, s.incarnation, s.how, p.port, at(s.started), at(Instant::now()));
        let _ = f.write_all(p.log_text().as_bytes());
    }

    /// Writes the logs of the nodes still running (the test is ending).
    pub fn save_logs(&mut self) {
        for i in 0..NODES {
            if let Some(p) = self.slots[i].proc.take() {
                self.save_log(i, &p, "still running at the end");
                self.slots[i].proc = Some(p);
            }
        }
    }

    fn kill(&mut self, i: usize, why: &str) {
        if let Some(mut p) = self.slots[i].proc.take() {
            p.kill();
            self.save_log(i, &p, &format!("SIGKILL ({why})"));
        }
    }

    /// SIGTERM: the node drains and exits within `server.drain_s` (5 s).
    async fn term(&mut self, i: usize) {
        let Some(mut p) = self.slots[i].proc.take() else { return };
        if p.exited() {
            self.save_log(i, &p, "had exited before SIGTERM");
            return;
        }
        p.signal("TERM");
        let asked = Instant::now();
        while !p.exited() && asked.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = asked.elapsed();
        if p.exited() {
            note(format!("  {} drained and exited in {took:?}", self.slots[i].id));
            self.save_log(i, &p, "exited after SIGTERM");
        } else {
            note(format!("  {} still running {took:?} after SIGTERM: SIGKILL", self.slots[i].id));
            self.slow_drains.push((asked, format!("{} did not exit within 15 s of SIGTERM (server.drain_s = 5)", self.slots[i].id)));
            p.kill();
            self.save_log(i, &p, "SIGKILL after a drain that did not end");
        }
    }

    /// Whether node `i`'s process has ended by itself.
    fn exited(&mut self, i: usize) -> bool {
        self.slots[i].proc.as_mut().is_some_and(|p| p.exited())
    }

    /// Restarts nodes that exited when no fault asked them to.
    async fn reap(&mut self) {
        for i in 0..NODES {
            if self.exited(i) {
                let p = self.slots[i].proc.take().unwrap();
                let tail: Vec<String> = p.log_text().lines().rev().take(5).map(str::to_owned).collect();
                note(format!("  {} ({}) exited by itself: restarting", self.slots[i].id, self.slots[i].how));
                self.crashes.push((Instant::now(), format!("{} ({}) exited with no fault asking it to; last lines: {tail:?}", self.slots[i].id, self.slots[i].how)));
                self.save_log(i, &p, "exited by itself");
                drop(p);
                self.spawn(i, &[], "normal").await;
            }
        }
    }

    /// Waits until every node answers /readyz 200; a node that does not within `limit` is noted.
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        for i in 0..NODES {
            let url = format!("http://127.0.0.1:{}/readyz", self.shared.ports.borrow()[i]);
            loop {
                if matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break;
                }
                if start.elapsed() > limit {
                    note(format!("  {} not ready after {limit:?}", self.slots[i].id));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn wait_node_ready(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/readyz", self.shared.ports.borrow()[i]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        note(format!("  {} not ready 15 s after its start", self.slots[i].id));
    }

    /// A command on a connection of our own, straight to Redis (not through a proxy).
    async fn redis_cmd(&self, cmd: &redis::Cmd) -> Result<redis::Value, String> {
        let url = self.redis.url();
        let run = async {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut c = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
            cmd.query_async::<redis::Value>(&mut c).await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(10), run).await.unwrap_or_else(|_| Err("timed out".into()))
    }

    /// Redis answers PING again.
    async fn redis_back(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.redis_cmd(&redis::cmd("PING")).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        note("  redis does not answer PING 10 s after the fault");
    }

    async fn inject(&mut self, f: Fault) {
        match f {
            Fault::Kill { node, down } => {
                note(format!("FAULT SIGKILL {} (down {down:?}, then restart under the same id)", self.id(node)));
                self.kill(node, "fault");
                tokio::time::sleep(down).await;
                self.spawn(node, &[], "normal").await;
                self.wait_node_ready(node).await;
            }
            Fault::Term { node, down } => {
                note(format!("FAULT SIGTERM {} (drain; down {down:?}, then restart under the same id)", self.id(node)));
                self.term(node).await;
                tokio::time::sleep(down).await;
                self.spawn(node, &[], "normal").await;
                self.wait_node_ready(node).await;
            }
            Fault::RedisStop(hold) => {
                note(format!("FAULT redis SIGSTOP for {hold:?}"));
                self.redis.pause();
                tokio::time::sleep(hold).await;
                self.redis.resume();
                note("  redis SIGCONT");
            }
            Fault::RedisStopAndKill { hold, node } => {
                note(format!("FAULT redis SIGSTOP for {hold:?}, and SIGKILL {} half-way", self.id(node)));
                self.redis.pause();
                tokio::time::sleep(hold / 2).await;
                note(format!("  SIGKILL {} while redis is stopped", self.id(node)));
                self.kill(node, "fault, during a Redis stall");
                tokio::time::sleep(hold / 2).await;
                self.redis.resume();
                note("  redis SIGCONT");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.spawn(node, &[], "normal").await;
                self.wait_node_ready(node).await;
            }
            Fault::RedisSleep(hold) => self.redis_sleep(hold).await,
            Fault::RedisRestart(down) => {
                note(format!("FAULT redis restart keeping its data (SHUTDOWN SAVE; down {down:?})"));
                match self.redis_cmd(redis::cmd("SHUTDOWN").arg("SAVE")).await {
                    // SHUTDOWN closes the connection instead of answering.
                    Err(_) => {}
                    Ok(v) => note(format!("  SHUTDOWN SAVE answered {v:?}")),
                }
                self.port_free().await;
                tokio::time::sleep(down).await;
                self.redis.restart().await;
                // The next restart must not find this snapshot unless it saves its own.
                let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
                note(format!("  redis back with its data (keys: {:?})", self.redis_cmd(&redis::cmd("DBSIZE")).await));
            }
            Fault::RedisRestartEmpty(down) => {
                note(format!("FAULT redis SIGKILL and restart EMPTY (down {down:?})"));
                self.shared.data_lost.borrow_mut().push(Instant::now());
                self.redis.stop();
                let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
                tokio::time::sleep(down).await;
                self.redis.restart().await;
                note("  redis back, empty");
            }
            Fault::MaxMemory(hold) => {
                note(format!("FAULT redis maxmemory 1 byte, noeviction, for {hold:?}"));
                let a = self.redis_cmd(redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction")).await;
                let b = self.redis_cmd(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1")).await;
                if a.is_err() || b.is_err() {
                    note(format!("  CONFIG SET failed: {a:?} {b:?}"));
                }
                tokio::time::sleep(hold).await;
                let r = self.redis_cmd(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0")).await;
                note(format!("  maxmemory back to 0 ({r:?})"));
            }
            Fault::PubsubCut(node) => {
                let n = self.proxies[node].cut_pubsub();
                note(format!("FAULT cut {}'s pub/sub link ({n} closed)", self.id(node)));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Fault::PubsubHalfOpen(node) => {
                let n = self.proxies[node].blackhole_pubsub();
                note(format!("FAULT half-open {}'s pub/sub link ({n} silenced; replaced within 3 probes)", self.id(node)));
                tokio::time::sleep(Duration::from_secs(3 * PROBE_S + 1)).await;
            }
            Fault::CommandsHalfOpen(node) => {
                let n = self.proxies[node].blackhole_commands();
                note(format!("FAULT half-open {}'s command link ({n} silenced; replaced after 3 timeouts)", self.id(node)));
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            Fault::CommandsCut => {
                let r = self.redis_cmd(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal")).await;
                note(format!("FAULT cut every node's command link (CLIENT KILL TYPE normal: {r:?})"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Fault::LoseAnswer(node) => {
                let pattern = self.lose_pattern().await;
                self.proxies[node].lose_answers_after(&pattern);
                let what = if pattern == b"EVALSHA" { "EVALSHA (the commit script's SHA is unknown)" } else { "commit step (EVALSHA of commit.lua)" };
                note(format!("FAULT {}'s next {what} runs and its answer is lost (a call gets 504; the link is held and replaced)", self.id(node)));
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            Fault::Partition { node, hold } => {
                note(format!("FAULT partition {} from redis for {hold:?}", self.id(node)));
                self.proxies[node].partition(true);
                tokio::time::sleep(hold).await;
                self.proxies[node].partition(false);
                note(format!("  {} partition healed", self.id(node)));
            }
            Fault::RefuseAndCut { node, hold } => {
                self.proxies[node].refuse(true);
                let n = self.proxies[node].cut_pubsub();
                note(format!("FAULT cut {}'s pub/sub link ({n}) and refuse reconnects for {hold:?}", self.id(node)));
                tokio::time::sleep(hold).await;
                self.proxies[node].refuse(false);
                note(format!("  {} may reconnect", self.id(node)));
            }
            Fault::Failpoint { node, name, other } => self.failpoint(node, &name, other).await,
            Fault::Skew { node, ahead, hold, term } => self.skew(node, ahead, hold, term).await,
        }
    }

    /// The bytes that mark a commit on the wire: the SHA1 of the commit
    /// script as src/redis/mod.rs builds it (program.lua, log.lua and
    /// commit.lua, joined by newlines), if Redis has that script loaded;
    /// otherwise any EVALSHA (a read or a sweeper job may take the loss).
    async fn lose_pattern(&mut self) -> Vec<u8> {
        if let Some(p) = &self.lose_pattern {
            return p.clone();
        }
        use sha1::Digest;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/redis/lua");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let text = read("program.lua").zip(read("log.lua")).zip(read("commit.lua")).map(|((p, l), c)| format!("{p}\n{l}\n{c}"));
        let sha = text.map(|t| sha1::Sha1::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>());
        let loaded = match &sha {
            Some(sha) => matches!(self.redis_cmd(redis::cmd("SCRIPT").arg("EXISTS").arg(sha)).await, Ok(redis::Value::Array(v)) if v.first() == Some(&redis::Value::Int(1))),
            None => false,
        };
        let pattern = match (sha, loaded) {
            (Some(sha), true) => sha.into_bytes(),
            (sha, _) => {
                note(format!("  the commit script's SHA {sha:?} is not loaded in Redis: losing the answer of any EVALSHA instead"));
                b"EVALSHA".to_vec()
            }
        };
        // A Redis that restarts empty has no script until a node loads it
        // again (same SHA): keep what was found only when it was found.
        if pattern != b"EVALSHA" {
            self.lose_pattern = Some(pattern.clone());
        }
        pattern
    }

    /// `DEBUG SLEEP` when the server allows it (Redis 7 refuses DEBUG unless
    /// started with `enable-debug-command`, which support's Redis is not);
    /// otherwise a Lua loop that spins as long, which blocks Redis the same
    /// way: nothing is read or answered meanwhile.
    async fn redis_sleep(&mut self, hold: Duration) {
        let secs = format!("{:.3}", hold.as_secs_f64());
        let url = self.redis.url();
        let probe = self.redis_cmd(redis::cmd("DEBUG").arg("SLEEP").arg("0")).await;
        let debug = probe.is_ok();
        if debug {
            note(format!("FAULT redis DEBUG SLEEP {secs}"));
        } else {
            note(format!("FAULT redis blocked {secs}s by a spinning Lua script (DEBUG is disabled on this server: {})", probe.unwrap_err()));
        }
        let ms = hold.as_millis() as u64;
        let blocker = actix_web::rt::spawn(async move {
            let Ok(client) = redis::Client::open(url.as_str()) else { return };
            let Ok(mut c) = client.get_multiplexed_async_connection().await else { return };
            let cmd = if debug {
                let mut c = redis::cmd("DEBUG");
                c.arg("SLEEP").arg(format!("{:.3}", ms as f64 / 1000.0));
                c
            } else {
                let mut c = redis::cmd("EVAL");
                c.arg("local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - t0 > tonumber(ARGV[1]) * 1000 return 1")
                    .arg(0)
                    .arg(ms);
                c
            };
            let _ = tokio::time::timeout(Duration::from_millis(ms + 10_000), cmd.query_async::<redis::Value>(&mut c)).await;
        });
        let _ = blocker.await;
        note("  redis answers again");
    }

    /// Waits until Redis's port is closed (it exited after SHUTDOWN).
    async fn port_free(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.redis.port)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        note("  redis still listens 15 s after SHUTDOWN");
    }

    /// Restarts `node` armed with failpoint `name` and waits for it to abort
    /// there; then restarts it under the same id without the failpoint. For
    /// the sweep points another node is killed first, so that there is a
    /// dead lease to sweep (and kept down past its lease).
    async fn failpoint(&mut self, node: usize, name: &str, other: usize) {
        note(format!("FAULT failpoint {name}: SIGKILL {} and restart it armed (CAMSIG_FAILPOINT={name})", self.id(node)));
        self.kill(node, "to arm a failpoint");
        self.spawn(node, &[("CAMSIG_FAILPOINT", name)], &format!("failpoint {name}")).await;
        let mut other_down = false;
        let third = NODES * (NODES - 1) / 2 - node - other;
        let mut third_cut = false;
        if name.starts_with("sweep.") {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // The third node is cut off meanwhile, so that the armed node is
            // the only one able to sweep (and it finds two leases ended).
            note(format!("  SIGKILL {} so that its lease ends, and partition {} so that only {} can sweep", self.id(other), self.id(third), self.id(node)));
            self.kill(other, "a dead lease for the armed node to sweep");
            self.proxies[third].partition(true);
            other_down = true;
            third_cut = true;
        }
        if name.starts_with("expire.") || name.starts_with("leave.") {
            // Three together: their expiries come due in one batch, which the
            // armed node takes with a fair chance before any other expiry.
            note("  three users in meetings are asked to leave for good (expiries for the armed node to take)");
            self.shared.depart.set(3);
        }
        let armed = Instant::now();
        let mut hit = false;
        while armed.elapsed() < FAILPOINT_WAIT {
            if self.exited(node) {
                hit = true;
                break;
            }
            if third_cut && (armed.elapsed() > Duration::from_secs(5)) {
                self.proxies[third].partition(false);
                note(format!("  {} partition healed", self.id(third)));
                third_cut = false;
            }
            if other_down && armed.elapsed() > Duration::from_secs(6) {
                self.spawn(other, &[], "normal").await;
                other_down = false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if hit {
            let aborted = self.slots[node].proc.as_ref().is_some_and(|p| p.log_text().contains(&format!("failpoint {name}: aborting")));
            note(format!("  {} {} at failpoint {name} after {:?}", self.id(node), if aborted { "aborted" } else { "EXITED (not at the failpoint)" }, armed.elapsed()));
            if !aborted {
                let tail: Vec<String> = self.slots[node].proc.as_ref().map(|p| p.log_text().lines().rev().take(5).map(str::to_owned).collect()).unwrap_or_default();
                self.crashes.push((Instant::now(), format!("{} armed with {name} exited elsewhere; last lines: {tail:?}", self.id(node))));
            }
            let p = self.slots[node].proc.take().unwrap();
            self.save_log(node, &p, &format!("exited (failpoint {name})"));
        } else {
            note(format!("  failpoint {name} not reached on {} in {FAILPOINT_WAIT:?}", self.id(node)));
            self.kill(node, "failpoint not reached");
        }
        self.failpoints.push((name.to_owned(), hit));
        self.shared.depart.set(0);
        if third_cut {
            self.proxies[third].partition(false);
            note(format!("  {} partition healed", self.id(third)));
        }
        if other_down {
            self.spawn(other, &[], "normal").await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.spawn(node, &[], "normal").await;
        self.wait_node_ready(node).await;
    }

    /// Restarts `node` with its clock 2 s ahead or behind (libfaketime) for
    /// `hold`, then restarts it with the true clock.
    async fn skew(&mut self, node: usize, ahead: bool, hold: Duration, term: bool) {
        let offset = if ahead { "+2s" } else { "-2s" };
        if !Path::new(FAKETIME).exists() {
            note(format!("FAULT clock skew {offset} on {} SKIPPED: {FAKETIME} is absent (apt-get install faketime)", self.id(node)));
            return;
        }
        note(format!("FAULT clock skew: restart {} with its clock {offset} for {hold:?} ({})", self.id(node), if term { "SIGTERM" } else { "SIGKILL" }));
        if term {
            self.term(node).await;
        } else {
            self.kill(node, "to skew its clock");
        }
        self.spawn(node, &[("LD_PRELOAD", FAKETIME), ("FAKETIME", offset), ("FAKETIME_DONT_RESET", "1")], &format!("clock {offset}")).await;
        tokio::time::sleep(hold).await;
        note(format!("  restart {} with the true clock", self.id(node)));
        if self.exited(node) {
            let p = self.slots[node].proc.take().unwrap();
            self.crashes.push((Instant::now(), format!("{} exited while its clock was skewed {offset}", self.id(node))));
            self.save_log(node, &p, "exited by itself (skewed)");
        } else if term {
            self.term(node).await;
        } else {
            self.kill(node, "end of the clock skew");
        }
        self.spawn(node, &[], "normal").await;
        self.wait_node_ready(node).await;
    }

    /// Undoes anything a fault may have left, restarts any node not running
    /// normally, and waits until all are ready.
    pub async fn heal(&mut self) {
        for p in &self.proxies {
            p.partition(false);
            p.refuse(false);
        }
        self.redis.resume();
        let _ = self.redis_cmd(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0")).await;
        self.redis_back().await;
        self.reap().await;
        for i in 0..NODES {
            if self.slots[i].proc.is_none() || self.slots[i].how != "normal" {
                self.kill(i, "healing");
                self.spawn(i, &[], "normal").await;
            }
        }
        self.wait_ready(Duration::from_secs(30)).await;
    }
}
