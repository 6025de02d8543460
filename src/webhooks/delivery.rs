//! The node's webhook deliverer: one task that holds the shards it can,
//! reads their queues for each receiver, and POSTs each webhook, one in
//! flight per user and receiver (so a user's webhooks arrive in order) and
//! at most `webhooks.max_in_flight` per receiver. Acks on a 2xx; retries
//! anything else with exponential backoff and jitter; buries what fails
//! `webhooks.max_attempts` times. Memory is bounded by
//! `webhooks.max_buffered` per receiver: the rest waits in the store.
//!
//! Nothing here touches a call's path: a slow or dead receiver costs the
//! calls nothing but the one stream append their step already made.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::HookEntry;

/// How long a shard's delivery is held without renewal: a node that dies
/// holding it is taken over after this.
const HOLD: Duration = Duration::from_secs(3);
const RENEW_EVERY: Duration = Duration::from_millis(1000);
/// How often the queues are read when no local step said there is more.
const POLL_EVERY: Duration = Duration::from_millis(100);
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// How often a holder claims again what any consumer left pending: a node
/// that kept reading for a moment after its hold lapsed leaves entries in
/// its own pending list, which nobody else would ever claim.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);
/// Entries read at once.
const PAGE: usize = 256;

/// One webhook waiting for one receiver.
struct Item {
    entry: HookEntry,
    attempts: u32,
    due: Instant,
    in_flight: bool,
    /// When the change happened (the store's clock), for the latency metric.
    at_ms: Option<i64>,
}

/// One receiver's webhooks of one shard, queued per user.
#[derive(Default)]
struct Lane {
    queues: HashMap<String, VecDeque<Item>>,
    /// What a previous holder left has been taken over.
    taken_over: bool,
    acks: Vec<String>,
}

struct Receiver {
    url: String,
    /// As `/metrics` names it.
    label: String,
    group: String,
    lanes: HashMap<u16, Lane>,
    buffered: usize,
    in_flight: usize,
}

/// What a delivery came to.
struct Done {
    receiver: usize,
    shard: u16,
    subject: String,
    outcome: Result<(), String>,
}

/// Runs until the node drains (then it lets its shards go) or the task is dropped.
pub async fn run(service: Service, metrics: Arc<Metrics>) {
    let settings = service.settings.webhooks.clone();
    let Some(secret) = settings.secret.as_ref().map(|s| secrecy::ExposeSecret::expose_secret(s).as_bytes().to_vec()) else { return };
    if settings.urls.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("camsig/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; none will be delivered by this node");
            return;
        }
    };
    let store = service.store.clone();
    let holder = service.lease().to_owned();
    let shards = store.hook_shards();
    let mut receivers: Vec<Receiver> =
        settings.urls.iter().map(|u| Receiver { url: u.clone(), label: super::label_of(u), group: super::group_of(u), lanes: HashMap::new(), buffered: 0, in_flight: 0 }).collect();
    let groups: Vec<String> = receivers.iter().map(|r| r.group.clone()).collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut held: Vec<bool> = vec![false; shards as usize];
    let (mut renewed, mut trimmed, mut reclaimed) = (Instant::now() - RENEW_EVERY, Instant::now(), Instant::now());
    // The embedded store: nobody else will deliver what this node holds, so a drain sends it first.
    let alone = service.settings.redis.url.is_none() && service.settings.redis.cluster_urls.is_empty();
    let mut drain_until: Option<Instant> = None;
    let recorded = service.hooks_recorded.clone();
    loop {
        if service.is_draining() {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + service.settings.server.drain / 2);
            let left: usize = receivers.iter().map(|r| r.buffered).sum();
            if !alone || left == 0 || Instant::now() >= until {
                for n in (0..shards).filter(|n| held[*n as usize]) {
                    let _ = store.release_hooks(n, &holder).await;
                }
                tracing::info!(left, "webhooks: shards let go for the drain");
                service.hooks_drained.notify_one();
                return;
            }
        }
        if reclaimed.elapsed() >= RECLAIM_EVERY {
            reclaimed = Instant::now();
            for r in receivers.iter_mut() {
                for lane in r.lanes.values_mut() {
                    lane.taken_over = false;
                }
            }
        }
        if renewed.elapsed() >= RENEW_EVERY {
            renewed = Instant::now();
            for n in 0..shards {
                let now_held = store.hold_hooks(n, &holder, HOLD).await.unwrap_or(false);
                if held[n as usize] && !now_held {
                    // Another node has it now: what this one holds is its to deliver.
                    tracing::warn!(shard = n, "webhooks: lost a shard's delivery to another node");
                    for r in &mut receivers {
                        if let Some(lane) = r.lanes.remove(&n) {
                            r.buffered -= lane.queues.values().map(VecDeque::len).sum::<usize>();
                        }
                    }
                }
                held[n as usize] = now_held;
            }
        }
        // Read what there is room for.
        let max_buffered = settings.max_buffered;
        for r in receivers.iter_mut() {
            for n in (0..shards).filter(|n| held[*n as usize]) {
                let room = max_buffered.saturating_sub(r.buffered).min(PAGE);
                if room == 0 {
                    break;
                }
                let lane = r.lanes.entry(n).or_default();
                let take_over = !lane.taken_over;
                match store.read_hooks(n, &r.group, &holder, room, take_over).await {
                    Ok(entries) => {
                        if take_over && entries.len() < room {
                            lane.taken_over = true;
                        }
                        for e in entries {
                            if e.only.as_ref().is_some_and(|g| *g != r.group) {
                                lane.acks.push(e.id);
                                continue;
                            }
                            let at_ms = serde_json::from_str::<serde_json::Value>(&e.body)
                                .ok()
                                .and_then(|v| v["at"].as_str().and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok()))
                                .map(|t| t.timestamp_millis());
                            let q = lane.queues.entry(e.subject.clone()).or_default();
                            // Taken over after this node read it itself: already queued.
                            if q.iter().any(|i| i.entry.id == e.id) {
                                continue;
                            }
                            q.push_back(Item { entry: e, attempts: 0, due: Instant::now(), in_flight: false, at_ms });
                            r.buffered += 1;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, shard = n, "webhooks: reading the queue failed"),
                }
            }
            metrics.webhooks_buffered.with_label_values(&[&r.label]).set(r.buffered as i64);
        }
        // Start what is due: each user's first webhook, a few at a time.
        let now = Instant::now();
        for (ri, r) in receivers.iter_mut().enumerate() {
            for (n, lane) in r.lanes.iter_mut() {
                for (subject, q) in lane.queues.iter_mut() {
                    if r.in_flight >= settings.max_in_flight {
                        break;
                    }
                    let Some(head) = q.front_mut() else { continue };
                    if head.in_flight || head.due > now {
                        continue;
                    }
                    head.in_flight = true;
                    r.in_flight += 1;
                    let (client, url, body, secret, tx) = (client.clone(), r.url.clone(), head.entry.body.clone(), secret.clone(), done_tx.clone());
                    let (shard, subject) = (*n, subject.clone());
                    actix_web::rt::spawn(async move {
                        let outcome = post(&client, &url, &secret, body).await;
                        let _ = tx.send(Done { receiver: ri, shard, subject, outcome });
                    });
                }
            }
        }
        if trimmed.elapsed() >= TRIM_EVERY {
            trimmed = Instant::now();
            for n in (0..shards).filter(|n| held[*n as usize]) {
                if let Err(e) = store.trim_hooks(n, &groups).await {
                    tracing::debug!(error = %e, "webhooks: trimming failed");
                }
            }
        }
        // Wait for a delivery to end, a local step to record more, or the poll.
        let wait = tokio::time::sleep(POLL_EVERY);
        let got = tokio::select! {
            d = done_rx.recv() => d,
            _ = recorded.notified() => None,
            _ = wait => None,
        };
        let mut finished: Vec<Done> = got.into_iter().collect();
        while let Ok(d) = done_rx.try_recv() {
            finished.push(d);
        }
        for d in finished {
            finish(&service, &metrics, &settings, &mut receivers, d).await;
        }
        // Acks at once, in one round trip per lane: before the next read, whose
        // periodic claim would otherwise take a delivered webhook back.
        for r in receivers.iter_mut() {
            for (n, lane) in r.lanes.iter_mut().filter(|(_, l)| !l.acks.is_empty()) {
                let acks = std::mem::take(&mut lane.acks);
                if let Err(e) = store.ack_hooks(*n, &r.group, &acks).await {
                    // Unacked, it is delivered again by whoever holds the shard next: at least once.
                    tracing::debug!(error = %e, "webhooks: ack failed");
                }
            }
        }
    }
}

/// One POST: Ok on a 2xx, else why not.
async fn post(client: &reqwest::Client, url: &str, secret: &[u8], body: String) -> Result<(), String> {
    let t = chrono::Utc::now().timestamp();
    let sig = super::signature(secret, t, &body);
    let sent = client.post(url).header("content-type", "application/json").header("camsig-signature", sig).body(body).send().await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("connection refused or failed".into()),
        Err(e) => Err(format!("{e}")),
    }
}

async fn finish(service: &Service, metrics: &Metrics, settings: &crate::config::WebhookSettings, receivers: &mut [Receiver], d: Done) {
    let Some(r) = receivers.get_mut(d.receiver) else { return };
    r.in_flight = r.in_flight.saturating_sub(1);
    // The shard was lost meanwhile: its new holder delivers what is left.
    let Some(lane) = r.lanes.get_mut(&d.shard) else { return };
    let Some(q) = lane.queues.get_mut(&d.subject) else { return };
    let Some(head) = q.front_mut().filter(|h| h.in_flight) else { return };
    head.in_flight = false;
    head.attempts += 1;
    match d.outcome {
        Ok(()) => {
            metrics.webhooks_delivered.with_label_values(&[&r.label]).inc();
            if let Some(at) = head.at_ms {
                let waited = chrono::Utc::now().timestamp_millis() - at;
                metrics.webhook_delivery_seconds.observe(waited.max(0) as f64 / 1000.0);
            }
            let id = head.entry.id.clone();
            lane.acks.push(id);
        }
        Err(why) if head.attempts >= settings.max_attempts => {
            metrics.webhooks_failed.with_label_values(&[&r.label]).inc();
            tracing::warn!(receiver = %r.label, attempts = head.attempts, error = %why, "webhooks: giving up; kept in the dead letters");
            if let Err(e) = service.store.bury_hook(d.shard, &r.group, &r.url, &head.entry, &why, head.attempts).await {
                // Not buried: left pending, so it is tried again later rather than lost.
                tracing::warn!(error = %e, "webhooks: could not keep a dead letter; will try again");
                head.due = Instant::now() + backoff(settings.backoff, settings.max_backoff, head.attempts);
                return;
            }
        }
        Err(why) => {
            metrics.webhooks_retried.with_label_values(&[&r.label]).inc();
            tracing::debug!(receiver = %r.label, attempts = head.attempts, error = %why, "webhooks: will try again");
            head.due = Instant::now() + backoff(settings.backoff, settings.max_backoff, head.attempts);
            return;
        }
    }
    q.pop_front();
    r.buffered = r.buffered.saturating_sub(1);
    if q.is_empty() {
        lane.queues.remove(&d.subject);
    }
}

/// The wait after `attempts` tries: `first` doubled each time, times a jitter
/// of 0.5 to 1.5, at most `max`.
pub fn backoff(first: Duration, max: Duration, attempts: u32) -> Duration {
    let base = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    base.mul_f64(rand::random_range(0.5..1.5)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(300));
        for a in 1..6u32 {
            let b = backoff(first, max, a);
            let base = 100.0 * f64::from(1u32 << (a - 1));
            assert!(b.as_secs_f64() * 1000.0 >= base * 0.5 - 1.0 && b.as_secs_f64() * 1000.0 <= base * 1.5 + 1.0, "{a}: {b:?}");
        }
        assert!(backoff(first, max, 40) <= max);
        assert!(backoff(first, Duration::from_secs(2), 12) <= Duration::from_secs(2));
    }
}
