//! A node dies, Redis restarts: no ghost cameras, 503 instead of hangs, and
//! recovery on the same sockets.

use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::support::cluster::*;
use crate::support::*;

#[actix_web::test]
async fn a_killed_node_cannot_leave_a_camera_on() {
    a_killed_node_cannot_leave_a_camera_on_on(Redis::start().await).await;
}

#[actix_web::test]
async fn a_killed_node_cannot_leave_a_camera_on_on_a_redis_cluster() {
    a_killed_node_cannot_leave_a_camera_on_on(RedisCluster::start(3, 1).await).await;
}

async fn a_killed_node_cannot_leave_a_camera_on_on(redis: impl Backing) {
    let nodes = three_nodes(&redis).await;
    let mut doomed = ProcNode::start(&redis, "doomed").await;
    let (owner, viewer) = (token("cam"), token("watcher"));
    let _ows = doomed.ws(&owner).await;
    let mut watcher = nodes[1].ws(&viewer).await;
    assert_eq!(nodes[0].camera_on(&owner).await.status, 200);
    let room = nodes[2].show(&viewer, "cam").await;
    watcher.wait_user("cam", |u| u["camera"] == "on").await;

    doomed.kill();
    let killed = Instant::now();
    let off = watcher.wait_user("cam", |u| u["camera"] == "off").await;
    let took = killed.elapsed();
    assert_eq!(off["online"], false);
    // The contract's bound, plus the sweep interval and some scheduling slack.
    let bound = Duration::from_secs(TTL_S + GRACE_S) + Duration::from_millis(1500);
    assert!(took <= bound, "camera went off after {took:?}, bound {bound:?}");
    let ev = watcher.next_event().await;
    assert_eq!(ev["action"], "server-action:hangup");
    assert_eq!(ev["data"], json!({"room_id": room, "user_id": "cam", "reason": "camera_off"}));
}

#[actix_web::test]
async fn redis_restart_gives_503_then_events_flow_on_the_same_sockets() {
    let mut redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let (owner, viewer) = (token("own"), token("see"));
    let mut ows = nodes[0].ws(&owner).await;
    let mut vws = nodes[1].ws(&viewer).await;
    let before = nodes[0].camera_on(&owner).await.body["user"]["version"].as_u64().unwrap();

    redis.stop();
    let asked = Instant::now();
    let r = nodes[2].camera_on(&owner).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(asked.elapsed() < Duration::from_secs(3), "503 took {:?}", asked.elapsed());
    assert_eq!(nodes[0].get("/readyz", None).await.status, 503);
    // The sockets stay open: a ping command is still acked.
    let ack = ows.command(json!({"cmd": "ping", "ack": 1})).await;
    assert_eq!(ack["cmd"], "ack");
    // A new socket opens to say so, as the contract has it: an error frame, close 1013.
    let url = format!("{}?token={}", nodes[1].ws_url("/ws"), token("late"));
    let (mut late, _) = tokio_tungstenite::connect_async(url).await.expect("the handshake is answered 101");
    let first = loop {
        match late.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no error frame: {other:?}"),
        }
    };
    assert_eq!((first["cmd"].as_str(), first["error"]["code"].as_str()), (Some("error"), Some("unavailable")), "{first}");
    let close = loop {
        match late.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            other => panic!("not closed: {other:?}"),
        }
    };
    assert_eq!(close, Some(1013));

    redis.restart().await;
    wait_until(Duration::from_secs(15), "readyz after the restart", async || nodes[0].get("/readyz", None).await.status == 200).await;
    // The logs went with Redis: each socket is told to reload, then events flow.
    assert_eq!(ows.next_event().await["action"], "server-action:resync");
    assert_eq!(vws.next_event().await["action"], "server-action:resync");
    // Redis came back empty: the nodes re-register their sessions, so the
    // owner is online again and the whole flow works on the old sockets.
    wait_until(Duration::from_secs(15), "the owner re-registered", async || {
        nodes[2].get("/webrtc/users/own", Some(&viewer)).await.body["online"] == true
    })
    .await;
    wait_until(Duration::from_secs(15), "cameraOn to succeed", async || nodes[2].camera_on(&owner).await.status == 200).await;
    vws.wait_user("own", |u| u["camera"] == "on").await;
    // Redis forgot the user, yet the version did not go back: it is clock-based.
    let after = nodes[2].get("/webrtc/users/own", Some(&viewer)).await.body["version"].as_u64().unwrap();
    assert!(after > before, "version went from {before} to {after} across an empty Redis");
    let room = nodes[2].show(&viewer, "own").await;
    let ev = ows.next_event().await;
    assert_eq!(ev["action"], "server-action:show_cam");
    assert_eq!(ev["data"]["room_id"], room);
    let r = nodes[1].post("offer", &owner, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(vws.next_event().await["action"], "server-action:put_offer");
}

#[actix_web::test]
async fn killing_the_viewers_node_mid_negotiation_loses_nothing() {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let mut doomed = ProcNode::start(&redis, "doomed-viewer").await;
    let (owner, viewer) = (token("kcam"), token("kview"));
    let mut ows = nodes[0].ws_query(&owner, "?presence=false").await;
    let mut vws = doomed.ws_query(&viewer, "?presence=false").await;
    nodes[0].camera_on(&owner).await;
    let room = nodes[1].show(&viewer, "kcam").await;
    ows.expect("show_cam").await;
    // One candidate before the crash: the viewer has it, and must not get it again.
    nodes[2].post("ice", &owner, json!({"room_id": room, "candidate": candidate(1)})).await;
    let seen = vws.expect("put_ice").await;
    let since = seen["id"].as_str().unwrap().to_owned();

    doomed.kill();
    // Meanwhile, on other nodes: the offer and three candidates.
    let r = nodes[1].post("offer", &owner, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    for n in 2..=4u16 {
        let r = nodes[n as usize % 3].post("ice", &owner, json!({"room_id": room, "candidate": candidate(n)})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }

    // The viewer's app reconnects through the balancer, to another node.
    let mut back = nodes[2].ws_query(&viewer, &format!("?presence=false&since={since}")).await;
    let offer = back.next().await;
    assert_eq!(offer["action"], "server-action:put_offer", "{offer}");
    assert_eq!(offer["data"]["offer"], sdp("offer"));
    let mut last = offer.clone();
    for n in 2..=4u16 {
        let ice = back.next().await;
        assert_eq!(ice["action"], "server-action:put_ice", "{ice}");
        assert_eq!(ice["data"]["candidate"], candidate(n));
        assert!(event_id(&ice) > event_id(&last));
        last = ice;
    }
    assert_eq!(back.hello["data"]["last_id"], last["id"]);
    if let Some(extra) = back.try_next(Duration::from_millis(500)).await {
        panic!("delivered more than once: {extra}");
    }
    // The call goes on: the answer reaches the owner, and the room is answered.
    let r = nodes[0].post("answer", &viewer, json!({"room_id": room, "answer": sdp("answer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    ows.expect("put_answer").await;
    // The dead node's session is reaped; the viewer's new one keeps the room
    // alive and the viewer online, through the reaping and a grace period after.
    let path = format!("/webrtc/connections/{room}");
    let mut conn = redis.conn().await;
    let alive = async || {
        nodes[1].get(&path, Some(&owner)).await.body["state"] == "answered" && nodes[1].get("/webrtc/users/kview", Some(&owner)).await.body["online"] == true
    };
    wait_until(Duration::from_secs(TTL_S + GRACE_S + 10), "the dead node's session to be reaped", async || {
        assert!(alive().await, "the room or the viewer went with the dead node's session");
        // Session id → the lease (node incarnation) that holds it.
        let leases: Vec<String> = redis::cmd("HVALS").arg("camsig:sessions:kview").query_async(&mut conn).await.unwrap();
        leases.len() == 1 && !leases[0].starts_with("doomed-viewer")
    })
    .await;
    stays(Duration::from_secs(GRACE_S + 1), "the room answered and the viewer online", alive).await;
}

/// A node dies at a failpoint around the atomic step of an offer sent with an
/// `Idempotency-Key`; the client retries the same key on another node at once.
async fn offer_dies_at(failpoint: &str) -> (Res, Vec<serde_json::Value>) {
    let redis = Redis::start().await;
    let nodes = three_nodes(&redis).await;
    let mut doomed = ProcNode::start_with(&redis, &format!("fp-{failpoint}"), &[("CAMSIG_FAILPOINT", failpoint)]).await;
    let (owner, viewer) = (token("fpo"), token("fpv"));
    let _ows = nodes[0].ws_query(&owner, "?presence=false").await;
    let mut vws = nodes[1].ws_query(&viewer, "?presence=false").await;
    nodes[0].camera_on(&owner).await;
    let room = nodes[1].show(&viewer, "fpo").await;
    let body = json!({"room_id": room, "offer": sdp("offer")});

    let died = doomed.post_once("offer", &owner, "fp-key", body.clone()).await;
    assert!(died.is_err(), "the node answered {died:?} instead of dying at {failpoint}");
    wait_until(Duration::from_secs(5), "the node to exit at the failpoint", async || doomed.exited()).await;

    let retry = nodes[2].post_once("offer", &owner, "fp-key", body).await;
    let mut got = vec![];
    while let Some(ev) = vws.try_next(Duration::from_millis(700)).await {
        got.push(ev);
    }
    (retry, got)
}

#[actix_web::test]
async fn a_node_dying_right_after_the_step_leaves_the_answer_for_the_retry() {
    let (retry, events) = offer_dies_at("after_commit").await;
    // The step happened: the retry gets its answer at once, and the offer went out once.
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (202, Some("true")), "{}", retry.body);
    assert_eq!(retry.body["connection"]["state"], "offered");
    let offers: Vec<_> = events.iter().filter(|e| e["action"] == "server-action:put_offer").collect();
    assert_eq!(offers.len(), 1, "{events:?}");
    assert_eq!(offers[0]["data"]["offer"], sdp("offer"));
}

#[actix_web::test]
async fn a_node_dying_right_before_the_step_lets_the_retry_run_the_call() {
    let (retry, events) = offer_dies_at("before_commit").await;
    // Nothing happened: the retry runs the call, at once, and the offer goes out once.
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (202, None), "{}", retry.body);
    let offers: Vec<_> = events.iter().filter(|e| e["action"] == "server-action:put_offer").collect();
    assert_eq!(offers.len(), 1, "{events:?}");
}

#[actix_web::test]
async fn a_meeting_member_whose_node_dies_leaves_with_gone() {
    a_meeting_member_whose_node_dies_leaves_with_gone_on(Redis::start().await).await;
}

#[actix_web::test]
async fn a_meeting_member_whose_node_dies_leaves_with_gone_on_a_redis_cluster() {
    a_meeting_member_whose_node_dies_leaves_with_gone_on(RedisCluster::start(3, 1).await).await;
}

async fn a_meeting_member_whose_node_dies_leaves_with_gone_on(redis: impl Backing) {
    let nodes = three_nodes(&redis).await;
    let mut doomed = ProcNode::start(&redis, "doomed-member").await;
    let (a, b, c) = (token("ma"), token("mb"), token("mc"));
    let mut wa = nodes[0].ws_query(&a, "?presence=false").await;
    let mut wb = nodes[1].ws_query(&b, "?presence=false").await;
    let _wc = doomed.ws_query(&c, "?presence=false").await;
    let id = nodes[2].post("meetings", &a, json!({})).await.body["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    for (t, name, n) in [(&a, "A", 0), (&b, "B", 1), (&c, "C", 2)] {
        let r = nodes[n].post(&format!("meetings/{id}/join"), t, json!({"name": name})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wa.expect("member_joined").await;
    let to_c_from_a = wa.expect("member_joined").await["data"]["room_id"].clone();
    let to_c_from_b = wb.expect("member_joined").await["data"]["room_id"].clone();

    doomed.kill();
    let killed = Instant::now();
    for (w, pair) in [(&mut wa, &to_c_from_a), (&mut wb, &to_c_from_b)] {
        let h = w.expect("hangup").await;
        assert_eq!(h["data"], json!({"room_id": pair, "user_id": "mc", "reason": "gone"}));
        let l = w.expect("member_left").await;
        assert_eq!(l["data"], json!({"meeting_id": id, "user_id": "mc", "reason": "gone"}));
    }
    let bound = Duration::from_secs(TTL_S + GRACE_S) + Duration::from_millis(1500);
    assert!(killed.elapsed() <= bound, "left after {:?}", killed.elapsed());
    // The others' pair is untouched.
    let m = nodes[0].get(&format!("/webrtc/meetings/{id}"), Some(&a)).await.body;
    let members: Vec<_> = m["members"].as_array().unwrap().iter().map(|x| x["user_id"].as_str().unwrap()).collect();
    assert_eq!(members, ["ma", "mb"]);
}

/// Issue #24: `/readyz` said 200 while Redis refused every write
/// (maxmemory). It writes now, so a node that cannot serve says so.
#[actix_web::test]
async fn readyz_fails_while_redis_refuses_writes() {
    let redis = Redis::start().await;
    let n = node(&redis, "oom").await;
    wait_until(Duration::from_secs(10), "readyz at start", async || n.get("/readyz", None).await.status == 200).await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1").query_async(&mut conn).await.unwrap();
    let r = n.get("/readyz", None).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.body);
    // And a call that writes is refused as unavailable, with nothing done.
    assert_eq!(n.camera_on(&token("oom-user")).await.status, 503);
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query_async(&mut conn).await.unwrap();
    wait_until(Duration::from_secs(10), "readyz once Redis takes writes", async || n.get("/readyz", None).await.status == 200).await;
}
