//! A node dies, Redis restarts: no ghost cameras, 503 instead of hangs, and
//! recovery on the same sockets.

use serde_json::json;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::helpers::*;

#[actix_web::test]
async fn a_killed_node_cannot_leave_a_camera_on() {
    let redis = Redis::start().await;
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

    redis.restart().await;
    until(Duration::from_secs(15), "readyz after the restart", async || nodes[0].get("/readyz", None).await.status == 200).await;
    // Redis came back empty: the nodes re-register their sessions, so the
    // owner is online again and the whole flow works on the old sockets.
    until(Duration::from_secs(15), "the owner re-registered", async || {
        nodes[2].get("/webrtc/users/own", Some(&viewer)).await.body["online"] == true
    })
    .await;
    until(Duration::from_secs(15), "cameraOn to succeed", async || nodes[2].camera_on(&owner).await.status == 200).await;
    vws.wait_user("own", |u| u["camera"] == "on").await;
    let room = nodes[2].show(&viewer, "own").await;
    let ev = ows.next_event().await;
    assert_eq!(ev["action"], "server-action:show_cam");
    assert_eq!(ev["data"]["room_id"], room);
    let r = nodes[1].post("offer", &owner, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(vws.next_event().await["action"], "server-action:put_offer");
}
