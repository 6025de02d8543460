//! The scenarios: open-loop cross-node latency (against camsig, and the same
//! load against the Socket.IO reference relay), the same load on one node
//! against the PeerJS server, a throughput ramp, fan-out, idle connections
//! (camsig's, and PeerJS's beside them), and the raw Redis control. Each returns plain data for
//! the report.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

use crate::cluster::{Cluster, Proc, Relay, token};
use crate::ws::{self, next_json};
use crate::{peerjs, sio};

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// An open-loop schedule: call `i` is due at `start + i / rate`, whatever
/// happened to earlier calls.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: u64,
}

impl Schedule {
    fn now(rate: u64) -> Self {
        Schedule { start: Instant::now(), rate }
    }

    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate as f64)
    }

    /// Fires calls `0..total`, each once it is due.
    async fn run(&self, total: u64, mut fire: impl FnMut(u64)) {
        let mut i = 0;
        while i < total {
            let now = Instant::now();
            while i < total && self.due(i) <= now {
                fire(i);
                i += 1;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

/// One receipt of a `put_ice` carrying call number `k`.
struct Receipt {
    pair: usize,
    k: u64,
    at: Instant,
}

/// The ICE candidate call number `k` sends: the same bytes to camsig and to the
/// Socket.IO relay, with `k` in `usernameFragment`.
fn candidate(k: u64) -> serde_json::Value {
    json!({"candidate": "candidate:1 1 udp 2113937151 192.0.2.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": k.to_string()})
}

/// The call number in a received `put_ice` event's data (`{"candidate": {...}}`).
fn call_number(data: &serde_json::Value) -> Option<u64> {
    data["candidate"]["usernameFragment"].as_str().and_then(|k| k.parse().ok())
}

/// Sender/receiver pairs, senders on node 0 and receivers on node 1. Each
/// pair's calls are sent one after another, so the order the service accepts
/// them in is `k` order, and the receiver must see that order.
pub struct Pairs {
    /// Which service the pairs talk to, as the report names it.
    system: &'static str,
    queues: Vec<mpsc::UnboundedSender<u64>>,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    /// Call number and when its answer came, from every sender.
    answers: mpsc::UnboundedReceiver<(u64, Instant)>,
    answers_tx: mpsc::UnboundedSender<(u64, Instant)>,
    errors: Arc<AtomicU64>,
    /// Calls handed to a sender and not yet answered.
    pending: Arc<AtomicU64>,
    next_k: u64,
}

/// How camsig's senders send their calls.
#[derive(Clone, Copy, PartialEq)]
pub enum Via {
    Rest,
    Ws,
}

impl Pairs {
    fn new(system: &'static str) -> (Pairs, mpsc::UnboundedSender<Receipt>) {
        let (rtx, receipts) = mpsc::unbounded_channel();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let pairs = Pairs { system, queues: Vec::new(), receipts, answers, answers_tx, errors: Arc::default(), pending: Arc::default(), next_k: 0 };
        (pairs, rtx)
    }

    /// The next pair's sender: `send(k)` for every call handed to it, one after
    /// another; `send` answers whether the service accepted the call.
    fn add_sender<F, Fut>(&mut self, mut send: F)
    where
        F: FnMut(u64) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let (qtx, mut qrx) = mpsc::unbounded_channel::<u64>();
        let (errors, pending, answers) = (self.errors.clone(), self.pending.clone(), self.answers_tx.clone());
        tokio::spawn(async move {
            while let Some(k) = qrx.recv().await {
                if !send(k).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = answers.send((k, Instant::now()));
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
        self.queues.push(qtx);
    }

    /// camsig, each pair in its own room. `Via::Rest`: `POST /webrtc/ice` on
    /// `sender`'s node (node A), the receiver's `/ws` on `receiver`'s (node B).
    /// `Via::Ws`: the `ice` command on the sender's own socket, answered by its
    /// ack before the pair's next call (what a PeerJS client would use).
    pub async fn setup(sender: &Proc, receiver: &Proc, n: usize, via: Via) -> Result<Pairs> {
        let http = http_client()?;
        let (mut pairs, rtx) = Pairs::new(match via {
            Via::Rest => "camsig",
            Via::Ws => "camsig-1node",
        });
        for i in 0..n {
            let (s, r) = (format!("bench-s{i}"), format!("bench-r{i}"));
            let (st, rt) = (token(&s), token(&r));
            // The sender holds a socket so its camera stays on; the receiver's socket is what we time.
            let (sws, _) = ws::connect(sender.port, &st, "?presence=false").await?;
            let (mut rws, _) = ws::connect(receiver.port, &rt, "?presence=false").await?;
            post(&http, &sender.http(), "cameraOn", &st, json!({})).await?;
            let shown = post(&http, &receiver.http(), "cameraShow", &rt, json!({"user_id": s})).await?;
            let room = shown["connection"]["room_id"].as_str().context("a room id")?.to_owned();
            let tx = rtx.clone();
            tokio::spawn(async move {
                while let Some(ev) = next_json(&mut rws).await {
                    if ev["action"] == "server-action:put_ice"
                        && let Some(k) = call_number(&ev["data"])
                    {
                        let _ = tx.send(Receipt { pair: i, k, at: Instant::now() });
                    }
                }
            });
            match via {
                Via::Rest => {
                    let mut sws = sws;
                    tokio::spawn(async move { while next_json(&mut sws).await.is_some() {} });
                    let (http, url) = (http.clone(), format!("{}/webrtc/ice", sender.http()));
                    pairs.add_sender(move |k| {
                        let req = http.post(&url).bearer_auth(&st).json(&json!({"room_id": room, "candidate": candidate(k)}));
                        async move { req.send().await.is_ok_and(|r| r.status().as_u16() == 202) }
                    });
                }
                Via::Ws => {
                    let sws = Arc::new(tokio::sync::Mutex::new(sws));
                    pairs.add_sender(move |k| {
                        let (sws, ack) = (sws.clone(), k.to_string());
                        let frame = json!({"cmd": "ice", "ack": ack, "room_id": room, "candidate": candidate(k)}).to_string();
                        async move {
                            let mut ws = sws.lock().await;
                            if ws.send(Message::text(frame)).await.is_err() {
                                return false;
                            }
                            // Other frames (events for the sender) are skipped on the way to the ack.
                            while let Some(reply) = next_json(&mut ws).await {
                                if reply["ack"] == ack.as_str() {
                                    return reply["cmd"] == "ack";
                                }
                            }
                            false
                        }
                    });
                }
            }
        }
        Ok(pairs)
    }

    /// The PeerJS server: `CANDIDATE` frames from `bench-s{i}`'s socket to
    /// `bench-r{i}`, both on the one server, with the same candidate in the payload.
    pub async fn setup_peerjs(port: u16, n: usize) -> Result<Pairs> {
        let (mut pairs, rtx) = Pairs::new("peerjs");
        for i in 0..n {
            let (s, r) = (format!("bench-s{i}"), format!("bench-r{i}"));
            let mut receiver = peerjs::connect(port, &r).await?;
            let mut sender = peerjs::connect(port, &s).await?;
            let tx = rtx.clone();
            tokio::spawn(async move {
                while let Some(ev) = receiver.next_json().await {
                    if ev["type"] == "CANDIDATE"
                        && let Some(k) = call_number(&ev["payload"])
                    {
                        let _ = tx.send(Receipt { pair: i, k, at: Instant::now() });
                    }
                }
            });
            let out = sender.out.clone();
            tokio::spawn(async move { while sender.next_json().await.is_some() {} });
            pairs.add_sender(move |k| {
                let (out, r) = (out.clone(), r.clone());
                async move { peerjs::send(&out, "CANDIDATE", &r, json!({"candidate": candidate(k)})).await }
            });
        }
        Ok(pairs)
    }

    /// The Socket.IO relay: `POST /publish` to relay node A with the same
    /// candidate, emitted to room `bench-r{i}` through the Redis adapter; the
    /// receiver's Socket.IO socket is on relay node B, in that room.
    pub async fn setup_socketio(relay: &Relay, n: usize) -> Result<Pairs> {
        let (a, b) = (&relay.nodes[0], &relay.nodes[1]);
        let http = http_client()?;
        let (mut pairs, rtx) = Pairs::new("socketio-relay");
        for i in 0..n {
            let r = format!("bench-r{i}");
            let mut socket = sio::connect(b.port, &r).await.with_context(|| format!("Socket.IO connect to relay :{}", b.port))?;
            let tx = rtx.clone();
            tokio::spawn(async move {
                while let Some((name, data)) = socket.next_event().await {
                    if name == "put_ice"
                        && let Some(k) = call_number(&data)
                    {
                        let _ = tx.send(Receipt { pair: i, k, at: Instant::now() });
                    }
                }
            });
            let (http, url) = (http.clone(), format!("{}/publish", a.http()));
            pairs.add_sender(move |k| {
                let req = http.post(&url).json(&json!({"to": r, "data": {"candidate": candidate(k)}}));
                async move { req.send().await.is_ok_and(|r| r.status().as_u16() == 202) }
            });
        }
        Ok(pairs)
    }
}

pub(crate) fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?)
}

pub(crate) async fn post(http: &reqwest::Client, base: &str, op: &str, token: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let res = http.post(format!("{base}/webrtc/{op}")).bearer_auth(token).json(&body).send().await?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{op}: {status} {body}");
    }
    Ok(body)
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// "camsig" or "socketio-relay".
    pub system: &'static str,
    pub offered_per_s: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub http_errors: u64,
    /// Redis commands per call, all nodes together (housekeeping included).
    pub redis_commands_per_call: f64,
    /// Redis round trips per call, from camsig's `camsig_redis_round_trips_total`
    /// on both nodes; null where the service does not count them.
    pub redis_round_trips_per_call: Option<f64>,
    /// From the call's scheduled send time to its event on the socket on the other node.
    pub latency: Percentiles,
    /// From the call's scheduled send time to its answer, at the caller.
    pub answer: Percentiles,
    /// Redis CPU time per call (every Redis process, user + system), where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_ms_per_call: Option<f64>,
}

/// Open loop: call `k` is due at `start + k / rate` whether or not earlier
/// calls have been answered, and its latency counts from then, so a stall
/// shows up in the numbers instead of slowing the load down.
pub async fn load(pairs: &mut Pairs, rate: u64, duration: Duration) -> LoadResult {
    while pairs.receipts.try_recv().is_ok() {}
    while pairs.answers.try_recv().is_ok() {}
    pairs.errors.store(0, Ordering::Relaxed);
    let base = pairs.next_k;
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let n = pairs.queues.len() as u64;
    let schedule = Schedule::now(rate);
    let start = schedule.start;
    let due = |k: u64| schedule.due(k - base);
    schedule
        .run(total, |i| {
            pairs.pending.fetch_add(1, Ordering::Relaxed);
            let _ = pairs.queues[((base + i) % n) as usize].send(base + i);
        })
        .await;
    pairs.next_k = base + total;

    let mut hist = histogram();
    let mut seen = HashSet::with_capacity(total as usize);
    let mut last = vec![None::<u64>; n as usize];
    let (mut dup, mut ooo) = (0, 0);
    let mut last_at = start;
    // Every call is answered (a backlog is latency, not loss), then events get 2 s more to arrive.
    let mut drain_until = Instant::now() + Duration::from_secs(2);
    while (seen.len() as u64) < total {
        if pairs.pending.load(Ordering::Relaxed) > 0 && start.elapsed() < duration * 10 + Duration::from_secs(30) {
            drain_until = Instant::now() + Duration::from_secs(2);
        }
        let left = drain_until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        let r = match tokio::time::timeout(left, pairs.receipts.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(_) if Instant::now() < drain_until => continue,
            Err(_) => break,
        };
        last_at = r.at;
        if r.k < base {
            continue;
        }
        if !seen.insert(r.k) {
            dup += 1;
            continue;
        }
        if last[r.pair].is_some_and(|l| r.k < l) {
            ooo += 1;
        }
        last[r.pair] = Some(r.k);
        let _ = hist.record(micros(r.at.saturating_duration_since(due(r.k))));
    }
    let elapsed = (last_at - start).as_secs_f64();
    let mut answered = histogram();
    while let Ok((k, at)) = pairs.answers.try_recv() {
        if k >= base {
            let _ = answered.record(micros(at.saturating_duration_since(due(k))));
        }
    }
    LoadResult {
        system: pairs.system,
        offered_per_s: rate,
        duration_s: duration.as_secs_f64(),
        sent: total,
        delivered: seen.len() as u64,
        delivered_per_s: seen.len() as f64 / elapsed.max(duration.as_secs_f64()),
        lost: total - seen.len() as u64,
        duplicates: dup,
        out_of_order: ooo,
        http_errors: pairs.errors.load(Ordering::Relaxed),
        redis_commands_per_call: 0.0,
        redis_round_trips_per_call: None,
        latency: Percentiles::of(&hist),
        answer: Percentiles::of(&answered),
        redis_cpu_ms_per_call: None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub sessions: usize,
    /// Per round: from the cameraOn/cameraOff call to the last session receiving its `update_user`.
    pub rounds_ms: Vec<f64>,
    pub last_ms: f64,
    pub arrival: Percentiles,
    pub missing: usize,
}

/// One `update_user` to `n` presence sessions spread over both nodes.
pub async fn fanout(cluster: &Cluster, n: usize) -> Result<FanoutResult> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let permits = Arc::new(Semaphore::new(100));
    let mut tasks = Vec::new();
    for j in 0..n {
        let port = cluster.nodes[j % cluster.nodes.len()].port;
        let (tx, permits) = (tx.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.expect("open");
            // A few users with many devices each: one online broadcast per user, not per socket.
            let (mut ws, _) = ws::connect(port, &token(&format!("fan-viewer-{}", j % 10)), "").await?;
            drop(permit);
            anyhow::Ok(tokio::spawn(async move {
                while let Some(ev) = next_json(&mut ws).await {
                    if ev["action"] == "server-action:update_user" && ev["data"]["user"]["user_id"] == "fan-owner" {
                        let _ = tx.send((ev["data"]["user"]["version"].as_u64().unwrap_or(0), Instant::now()));
                    }
                }
            }))
        }));
    }
    let mut readers = Vec::with_capacity(n);
    for t in tasks {
        readers.push(t.await??);
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = reqwest::Client::new();
    let owner = token("fan-owner");
    let node = cluster.nodes[0].http();
    let (mut rounds, mut hist, mut missing) = (Vec::new(), histogram(), 0);
    for op in ["cameraOn", "cameraOff", "cameraOn"] {
        while rx.try_recv().is_ok() {}
        let start = Instant::now();
        let user = post(&http, &node, op, &owner, json!({})).await?;
        let version = user["user"]["version"].as_u64().context("a version")?;
        let (mut got, mut last) = (0, start);
        let deadline = start + Duration::from_secs(30);
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((v, at))) = tokio::time::timeout(left, rx.recv()).await else { break };
            if v == version {
                got += 1;
                last = at;
                let _ = hist.record(micros(at - start));
            }
        }
        missing += n - got;
        rounds.push((last - start).as_secs_f64() * 1000.0);
    }
    // Close every socket, and let the nodes see it, before the next scenario.
    for r in readers {
        r.abort();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last_ms = rounds.iter().cloned().fold(0.0, f64::max);
    Ok(FanoutResult { sessions: n, rounds_ms: rounds, last_ms, arrival: Percentiles::of(&hist), missing })
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// "camsig" or "peerjs".
    pub system: &'static str,
    pub connections: usize,
    pub opened: usize,
    pub rss_baseline_kib: u64,
    pub rss_after_kib: u64,
    pub per_connection_kib: f64,
    pub connect_per_s: f64,
    pub handshake: Percentiles,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Which server the idle sockets are opened on.
#[derive(Clone, Copy)]
pub enum Idle {
    Camsig,
    PeerJs,
}

/// `n` idle sockets on `node`: memory per socket, connect rate, handshake latency.
pub async fn idle(node: &Proc, n: usize, server: Idle) -> Result<IdleResult> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = node.rss_kib();
    let permits = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for j in 0..n {
        let (port, permits) = (node.port, permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("open");
            let t = Instant::now();
            // Keep reading: pings are answered and the socket stays open.
            let keeper = match server {
                Idle::Camsig => {
                    let (mut ws, _) = ws::connect(port, &token(&format!("idle-{}", j % 1000)), "?presence=false").await?;
                    tokio::spawn(async move { while next_json(&mut ws).await.is_some() {} })
                }
                Idle::PeerJs => {
                    let mut peer = peerjs::connect(port, &format!("idle-{j}")).await?;
                    tokio::spawn(async move { while peer.next_json().await.is_some() {} })
                }
            };
            anyhow::Ok((t.elapsed(), keeper))
        }));
    }
    let (mut hist, mut keepers, mut failed, mut first_error) = (histogram(), Vec::new(), 0, None);
    for t in tasks {
        match t.await? {
            Ok((took, keeper)) => {
                let _ = hist.record(micros(took));
                keepers.push(keeper);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = node.rss_kib();
    let opened = keepers.len();
    for k in keepers {
        k.abort();
    }
    // Let the node see the closes before the next scenario.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(IdleResult {
        system: match server {
            Idle::Camsig => "camsig",
            Idle::PeerJs => "peerjs",
        },
        connections: n,
        opened,
        rss_baseline_kib: baseline,
        rss_after_kib: after,
        per_connection_kib: after.saturating_sub(baseline) as f64 / opened.max(1) as f64,
        connect_per_s: opened as f64 / connect_s,
        handshake: Percentiles::of(&hist),
        failed,
        first_error,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct StalledResult {
    /// "reading" or "stalled".
    pub readers: String,
    pub sessions: usize,
    pub events_each: usize,
    pub event_kib: usize,
    pub sent_mib: f64,
    pub rss_baseline_kib: u64,
    pub rss_peak_kib: u64,
    pub grew_mib: f64,
    pub max_queued: usize,
}

/// `n` viewers on one fresh node get `events` offers of `kib` KiB each, while
/// they read, or while they do not read at all (4 KiB receive buffers; the
/// node's `ws.send_buffer_bytes` small): the node's RSS growth in each case.
pub async fn stalled(cluster: &Cluster, n: usize, events: usize, kib: usize, stall: bool, max_queued: usize) -> Result<StalledResult> {
    let node = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let base = node.http();
    post(&http, &base, "cameraOn", &token("st-owner"), json!({})).await?;
    let mut rooms = Vec::with_capacity(n);
    let mut held = Vec::new();
    let mut readers = Vec::new();
    for j in 0..n {
        let user = format!("st-{j}");
        let (mut ws, _) = ws::connect_small(node.port, &token(&user), "?presence=false").await?;
        let show = post(&http, &base, "cameraShow", &token(&user), json!({"user_id": "st-owner"})).await?;
        rooms.push(show["connection"]["room_id"].as_str().context("a room")?.to_owned());
        if stall {
            held.push(ws);
        } else {
            readers.push(tokio::spawn(async move { while next_json(&mut ws).await.is_some() {} }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = node.rss_kib();
    let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n");
    let pad = format!("a=x-pad:{}\r\n", "0123456789".repeat(400));
    while sdp.len() < kib * 1024 {
        sdp.push_str(&pad);
    }
    let offer = json!({"type": "offer", "sdp": sdp});
    let owner = token("st-owner");
    let mut peak = baseline;
    for _ in 0..events {
        let posts = rooms.iter().map(|room| post(&http, &base, "offer", &owner, json!({"room_id": room, "offer": offer})));
        for r in futures_util::future::join_all(posts).await {
            r?;
        }
        peak = peak.max(node.rss_kib());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    peak = peak.max(node.rss_kib());
    for r in readers {
        r.abort();
    }
    drop(held);
    Ok(StalledResult {
        readers: if stall { "stalled" } else { "reading" }.into(),
        sessions: n,
        events_each: events,
        event_kib: kib,
        sent_mib: (n * events * kib) as f64 / 1024.0,
        rss_baseline_kib: baseline,
        rss_peak_kib: peak,
        grew_mib: peak.saturating_sub(baseline) as f64 / 1024.0,
        max_queued,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlResult {
    pub rate_per_s: u64,
    pub sent: u64,
    pub received: u64,
    pub latency: Percentiles,
}

/// Raw Redis PUBLISH to SUBSCRIBE on the same box: the floor under camsig's cross-node latency.
pub async fn control(cluster: &Cluster, rate: u64, duration: Duration) -> Result<ControlResult> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", cluster.redis.port))?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("bench-control").await?;
    let conn = client.get_multiplexed_async_connection().await?;
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let schedule = Schedule::now(rate);
    let receiver = tokio::spawn(async move {
        let mut hist = histogram();
        let mut stream = pubsub.on_message();
        let mut got = 0;
        while got < total {
            let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await else { break };
            let k: u64 = msg.get_payload().unwrap_or(0);
            got += 1;
            let _ = hist.record(micros(Instant::now().saturating_duration_since(schedule.due(k))));
        }
        (got, hist)
    });
    schedule
        .run(total, |k| {
            let mut c = conn.clone();
            tokio::spawn(async move {
                let _: redis::RedisResult<()> = redis::cmd("PUBLISH").arg("bench-control").arg(k).query_async(&mut c).await;
            });
        })
        .await;
    let (got, hist) = receiver.await?;
    Ok(ControlResult { rate_per_s: rate, sent: total, received: got, latency: Percentiles::of(&hist) })
}
