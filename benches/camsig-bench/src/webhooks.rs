//! The `webhooks` scenario (issue: "webhook throughput and delivery latency
//! p50/p99 at 1k changes/s, and the cost on the calls' own latency").
//!
//! The bench is the receiver: an HTTP/1.1 server (hyper) on 127.0.0.1:0, on
//! its own thread and runtime so that the load it generates does not delay
//! its clock, answers 200 at once and records, per request, when it came
//! (wall clock, µs) and the body's `id`, `type`, `at` and user; one request
//! in `SIGNATURE_SAMPLE` has its `Camsig-Signature` checked.
//!
//! Redis and two fresh nodes that POST every change to it; `users` users, each
//! holding one `/ws?presence=false` socket (so no grace period turns a camera
//! off behind the load's back); then an open-loop schedule of camera toggles:
//! toggle `k` is due at `start + k / rate`, goes to user `k % users`, and each
//! user's toggles are sent one after another (so each one is a real change,
//! cameraOn then cameraOff), alternating between the nodes. Measured:
//!
//! - the calls: from the scheduled send to the whole HTTP answer;
//! - the webhooks: each change (its answer's user and `version`) against the
//!   `camera.*` webhook with that user and version: receipt − `at` (the
//!   change's time on Redis's clock, ms precision, so up to 1 ms too much),
//!   receipt − the call's scheduled send, owed webhooks received per second,
//!   missing after a drain (nothing new for `QUIET`), duplicates (an `id`
//!   again), and out of order per user (a lower `version` after a higher);
//! - the same load on fresh nodes with no webhooks, for the calls' latency
//!   there: the difference is what webhooks cost the calls;
//! - a saturation ramp (full plan only), webhooks on, until delivery p99
//!   goes over `SATURATED_P99_MS` or calls fail.
//!
//! The bench generates the load and receives the webhooks on the same two
//! cores as Redis and both nodes: its numbers include that contention.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Proc, metric_total, token};
use crate::scenarios::{Percentiles, histogram, http_client, micros};
use crate::ws::{self, next_json};

/// The nodes' `webhooks.secret`.
const SECRET: &str = "camsig-bench-webhook-secret";
/// One request in this many has its signature checked.
const SIGNATURE_SAMPLE: u64 = 16;
/// The drain ends once no owed webhook has come for this long.
const QUIET: Duration = Duration::from_secs(5);
/// A saturation step with delivery p99 over this is the last.
const SATURATED_P99_MS: f64 = 1000.0;

/// What the scenario does: users, the offered rate and for how long, a
/// warm-up at that rate (discarded), then the saturation rates and their step.
pub struct Plan {
    pub users: usize,
    pub rate: u64,
    pub duration: Duration,
    pub warmup: Duration,
    pub saturation: Vec<u64>,
    pub saturation_for: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhooksResult {
    /// "on" (webhooks to the bench's receiver), "off" (the same load on fresh
    /// nodes with no webhooks), or "saturation" (a ramp step, webhooks on).
    pub step: &'static str,
    pub users: usize,
    pub offered_per_s: u64,
    pub duration_s: f64,
    pub calls: u64,
    /// Calls not answered 2xx (or not answered in time).
    pub call_errors: u64,
    /// The errors by kind: `HTTP <status> <error.code>`, or what the client saw.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub call_error_kinds: BTreeMap<String, u64>,
    /// Calls that turned the camera the other way: one webhook owed each.
    pub changes: u64,
    /// Calls answered 2xx that changed nothing (should be 0).
    pub unchanged: u64,
    /// From the call's scheduled send to its whole HTTP answer.
    pub call_latency: Percentiles,
    /// What the receiver got; null with webhooks off.
    pub webhooks: Option<Delivery>,
    /// On the "on" step: its call latency minus the "off" step's, ms.
    pub call_cost_ms: Option<Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// Owed webhooks received (first receipt of each).
    pub received: u64,
    /// Owed webhooks received per second, from the first call's schedule to the last receipt.
    pub received_per_s: f64,
    /// Receipt − the body's `at` (the change's time on Redis's clock, ms precision).
    pub latency: Percentiles,
    /// Receipt − the call's scheduled send.
    pub since_call: Percentiles,
    /// Owed webhooks that had not come when the drain ended.
    pub missing: u64,
    /// Requests with an `id` the receiver had already had.
    pub duplicates: u64,
    /// Owed webhooks with a lower `version` than the user's last one received.
    pub out_of_order: u64,
    /// Other requests in the step: other types (`user.online`, ...), or changes of no call of it.
    pub other: u64,
    pub signatures_checked: u64,
    pub bad_signatures: u64,
    /// From the last call's answer to the last owed webhook.
    pub drain_s: f64,
    /// Both nodes' `camsig_webhooks_retried_total` and `_failed_total` over the step.
    pub retried: Option<f64>,
    pub failed: Option<f64>,
    /// `camsig_webhook_delivery_seconds` over the step, as the nodes saw it (change → 2xx): its mean.
    pub node_delivery_mean_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// The whole scenario: webhooks on, the same load with them off, then the
/// saturation ramp on fresh nodes.
pub async fn run(camsig: &Path, plan: &Plan) -> Result<Vec<WebhooksResult>> {
    let mut out = Vec::new();
    let mut on = {
        let mut receiver = Receiver::start()?;
        let cluster = start(camsig, Some(&receiver)).await?;
        eprintln!("webhooks: redis :{}, nodes :{} and :{}, receiver {}", cluster.redis.port, cluster.nodes[0].port, cluster.nodes[1].port, receiver.url);
        let mut users = Users::setup(&cluster, plan.users).await?;
        step(&mut users, Some(&mut receiver), &cluster.nodes, plan.rate, plan.warmup, "warm-up").await;
        let r = step(&mut users, Some(&mut receiver), &cluster.nodes, plan.rate, plan.duration, "on").await;
        print(&r);
        r
    };
    let off = {
        let cluster = start(camsig, None).await?;
        let mut users = Users::setup(&cluster, plan.users).await?;
        step(&mut users, None, &cluster.nodes, plan.rate, plan.warmup, "warm-up").await;
        let r = step(&mut users, None, &cluster.nodes, plan.rate, plan.duration, "off").await;
        print(&r);
        r
    };
    let (a, b) = (&on.call_latency, &off.call_latency);
    let cost = Cost { p50_ms: a.p50_ms - b.p50_ms, p99_ms: a.p99_ms - b.p99_ms, p999_ms: a.p999_ms - b.p999_ms };
    eprintln!("webhooks cost on calls at {}/s: p50 {:+.3} ms, p99 {:+.3} ms, p99.9 {:+.3} ms (on − off)", plan.rate, cost.p50_ms, cost.p99_ms, cost.p999_ms);
    on.call_cost_ms = Some(cost);
    out.push(on);
    out.push(off);
    if !plan.saturation.is_empty() {
        let mut receiver = Receiver::start()?;
        let cluster = start(camsig, Some(&receiver)).await?;
        let mut users = Users::setup(&cluster, plan.users).await?;
        step(&mut users, Some(&mut receiver), &cluster.nodes, plan.saturation[0], plan.warmup, "warm-up").await;
        for &rate in &plan.saturation {
            let r = step(&mut users, Some(&mut receiver), &cluster.nodes, rate, plan.saturation_for, "saturation").await;
            print(&r);
            let p99 = r.webhooks.as_ref().map_or(0.0, |d| d.latency.p99_ms);
            let stop = p99 > SATURATED_P99_MS || r.call_errors > 0;
            out.push(r);
            if stop {
                break;
            }
        }
    }
    Ok(out)
}

/// Redis and two fresh nodes, POSTing to `receiver` if given.
async fn start(camsig: &Path, receiver: Option<&Receiver>) -> Result<Cluster> {
    match receiver {
        Some(r) => Cluster::start_with(camsig, 2, &[("CAMSIG__WEBHOOKS__URLS", &r.url), ("CAMSIG__WEBHOOKS__SECRET", SECRET)]).await,
        None => Cluster::start(camsig, 2).await,
    }
}

fn print(r: &WebhooksResult) {
    let l = &r.call_latency;
    let calls = format!(
        "{:<10} {:>5}/s, {} users: calls p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        r.step, r.offered_per_s, r.users, l.p50_ms, l.p99_ms, l.p999_ms, r.call_errors
    );
    let calls = if r.call_error_kinds.is_empty() { calls } else { format!("{calls} {:?}", r.call_error_kinds) };
    match &r.webhooks {
        None => eprintln!("webhooks {calls}; no webhooks"),
        Some(d) => eprintln!(
            "webhooks {calls}; webhooks {} of {} ({:.0}/s), delivery p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, missing {}, dup {}, out of order {}, bad signatures {} of {}, retried {}",
            d.received,
            r.changes,
            d.received_per_s,
            d.latency.p50_ms,
            d.latency.p99_ms,
            d.latency.p999_ms,
            d.missing,
            d.duplicates,
            d.out_of_order,
            d.bad_signatures,
            d.signatures_checked,
            d.retried.map_or("n/a".to_owned(), |n| format!("{n:.0}"))
        ),
    }
}

/// One request the receiver answered.
struct Receipt {
    /// Wall clock, µs since the epoch.
    got_us: i64,
    id: String,
    kind: String,
    /// The body's `at`, µs since the epoch.
    at_us: Option<i64>,
    user: String,
    version: Option<u64>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    checked: AtomicU64,
    bad: AtomicU64,
}

/// The webhook receiver, on its own thread with a current-thread runtime.
pub struct Receiver {
    pub url: String,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    counts: Arc<Counts>,
    /// Every `id` received so far, for duplicates across steps.
    seen: HashSet<String>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://127.0.0.1:{}/hooks", listener.local_addr()?.port());
        let (tx, receipts) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let c = counts.clone();
        std::thread::Builder::new().name("webhook-receiver".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    _ = serve(listener, tx, c) => {}
                    _ = stopped => {}
                }
            });
            // The runtime drops here, and every connection's task with it.
        })?;
        Ok(Receiver { url, receipts, counts, seen: HashSet::new(), stop: Some(stop) })
    }
}

async fn serve(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Receipt>, counts: Arc<Counts>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tx, counts) = (tx.clone(), counts.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, tx.clone(), counts.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(req: Request<Incoming>, tx: mpsc::UnboundedSender<Receipt>, counts: Arc<Counts>) -> Result<Response<Full<Bytes>>, Infallible> {
    let signature = req.headers().get("camsig-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(res);
    };
    let got_us = chrono::Utc::now().timestamp_micros();
    if counts.requests.fetch_add(1, Ordering::Relaxed).is_multiple_of(SIGNATURE_SAMPLE) {
        counts.checked.fetch_add(1, Ordering::Relaxed);
        if !signed(SECRET.as_bytes(), signature.as_deref(), &body) {
            counts.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let at_us = v["at"].as_str().and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok()).map(|t| t.timestamp_micros());
    let _ = tx.send(Receipt {
        got_us,
        id: v["id"].as_str().unwrap_or_default().to_owned(),
        kind: v["type"].as_str().unwrap_or_default().to_owned(),
        at_us,
        user: v["data"]["user_id"].as_str().unwrap_or_default().to_owned(),
        version: v["data"]["version"].as_u64(),
    });
    Ok(Response::new(Full::new(Bytes::new())))
}

/// Whether `header` (`t=<unix s>,v1=<hex>`) is the HMAC-SHA256 of `"<t>.<body>"`.
fn signed(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let Some(header) = header else { return false };
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let Some(want) = unhex(v1) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&want).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// What a toggle came to.
enum Outcome {
    /// The camera turned: the user's new `version`.
    Changed(u64),
    Same,
    /// Not a 2xx with a user: why.
    Failed(String),
}

struct Answer {
    k: u64,
    user: usize,
    due: Instant,
    at: Instant,
    outcome: Outcome,
}

/// `n` users, each holding a socket on node `u % 2` and toggling its camera
/// through a sender of its own, one call after another.
struct Users {
    queues: Vec<mpsc::UnboundedSender<(u64, Instant)>>,
    answers: mpsc::UnboundedReceiver<Answer>,
    pending: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    next_k: u64,
}

impl Drop for Users {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// User `u` is `wh-u{u}`.
const USER_PREFIX: &str = "wh-u";

fn user_name(u: usize) -> String {
    format!("{USER_PREFIX}{u}")
}

impl Users {
    async fn setup(cluster: &Cluster, n: usize) -> Result<Users> {
        let http = http_client()?;
        let (atx, answers) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicU64::new(0));
        let mut users = Users { queues: Vec::with_capacity(n), answers, pending: pending.clone(), tasks: Vec::with_capacity(2 * n), next_k: 0 };
        // Per node: its cameraOn and cameraOff URLs.
        let urls: Arc<Vec<[String; 2]>> = Arc::new(cluster.nodes.iter().map(|p| [format!("{}/webrtc/cameraOn", p.http()), format!("{}/webrtc/cameraOff", p.http())]).collect());
        for u in 0..n {
            let t = token(&user_name(u));
            let (mut ws, _) = ws::connect(cluster.nodes[u % cluster.nodes.len()].port, &t, "?presence=false").await.context("a user's socket")?;
            users.tasks.push(tokio::spawn(async move { while next_json(&mut ws).await.is_some() {} }));
            let (qtx, mut qrx) = mpsc::unbounded_channel::<(u64, Instant)>();
            let (http, urls, atx, pending) = (http.clone(), urls.clone(), atx.clone(), pending.clone());
            users.tasks.push(tokio::spawn(async move {
                // A new user's camera is off; each answer says what it is now.
                let (mut on, mut j) = (false, u);
                while let Some((k, due)) = qrx.recv().await {
                    let url = &urls[j % urls.len()][usize::from(on)];
                    j += 1;
                    let reply = async {
                        let res = http.post(url).bearer_auth(&t).json(&json!({})).send().await.map_err(|e| if e.is_timeout() { "timed out".to_owned() } else { "not sent or no answer".to_owned() })?;
                        let status = res.status();
                        let v: Value = res.json().await.unwrap_or_default();
                        if !status.is_success() {
                            return Err(format!("HTTP {} {}", status.as_u16(), v["error"]["code"].as_str().unwrap_or_default()));
                        }
                        let user = (v["user"]["camera"].as_str().map(|c| c == "on"), v["user"]["version"].as_u64());
                        match user {
                            (Some(now_on), Some(version)) => Ok((now_on, version)),
                            _ => Err(format!("HTTP {} with no user", status.as_u16())),
                        }
                    }
                    .await;
                    let at = Instant::now();
                    let outcome = match reply {
                        Ok((now_on, version)) if now_on != on => {
                            on = now_on;
                            Outcome::Changed(version)
                        }
                        Ok(_) => Outcome::Same,
                        Err(why) => Outcome::Failed(why),
                    };
                    let _ = atx.send(Answer { k, user: u, due, at, outcome });
                    pending.fetch_sub(1, Ordering::Relaxed);
                }
            }));
            users.queues.push(qtx);
        }
        // The sockets' own `user.online` webhooks go out before the first step.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(users)
    }
}

/// Open loop: toggle `i` is due at `start + i / rate`, handed to its user's
/// sender then, whatever happened to earlier ones.
async fn open_loop(start: Instant, rate: u64, total: u64, mut fire: impl FnMut(u64, Instant)) {
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate as f64);
    let mut i = 0;
    while i < total {
        let now = Instant::now();
        while i < total && due(i) <= now {
            fire(i, due(i));
            i += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// The Prometheus totals a step reads before and after, over both nodes.
const RETRIED: &str = "camsig_webhooks_retried_total";
const FAILED: &str = "camsig_webhooks_failed_total";
const DELIVERY_SUM: &str = "camsig_webhook_delivery_seconds_sum";
const DELIVERY_COUNT: &str = "camsig_webhook_delivery_seconds_count";

async fn totals(nodes: &[Proc]) -> [Option<f64>; 4] {
    [metric_total(nodes, RETRIED).await, metric_total(nodes, FAILED).await, metric_total(nodes, DELIVERY_SUM).await, metric_total(nodes, DELIVERY_COUNT).await]
}

/// One step: `rate` toggles a second for `duration`, then every answer, then
/// (with a receiver) the owed webhooks until none has come for `QUIET`.
async fn step(users: &mut Users, receiver: Option<&mut Receiver>, nodes: &[Proc], rate: u64, duration: Duration, name: &'static str) -> WebhooksResult {
    while users.answers.try_recv().is_ok() {}
    let before = match &receiver {
        Some(_) => Some(totals(nodes).await),
        None => None,
    };
    let checked_before = receiver.as_ref().map(|r| (r.counts.checked.load(Ordering::Relaxed), r.counts.bad.load(Ordering::Relaxed)));
    let n = users.queues.len() as u64;
    let base = users.next_k;
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let wall0_us = chrono::Utc::now().timestamp_micros();
    open_loop(start, rate, total, |i, due| {
        users.pending.fetch_add(1, Ordering::Relaxed);
        let _ = users.queues[((base + i) % n) as usize].send((base + i, due));
    })
    .await;
    users.next_k = base + total;
    // Every call is answered (a backlog is latency, not an error), up to a limit.
    let deadline = start + duration * 10 + Duration::from_secs(30);
    while users.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut calls, mut failed, mut unchanged) = (histogram(), BTreeMap::<String, u64>::new(), 0u64);
    let mut owed: HashMap<(usize, u64), i64> = HashMap::new();
    let mut answered = 0u64;
    let mut last_answer = start;
    while let Ok(a) = users.answers.try_recv() {
        if a.k < base {
            continue;
        }
        answered += 1;
        last_answer = last_answer.max(a.at);
        let _ = calls.record(micros(a.at.saturating_duration_since(a.due)));
        match a.outcome {
            Outcome::Changed(version) => {
                let due_us = wall0_us + a.due.saturating_duration_since(start).as_micros() as i64;
                owed.insert((a.user, version), due_us);
            }
            Outcome::Same => unchanged += 1,
            Outcome::Failed(why) => *failed.entry(why).or_default() += 1,
        }
    }
    let mut r = WebhooksResult {
        step: name,
        users: n as usize,
        offered_per_s: rate,
        duration_s: duration.as_secs_f64(),
        calls: total,
        call_errors: failed.values().sum::<u64>() + total.saturating_sub(answered),
        call_error_kinds: failed,
        changes: owed.len() as u64,
        unchanged,
        call_latency: Percentiles::of(&calls),
        webhooks: None,
        call_cost_ms: None,
    };
    let Some(receiver) = receiver else { return r };

    let changes = r.changes;
    let mut t = Tally { owed, latency: histogram(), since_call: histogram(), received: 0, duplicates: 0, out_of_order: 0, other: 0, last_version: HashMap::new(), last_got_us: wall0_us };
    // What came during the load is waiting in the channel; then the drain,
    // until every owed webhook is in, or none has come for `QUIET`.
    let (mut last_new, drain_cap) = (Instant::now(), Instant::now() + duration * 10 + Duration::from_secs(30));
    while t.received < changes && Instant::now() < drain_cap {
        let left = QUIET.saturating_sub(last_new.elapsed());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, receiver.receipts.recv()).await {
            Ok(Some(rc)) => {
                if t.take(rc, &mut receiver.seen) {
                    last_new = Instant::now();
                }
            }
            _ => break,
        }
    }
    // What else came by now (requests of no call of this step) counts as other.
    while let Ok(rc) = receiver.receipts.try_recv() {
        t.take(rc, &mut receiver.seen);
    }
    let last_answer_us = wall0_us + last_answer.saturating_duration_since(start).as_micros() as i64;
    let after = totals(nodes).await;
    let before = before.unwrap_or([None; 4]);
    let delta = |i: usize| Some(after[i]? - before[i]?);
    let (checked0, bad0) = checked_before.unwrap_or((0, 0));
    let node_delivery_mean_ms = match (delta(2), delta(3)) {
        (Some(sum), Some(count)) if count > 0.0 => Some(sum / count * 1000.0),
        _ => None,
    };
    let span_s = ((t.last_got_us - wall0_us) as f64 / 1e6).max(duration.as_secs_f64());
    r.webhooks = Some(Delivery {
        received: t.received,
        received_per_s: t.received as f64 / span_s,
        latency: Percentiles::of(&t.latency),
        since_call: Percentiles::of(&t.since_call),
        missing: changes - t.received,
        duplicates: t.duplicates,
        out_of_order: t.out_of_order,
        other: t.other,
        signatures_checked: receiver.counts.checked.load(Ordering::Relaxed) - checked0,
        bad_signatures: receiver.counts.bad.load(Ordering::Relaxed) - bad0,
        drain_s: (t.last_got_us - last_answer_us).max(0) as f64 / 1e6,
        retried: delta(0),
        failed: delta(1),
        node_delivery_mean_ms,
    });
    r
}

/// A step's receipts against the changes its calls made.
struct Tally {
    /// Changes not yet matched: (user, version) → the call's scheduled send, µs since the epoch.
    owed: HashMap<(usize, u64), i64>,
    latency: Histogram<u64>,
    since_call: Histogram<u64>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    other: u64,
    last_version: HashMap<usize, u64>,
    last_got_us: i64,
}

impl Tally {
    /// Counts one receipt; true if it was an owed webhook, first time.
    fn take(&mut self, rc: Receipt, seen: &mut HashSet<String>) -> bool {
        if !seen.insert(rc.id.clone()) {
            self.duplicates += 1;
            return false;
        }
        let user = rc.user.strip_prefix(USER_PREFIX).and_then(|u| u.parse::<usize>().ok());
        let owed = match (user, rc.version) {
            (Some(u), Some(v)) if rc.kind.starts_with("camera.") => self.owed.remove(&(u, v)).map(|due_us| (u, v, due_us)),
            _ => None,
        };
        let Some((u, v, due_us)) = owed else {
            self.other += 1;
            return false;
        };
        self.received += 1;
        if self.last_version.get(&u).is_some_and(|l| v < *l) {
            self.out_of_order += 1;
        }
        self.last_version.insert(u, v);
        self.last_got_us = self.last_got_us.max(rc.got_us);
        let _ = self.since_call.record((rc.got_us - due_us).max(1) as u64);
        if let Some(at) = rc.at_us {
            let _ = self.latency.record((rc.got_us - at).max(1) as u64);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_against_camsigs_own_vector() {
        // docs: `printf '1700000000.{}' | openssl dgst -sha256 -hmac 0123456789abcdef`, as camsig's own test.
        let good = "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e";
        assert!(signed(b"0123456789abcdef", Some(good), b"{}"));
        assert!(!signed(b"0123456789abcdef", Some(good), b"{ }"));
        assert!(!signed(b"0123456789abcdef", Some("t=1700000000,v1=zz"), b"{}"));
        assert!(!signed(b"0123456789abcdef", None, b"{}"));
    }
}
