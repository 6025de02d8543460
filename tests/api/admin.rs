//! The admin API and webhooks on one node with the embedded broker (no
//! Redis): the same contract as across nodes, with a real receiver.

use serde_json::json;
use std::time::Duration;

use crate::support::receiver::*;
use crate::support::*;

#[actix_web::test]
async fn every_type_of_webhook_arrives_signed_from_one_node() {
    let rx = Receiver::start().await;
    let url = rx.url();
    let app = spawn_app_with(|s| hooked(s, &url)).await;
    every_type_arrives_signed_through(&[app], &rx).await;
}

#[actix_web::test]
async fn a_dead_letter_replays_on_one_node() {
    let rx = Receiver::start().await;
    rx.set(Mode::Fail);
    let url = rx.url();
    let app = spawn_app_with(|s| {
        hooked(s, &url);
        s.webhooks.max_attempts = 2;
    })
    .await;
    assert_eq!(app.camera_on(&token("gus")).await.status, 200);
    wait_until(WAIT, "a dead letter", async || app.admin("/webhooks/dead", None).await.body["dead"].as_array().is_some_and(|d| !d.is_empty())).await;
    let dead = app.admin("/webhooks/dead?limit=10", None).await.body["dead"][0].clone();
    assert_eq!((dead["attempts"].as_u64(), dead["error"].as_str()), (Some(2), Some("HTTP 500")), "{dead}");
    rx.set(Mode::Ok);
    assert_eq!(app.admin(&format!("/webhooks/dead/{}/replay", dead["id"].as_str().unwrap()), Some(json!({}))).await.status, 200);
    wait_for(&rx, "the replayed webhook", WAIT, |l| has(l, "camera.on", "gus")).await;
    app.admin("/webhooks/dead?limit=0", None).await.assert_error(400, "bad_request");
}

#[actix_web::test]
async fn admin_on_one_node_counts_lists_disconnects_and_bans() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut a = app.ws_query(&ann, "?presence=false").await;
    let mut b = app.ws(&bob).await;
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    a.expect("show_cam").await;
    let s = app.admin("/stats", None).await.body;
    assert_eq!(s, json!({"nodes": 1, "sessions": 2, "users_online": 2, "cameras_on": 1, "rooms_open": 1, "meetings_open": 0}), "{s}");
    let nodes = app.admin("/nodes", None).await.body;
    assert_eq!((nodes["nodes"][0]["sessions"].as_u64(), nodes["nodes"][0]["lease_expires_at"].is_null()), (Some(2), true), "{nodes}");
    let view = app.admin("/users/ann", None).await.body;
    assert_eq!((view["sessions"][0]["transport"].as_str(), view["rooms"][0]["room_id"].as_str()), (Some("websocket"), Some(room.as_str())), "{view}");

    let r = app.admin("/users/ann/disconnect", Some(json!({"ban_s": 2}))).await;
    assert_eq!((r.status, r.body["sessions"].as_u64()), (200, Some(1)), "{}", r.body);
    assert_eq!(a.next_event().await["action"], "server-action:kicked");
    assert_eq!(a.closed().await, Some(4003));
    assert_eq!(b.wait_user("ann", |u| u["online"] == false).await["camera"], "off");
    let ev = b.next_event().await;
    assert_eq!((ev["action"].as_str(), ev["data"]["reason"].as_str()), (Some("server-action:hangup"), Some("kicked")), "{ev}");
    assert_eq!(app.ws_status("", &format!("Bearer {ann}")).await, 403);
    app.get("/webrtc/users/bob", Some(&ann)).await.assert_error(403, "forbidden");
    app.poll(&ann, "?timeout_s=0").await.assert_error(403, "forbidden");
    wait_until(Duration::from_secs(6), "the ban to end", async || app.get("/webrtc/users/bob", Some(&ann)).await.status == 200).await;
    let s = app.admin("/stats", None).await.body;
    assert_eq!((s["users_online"].as_i64(), s["cameras_on"].as_i64(), s["rooms_open"].as_i64()), (Some(1), Some(0), Some(0)), "{s}");
    // An admin token is no pass for /webrtc calls of a banned operator either: bans apply to users.
    app.get("/admin/stats", Some(&bob)).await.assert_error(403, "forbidden");
}

/// A long poll of a kicked user answers with `kicked`; the next poll opens
/// a new presence session, so the user is online again.
#[actix_web::test]
async fn a_kicked_poller_comes_back_online_with_its_next_poll() {
    let app = spawn_app().await;
    let cid = token("cid");
    let first = app.poll(&cid, "?timeout_s=0").await;
    let since = first.body["last_id"].as_str().unwrap().to_owned();
    let parked = app.parked_poll(&cid, &format!("?since={since}&timeout_s=10")).await;
    wait_until(WAIT, "cid online", async || app.admin("/users/cid", None).await.body["user"]["online"] == true).await;
    assert_eq!(app.admin("/users/cid", None).await.body["sessions"][0]["transport"], "poll");
    assert_eq!(app.admin("/users/cid/disconnect", Some(json!({}))).await.status, 200);
    let answered = parked.await.unwrap();
    assert_eq!(answered.body["events"][0]["action"], "server-action:kicked", "{}", answered.body);
    let last = answered.body["last_id"].as_str().unwrap().to_owned();
    let _again = app.parked_poll(&cid, &format!("?since={last}&timeout_s=5")).await;
    wait_until(WAIT, "cid online again", async || app.admin("/users/cid", None).await.body["user"]["online"] == true).await;
}

/// On the embedded broker nobody else will deliver what a node holds: a
/// drain sends every webhook first (within `server.drain_s`), retries included.
#[actix_web::test]
async fn a_drain_on_one_node_sends_every_webhook_first() {
    let rx = Receiver::start().await;
    rx.set(Mode::FailFirst(1));
    let url = rx.url();
    let app = spawn_app_with(|s| {
        hooked(s, &url);
        s.server.drain = Duration::from_secs(10);
    })
    .await;
    for u in 0..20 {
        let t = token(&format!("d{u}"));
        assert_eq!(app.camera_on(&t).await.status, 200);
        assert_eq!(app.post("cameraOff", &t, json!({})).await.status, 200);
    }
    app.node.request_drain();
    wait_for(&rx, "all 40 webhooks, though the node drains", WAIT, |l| l.iter().filter(|v| v["type"].as_str().is_some_and(|t| t.starts_with("camera."))).count() == 40).await;
}
