//! A rolling restart of all three nodes of `scripts/cluster` (SIGTERM: each
//! drains, exits and is started again by its supervisor) under 500 sockets and
//! a live stream of ICE candidates through the load balancer: nothing lost or
//! duplicated, no camera off, nobody flickering offline.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::nginx::Cluster;
use crate::support::*;

const SOCKETS: usize = 500;
const PAIRS: usize = 10;

#[derive(Default)]
struct Seen {
    /// Sockets open right now (hello received, no close yet).
    live: usize,
    hellos: usize,
    reconnects: usize,
    closes_1012: usize,
    resyncs: usize,
    /// From the snapshot before the restart on: record flickers.
    watching: bool,
    /// `update_user` frames that showed one of ours offline, or an owner's camera off.
    flickers: Vec<Value>,
    /// Candidate ports each viewer received, in order.
    ice: HashMap<String, Vec<u16>>,
}

type Shared = Rc<RefCell<Seen>>;

/// One app's socket through the load balancer, reconnecting with `since` forever.
async fn client(port: u16, user: String, presence: bool, seen: Shared, mut stop: watch::Receiver<bool>) {
    let tok = token(&user);
    let mut since: Option<String> = None;
    let mut backoff = Duration::from_millis(20);
    while !*stop.borrow() {
        let mut query = format!("?presence={presence}");
        if let Some(s) = &since {
            query.push_str(&format!("&since={s}"));
        }
        let mut req = format!("ws://127.0.0.1:{port}/ws{query}").into_client_request().unwrap();
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {tok}")).unwrap());
        let Ok((mut stream, _)) = tokio_tungstenite::connect_async(req).await else {
            // As apps do: back off, with jitter, so a restart is not met by a storm.
            tokio::time::sleep(backoff.mul_f64(0.5 + rand_unit())).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(20);
        let mut opened = false;
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = stop.changed() => None,
            };
            let Some(Ok(msg)) = msg else { break };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    let mut s = seen.borrow_mut();
                    match v["action"].as_str().unwrap_or("") {
                        "server-action:hello" => {
                            opened = true;
                            s.live += 1;
                            s.hellos += 1;
                            since.get_or_insert_with(|| v["data"]["last_id"].as_str().unwrap().to_owned());
                        }
                        "server-action:reconnect" => {
                            s.reconnects += 1;
                            since = Some(v["data"]["last_id"].as_str().unwrap().to_owned());
                        }
                        "server-action:resync" => s.resyncs += 1,
                        "server-action:update_user" => {
                            let u = &v["data"]["user"];
                            let id = u["user_id"].as_str().unwrap_or("");
                            if s.watching && id.starts_with("roll-") && (u["online"] == false || (id.starts_with("roll-own-") && u["camera"] == "off")) {
                                s.flickers.push(v.clone());
                            }
                        }
                        "server-action:put_ice" => {
                            let c = v["data"]["candidate"]["candidate"].as_str().unwrap();
                            let port: u16 = c.split(' ').nth(5).unwrap().parse().unwrap();
                            s.ice.entry(user.clone()).or_default().push(port);
                        }
                        _ => {}
                    }
                    if let Some(id) = v["id"].as_str() {
                        since = Some(id.to_owned());
                    }
                }
                Message::Close(c) => {
                    if c.is_some_and(|c| u16::from(c.code) == 1012) {
                        seen.borrow_mut().closes_1012 += 1;
                    }
                    break;
                }
                _ => {}
            }
        }
        if opened {
            seen.borrow_mut().live -= 1;
        }
    }
}

/// A number in [0, 1) that differs between calls, for jitter.
fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::Instant::now()) % 1000) as f64 / 1000.0
}

/// Posts ICE from `owner` in `room` through the load balancer, each candidate
/// retried under its own Idempotency-Key until it is accepted.
async fn sender(port: u16, owner: String, room: String, pair: usize, acked: Rc<RefCell<Vec<u16>>>, stop: watch::Receiver<bool>) {
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let url = format!("http://127.0.0.1:{port}/webrtc/ice");
    let tok = token(&owner);
    let mut seq: u16 = 10_000;
    while !*stop.borrow() {
        seq += 1;
        let body = json!({"room_id": room, "candidate": candidate(seq)});
        let key = format!("roll-{pair}-{seq}");
        loop {
            let req = http.post(&url).insert_header(("Authorization", format!("Bearer {tok}"))).insert_header(("Idempotency-Key", key.as_str()));
            match req.send_json(&body).await {
                Ok(r) if r.status() == 202 => break,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        acked.borrow_mut().push(seq);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every user the directory lists, with their state.
async fn directory(lb: &TestApp, asker: &str) -> HashMap<String, Value> {
    let mut all = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = lb.get(&format!("/webrtc/users?limit=200{cursor}"), Some(asker)).await.body;
        for u in page["users"].as_array().unwrap() {
            all.insert(u["user_id"].as_str().unwrap().to_owned(), u.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return all,
        }
    }
}

#[actix_web::test]
async fn a_rolling_restart_under_500_sockets_loses_nothing() {
    let cluster = Cluster::start("rolling").await;
    let lb = &cluster.lb;
    let port = lb.port;
    let seen: Shared = Rc::default();
    // Senders stop before the end; sockets keep reading until the test ends.
    let (stop_tx, stop) = watch::channel(false);
    let (_keep_reading, sockets) = watch::channel(false);

    let owners: Vec<String> = (0..PAIRS).map(|i| format!("roll-own-{i}")).collect();
    let viewers: Vec<String> = (0..PAIRS).map(|i| format!("roll-view-{i}")).collect();
    let idle = (0..SOCKETS - 2 * PAIRS).map(|i| format!("roll-idle-{i}"));
    for u in owners.iter().chain(&viewers) {
        actix_web::rt::spawn(client(port, u.clone(), viewers.contains(u), seen.clone(), sockets.clone()));
    }
    for u in idle {
        actix_web::rt::spawn(client(port, u, false, seen.clone(), sockets.clone()));
    }
    wait_until(Duration::from_secs(60), "500 sockets open", async || seen.borrow().live == SOCKETS).await;

    let mut acked = Vec::new();
    for (i, (o, v)) in owners.iter().zip(&viewers).enumerate() {
        assert_eq!(lb.camera_on(&token(o)).await.status, 200);
        let room = lb.show(&token(v), o).await;
        let a: Rc<RefCell<Vec<u16>>> = Rc::default();
        acked.push(a.clone());
        actix_web::rt::spawn(sender(port, o.clone(), room, i, a, stop.clone()));
    }
    let asker = token("roll-asker");
    let before = directory(lb, &asker).await;
    let ours = |d: &HashMap<String, Value>| d.iter().filter(|(k, _)| k.starts_with("roll-")).count();
    assert_eq!(ours(&before), SOCKETS, "everyone is online before");
    seen.borrow_mut().watching = true;

    let restart_started = std::time::Instant::now();
    for i in 1..=3 {
        let old = cluster.node_pid(i).expect("a node pid");
        let drained = seen.borrow().reconnects;
        let ok = std::process::Command::new("kill").arg("-TERM").arg(old.to_string()).status().unwrap().success();
        assert!(ok, "SIGTERM node{i}");
        wait_until(Duration::from_secs(30), "the node to be restarted", async || cluster.node_pid(i).is_some_and(|p| p != old)).await;
        cluster.wait_ready(cluster.node_ports[i - 1]).await;
        let back = tokio::time::timeout(Duration::from_secs(30), async {
            while seen.borrow().live != SOCKETS {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if back.await.is_err() {
            let s = seen.borrow();
            panic!("after restarting node{i}: {} of {SOCKETS} sockets back ({} hellos, {} reconnects)", s.live, s.hellos, s.reconnects);
        }
        assert!(seen.borrow().reconnects > drained, "node{i} told its sessions to reconnect");
    }

    let restart_took = restart_started.elapsed();
    let _ = stop_tx.send(true);
    // Every accepted candidate arrives once, in order.
    for (v, a) in viewers.iter().zip(&acked) {
        let want = a.borrow().clone();
        assert!(want.len() > 10, "{v}: the stream ran ({} candidates)", want.len());
        wait_until(Duration::from_secs(20), "every accepted candidate to arrive", async || {
            seen.borrow().ice.get(v).map_or(0, Vec::len) >= want.len()
        })
        .await;
        let got = seen.borrow().ice.get(v).cloned().unwrap_or_default();
        // A candidate posted as the stream stopped may be delivered but not yet recorded as acked.
        assert_eq!(&got[..want.len()], &want[..], "{v}: candidates lost, duplicated or reordered");
        assert!(got.len() <= want.len() + 1, "{v}: {} received for {} accepted", got.len(), want.len());
    }
    let s = seen.borrow();
    let candidates: usize = acked.iter().map(|a| a.borrow().len()).sum();
    eprintln!("rolling restart: 3 nodes in {restart_took:?}; {} drains, {} hellos, {candidates} candidates, 0 lost", s.reconnects, s.hellos);
    assert_eq!(s.closes_1012, s.reconnects, "each drained session closed with 1012");
    assert!(s.reconnects >= SOCKETS, "every socket was drained at least once: {}", s.reconnects);
    assert_eq!(s.resyncs, 0, "no resync: the logs covered every reconnect");
    assert!(s.flickers.is_empty(), "update_user showed someone offline or camera off: {:?}", &s.flickers[..s.flickers.len().min(3)]);
    drop(s);
    // Nobody's state changed at all: same versions, online, cameras on.
    let after = directory(lb, &asker).await;
    for (id, u) in before.iter().filter(|(k, _)| k.starts_with("roll-")) {
        let a = &after[id];
        assert_eq!(a["version"], u["version"], "{id} changed: {u} -> {a}");
        assert_eq!(a["online"], true, "{id}");
    }
    for o in &owners {
        assert_eq!(after[o]["camera"], "on", "{o}");
    }
}
