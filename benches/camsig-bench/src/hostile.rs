//! The `hostile` scenario: honest signaling pairs measured while every attack
//! shape of docs/security.md runs at once against the same node(s), on one
//! node (embedded broker) and then on two nodes sharing one Redis; the nodes'
//! RSS and open descriptors are sampled throughout, and PASS/FAIL checks say
//! whether the bounds held. This module owns the honest clients, the
//! attackers, the sampler and the checks; `report` prints the result.

use anyhow::{Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::cluster::{self, Cluster, Proc, token};
use crate::scenarios::{Percentiles, histogram, http_client, micros, post};
use crate::ws::{self, Ws};

/// The bench lifts camsig's per-user limits for its load scenarios
/// (`cluster::spawn_camsig`); here the nodes keep camsig's own defaults, the
/// limits a deployment has and the attacks must meet.
const LIMITS: [(&str, &str); 2] = [("CAMSIG__LIMITS__RATE_PER_S", "20"), ("CAMSIG__LIMITS__PRESENCE_PER_MIN", "30")];

/// `limits.max_body_bytes`'s default: the big-frame attack sends one byte more.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Pass criteria. docs/security.md states per-session bounds (a 4 MiB outbox,
/// "RSS within 48 MiB" for one ping-flooded session) but no bound for a whole
/// node, so the node bound is set here.
const RSS_BOUND_KIB: u64 = 512 * 1024;
/// Open descriptors per node: far above what this attack holds while every
/// bound works (sessions and held connections: about 600), far below the
/// open-file limit (20 000 on the reference VM) that a leak would reach.
const FD_BOUND: u64 = 4096;
/// The latency criterion: p99 under attack ≤ max(2 × quiet p99, quiet p99 + this).
const P99_SLACK_MS: f64 = 50.0;

/// How long one run of each topology lasts, and how hard each attack pushes.
pub struct Plan {
    pub pairs: usize,
    pub warmup: Duration,
    pub quiet: Duration,
    pub attack: Duration,
    /// How long an honest client waits for the event of a message it sent.
    pub wait: Duration,
    /// Only these attack shapes (`ATTACKS`), or all of them.
    pub attacks: Option<Vec<String>>,
    /// Only these topologies ("solo", "two-nodes"), or both.
    pub topologies: Option<Vec<String>>,
    scale: Scale,
}

/// The attack shapes `--attacks` chooses from.
pub const ATTACKS: [&str; 8] = ["slow", "ping", "poll", "chunked", "header", "flap", "idem", "big"];

/// Attackers per node. Loops are paced (each attacker waits a moment between
/// connections or calls): on a 2-core box shared by the nodes and the load
/// tool, an unpaced loop would only measure the tool's own CPU. Every loop
/// still runs far past the per-user limits it meets.
#[derive(Clone, Copy)]
struct Scale {
    /// Users whose sockets never read, each with `slow_sessions` of them.
    slow_users: usize,
    slow_sessions: usize,
    /// 60 KB offers per second from the feeder to the slow readers and the poll user
    /// (one user: over `limits.rate_per_s` on purpose).
    feed_per_s: f64,
    /// Sockets flooding 60 KB `ping` commands, and at what rate each.
    ping_flooders: usize,
    ping_per_s: f64,
    /// Concurrent long polls of one user with an old `since`, and loops with no token.
    poll_loops: usize,
    poll_noauth_loops: usize,
    /// Connections holding a chunked body after one chunk, with and without a token.
    chunk_auth: usize,
    chunk_noauth: usize,
    /// Connections holding half a request head, all from one address (more
    /// than `server.max_conns_per_ip` = 256 in the full run).
    header_holds: usize,
    /// Sockets watching the flapping user's presence.
    observers: usize,
    /// 60 KB offers with a fresh Idempotency-Key, per second.
    idem_per_s: f64,
    /// One round of big frames (text over the limit, binary, no-token handshake) this often.
    big_every: Duration,
}

impl Plan {
    /// `seconds` is the attack phase; the quiet baseline before it is
    /// min(60 s, seconds / 5), at least 2 s.
    pub fn new(smoke: bool, seconds: Option<u64>) -> Plan {
        let attack = Duration::from_secs(seconds.unwrap_or(if smoke { 4 } else { 300 }));
        let quiet = (attack / 5).min(Duration::from_secs(60)).max(Duration::from_secs(2));
        let scale = if smoke {
            Scale {
                slow_users: 2,
                slow_sessions: 2,
                feed_per_s: 10.0,
                ping_flooders: 1,
                ping_per_s: 20.0,
                poll_loops: 4,
                poll_noauth_loops: 1,
                chunk_auth: 4,
                chunk_noauth: 4,
                header_holds: 20,
                observers: 20,
                idem_per_s: 10.0,
                big_every: Duration::from_millis(500),
            }
        } else {
            Scale {
                slow_users: 4,
                slow_sessions: 4,
                feed_per_s: 25.0,
                ping_flooders: 2,
                ping_per_s: 50.0,
                poll_loops: 32,
                poll_noauth_loops: 4,
                chunk_auth: 32,
                chunk_noauth: 32,
                header_holds: 300,
                observers: 20,
                idem_per_s: 40.0,
                big_every: Duration::from_millis(250),
            }
        };
        Plan {
            pairs: if smoke { 8 } else { 64 },
            warmup: Duration::from_secs(if smoke { 1 } else { 3 }),
            quiet,
            attack,
            wait: Duration::from_secs(if smoke { 5 } else { 10 }),
            attacks: None,
            topologies: None,
            scale,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostileResult {
    /// "solo" (one node, embedded broker) or "two-nodes" (one Redis).
    pub topology: &'static str,
    pub pairs: usize,
    pub quiet_s: f64,
    pub attack_s: f64,
    /// The camsig settings the nodes ran with, beyond the bench's port, id and secret.
    pub settings: BTreeMap<String, String>,
    pub nodes: Vec<NodeUsage>,
    pub quiet: HonestPhase,
    pub attack: HonestPhase,
    /// Per attack shape, what the attackers got, by outcome (statuses, close codes, timings).
    pub attacks: BTreeMap<String, BTreeMap<String, u64>>,
    pub flap: FlapResult,
    /// CPU used, in cores of the machine's `cores`, quiet and under attack: on
    /// a shared machine, "other" says how much of the latency is not camsig's.
    pub cores: usize,
    pub cpu_quiet: CpuUse,
    pub cpu_attack: CpuUse,
    /// Honest p99 per 10 s window from the start of the quiet phase (window
    /// start s, messages, p99 ms), by send time; the attack starts at `quiet_s`.
    pub p99_by_10s: Vec<(f64, u64, f64)>,
    /// The honest clients' own lag, per 10 s window: how late a 10 ms timer
    /// fires on their runtime (p99, ms). Honest receipts are timed there, so
    /// a lag here is in the honest latencies too, and is not camsig's.
    pub tool_lag_p99_by_10s: Vec<(f64, u64, f64)>,
    /// CPU per 10 s window (start s, camsig nodes, redis, this tool, whole machine), in cores.
    pub cpu_by_10s: Vec<(f64, f64, f64, f64, f64)>,
    pub checks: Vec<Check>,
}

/// CPU used over a phase, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    pub machine: f64,
    pub camsig: f64,
    pub redis: f64,
    /// This load tool: the honest clients and the attackers.
    pub bench: f64,
    /// Everything else on the machine.
    pub other: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeUsage {
    /// "camsig-0", "camsig-1", or "redis" (reported, not checked).
    pub name: String,
    pub rss_start_kib: u64,
    pub rss_quiet_peak_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
    /// The attack's RSS peak before its last minute, and in it (reported, not checked).
    pub rss_peak_early_kib: u64,
    pub rss_peak_last_minute_kib: u64,
    pub fds_start: u64,
    pub fds_quiet_peak: u64,
    pub fds_peak: u64,
    /// The attack's descriptor peak before its last minute, and in it (the
    /// halves when the attack lasts 2 minutes or less).
    pub fds_peak_early: u64,
    pub fds_peak_last_minute: u64,
    pub fds_end: u64,
    /// Every 500 ms from the start of the quiet phase: (seconds, RSS KiB, descriptors).
    pub samples: Vec<(f64, u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HonestPhase {
    pub seconds: f64,
    pub cycles: u64,
    /// Signaling messages sent (show, offer, answer, ice, hangup), whatever the answer.
    pub sent: u64,
    /// Their events received by the other side.
    pub received: u64,
    /// sent − received: refused ones and ones whose event never came.
    pub lost: u64,
    /// Sent and refused (status and code, or "socket closed"...).
    pub refused: BTreeMap<String, u64>,
    /// Accepted, but no event within the wait.
    pub no_event: u64,
    /// ICE candidates of one batch that arrived out of order.
    pub out_of_order: u64,
    /// Honest sockets the node closed (they reconnect with `since`), by close code.
    pub socket_closes: BTreeMap<String, u64>,
    /// From the send to the event on the other side's socket, as this tool
    /// sees it (its own lag included: see `tool_lag_p99_by_10s`).
    pub latency: Percentiles,
    pub by_kind: BTreeMap<String, KindStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    pub sent: u64,
    pub received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlapResult {
    /// Observers per node, each counting `update_user` of its node's flapping user.
    pub observers: usize,
    /// Per observer, the most and fewest `update_user` of the flapping user seen during the attack.
    pub seen_max: u64,
    pub seen_min: u64,
    /// What `presence.flap_window_ms` (1 s) allows over the attack: one change a second, plus one.
    pub allowed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// Both topologies, one after the other, each on fresh processes.
pub async fn run(camsig: &Path, plan: &Plan) -> Result<Vec<HostileResult>> {
    let mut out = Vec::new();
    let runs = |t: &str| plan.topologies.as_ref().is_none_or(|v| v.iter().any(|x| x == t));
    if runs("solo") {
        let node = Cluster::solo_with(camsig, &LIMITS).await?;
        eprintln!("hostile  solo: node :{} (embedded broker)", node.port);
        out.push(topology("solo", &[&node], None, plan).await?);
    }
    if runs("two-nodes") {
        let cluster = Cluster::start_with(camsig, 2, &LIMITS).await?;
        eprintln!("hostile  two-nodes: redis :{}, nodes :{} and :{}", cluster.redis.port, cluster.nodes[0].port, cluster.nodes[1].port);
        let nodes: Vec<&Proc> = cluster.nodes.iter().collect();
        out.push(topology("two-nodes", &nodes, Some(&cluster.redis), plan).await?);
    }
    Ok(out)
}

/// One topology: honest pairs warm up, run quiet, then run beside the attacks.
async fn topology(name: &'static str, nodes: &[&Proc], redis: Option<&Proc>, plan: &Plan) -> Result<HostileResult> {
    // The honest clients run on their own runtime (their own threads): the
    // attackers' busy tasks in this process must not sit in the queue ahead of
    // an honest receipt, or the tool's own delay would pass for camsig's.
    let rt = OwnRuntime(Some(tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("honest").enable_all().build()?));
    let honest = Arc::new(Honest::new_on(&rt)?);
    // Owner on the first node, viewer on the last: across nodes when there are two.
    let (a, b) = ((nodes[0].port, nodes[0].http()), (nodes[nodes.len() - 1].port, nodes[nodes.len() - 1].http()));
    let (h, pairs_n, wait) = (honest.clone(), plan.pairs, plan.wait);
    let drivers = rt
        .spawn(async move {
            let mut pairs = Vec::new();
            for i in 0..pairs_n {
                let via = if i % 2 == 0 { Via::Rest } else { Via::Ws };
                let owner = Side::open(a.0, a.1.clone(), format!("h-owner-{i}"), via, h.clone()).await?;
                let viewer = Side::open(b.0, b.1.clone(), format!("h-viewer-{i}"), via, h.clone()).await?;
                post(&h.http, &a.1, "cameraOn", &owner.token, json!({})).await?;
                pairs.push((owner, viewer));
            }
            // Staggered starts: the pairs' cycles spread over the second.
            let mut drivers = Vec::new();
            for (i, (owner, viewer)) in pairs.into_iter().enumerate() {
                let h = h.clone();
                let delay = Duration::from_secs(1) * i as u32 / pairs_n as u32;
                drivers.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    drive(i, owner, viewer, h, wait).await
                }));
            }
            anyhow::Ok(drivers)
        })
        .await??;
    tokio::time::sleep(plan.warmup).await;

    let t0 = Instant::now();
    let mut procs: Vec<(String, u32)> = nodes.iter().enumerate().map(|(i, n)| (format!("camsig-{i}"), n.pid())).collect();
    if let Some(r) = redis {
        procs.push(("redis".into(), r.pid()));
    }
    procs.push((TOOL.into(), std::process::id()));
    let sampler = Sampler::start(procs, t0);
    let _ = honest.t0.set(t0);
    let lags = Arc::new(Mutex::new(BTreeMap::new()));
    let lag = rt.spawn(lag_probe(t0, lags.clone()));
    honest.phase.store(QUIET, Ordering::Relaxed);
    eprintln!("hostile  {name}: {} honest pairs, quiet for {:?}", plan.pairs, plan.quiet);
    tokio::time::sleep(plan.quiet).await;

    let attack_from = t0.elapsed().as_secs_f64();
    honest.phase.store(ATTACK, Ordering::Relaxed);
    let tally = Arc::new(Tally::default());
    let mut attackers = Vec::new();
    let mut flap_counts = Vec::new();
    let ends = Arc::new(NodeEnds::default());
    {
        let (ends, ports) = (ends.clone(), nodes.iter().map(|n| n.port).collect::<Vec<_>>());
        attackers.push(tokio::spawn(async move {
            loop {
                let (s, p) = (ends.clone(), ports.clone());
                let _ = tokio::task::spawn_blocking(move || s.refresh(&p)).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }
    for (n, node) in nodes.iter().enumerate() {
        let (tasks, seen) = attack(node, n, &plan.scale, plan.attacks.as_deref(), tally.clone(), ends.clone()).await.with_context(|| format!("attackers on node {n}"))?;
        attackers.extend(tasks);
        flap_counts.extend(seen);
    }
    eprintln!("hostile  {name}: attacking for {:?}", plan.attack);
    let attack_started = Instant::now();
    tokio::time::sleep(plan.attack.saturating_sub(attack_started.elapsed().min(plan.attack))).await;

    // Honest pairs finish their cycle (still under attack), then the attacks stop.
    honest.stop.store(true, Ordering::Relaxed);
    let mut sides = Vec::new();
    for d in drivers {
        if let Ok(Ok(pair)) = tokio::time::timeout(plan.wait * 8 + Duration::from_secs(30), d).await {
            sides.push(pair);
        }
    }
    let attack_to = t0.elapsed().as_secs_f64();
    honest.phase.store(NOT_COUNTED, Ordering::Relaxed);
    for a in &attackers {
        a.abort();
    }
    let flap_seen: Vec<u64> = flap_counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    honest.readers_stop.store(true, Ordering::Relaxed);
    for (o, v) in sides {
        o.reader.abort();
        v.reader.abort();
    }
    // The nodes see the attackers go; one more second of samples shows it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (series, machine) = sampler.stop().await;
    lag.abort();
    drop(rt);
    let tool_lag_p99_by_10s = windows(&lags);
    let end = series.iter().flat_map(|(_, s)| s.last()).map(|x| x.0).fold(0.0, f64::max);
    let cpu_by_10s = (0..(end / 10.0).ceil() as u64)
        .map(|k| {
            let (from, to) = (k as f64 * 10.0, k as f64 * 10.0 + 10.0);
            let of = |pick: &dyn Fn(&str) -> bool| series.iter().filter(|(n, _)| pick(n)).map(|(_, s)| cpu_cores(s, from, to)).fold(0.0, |a, b| a + b);
            (from, of(&|n| n.starts_with("camsig-")), of(&|n| n == "redis"), of(&|n| n == TOOL), cpu_cores(&machine, from, to))
        })
        .collect();

    let quiet_from = 0.0;
    let cpu = |from: f64, to: f64| {
        let cores = |name: &str| series.iter().filter(|(n, _)| n.starts_with(name)).map(|(_, s)| cpu_cores(s, from, to)).fold(0.0, |a, b| a + b);
        let machine = cpu_cores(&machine, from, to);
        let (camsig, redis, bench) = (cores("camsig-"), cores("redis"), cores(TOOL));
        CpuUse { machine, camsig, redis, bench, other: (machine - camsig - redis - bench).max(0.0) }
    };
    let (cpu_quiet, cpu_attack) = (cpu(quiet_from, attack_from), cpu(attack_from, attack_to));
    let usage: Vec<NodeUsage> = series
        .into_iter()
        .filter(|(name, _)| name != TOOL)
        .map(|(name, s)| NodeUsage::of(name, s.iter().map(|x| (x.0, x.1, x.2)).collect(), quiet_from, attack_from, attack_to))
        .collect();
    let [quiet, attack] = honest.phases(attack_from - quiet_from, attack_to - attack_from);
    let flap = FlapResult {
        observers: plan.scale.observers,
        seen_max: flap_seen.iter().copied().max().unwrap_or(0),
        seen_min: flap_seen.iter().copied().min().unwrap_or(0),
        allowed: (attack_to - attack_from).ceil() as u64 + 1,
    };
    let mut settings: BTreeMap<String, String> = LIMITS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    settings.insert("everything else".into(), "camsig's defaults".into());
    if redis.is_some() {
        settings.insert("CAMSIG__REDIS__URL".into(), "the bench's redis-server".into());
    }
    let mut checks = checks(&usage, &quiet, &attack);
    let worst_lag = tool_lag_p99_by_10s.iter().map(|w| w.2).fold(0.0, f64::max);
    checks[2].detail += &format!("; this tool's own timer lag p99 ≤ {worst_lag:.1} ms in every 10 s");
    if cpu_attack.other > 0.25 {
        // Another job on the machine took CPU from the nodes: say so beside the latency verdict.
        checks[2].detail += &format!(
            "; other processes used {:.2} of {} cores under attack, {:.2} quiet: the machine was shared, so this latency is not camsig's alone",
            cpu_attack.other,
            num_cores(),
            cpu_quiet.other
        );
    }
    Ok(HostileResult {
        topology: name,
        pairs: plan.pairs,
        quiet_s: attack_from - quiet_from,
        attack_s: attack_to - attack_from,
        settings,
        nodes: usage,
        quiet,
        attack,
        attacks: tally.take(),
        flap,
        cores: num_cores(),
        cpu_quiet,
        cpu_attack,
        p99_by_10s: windows(&honest.by_10s),
        tool_lag_p99_by_10s,
        cpu_by_10s,
        checks,
    })
}

/// The four pass criteria, one line each.
fn checks(nodes: &[NodeUsage], quiet: &HonestPhase, attack: &HonestPhase) -> Vec<Check> {
    let camsig: Vec<&NodeUsage> = nodes.iter().filter(|n| n.name.starts_with("camsig")).collect();
    let mib = |k: u64| k as f64 / 1024.0;
    let rss = Check {
        name: format!("peak RSS below {} MiB per node (no node-wide bound in docs/security.md; it bounds each session's outbox at 4 MiB)", RSS_BOUND_KIB / 1024),
        pass: camsig.iter().all(|n| n.rss_peak_kib < RSS_BOUND_KIB),
        detail: camsig.iter().map(|n| format!("{} {:.1} MiB", n.name, mib(n.rss_peak_kib))).collect::<Vec<_>>().join(", "),
    };
    // Not growing: the last minute's peak within 10 % (+32) of the peak before it.
    let grows = |n: &NodeUsage| n.fds_peak_last_minute > n.fds_peak_early + n.fds_peak_early / 10 + 32;
    let fds = Check {
        name: format!("descriptors bounded: peak below {FD_BOUND} per node, and the attack's last minute not above its earlier peak + 10 % + 32"),
        pass: camsig.iter().all(|n| n.fds_peak < FD_BOUND && !grows(n)),
        detail: camsig
            .iter()
            .map(|n| format!("{} peak {} (earlier {}, last minute {})", n.name, n.fds_peak, n.fds_peak_early, n.fds_peak_last_minute))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let q = quiet.latency.p99_ms;
    let allowed = f64::max(2.0 * q, q + P99_SLACK_MS);
    let latency = Check {
        name: format!("honest p99 under attack ≤ max(2 × quiet p99, quiet p99 + {P99_SLACK_MS} ms) (the + {P99_SLACK_MS} ms absorbs noise on latencies of a few ms)"),
        pass: attack.latency.count > 0 && quiet.latency.count > 0 && attack.latency.p99_ms <= allowed,
        detail: format!("quiet p99 {:.2} ms, attack p99 {:.2} ms, allowed {:.2} ms", q, attack.latency.p99_ms, allowed),
    };
    let lost = Check {
        name: "no honest message lost (refused or no event), quiet and under attack".into(),
        pass: quiet.lost == 0 && attack.lost == 0 && attack.sent > 0,
        detail: format!(
            "quiet {} sent / {} received; attack {} sent / {} received (refused {:?}, no event {})",
            quiet.sent, quiet.received, attack.sent, attack.received, attack.refused, attack.no_event
        ),
    };
    vec![rss, fds, latency, lost]
}

// ---------------------------------------------------------------------------
// Honest clients

/// A runtime owned by async code: shut down in the background when dropped
/// (a plain drop inside a runtime panics), on an early error too.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

const QUIET: usize = 0;
const ATTACK: usize = 1;
/// Warm-up and wind-down: sent, but not counted.
const NOT_COUNTED: usize = 2;

/// State shared by every honest client: the phase, the stop flags, the counts.
struct Honest {
    phase: AtomicUsize,
    stop: AtomicBool,
    readers_stop: AtomicBool,
    stats: Mutex<[PhaseStats; 2]>,
    http: reqwest::Client,
    /// The start of the quiet phase, and honest latencies per 10 s from it.
    t0: std::sync::OnceLock<Instant>,
    by_10s: Mutex<BTreeMap<u64, Histogram<u64>>>,
}

struct PhaseStats {
    cycles: u64,
    sent: u64,
    received: u64,
    refused: BTreeMap<String, u64>,
    no_event: u64,
    out_of_order: u64,
    socket_closes: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    kinds: BTreeMap<&'static str, (u64, u64, Histogram<u64>)>,
}

impl PhaseStats {
    fn new() -> Self {
        PhaseStats {
            cycles: 0,
            sent: 0,
            received: 0,
            refused: BTreeMap::new(),
            no_event: 0,
            out_of_order: 0,
            socket_closes: BTreeMap::new(),
            hist: histogram(),
            kinds: BTreeMap::new(),
        }
    }

    fn kind(&mut self, k: &'static str) -> &mut (u64, u64, Histogram<u64>) {
        self.kinds.entry(k).or_insert_with(|| (0, 0, histogram()))
    }
}

impl Honest {
    /// With its HTTP client made inside `rt`, where every honest call runs.
    fn new_on(rt: &tokio::runtime::Runtime) -> Result<Self> {
        let _inside = rt.enter();
        Ok(Honest {
            phase: AtomicUsize::new(NOT_COUNTED),
            stop: AtomicBool::new(false),
            readers_stop: AtomicBool::new(false),
            stats: Mutex::new([PhaseStats::new(), PhaseStats::new()]),
            http: http_client()?,
            t0: std::sync::OnceLock::new(),
            by_10s: Mutex::new(BTreeMap::new()),
        })
    }

    /// Runs `f` on the stats of `phase`, unless that phase is not counted.
    fn with(&self, phase: usize, f: impl FnOnce(&mut PhaseStats)) {
        if phase < NOT_COUNTED {
            f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner())[phase]);
        }
    }

    fn sent(&self, phase: usize, kind: &'static str) {
        self.with(phase, |s| {
            s.sent += 1;
            s.kind(kind).0 += 1;
        });
    }

    fn received(&self, phase: usize, kind: &'static str, sent: Instant, at: Instant) {
        let took = at.saturating_duration_since(sent);
        if let (Some(t0), true) = (self.t0.get(), phase < NOT_COUNTED) {
            let w = sent.saturating_duration_since(*t0).as_secs() / 10;
            let _ = self.by_10s.lock().unwrap_or_else(|p| p.into_inner()).entry(w).or_insert_with(histogram).record(micros(took));
        }
        self.with(phase, |s| {
            s.received += 1;
            let _ = s.hist.record(micros(took));
            let k = s.kind(kind);
            k.1 += 1;
            let _ = k.2.record(micros(took));
        });
    }

    fn refused(&self, phase: usize, kind: &'static str, why: &str) {
        self.with(phase, |s| *s.refused.entry(format!("{kind}: {why}")).or_default() += 1);
    }

    fn phases(&self, quiet_s: f64, attack_s: f64) -> [HonestPhase; 2] {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let one = |s: &PhaseStats, seconds: f64| HonestPhase {
            seconds,
            cycles: s.cycles,
            sent: s.sent,
            received: s.received,
            lost: s.sent.saturating_sub(s.received),
            refused: s.refused.clone(),
            no_event: s.no_event,
            out_of_order: s.out_of_order,
            socket_closes: s.socket_closes.clone(),
            latency: Percentiles::of(&s.hist),
            by_kind: s
                .kinds
                .iter()
                .map(|(k, (sent, received, h))| {
                    let p = Percentiles::of(h);
                    (k.to_string(), KindStats { sent: *sent, received: *received, p50_ms: p.p50_ms, p99_ms: p.p99_ms })
                })
                .collect(),
        };
        [one(&stats[QUIET], quiet_s), one(&stats[ATTACK], attack_s)]
    }
}

/// How an honest side sends its calls: REST, or commands on its own socket.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Rest,
    Ws,
}

/// One user of an honest pair: the events its socket receives (with when),
/// and how it sends.
struct Side {
    user: String,
    token: String,
    base: String,
    via: Via,
    events: mpsc::UnboundedReceiver<(Value, Instant)>,
    cmd: Arc<Cmd>,
    reader: JoinHandle<()>,
}

/// The write half of a side's socket, and the command acks it waits for.
#[derive(Default)]
struct Cmd {
    sink: tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>,
    acks: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next: AtomicU64,
}

impl Side {
    async fn open(port: u16, base: String, user: String, via: Via, honest: Arc<Honest>) -> Result<Side> {
        let token = token(&user);
        // Presence off: the pairs measure signaling; the observers watch presence.
        let (ws, hello) = ws::connect(port, &token, "?presence=false").await.with_context(|| format!("honest socket of {user}"))?;
        let last = hello["data"]["last_id"].as_str().unwrap_or_default().to_owned();
        let (tx, events) = mpsc::unbounded_channel();
        let cmd = Arc::new(Cmd::default());
        // The write half is in place before the first command can be sent.
        let (sink, stream) = ws.split();
        *cmd.sink.lock().await = Some(sink);
        let reader = tokio::spawn(read_side(port, token.clone(), stream, last, tx, cmd.clone(), honest));
        Ok(Side { user, token, base, via, events, cmd, reader })
    }

    /// Sends `op` with `body` as this side sends calls: the result, or why it was refused.
    async fn call(&self, http: &reqwest::Client, op: &str, body: Value) -> Result<Value, String> {
        match self.via {
            Via::Rest => {
                let res = http
                    .post(format!("{}/webrtc/{op}", self.base))
                    .bearer_auth(&self.token)
                    .json(&body)
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await
                    .map_err(|e| if e.is_timeout() { "no answer in 15 s".to_owned() } else { "connection error".to_owned() })?;
                let status = res.status();
                let v: Value = res.json().await.unwrap_or_default();
                if status.is_success() { Ok(v) } else { Err(format!("{} {}", status.as_u16(), v["error"]["code"].as_str().unwrap_or(""))) }
            }
            Via::Ws => {
                let ack = self.cmd.next.fetch_add(1, Ordering::Relaxed).to_string();
                let mut frame = body;
                frame["cmd"] = json!(op);
                frame["ack"] = json!(ack);
                let (tx, rx) = oneshot::channel();
                self.cmd.acks.lock().unwrap_or_else(|p| p.into_inner()).insert(ack.clone(), tx);
                let sent = match self.cmd.sink.lock().await.as_mut() {
                    Some(sink) => sink.send(Message::text(frame.to_string())).await.is_ok(),
                    None => false,
                };
                if !sent {
                    self.cmd.acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&ack);
                    return Err("socket closed".into());
                }
                match tokio::time::timeout(Duration::from_secs(15), rx).await {
                    Ok(Ok(reply)) if reply["cmd"] == "ack" => Ok(reply["result"].clone()),
                    Ok(Ok(reply)) => Err(format!("ws error {}", reply["error"]["code"].as_str().unwrap_or(""))),
                    Ok(Err(_)) => Err("socket closed".into()),
                    Err(_) => {
                        self.cmd.acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&ack);
                        Err("no ack in 15 s".into())
                    }
                }
            }
        }
    }

    /// Waits until `n` events that `key` picks (it names them) have come, or
    /// `wait` passes: each one's key and arrival, in arrival order. Other
    /// events (late ones of earlier cycles) are passed over.
    async fn expect(&mut self, n: usize, wait: Duration, key: impl Fn(&Value) -> Option<String>) -> Vec<(String, Instant)> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((ev, at))) => {
                    if let Some(k) = key(&ev) {
                        got.push((k, at));
                    }
                }
                _ => break,
            }
        }
        got
    }
}

/// Reads a side's socket: events to the driver, acks to their callers. When
/// the node closes it, reconnects with `since` as an app does (and counts it).
async fn read_side(
    port: u16,
    token: String,
    mut stream: SplitStream<Ws>,
    mut last: String,
    tx: mpsc::UnboundedSender<(Value, Instant)>,
    cmd: Arc<Cmd>,
    honest: Arc<Honest>,
) {
    loop {
        let mut why = "reset".to_owned();
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let at = Instant::now();
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    if v.get("cmd").is_some() {
                        let waiting = v["ack"].as_str().and_then(|a| cmd.acks.lock().unwrap_or_else(|p| p.into_inner()).remove(a));
                        if let Some(w) = waiting {
                            let _ = w.send(v);
                        }
                        continue;
                    }
                    if let Some(id) = v["id"].as_str() {
                        last = id.to_owned();
                    }
                    let _ = tx.send((v, at));
                }
                Ok(Message::Close(f)) => {
                    why = f.map_or("close, no code".to_owned(), |f| format!("close {}", u16::from(f.code)));
                    break;
                }
                Err(_) => break,
                Ok(_) => {}
            }
        }
        cmd.sink.lock().await.take();
        cmd.acks.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if honest.readers_stop.load(Ordering::Relaxed) {
            return;
        }
        let phase = honest.phase.load(Ordering::Relaxed);
        honest.with(phase, |s| *s.socket_closes.entry(why.clone()).or_default() += 1);
        loop {
            match ws::connect(port, &token, &format!("?presence=false&since={last}")).await {
                Ok((w, _)) => {
                    let (sink, s) = w.split();
                    *cmd.sink.lock().await = Some(sink);
                    stream = s;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// A small, parseable SDP whose session version is `v`.
fn sdp(kind: &str, v: u64) -> Value {
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let sdp = format!(
        "v=0\r\no=- 4611731400430051336 {v} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
         a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    );
    json!({"type": kind, "sdp": sdp})
}

/// An SDP offer padded with attributes to about `bytes`.
fn big_offer(bytes: usize, v: u64) -> Value {
    let mut s = sdp("offer", v)["sdp"].as_str().unwrap_or_default().to_owned();
    let pad = format!("a=x-pad:{}\r\n", "0123456789".repeat(400));
    while s.len() + pad.len() < bytes {
        s.push_str(&pad);
    }
    json!({"type": "offer", "sdp": s})
}

/// Per 10 s window: (start s, count, p99 ms).
fn windows(w: &Mutex<BTreeMap<u64, Histogram<u64>>>) -> Vec<(f64, u64, f64)> {
    let w = w.lock().unwrap_or_else(|p| p.into_inner());
    w.iter().map(|(k, h)| (*k as f64 * 10.0, h.len(), Percentiles::of(h).p99_ms)).collect()
}

/// How late a 10 ms timer fires in this tool, per 10 s window from `t0`: the
/// tool's own scheduling lag, which the honest receipts carry too.
async fn lag_probe(t0: Instant, out: Arc<Mutex<BTreeMap<u64, Histogram<u64>>>>) {
    loop {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let late = t.elapsed().saturating_sub(Duration::from_millis(10));
        let w = t.saturating_duration_since(t0).as_secs() / 10;
        let _ = out.lock().unwrap_or_else(|p| p.into_inner()).entry(w).or_insert_with(histogram).record(micros(late));
    }
}

/// ICE candidates per side and cycle.
const CANDIDATES: usize = 3;
/// A pair's cycle (10 messages: show, offer, answer, 3 + 3 ice, hangup)
/// starts at most once a second: about 6 calls a second per user, under
/// `limits.rate_per_s` (20, burst 20).
const CYCLE: Duration = Duration::from_secs(1);

/// One honest pair until told to stop: show, offer, answer, candidates both
/// ways, hangup by either side in turn; every message timed from its send to
/// its event on the other side.
async fn drive(pair: usize, mut owner: Side, mut viewer: Side, h: Arc<Honest>, wait: Duration) -> (Side, Side) {
    let mut c: u64 = 0;
    while !h.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let phase = h.phase.load(Ordering::Relaxed);
        if let Err(Some(room)) = cycle(pair, c, &mut owner, &mut viewer, &h, phase, wait).await {
            // A cycle cut short leaves no room open: the next show must open a fresh one.
            let _ = viewer.call(&h.http, "hangup", json!({"room_id": room})).await;
        }
        h.with(phase, |s| s.cycles += 1);
        c += 1;
        tokio::time::sleep_until((start + CYCLE).into()).await;
    }
    (owner, viewer)
}

/// `Err(room)` when the cycle stopped early (the room to close, if one was opened).
async fn cycle(pair: usize, c: u64, owner: &mut Side, viewer: &mut Side, h: &Honest, phase: usize, wait: Duration) -> Result<(), Option<String>> {
    let room_of = |ev: &Value| ev["data"]["room_id"].as_str().map(str::to_owned);

    // show: viewer → owner's show_cam.
    let t = Instant::now();
    h.sent(phase, "show");
    let shown = viewer.call(&h.http, "cameraShow", json!({"user_id": owner.user})).await.map_err(|e| {
        h.refused(phase, "show", &e);
        None
    })?;
    let room = shown["connection"]["room_id"].as_str().unwrap_or_default().to_owned();
    if shown["connection"]["state"] != "requested" {
        // An earlier room between the two is still open: no show_cam comes for it.
        h.refused(phase, "show", "an earlier room was still open");
        return Err(Some(room));
    }
    let r = room.clone();
    let got = owner.expect(1, wait, |ev| (ev["action"] == "server-action:show_cam" && room_of(ev).as_deref() == Some(&r)).then(String::new)).await;
    if !receipt(h, phase, "show", t, &got) {
        return Err(Some(room));
    }

    // offer: owner → viewer's put_offer.
    let t = Instant::now();
    h.sent(phase, "offer");
    if let Err(e) = owner.call(&h.http, "offer", json!({"room_id": room, "offer": sdp("offer", c + 1)})).await {
        h.refused(phase, "offer", &e);
        return Err(Some(room));
    }
    let got = viewer.expect(1, wait, |ev| (ev["action"] == "server-action:put_offer" && room_of(ev).as_deref() == Some(&r)).then(String::new)).await;
    if !receipt(h, phase, "offer", t, &got) {
        return Err(Some(room));
    }

    // answer: viewer → owner's put_answer.
    let t = Instant::now();
    h.sent(phase, "answer");
    if let Err(e) = viewer.call(&h.http, "answer", json!({"room_id": room, "answer": sdp("answer", c + 1)})).await {
        h.refused(phase, "answer", &e);
        return Err(Some(room));
    }
    let got = owner.expect(1, wait, |ev| (ev["action"] == "server-action:put_answer" && room_of(ev).as_deref() == Some(&r)).then(String::new)).await;
    if !receipt(h, phase, "answer", t, &got) {
        return Err(Some(room));
    }

    // Candidates, owner's then viewer's: each batch sent back to back, then received in order.
    for from_owner in [true, false] {
        let (from, to) = if from_owner { (&*owner, &mut *viewer) } else { (&*viewer, &mut *owner) };
        let mut sent_at = Vec::new();
        for k in 0..CANDIDATES {
            let ufrag = format!("p{pair}c{c}{}{k}", if from_owner { "o" } else { "v" });
            let cand = json!({"candidate": format!("candidate:1 1 udp 2113937151 192.0.2.1 {} typ host", 9000 + k), "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": ufrag});
            let t = Instant::now();
            h.sent(phase, "ice");
            match from.call(&h.http, "ice", json!({"room_id": room, "candidate": cand})).await {
                Ok(_) => sent_at.push((ufrag, t)),
                Err(e) => h.refused(phase, "ice", &e),
            }
        }
        let wanted: Vec<String> = sent_at.iter().map(|(u, _)| u.clone()).collect();
        let got = to
            .expect(wanted.len(), wait, |ev| {
                let u = ev["data"]["candidate"]["usernameFragment"].as_str()?;
                (ev["action"] == "server-action:put_ice" && room_of(ev).as_deref() == Some(&r) && wanted.iter().any(|w| w == u)).then(|| u.to_owned())
            })
            .await;
        let order: Vec<usize> = got.iter().filter_map(|(u, _)| wanted.iter().position(|w| w == u)).collect();
        let ooo = order.windows(2).filter(|w| w[1] < w[0]).count() as u64;
        for (u, t) in &sent_at {
            match got.iter().find(|(g, _)| g == u) {
                Some((_, at)) => h.received(phase, "ice", *t, *at),
                None => h.with(phase, |s| s.no_event += 1),
            }
        }
        h.with(phase, |s| s.out_of_order += ooo);
        if got.len() < sent_at.len() || sent_at.len() < CANDIDATES {
            return Err(Some(room));
        }
    }

    // hangup, by each side in turn: the other side's hangup event.
    let t = Instant::now();
    h.sent(phase, "hangup");
    let (from, to) = if c.is_multiple_of(2) { (&*owner, &mut *viewer) } else { (&*viewer, &mut *owner) };
    if let Err(e) = from.call(&h.http, "hangup", json!({"room_id": room, "reason": "bye"})).await {
        h.refused(phase, "hangup", &e);
        return Err(Some(room));
    }
    let got = to.expect(1, wait, |ev| (ev["action"] == "server-action:hangup" && room_of(ev).as_deref() == Some(&r)).then(String::new)).await;
    receipt(h, phase, "hangup", t, &got);
    Ok(())
}

/// Counts one awaited event: its latency, or a message with no event. True if it came.
fn receipt(h: &Honest, phase: usize, kind: &'static str, sent: Instant, got: &[(String, Instant)]) -> bool {
    match got.first() {
        Some((_, at)) => {
            h.received(phase, kind, sent, *at);
            true
        }
        None => {
            h.with(phase, |s| s.no_event += 1);
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Attackers

/// Outcomes of the attacks, by shape then outcome.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    fn add(&self, shape: &str, outcome: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(shape.to_owned()).or_default().entry(outcome.into()).or_default() += 1;
    }

    fn take(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One attack connection under way: counted as "still open at the end of
/// the run" if its task is aborted before it has an outcome.
struct Attempt {
    tally: Arc<Tally>,
    shape: &'static str,
    done: bool,
}

impl Attempt {
    fn new(tally: &Arc<Tally>, shape: &'static str) -> Attempt {
        Attempt { tally: tally.clone(), shape, done: false }
    }

    fn end(mut self, outcome: impl Into<String>) {
        self.done = true;
        self.tally.add(self.shape, outcome);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.tally.add(self.shape, "still under way when the run ended");
        }
    }
}

/// Attackers come from their own loopback addresses (127.<node+1>.<shape>.1-4),
/// as they would from their own machines: the per-address connection cap is
/// theirs, not the honest clients' (127.0.0.x).
fn src(node: usize, shape: u8, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + node as u8, shape, 1 + (j % 4) as u8)
}

mod shape {
    pub const SLOW: u8 = 1;
    pub const PING: u8 = 2;
    pub const POLL: u8 = 3;
    pub const CHUNK: u8 = 4;
    pub const HEADER: u8 = 5;
    pub const FLAP: u8 = 6;
    pub const IDEM: u8 = 7;
    pub const BIG: u8 = 8;
    pub const FEED: u8 = 9;
}

/// How long an attack connection took to end, in coarse steps.
fn within(d: Duration) -> &'static str {
    match d.as_secs_f64() {
        s if s < 1.0 => "in < 1 s",
        s if s < 6.0 => "in 1-6 s",
        s if s < 12.0 => "in 6-12 s",
        s if s < 35.0 => "in 12-35 s",
        _ => "in ≥ 35 s",
    }
}

/// A REST client for one attacker address.
fn attack_http(from: Ipv4Addr) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().local_address(IpAddr::V4(from)).timeout(Duration::from_secs(40)).build()?)
}

/// An attacker's WebSocket: from `from`, with a small receive buffer if
/// asked, with or without a token. Err is the outcome to count.
async fn attack_ws(port: u16, from: Ipv4Addr, rcvbuf: Option<u32>, token: Option<&str>, query: &str) -> Result<Ws, String> {
    let mut req = format!("ws://127.0.0.1:{port}/ws{query}").into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?);
    }
    let tcp = ws::tcp_from(port, from, rcvbuf).await.map_err(|_| "connect failed".to_owned())?;
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async_with_config(req, tcp, Some(ws::config()))).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(r))) => Err(format!("handshake {}", r.status().as_u16())),
        Ok(Err(tungstenite::Error::Io(_))) => Err("handshake: connection reset".into()),
        Ok(Err(_)) => Err("handshake failed".into()),
        Err(_) => Err("handshake: no answer in 10 s".into()),
    }
}

/// Reads an attacker's socket until the node closes it: the close code, or
/// that it was reset, or still open after `limit`.
async fn close_code(ws: &mut Ws, limit: Duration) -> String {
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return format!("still open after {} s", limit.as_secs()),
            Ok(Some(Ok(Message::Close(f)))) => return f.map_or("close, no code".into(), |f| format!("close {}", u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return "reset".into(),
        }
    }
}

/// The next text frame as JSON, skipping others, within `limit`.
async fn next_json_within(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The nodes' ends of the connections to their ports, as the kernel lists
/// them in /proc/net/tcp. A client that never reads cannot see the node give
/// up (a FIN waits behind the unread data, and a connection the node's kernel
/// aborts sends nothing), so the node's side is read here. The table holds
/// every socket of the machine and costs the kernel much to print, so one
/// task reads it every 2 s for all the slow readers.
#[derive(Default)]
struct NodeEnds {
    /// When the last read began, and "local>remote" (hex, as the table
    /// prints them) → state ("01" established, "04" fin-wait-1...).
    scan: Mutex<(Option<Instant>, HashMap<String, String>)>,
}

impl NodeEnds {
    fn key(port: u16, client: std::net::SocketAddr) -> Option<String> {
        let std::net::SocketAddr::V4(c) = client else { return None };
        let hex = |ip: Ipv4Addr, port: u16| format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
        Some(format!("{}>{}", hex(Ipv4Addr::LOCALHOST, port), hex(*c.ip(), c.port())))
    }

    /// Reads the table once, keeping the connections to `ports`.
    fn refresh(&self, ports: &[u16]) {
        let began = Instant::now();
        let locals: Vec<String> = ports.iter().map(|p| format!("0100007F:{p:04X}")).collect();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let mut found = HashMap::new();
        for l in table.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().take(4).collect();
            if f.len() == 4 && locals.iter().any(|x| x == f[1]) {
                found.insert(format!("{}>{}", f[1], f[2]), f[3].to_owned());
            }
        }
        *self.scan.lock().unwrap_or_else(|p| p.into_inner()) = (Some(began), found);
    }

    /// The node's end of `client`'s connection to `port`, from a read that
    /// began after `opened`: None until there is one; then its state, or
    /// None inside once the kernel has dropped it.
    fn state(&self, port: u16, client: std::net::SocketAddr, opened: Instant) -> Option<Option<String>> {
        let key = Self::key(port, client)?;
        let scan = self.scan.lock().unwrap_or_else(|p| p.into_inner());
        match scan.0 {
            Some(began) if began > opened => Some(scan.1.get(&key).cloned()),
            _ => None,
        }
    }
}

/// The names of the TCP states `NodeEnds` reads.
fn tcp_state_name(hex: &str) -> &'static str {
    match hex {
        "01" => "established",
        "04" => "fin-wait-1",
        "05" => "fin-wait-2",
        "06" => "time-wait",
        "07" => "closed",
        "08" => "close-wait",
        "09" => "last-ack",
        "0B" => "closing",
        _ => "other",
    }
}

/// Reads a raw connection until the node closes it, for at most `limit`:
/// the status line it answered with (if any) and how long it held.
async fn raw_outcome(tcp: &mut TcpStream, limit: Duration) -> String {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let open = loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), tcp.read(&mut buf)).await {
            Err(_) => break true,
            Ok(Ok(0)) | Ok(Err(_)) => break false,
            Ok(Ok(n)) => {
                if got.len() < 64 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
    };
    let text = String::from_utf8_lossy(&got);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).map_or("no answer".to_owned(), |s| s.to_owned());
    if open { format!("{status}, still open after {} s", limit.as_secs()) } else { format!("{status}, closed {}", within(start.elapsed())) }
}

/// A user with a session that reads (so a camera it turns on stays on).
async fn keep_online(port: u16, user: &str) -> Result<JoinHandle<()>> {
    let (mut w, _) = ws::connect(port, &token(user), "?presence=false").await?;
    Ok(tokio::spawn(async move { while ws::next_text(&mut w).await.is_some() {} }))
}

/// Starts every attack shape against `node` (the `n`th). The tasks run until
/// aborted; the counters are the flap observers' `update_user` counts.
async fn attack(node: &Proc, n: usize, sc: &Scale, only: Option<&[String]>, tally: Arc<Tally>, ends: Arc<NodeEnds>) -> Result<(Vec<JoinHandle<()>>, Vec<Arc<AtomicU64>>)> {
    let port = node.port;
    let base = node.http();
    let mut tasks = Vec::new();
    let setup = http_client()?;
    let on = |shape: &str| only.is_none_or(|v| v.iter().any(|x| x == shape));
    let no = Scale { slow_users: 0, ping_flooders: 0, poll_loops: 0, poll_noauth_loops: 0, chunk_auth: 0, chunk_noauth: 0, header_holds: 0, observers: 0, ..*sc };
    let sc = &Scale {
        slow_users: if on("slow") { sc.slow_users } else { no.slow_users },
        ping_flooders: if on("ping") { sc.ping_flooders } else { no.ping_flooders },
        poll_loops: if on("poll") { sc.poll_loops } else { no.poll_loops },
        poll_noauth_loops: if on("poll") { sc.poll_noauth_loops } else { no.poll_noauth_loops },
        chunk_auth: if on("chunked") { sc.chunk_auth } else { no.chunk_auth },
        chunk_noauth: if on("chunked") { sc.chunk_noauth } else { no.chunk_noauth },
        header_holds: if on("header") { sc.header_holds } else { no.header_holds },
        observers: if on("flap") { sc.observers } else { no.observers },
        ..*sc
    };

    // Slow readers and the poll user are viewers of one feeder, whose 60 KB
    // offers give them events: the slow readers' outboxes fill, the poll user's log grows.
    let slow_users: Vec<String> = (0..sc.slow_users).map(|i| format!("atk-slow-{n}-{i}")).collect();
    let poll_user = format!("atk-poll-{n}");
    if on("slow") || on("poll") {
    let feeder = format!("atk-feed-{n}");
    tasks.push(keep_online(port, &feeder).await?);
    post(&setup, &base, "cameraOn", &token(&feeder), json!({})).await?;
    let mut viewers = Vec::new();
    for v in slow_users.iter().chain(Some(&poll_user).filter(|_| on("poll"))) {
        let shown = post(&setup, &base, "cameraShow", &token(v), json!({"user_id": feeder})).await?;
        viewers.push((v.clone(), shown["connection"]["room_id"].as_str().context("a room")?.to_owned()));
    }
    {
        let (tally, base, http) = (tally.clone(), base.clone(), attack_http(src(n, shape::FEED, 0))?);
        let (ftok, feeder) = (token(&feeder), feeder.clone());
        let every = Duration::from_secs_f64(1.0 / sc.feed_per_s);
        tasks.push(tokio::spawn(async move {
            // Bodies serialized once per room: the tool's CPU is the nodes' CPU too.
            let offer = big_offer(60 * 1024, 1);
            let body = |room: &str| json!({"room_id": room, "offer": offer}).to_string();
            let mut bodies: Vec<String> = viewers.iter().map(|(_, r)| body(r)).collect();
            let mut tick = tokio::time::interval(every);
            for i in 0.. {
                tick.tick().await;
                let len = viewers.len();
                let (viewer, room) = &mut viewers[i % len];
                let res = http
                    .post(format!("{base}/webrtc/offer"))
                    .bearer_auth(&ftok)
                    .header("content-type", "application/json")
                    .body(bodies[i % len].clone())
                    .send()
                    .await;
                let status = res.map_or(0, |r| r.status().as_u16());
                tally.add("feed: 60 KB offers to the slow readers and the poll user", format!("{status}"));
                if status == 404 || status == 409 {
                    // The room closed (its viewer went offline): the viewer shows again.
                    if let Ok(shown) = post(&http, &base, "cameraShow", &token(viewer), json!({"user_id": feeder})).await
                        && let Some(r) = shown["connection"]["room_id"].as_str()
                    {
                        *room = r.to_owned();
                        bodies[i % len] = body(r);
                    }
                }
            }
        }));
    }

    }

    // Slow readers: 4 KiB receive buffers, never read; the kernel's TCP state says when the node gave up.
    for (i, user) in slow_users.iter().enumerate() {
        for s in 0..sc.slow_sessions {
            let (tally, tok, from, ends) = (tally.clone(), token(user), src(n, shape::SLOW, i * sc.slow_sessions + s), ends.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    const WHAT: &str = "slow reader (4 KiB rcvbuf, never reads)";
                    let ws = match attack_ws(port, from, Some(4096), Some(&tok), "?presence=false").await {
                        Ok(ws) => ws,
                        Err(e) => {
                            tally.add(WHAT, e);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    };
                    let attempt = Attempt::new(&tally, WHAT);
                    let (client, t) = (ws.get_ref().local_addr(), Instant::now());
                    let Ok(client) = client else { continue };
                    let outcome = loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match ends.state(port, client, t) {
                            None => continue, // no read of the table since it opened yet
                            Some(Some(st)) if st == "01" && t.elapsed() < Duration::from_secs(60) => continue,
                            Some(Some(st)) if st == "01" => break "still held by the node after 60 s (the client gave up)".to_owned(),
                            Some(Some(st)) => break format!("closed by the node {} (its end: {})", within(t.elapsed()), tcp_state_name(&st)),
                            Some(None) => break format!("closed by the node {} (its end: gone)", within(t.elapsed())),
                        }
                    };
                    attempt.end(outcome);
                    drop(ws);
                }
            }));
        }
    }

    // Ping floods: 60 KB `ping` commands (each acked with the 60 KB back) on sockets that never read.
    for i in 0..sc.ping_flooders {
        let (tally, tok, from) = (tally.clone(), token(&format!("atk-ping-{n}-{i}")), src(n, shape::PING, i));
        let every = Duration::from_secs_f64(1.0 / sc.ping_per_s);
        tasks.push(tokio::spawn(async move {
            const WHAT: &str = "ping flood (60 KB pings, never reads)";
            // One frame, shared: sending it costs a refcount, not a 60 KB copy.
            let frame: tungstenite::Utf8Bytes = json!({"cmd": "ping", "ack": "a".repeat(60 * 1024)}).to_string().into();
            loop {
                let mut ws = match attack_ws(port, from, Some(4096), Some(&tok), "?presence=false").await {
                    Ok(ws) => ws,
                    Err(e) => {
                        tally.add(WHAT, e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let attempt = Attempt::new(&tally, WHAT);
                let (t, mut sent) = (Instant::now(), 0u64);
                let mut tick = tokio::time::interval(every);
                let outcome = loop {
                    tick.tick().await;
                    if t.elapsed() > Duration::from_secs(60) {
                        break "still taking frames after 60 s".to_owned();
                    }
                    match tokio::time::timeout(Duration::from_secs(5), ws.send(Message::Text(frame.clone()))).await {
                        Ok(Ok(())) => {
                            sent += 1;
                            tally.add(WHAT, "frames written");
                        }
                        Ok(Err(_)) => break format!("cut by the node {}", within(t.elapsed())),
                        Err(_) => break format!("node stopped reading {}", within(t.elapsed())),
                    }
                };
                attempt.end(format!("{outcome}, after {sent} frames"));
            }
        }));
    }

    // Poll floods: concurrent long polls of one user with an old `since`, and some with no token.
    // Half ask from before the kept log (0-0: answered `resync`); half from 20 s
    // ago (ids are wall-clock ms), inside the log: up to `limits.poll_max_bytes` of offers each.
    for j in 0..sc.poll_loops + sc.poll_noauth_loops {
        let authed = j < sc.poll_loops;
        let recent = authed && j % 2 == 1;
        let (tally, base, http) = (tally.clone(), base.clone(), attack_http(src(n, shape::POLL, j))?);
        let tok = token(&poll_user);
        tasks.push(tokio::spawn(async move {
            let what = match (authed, recent) {
                (false, _) => "poll flood (no token)",
                (true, false) => "poll flood (one user, since=0-0)",
                (true, true) => "poll flood (one user, since=20 s ago)",
            };
            loop {
                let since = if recent { format!("{}-0", chrono::Utc::now().timestamp_millis() - 20_000) } else { "0-0".to_owned() };
                let mut req = http.get(format!("{base}/webrtc/events?since={since}&timeout_s=25"));
                if authed {
                    req = req.bearer_auth(&tok);
                }
                let outcome = match req.send().await {
                    Err(_) => "connection error".to_owned(),
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        // Read to the end (a flood that reads), keeping only the head.
                        let (mut head, mut len) = (Vec::new(), 0usize);
                        while let Ok(Some(chunk)) = r.chunk().await {
                            if head.len() < 200 {
                                head.extend_from_slice(&chunk[..chunk.len().min(200 - head.len())]);
                            }
                            len += chunk.len();
                        }
                        let head = String::from_utf8_lossy(&head);
                        match status {
                            200 if head.starts_with("{\"events\":[]") => "200 empty".to_owned(),
                            200 if head.contains("server-action:resync") => "200 resync".to_owned(),
                            200 => format!("200 events ({})", match len {
                                l if l > 1024 * 1024 + 4096 => "over poll_max_bytes + 4 KiB",
                                l if l > 512 * 1024 => "512 KiB-1 MiB",
                                _ => "under 512 KiB",
                            }),
                            s => format!("{s}"),
                        }
                    }
                };
                tally.add(what, outcome);
                tokio::time::sleep(Duration::from_millis(if authed { 50 } else { 100 })).await;
            }
        }));
    }

    // Chunked holds: POST cameraOn, chunked, one chunk, then silence.
    for j in 0..sc.chunk_auth + sc.chunk_noauth {
        let authed = j < sc.chunk_auth;
        let (tally, from) = (tally.clone(), src(n, shape::CHUNK, j));
        let auth = if authed { format!("Authorization: Bearer {}\r\n", token(&format!("atk-chunk-{n}"))) } else { String::new() };
        let head = format!("POST /webrtc/cameraOn HTTP/1.1\r\nHost: camsig\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{{\"a\r\n");
        tasks.push(tokio::spawn(async move {
            let what = if authed { "chunked hold (token)" } else { "chunked hold (no token)" };
            loop {
                match ws::tcp_from(port, from, None).await {
                    Err(_) => tally.add(what, "connect failed"),
                    Ok(mut tcp) => {
                        let attempt = Attempt::new(&tally, what);
                        let outcome = match tcp.write_all(head.as_bytes()).await {
                            Err(_) => "write failed".to_owned(),
                            Ok(()) => raw_outcome(&mut tcp, Duration::from_secs(30)).await,
                        };
                        attempt.end(outcome);
                    }
                }
                tokio::time::sleep(Duration::from_millis(if authed { 100 } else { 250 })).await;
            }
        }));
    }

    // Header holds: half a request head, then silence, all from one address.
    for _ in 0..sc.header_holds {
        let (tally, from) = (tally.clone(), src(n, shape::HEADER, 0));
        tasks.push(tokio::spawn(async move {
            loop {
                match ws::tcp_from(port, from, None).await {
                    Err(_) => tally.add("header hold (half a head, one address)", "connect failed"),
                    Ok(mut tcp) => {
                        let attempt = Attempt::new(&tally, "header hold (half a head, one address)");
                        let outcome = match tcp.write_all(b"GET /webrtc/users HTTP/1.1\r\nHost: camsig\r\nX-Slow: ").await {
                            Err(_) => "write failed".to_owned(),
                            Ok(()) => raw_outcome(&mut tcp, Duration::from_secs(30)).await,
                        };
                        attempt.end(outcome);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    // Flapping: one user opens and closes /ws in a loop; observers count its update_user.
    let flapper = format!("atk-flap-{n}");
    let mut seen = Vec::new();
    for k in 0..sc.observers {
        let count = Arc::new(AtomicU64::new(0));
        let (mut w, _) = ws::connect(port, &token(&format!("atk-observer-{n}-{k}")), "").await?;
        let (c, who) = (count.clone(), flapper.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(t) = ws::next_text(&mut w).await {
                if t.contains("server-action:update_user")
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && v["data"]["user"]["user_id"] == who.as_str()
                {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        seen.push(count);
    }
    if on("flap") {
        let (tally, tok, from) = (tally.clone(), token(&flapper), src(n, shape::FLAP, 0));
        tasks.push(tokio::spawn(async move {
            loop {
                match attack_ws(port, from, None, Some(&tok), "").await {
                    Ok(mut ws) => {
                        tally.add("flapping /ws (one user, open then close)", "opened (101)");
                        let _ = ws.close(None).await;
                    }
                    Err(e) => tally.add("flapping /ws (one user, open then close)", e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // Fresh idempotency keys: 60 KB offers, a new key each.
    if on("idem") {
        let (owner, viewer) = (format!("atk-idem-{n}"), format!("atk-idem-viewer-{n}"));
        tasks.push(keep_online(port, &owner).await?);
        post(&setup, &base, "cameraOn", &token(&owner), json!({})).await?;
        let shown = post(&setup, &base, "cameraShow", &token(&viewer), json!({"user_id": owner})).await?;
        let mut room = shown["connection"]["room_id"].as_str().context("a room")?.to_owned();
        let (tally, base, http) = (tally.clone(), base.clone(), attack_http(src(n, shape::IDEM, 0))?);
        let every = Duration::from_secs_f64(1.0 / sc.idem_per_s);
        tasks.push(tokio::spawn(async move {
            // The same body each time (serialized once); only the key is fresh.
            let offer = big_offer(60 * 1024, 1);
            let mut body = json!({"room_id": room, "offer": offer}).to_string();
            let otok = token(&owner);
            let mut tick = tokio::time::interval(every);
            for i in 0u64.. {
                tick.tick().await;
                let res = http
                    .post(format!("{base}/webrtc/offer"))
                    .bearer_auth(&otok)
                    .header("Idempotency-Key", format!("k-{n}-{i}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let status = res.map_or(0, |r| r.status().as_u16());
                tally.add("fresh Idempotency-Keys (60 KB offers)", format!("{status}"));
                if (status == 404 || status == 409)
                    && let Ok(shown) = post(&http, &base, "cameraShow", &token(&viewer), json!({"user_id": owner})).await
                    && let Some(r) = shown["connection"]["room_id"].as_str()
                {
                    room = r.to_owned();
                    body = json!({"room_id": room, "offer": offer}).to_string();
                }
            }
        }));
    }

    // Big frames: text one byte over the limit, binary frames, and handshakes with no token.
    if on("big") {
        let (tally, tok, from) = (tally.clone(), token(&format!("atk-big-{n}")), src(n, shape::BIG, 0));
        let every = sc.big_every;
        tasks.push(tokio::spawn(async move {
            let over = {
                let mut f = json!({"cmd": "ping", "ack": ""}).to_string();
                f.insert_str(f.len() - 2, &"a".repeat(MAX_BODY_BYTES + 1 - f.len()));
                f
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let what = "big frames";
                match attack_ws(port, from, None, Some(&tok), "?presence=false").await {
                    Ok(mut ws) => {
                        let _ = next_json_within(&mut ws, Duration::from_secs(5)).await; // hello
                        let outcome = match ws.send(Message::text(over.clone())).await {
                            Ok(()) => close_code(&mut ws, Duration::from_secs(10)).await,
                            Err(_) => "write failed".into(),
                        };
                        tally.add(what, format!("text of {} B: {outcome}", over.len()));
                    }
                    Err(e) => tally.add(what, format!("text: {e}")),
                }
                match attack_ws(port, from, None, Some(&tok), "?presence=false").await {
                    Ok(mut ws) => {
                        let _ = next_json_within(&mut ws, Duration::from_secs(5)).await;
                        let small = match ws.send(Message::binary(vec![0u8; 1024])).await {
                            Ok(()) => next_json_within(&mut ws, Duration::from_secs(5))
                                .await
                                .map_or("no reply".to_owned(), |v| format!("{} {}", v["cmd"].as_str().unwrap_or("?"), v["error"]["code"].as_str().unwrap_or(""))),
                            Err(_) => "write failed".into(),
                        };
                        tally.add(what, format!("binary of 1 KiB: {small}"));
                        let outcome = match ws.send(Message::binary(vec![0u8; MAX_BODY_BYTES + 1])).await {
                            Ok(()) => close_code(&mut ws, Duration::from_secs(10)).await,
                            Err(_) => "write failed".into(),
                        };
                        tally.add(what, format!("binary of {} B: {outcome}", MAX_BODY_BYTES + 1));
                    }
                    Err(e) => tally.add(what, format!("binary: {e}")),
                }
                match attack_ws(port, from, None, None, "").await {
                    Ok(_) => tally.add(what, "no token: opened"),
                    Err(e) => tally.add(what, format!("no token: {e}")),
                }
            }
        }));
    }
    Ok((tasks, seen))
}

// ---------------------------------------------------------------------------
// Sampling

/// One sample of a process: (seconds since the quiet phase began, RSS KiB,
/// descriptors, CPU ticks so far); of the machine: (seconds, busy ticks, 0, 0).
type Sample = (f64, u64, u64, u64);
type Series = Vec<(String, Vec<Sample>)>;

/// The name this tool's own process is sampled under.
const TOOL: &str = "load tool";

/// Samples each process's RSS, descriptors and CPU time, and the machine's
/// busy CPU time, every 500 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Series, Vec<Sample>)>,
}

impl Sampler {
    fn start(procs: Vec<(String, u32)>, t0: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let task = tokio::spawn(async move {
            let mut series: Series = procs.iter().map(|(n, _)| (n.clone(), Vec::new())).collect();
            let mut machine = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = t0.elapsed().as_secs_f64();
                for ((_, pid), (_, s)) in procs.iter().zip(series.iter_mut()) {
                    s.push((t, rss_kib(*pid), cluster::fd_count(*pid), cpu_ticks(*pid)));
                }
                machine.push((t, 0, 0, machine_busy_ticks()));
            }
            (series, machine)
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> (Series, Vec<Sample>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// User + system CPU ticks of process `pid` (all its threads), from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th, stime the 13th.
    let f: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// The machine's busy CPU ticks (all but idle and iowait), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum()
}

/// CPU used between `from` and `to` (seconds) by the samples' 4th field, in cores.
fn cpu_cores(s: &[Sample], from: f64, to: f64) -> f64 {
    let first = s.iter().find(|x| x.0 >= from);
    let last = s.iter().rev().find(|x| x.0 <= to);
    let (Some(a), Some(b)) = (first, last) else { return 0.0 };
    if b.0 <= a.0 {
        return 0.0;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    b.3.saturating_sub(a.3) as f64 / hz / (b.0 - a.0)
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

impl NodeUsage {
    fn of(name: String, samples: Vec<(f64, u64, u64)>, quiet_from: f64, attack_from: f64, attack_to: f64) -> NodeUsage {
        type Field = fn(&(f64, u64, u64)) -> u64;
        let peak = |from: f64, to: f64, f: Field| samples.iter().filter(|s| s.0 >= from && s.0 <= to).map(f).max().unwrap_or(0);
        let (rss, fds): (Field, Field) = (|s| s.1, |s| s.2);
        // The last minute of the attack, or its second half when it lasts two minutes or less.
        let split = if attack_to - attack_from > 120.0 { attack_to - 60.0 } else { (attack_from + attack_to) / 2.0 };
        let first = samples.first().copied().unwrap_or_default();
        let last = samples.last().copied().unwrap_or_default();
        NodeUsage {
            rss_start_kib: first.1,
            rss_quiet_peak_kib: peak(quiet_from, attack_from, rss),
            rss_peak_kib: peak(attack_from, attack_to, rss),
            rss_end_kib: last.1,
            rss_peak_early_kib: peak(attack_from, split, rss),
            rss_peak_last_minute_kib: peak(split, attack_to, rss),
            fds_start: first.2,
            fds_quiet_peak: peak(quiet_from, attack_from, fds),
            fds_peak: peak(attack_from, attack_to, fds),
            fds_peak_early: peak(attack_from, split, fds),
            fds_peak_last_minute: peak(split, attack_to, fds),
            fds_end: last.2,
            name,
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_big_text_frame_is_one_byte_over_the_limit() {
        let mut f = json!({"cmd": "ping", "ack": ""}).to_string();
        f.insert_str(f.len() - 2, &"a".repeat(MAX_BODY_BYTES + 1 - f.len()));
        assert_eq!(f.len(), MAX_BODY_BYTES + 1);
        assert!(serde_json::from_str::<Value>(&f).is_ok());
    }

    #[test]
    fn a_big_offer_stays_under_the_body_limit() {
        let body = json!({"room_id": "01JD0000000000000000000000", "offer": big_offer(60 * 1024, 1)}).to_string();
        assert!(body.len() > 58 * 1024 && body.len() < MAX_BODY_BYTES, "{}", body.len());
    }
}
