//! The `presence` scenario: everyone-broadcast against watch lists (issue
//! #25, "Presence at scale"). `sessions` WebSockets over both nodes of the
//! shared cluster, each of its own user; a pool of `pool` users turns
//! cameras on and off at `changes_per_s`, and every session either hears
//! everyone (`?presence=all`) or watches `watched_each` users of the pool
//! (`?presence=watched` and one `watch`). Measured over the change phase:
//! `update_user` frames the sessions received per second (the node's socket
//! writes), and CPU of each node and of Redis.

use anyhow::Result;
use futures_util::SinkExt;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{Cluster, token};
use crate::ws::{self, next_json};

#[derive(Serialize, Clone, Debug)]
pub struct PresenceResult {
    pub mode: &'static str,
    pub sessions: usize,
    pub opened: usize,
    pub pool: usize,
    pub watched_each: usize,
    pub changes_per_s: u64,
    pub duration_s: f64,
    /// `update_user` frames received by all sessions, per second.
    pub frames_per_s: f64,
    /// What the mode owes: every change to every session (`all`), or to its watchers.
    pub owed_per_s: f64,
    /// CPU seconds per second, each node, then Redis.
    pub node_cpu: Vec<f64>,
    pub redis_cpu: f64,
}

/// Changes made so far, across runs: change `i` flips pool user `i % pool`,
/// on then off, so every change is a real one (the same state again is not
/// broadcast) whichever run makes it.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// utime + stime of a process, in seconds.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A socket for each pool user (`?presence=none`), held through both runs:
/// a camera turned on with no session would go off by itself a grace period
/// later, in the middle of a later count.
pub async fn hold_pool(cluster: &Cluster, pool: usize) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut held = Vec::with_capacity(pool);
    for u in 0..pool {
        let port = cluster.nodes[u % cluster.nodes.len()].port;
        let (mut ws, _) = ws::connect(port, &token(&format!("pres-u{u}")), "?presence=none").await?;
        held.push(tokio::spawn(async move { while next_json(&mut ws).await.is_some() {} }));
    }
    Ok(held)
}

/// Which pool users session `j` watches: `watched_each` of them, spread.
fn watched(j: usize, pool: usize, watched_each: usize) -> Vec<String> {
    (0..watched_each).map(|k| format!("pres-u{}", (j * 7 + k * 13) % pool)).collect()
}

pub async fn run(cluster: &Cluster, sessions: usize, pool: usize, watched_each: usize, changes_per_s: u64, duration: Duration, all: bool) -> Result<PresenceResult> {
    let frames = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(sessions);
    for j in 0..sessions {
        let port = cluster.nodes[j % cluster.nodes.len()].port;
        let (frames, permits) = (frames.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.expect("open");
            let query = if all { "?presence=all" } else { "?presence=watched" };
            let (mut ws, _) = ws::connect(port, &token(&format!("pres-s{j}")), query).await?;
            if !all {
                let cmd = serde_json::json!({"cmd": "watch", "ack": 1, "user_ids": watched(j, pool, watched_each)});
                ws.send(Message::Text(cmd.to_string().into())).await?;
                while let Some(v) = next_json(&mut ws).await {
                    if v["cmd"] == "ack" {
                        break;
                    }
                    anyhow::ensure!(v["cmd"] != "error", "watch refused: {v}");
                }
            }
            drop(permit);
            anyhow::Ok(tokio::spawn(async move {
                while let Some(v) = next_json(&mut ws).await {
                    if v["action"] == "server-action:update_user" {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }))
        }));
    }
    let mut readers = Vec::with_capacity(sessions);
    for t in tasks {
        if let Ok(Ok(r)) = t.await {
            readers.push(r);
        }
    }
    let opened = readers.len();
    // The sessions' own online changes settle before the count starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let http = crate::scenarios::http_client()?;
    let node0 = cluster.nodes[0].http();
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid()).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
    let redis0 = cpu_s(cluster.redis.pid());
    let before = frames.load(Ordering::Relaxed);
    let start = Instant::now();
    let total = (changes_per_s as f64 * duration.as_secs_f64()) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / changes_per_s as f64));
    for _ in 0..total {
        tick.tick().await;
        let i = CHANGES.fetch_add(1, Ordering::Relaxed);
        // Each change turns one pool user's camera the other way.
        let u = (i as usize) % pool;
        let op = if (i as usize / pool).is_multiple_of(2) { "cameraOn" } else { "cameraOff" };
        let (http, base, t) = (http.clone(), node0.clone(), token(&format!("pres-u{u}")));
        tokio::spawn(async move {
            let _ = crate::scenarios::post(&http, &base, op, &t, serde_json::json!({})).await;
        });
    }
    // What was sent reaches the sockets within a moment; count it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let got = frames.load(Ordering::Relaxed) - before;
    let node_cpu = pids.iter().zip(&cpu0).map(|(p, c)| (cpu_s(*p) - c) / elapsed).collect();
    let redis_cpu = (cpu_s(cluster.redis.pid()) - redis0) / elapsed;
    for r in readers {
        r.abort();
    }
    // Let the nodes see the closes before the next scenario.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watchers_per_user = if all { opened as f64 } else { (opened * watched_each) as f64 / pool as f64 };
    Ok(PresenceResult {
        mode: if all { "all" } else { "watched" },
        sessions,
        opened,
        pool,
        watched_each,
        changes_per_s,
        duration_s: duration.as_secs_f64(),
        frames_per_s: got as f64 / elapsed,
        owed_per_s: total as f64 * watchers_per_user / elapsed,
        node_cpu,
        redis_cpu,
    })
}
