//! The edges of a node's life: drain, restart under the same id, a Redis
//! stall, a partition, a dropped or half-open pub/sub link, two nodes dying
//! at once, and forgetting users. Each waits on events; the only fixed waits
//! are how long a fault is held and the windows `stays` checks throughout.

use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::support::cluster::*;
use crate::support::*;

async fn user(app: &TestApp, asker: &str, id: &str) -> serde_json::Value {
    app.get(&format!("/webrtc/users/{id}"), Some(asker)).await.body
}

#[actix_web::test]
async fn restart_under_the_same_node_id_leaves_no_ghost() {
    let redis = Redis::start().await;
    // A long ttl: only the restart itself can end the old sessions in time.
    let long_ttl = [("CAMSIG__PRESENCE__TTL_S", "30")];
    let watch = node_with(&redis, "watch", |s| s.presence.ttl = std::time::Duration::from_secs(30)).await;
    let viewer = token("ghost-viewer");
    let mut vws = watch.ws(&viewer).await;
    for how in ["kill", "term"] {
        let name = format!("ghost-{how}");
        let owner = token(&name);
        let mut fixed = ProcNode::start_with(&redis, "fixed", &long_ttl).await;
        let _ows = fixed.ws(&owner).await;
        assert_eq!(watch.camera_on(&owner).await.status, 200);
        vws.wait_user(&name, |u| u["camera"] == "on" && u["online"] == true).await;
        match how {
            "kill" => fixed.kill(),
            _ => {
                let took = fixed.terminate().await;
                assert!(took < Duration::from_secs(10), "drain took {took:?}");
            }
        }
        let _again = ProcNode::start_with(&redis, "fixed", &long_ttl).await;
        let ready = Instant::now();
        let off = vws.wait_user(&name, |u| u["camera"] == "off").await;
        assert_eq!(off["online"], false, "{how}");
        let took = ready.elapsed();
        assert!(took <= Duration::from_secs(GRACE_S) + Duration::from_millis(1500), "{how}: camera off {took:?} after the restart");
        let on = watch.get("/webrtc/users?camera=on", Some(&viewer)).await.body;
        assert_eq!(on["users"], json!([]), "{how}: {on}");
        let r = watch.post("cameraShow", &viewer, json!({"user_id": name})).await;
        r.assert_error(409, "camera_off");
    }
}

#[actix_web::test]
async fn a_redis_stall_longer_than_ttl_leaves_everyone_online() {
    let redis = Redis::start().await;
    let nodes = [node(&redis, "s1").await, node(&redis, "s2").await];
    let mut socks = Vec::new();
    let mut before = Vec::new();
    for i in 0..6 {
        let name = format!("stall-{i}");
        let t = token(&name);
        socks.push(nodes[i % 2].ws(&t).await);
        let v = nodes[i % 2].camera_on(&t).await.body["user"]["version"].as_u64().unwrap();
        before.push((name, t, v));
    }

    redis.pause();
    tokio::time::sleep(Duration::from_secs(TTL_S + 2)).await;
    redis.resume();

    for n in &nodes {
        wait_until(Duration::from_secs(15), "readyz after the stall", async || n.get("/readyz", None).await.status == 200).await;
    }
    // Let every node renew and sweep: a lease period after the stall.
    let (name0, t0, _) = &before[0];
    wait_until(Duration::from_secs(15), "a call to go through", async || nodes[1].camera_on(t0).await.status == 200).await;
    stays(Duration::from_secs(TTL_S + GRACE_S), "everyone online with the camera on", async || {
        for (name, t, _) in &before {
            let u = user(&nodes[0], t, name).await;
            if u["online"] != true || u["camera"] != "on" {
                return false;
            }
        }
        true
    })
    .await;
    // Nobody flickered: the versions are those from before the stall (but the one turned on again).
    for (name, t, v) in &before[1..] {
        assert_eq!(user(&nodes[1], t, name).await["version"].as_u64(), Some(*v), "{name} changed");
    }
    assert_eq!(user(&nodes[0], t0, name0).await["camera"], "on");
    drop(socks);
}

#[actix_web::test]
async fn a_partition_longer_than_ttl_heals() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let cut_off = node_with(&redis, "cut-off", |s| s.redis.url = Some(SecretString::from(proxy.url()))).await;
    let other = node(&redis, "other").await;
    let (name, t) = ("part-own", token("part-own"));
    let _ows = cut_off.ws(&t).await;
    let mut watcher = other.ws(&token("part-watch")).await;
    assert_eq!(other.camera_on(&t).await.status, 200);
    watcher.wait_user(name, |u| u["camera"] == "on").await;

    proxy.partition(true);
    // The other node cannot tell a partition from a death: it sweeps the lease.
    watcher.wait_user(name, |u| u["online"] == false).await;
    proxy.partition(false);
    // Healed: the cut-off node finds its lease swept and registers its sessions again.
    let back = watcher.wait_user(name, |u| u["online"] == true).await;
    assert_eq!(back["user_id"], name);
    assert_eq!(other.camera_on(&t).await.status, 200);
    stays(Duration::from_secs(GRACE_S + 1), "cameraOn to stick", async || user(&other, &t, name).await["camera"] == "on").await;
}

/// An owner on `direct` and `viewers` on `proxied`, each watching the owner's camera.
async fn rooms(direct: &TestApp, proxied: &TestApp, owner: &str, viewers: &[&str]) -> (Ws, Vec<(Ws, String)>) {
    let ot = token(owner);
    let mut ows = direct.ws(&ot).await;
    assert_eq!(direct.camera_on(&ot).await.status, 200);
    let mut out = Vec::new();
    for v in viewers {
        let vt = token(v);
        let vws = proxied.ws(&vt).await;
        let room = proxied.show(&vt, owner).await;
        assert_eq!(ows.next_event().await["action"], "server-action:show_cam");
        out.push((vws, room));
    }
    (ows, out)
}

/// The next `n` put_ice frames carry candidates `first..first + n`, in order.
async fn expect_candidates(ws: &mut Ws, first: u16, n: u16) {
    for i in 0..n {
        let ev = ws.next_event().await;
        assert_eq!(ev["action"], "server-action:put_ice", "{ev}");
        assert_eq!(ev["data"]["candidate"], candidate(first + i), "candidate {i}: {ev}");
    }
}

#[actix_web::test]
async fn a_pubsub_drop_with_a_held_reconnect_loses_nothing() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let proxied = node_with(&redis, "proxied", |s| {
        s.redis.url = Some(SecretString::from(proxy.url()));
        s.redis.probe = std::time::Duration::from_secs(1);
    })
    .await;
    let direct = node(&redis, "direct").await;
    let owner = token("drop-own");
    let (_ows, mut viewers) = rooms(&direct, &proxied, "drop-own", &["drop-v0", "drop-v1", "drop-v2"]).await;
    let mut watcher = proxied.ws(&token("drop-watch")).await;

    proxy.refuse(true);
    assert!(proxy.cut_pubsub() >= 1);
    wait_until(Duration::from_secs(5), "readyz 503 while the link is down", async || proxied.get("/readyz", None).await.status == 503).await;
    // A presence change in the gap, too: it is not in any user's log, but in the presence log.
    assert_eq!(direct.camera_on(&token("drop-other")).await.status, 200);
    for i in 0..28 {
        for (_, room) in &viewers {
            let r = direct.post("ice", &owner, json!({"room_id": room, "candidate": candidate(7000 + i)})).await;
            assert_eq!(r.status, 202, "{}", r.body);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.refuse(false);

    for (ws, room) in &mut viewers {
        expect_candidates(ws, 7000, 28).await;
        // Then live again, with no duplicate between.
        let r = direct.post("ice", &owner, json!({"room_id": room, "candidate": candidate(7100)})).await;
        assert_eq!(r.status, 202);
        expect_candidates(ws, 7100, 1).await;
    }
    watcher.wait_user("drop-other", |u| u["camera"] == "on").await;
    assert_eq!(proxied.get("/readyz", None).await.status, 200);
}

#[actix_web::test]
async fn a_half_open_subscriber_is_replaced_within_three_probes() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    const PROBE_S: u64 = 1;
    let proxied = node_with(&redis, "proxied", |s| {
        s.redis.url = Some(SecretString::from(proxy.url()));
        s.redis.probe = std::time::Duration::from_secs(PROBE_S);
    })
    .await;
    let direct = node(&redis, "direct").await;
    let owner = token("half-own");
    let (_ows, mut viewers) = rooms(&direct, &proxied, "half-own", &["half-v"]).await;
    let (ws, room) = &mut viewers[0];

    assert!(proxy.blackhole_pubsub() >= 1);
    let silent = Instant::now();
    let r = direct.post("ice", &owner, json!({"room_id": room, "candidate": candidate(7001)})).await;
    assert_eq!(r.status, 202);
    expect_candidates(ws, 7001, 1).await;
    let took = silent.elapsed();
    eprintln!("half-open pub/sub link: event delivered {took:?} after the link went silent (probe {PROBE_S}s)");
    // Detection within 3 probes, plus reconnecting and catching up.
    assert!(took <= Duration::from_secs(3 * PROBE_S) + Duration::from_millis(700), "the event came {took:?} after the link went silent");
}

#[actix_web::test]
async fn two_nodes_dying_together_keep_the_ghost_bound() {
    let redis = Redis::start().await;
    let watch = node(&redis, "watch").await;
    let mut watcher = watch.ws(&token("bound-watch")).await;
    let mut doomed = [ProcNode::start(&redis, "doomed-a").await, ProcNode::start(&redis, "doomed-b").await];
    let mut socks = Vec::new();
    let names: Vec<String> = (0..10).map(|i| format!("bound-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let t = token(name);
        socks.push(doomed[i % 2].ws(&t).await);
        assert_eq!(watch.camera_on(&t).await.status, 200);
        watcher.wait_user(name, |u| u["camera"] == "on").await;
    }
    for d in &mut doomed {
        d.kill();
    }
    let killed = Instant::now();
    let mut off = std::collections::HashSet::new();
    let mut slowest = Duration::ZERO;
    while off.len() < names.len() {
        let v = watcher.next().await;
        let u = &v["data"]["user"];
        if u["camera"] == "off" {
            off.insert(u["user_id"].as_str().unwrap().to_owned());
            let took = killed.elapsed();
            slowest = slowest.max(took);
            // The contract's bound, with no allowance: the lease ends early enough for the sweeps.
            assert!(took <= Duration::from_secs(TTL_S + GRACE_S), "{} camera off after {took:?}", u["user_id"]);
        }
    }
    eprintln!("ghost bound: last camera off {slowest:?} after two nodes died (bound {}s)", TTL_S + GRACE_S);
    drop(socks);
}

#[actix_web::test]
async fn a_drained_node_hands_its_sessions_over_without_a_flicker() {
    let redis = Redis::start().await;
    let grace = 5;
    let draining = node_with(&redis, "draining", |s| s.presence.grace = std::time::Duration::from_secs(grace)).await;
    let staying = node_with(&redis, "staying", |s| s.presence.grace = std::time::Duration::from_secs(grace)).await;
    let (name, t) = ("drain-own", token("drain-own"));
    let viewer = token("drain-view");
    let mut ows = draining.ws(&t).await;
    let mut vws = staying.ws(&viewer).await;
    let before = staying.camera_on(&t).await.body["user"]["version"].as_u64().unwrap();
    vws.wait_user(name, |u| u["camera"] == "on").await;
    let room = staying.show(&viewer, name).await;
    let show = ows.next_event().await;
    assert_eq!(show["action"], "server-action:show_cam");

    draining.node.request_drain();
    let started = Instant::now();
    let reconnect = ows.next_event().await;
    assert_eq!(reconnect["action"], "server-action:reconnect", "{reconnect}");
    assert_eq!(reconnect["data"]["reason"], "drain");
    assert_eq!(reconnect["data"]["last_id"], show["id"], "resume from the last event written");
    let close = loop {
        match ows.stream.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1012));
    assert_eq!(draining.get("/readyz", None).await.status, 503);
    // New sockets and polls go elsewhere.
    let refused = draining.poll(&t, "?timeout_s=0").await;
    refused.assert_error(503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(draining.ws_refused("", Some(&format!("Bearer {t}"))).await, 503);

    // Meanwhile an event for the owner; it reconnects to the other node from last_id.
    let r = staying.post("ice", &viewer, json!({"room_id": room, "candidate": candidate(7300)})).await;
    assert_eq!(r.status, 202);
    let mut again = staying.ws_query(&t, &format!("?since={}", reconnect["data"]["last_id"].as_str().unwrap())).await;
    expect_candidates(&mut again, 7300, 1).await;

    // The drained node releases its lease and stops within server.drain_s.
    wait_until(Duration::from_secs(10), "the drained node to stop listening", async || {
        tokio::net::TcpStream::connect(("127.0.0.1", draining.port)).await.is_err()
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let leases: Vec<String> = redis::cmd("ZRANGE").arg("camsig:leases").arg(0).arg(-1).query_async(&mut redis.conn().await).await.unwrap();
    assert!(leases.iter().all(|l| !l.starts_with("draining#")), "{leases:?}");
    // No update_user at all: online, camera on, the same version, past the grace period.
    stays(Duration::from_secs(grace + 1), "the owner online with the camera on", async || {
        let u = user(&staying, &viewer, name).await;
        u["online"] == true && u["camera"] == "on" && u["version"].as_u64() == Some(before)
    })
    .await;
}

#[actix_web::test]
async fn long_gone_users_are_forgotten() {
    let redis = Redis::start().await;
    let app = node_with(&redis, "forget", |s| s.presence.forget_after = std::time::Duration::from_secs(1)).await;
    let (name, t) = ("forget-me", token("forget-me"));
    let ws = app.ws(&t).await;
    assert_eq!(app.camera_on(&t).await.status, 200);
    ws.close().await;
    let mut r = redis.conn().await;
    assert_eq!(redis::cmd("EXISTS").arg(format!("camsig:user:{name}")).query_async::<i64>(&mut r).await.unwrap(), 1);
    wait_until(Duration::from_secs(GRACE_S + 10), "the user to be forgotten", async || {
        app.get(&format!("/webrtc/users/{name}"), Some(&t)).await.status == 404
    })
    .await;
    assert_eq!(redis::cmd("EXISTS").arg(format!("camsig:user:{name}")).query_async::<i64>(&mut r).await.unwrap(), 0);
    let listed: Option<f64> = redis::cmd("ZSCORE").arg("camsig:users").arg(name).query_async(&mut r).await.unwrap();
    assert_eq!(listed, None);
    // Coming back is like the first time.
    let _ws = app.ws(&t).await;
    assert_eq!(user(&app, &t, name).await["online"], true);
}

#[actix_web::test]
async fn pubsub_links_killed_every_200ms_under_load_lose_nothing() {
    let redis = Redis::start().await;
    let nodes = [node(&redis, "k1").await, node(&redis, "k2").await];
    let owner = token("kill-own");
    let (_ows, mut viewers) = rooms(&nodes[0], &nodes[1], "kill-own", &["kill-v0", "kill-v1"]).await;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let mut conn = redis.conn().await;
    let killer = actix_web::rt::spawn(async move {
        let mut kills = 0;
        loop {
            kills += redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async::<i64>(&mut conn).await.unwrap();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stopped.changed() => return kills,
            }
        }
    });
    const N: u16 = 150;
    for i in 0..N {
        for (_, room) in &viewers {
            let r = nodes[i as usize % 2].post("ice", &owner, json!({"room_id": room, "candidate": candidate(8000 + i)})).await;
            assert_eq!(r.status, 202, "{}", r.body);
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop.send(true);
    let kills = killer.await.unwrap();
    assert!(kills >= 4, "the links were killed {kills} times");
    for (ws, _) in &mut viewers {
        expect_candidates(ws, 8000, N).await;
    }
}

/// Issue #23, item 8: a command connection that goes half-open (TCP up, no
/// answers) once stalled a node for good. Calls answer 503 meanwhile, never
/// hanging past the Redis timeout, and the node opens a new connection after
/// three calls in a row time out; then it serves again.
#[actix_web::test]
async fn a_half_open_command_connection_is_replaced() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let proxied = node_with(&redis, "cmd-proxied", |s| s.redis.url = Some(SecretString::from(proxy.url()))).await;
    let t = token("cmd-half");
    assert_eq!(proxied.camera_on(&t).await.status, 200);
    assert!(proxy.blackhole_commands() >= 1);
    let silent = Instant::now();
    let mut refused = 0;
    loop {
        let asked = Instant::now();
        let r = proxied.get("/webrtc/users/cmd-half", Some(&t)).await;
        assert!(asked.elapsed() < Duration::from_secs(4), "a call hung for {:?}", asked.elapsed());
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        refused += 1;
        assert!(silent.elapsed() < Duration::from_secs(20), "still 503 after {:?}", silent.elapsed());
    }
    eprintln!("half-open command link: served again {:?} after it went silent ({refused} calls answered 503)", silent.elapsed());
    assert!(refused >= 1, "the silent link was never used");
}

/// Issue #24, item 1: sockets closed while Redis stalled (a lease long
/// enough that no peer sweeps) left their users online, cameras on, for as
/// long as the node ran: the failed end was only logged. The node keeps each
/// end and records it once Redis is back.
/// Mutation (the failed end not kept): no end is kept, and the users stay
/// online with their cameras on.
#[actix_web::test]
async fn sockets_closed_while_redis_stalls_end_once_it_is_back() {
    let redis = Redis::start().await;
    let n = node_with(&redis, "keeps-ends", |s| s.presence.ttl = Duration::from_secs(30)).await;
    let users: Vec<String> = (0..4).map(|i| format!("stalled-{i}")).collect();
    let mut socks = Vec::new();
    for u in &users {
        let t = token(u);
        socks.push(n.ws(&t).await);
        assert_eq!(n.camera_on(&t).await.status, 200);
    }
    redis.pause();
    for ws in socks {
        ws.close().await;
    }
    let metrics = async || {
        let text = n.get_text("/metrics").await;
        text.lines().find(|l| l.starts_with("camsig_session_ends_pending")).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(20), "the four ends to be kept, Redis being away", async || metrics().await >= 4.0).await;
    redis.resume();
    let asker = token("asker");
    wait_until(Duration::from_secs(20), "every user offline with the camera off", async || {
        for u in &users {
            let s = user(&n, &asker, u).await;
            if s["online"] != false || s["camera"] != "off" {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(metrics().await, 0.0, "nothing left pending");
}

/// Issue #24, item 3: after a renewal that timed out, a node still sent its
/// dead-lease claim; Redis ran it, queued, on waking from `DEBUG SLEEP`,
/// before the peers renewed, and live users went offline (3 of 8 runs). A
/// node whose renewal did not come back now claims nothing until one does,
/// and claims and leases are timed by Redis's clock. (With only the first
/// of those undone, 6 runs of 6 still passed: the one clock alone closes
/// the race this test can reach; the chaos suite hunts the rest.)
#[actix_web::test]
async fn a_debug_sleep_longer_than_ttl_sweeps_no_live_node() {
    let redis = Redis::start().await;
    let nodes = [node(&redis, "d1").await, node(&redis, "d2").await];
    let mut socks = Vec::new();
    let mut names = Vec::new();
    for i in 0..6 {
        let name = format!("sleep-{i}");
        let t = token(&name);
        socks.push(nodes[i % 2].ws(&t).await);
        assert_eq!(nodes[i % 2].camera_on(&t).await.status, 200);
        names.push(name);
    }
    let sleep = format!("{}.5", TTL_S + 1);
    let mut cli = std::process::Command::new("redis-cli").args(["-p", &redis.port.to_string(), "DEBUG", "SLEEP", &sleep]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_until(Duration::from_secs(10), "Redis asleep", async || nodes[0].get("/readyz", None).await.status == 503).await;
    let _ = cli.wait();
    for n in &nodes {
        wait_until(Duration::from_secs(15), "readyz after the sleep", async || n.get("/readyz", None).await.status == 200).await;
    }
    let asker = token("asker");
    stays(Duration::from_secs(TTL_S + GRACE_S + 1), "everyone online with the camera on", async || {
        for name in &names {
            let u = user(&nodes[0], &asker, name).await;
            if u["online"] != true || u["camera"] != "on" {
                return false;
            }
        }
        true
    })
    .await;
    drop(socks);
}

/// Issue #24, item 4: the node that claimed a dead node's lease dies
/// mid-sweep, having ended one session of thirty. The claim is held 1 s, so
/// a node started only once the sweeper is gone takes the rest over and
/// every camera still goes off within `ttl + grace` of the first death.
/// (With the claim held 5 s, as before, cameras went off at 8.0-8.6 s
/// against a bound of 5 s. With the hold at 1 s whatever the grace, this
/// test failed: 29 cameras still on 3.1 s after, bound 3 s; `claim_hold` is
/// now a quarter of the grace.)
#[actix_web::test]
async fn a_sweeper_killed_mid_sweep_keeps_the_ghost_bound() {
    let redis = Redis::start().await;
    let mut doomed = ProcNode::start(&redis, "mid-doomed").await;
    // The only node left to sweep once `doomed` dies, armed to die after
    // ending the first session of the dead lease.
    let mut sweeper = ProcNode::start_with(&redis, "mid-sweeper", &[("CAMSIG_FAILPOINT", "sweep.partial")]).await;
    let names: Vec<String> = (0..30).map(|i| format!("mid-{i}")).collect();
    let mut socks = Vec::new();
    for name in &names {
        let t = token(name);
        socks.push(doomed.ws(&t).await);
        let (status, _) = doomed.post_json("cameraOn", &t, json!({})).await;
        assert_eq!(status, 200);
    }
    doomed.kill();
    let killed = Instant::now();
    wait_until(Duration::from_secs(10), "the sweeper to die at sweep.partial", async || sweeper.exited()).await;
    let sweeper_died = killed.elapsed();
    let taker = node(&redis, "mid-taker").await;
    let asker = token("mid-asker");
    let mut on: std::collections::HashSet<&String> = names.iter().collect();
    let mut slowest = Duration::ZERO;
    while !on.is_empty() {
        for name in on.clone() {
            let u = user(&taker, &asker, name).await;
            if u["camera"] == "off" {
                on.remove(name);
                slowest = slowest.max(killed.elapsed());
            }
        }
        // Polled every 100 ms: that much allowance on the contract's bound.
        assert!(killed.elapsed() <= Duration::from_millis(TTL_S * 1000 + GRACE_S * 1000 + 100), "{} cameras still on {:?} after the node died (the sweeper died {sweeper_died:?} after)", on.len(), killed.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ghost bound with the sweeper killed mid-sweep: last camera off {slowest:?} after the node died (sweeper died at {sweeper_died:?}; bound {}s)", TTL_S + GRACE_S);
    drop(socks);
}

/// Found by a fault probe: with the node's Redis link stalled (every byte
/// held, new connections too), calls answered 503 in 2 s until the command
/// connection was replaced, then in 4 s each: a call that timed out waited
/// for the connection lock that an opener held through its own 2 s connect.
/// Each call now answers within the contract's two seconds (a little slack
/// for the scheduler), before and after the replacement.
#[actix_web::test]
async fn calls_answer_within_two_seconds_while_the_redis_link_is_stalled() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let n = node_with(&redis, "stalled-link", |s| s.redis.url = Some(SecretString::from(proxy.url()))).await;
    let t = token("stalled-calls");
    assert_eq!(n.camera_on(&t).await.status, 200);
    proxy.partition(true);
    for i in 0..8 {
        let asked = Instant::now();
        let r = n.post_once("cameraOn", &t, &format!("stalled-{i}"), json!({})).await;
        let took = asked.elapsed();
        assert!(matches!(r.status, 503 | 504), "call {i}: {} {}", r.status, r.body);
        assert!(took < Duration::from_millis(2500), "call {i} answered {} after {took:?}", r.status);
    }
    proxy.partition(false);
    wait_until(Duration::from_secs(15), "calls served again once the link is back", async || n.camera_on(&t).await.status == 200).await;
}
