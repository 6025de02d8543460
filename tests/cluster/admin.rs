//! The admin API across nodes on one real Redis (and a Redis Cluster): only
//! admin tokens get in; a disconnect closes the user's sessions on every
//! node with 4003 and does everything else at once; a ban holds on every
//! node and across a restart, and ends on time; the counts add up.

use serde_json::json;
use std::time::Duration;

use crate::support::cluster::*;
use crate::support::*;

/// Every `/admin` operation of the OpenAPI document: 401 without a token,
/// 403 with any token that is not an admin's, and neither with an admin's.
#[actix_web::test]
async fn a_non_admin_token_gets_403_everywhere_under_admin() {
    let redis = Redis::start().await;
    let n1 = node(&redis, "n1").await;
    let doc = n1.get("/openapi.json", None).await.body;
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(p, _)| p.starts_with("/admin/")) {
        let concrete = path.replace("{user_id}", "ann").replace("{room_id}", "01JD3Z5T8Q9W2E4R6T8Y0U2I4O").replace("{id}", "0:1-0");
        for method in ["get", "post"].into_iter().filter(|m| item.get(*m).is_some()) {
            ops.push((method.to_uppercase(), concrete.clone()));
        }
    }
    assert_eq!(ops.len(), 7, "{ops:?}");
    let user = format!("Bearer {}", token("ann"));
    let forged_admin = format!("Bearer {}", token_with(json!({"sub": "ops", "exp": now() + 60, "admin": true}), "another-secret-another-secret-0123456"));
    let stringly = format!("Bearer {}", token_with(json!({"sub": "ops", "exp": now() + 60, "admin": "true"}), SECRET));
    for (method, path) in &ops {
        let body = (method == "POST").then(|| json!({}));
        n1.request_with_header(method, path, None, body.clone()).await.assert_error(401, "unauthorized");
        n1.request_with_header(method, path, Some(&forged_admin), body.clone()).await.assert_error(401, "unauthorized");
        n1.request_with_header(method, path, Some(&user), body.clone()).await.assert_error(403, "forbidden");
        n1.request_with_header(method, path, Some(&stringly), body.clone()).await.assert_error(403, "forbidden");
        let admin = n1.admin(path.trim_start_matches("/admin"), body).await;
        assert!(![401, 403].contains(&admin.status), "{method} {path}: {} {}", admin.status, admin.body);
        assert!(admin.status < 500, "{method} {path}: {} {}", admin.status, admin.body);
    }
}

/// Ann has a socket on each of two nodes, her camera on with Bob watching,
/// and a meeting with Carol. An operator disconnects her through a third
/// node with a ban: both sockets get `kicked` and close with 4003, Bob gets
/// `hangup` (kicked), Carol `member_left` (kicked), everyone sees her
/// offline with the camera off; her handshakes, calls and polls are 403 on
/// every node, also on a node started after the ban, until it ends.
#[actix_web::test]
async fn disconnect_closes_sessions_on_two_nodes_and_bans_for_ban_s() {
    disconnect_closes_sessions_on_two_nodes_and_bans_on(Redis::start().await).await;
}

#[actix_web::test]
async fn disconnect_closes_sessions_on_two_nodes_and_bans_on_a_redis_cluster() {
    disconnect_closes_sessions_on_two_nodes_and_bans_on(RedisCluster::start(3, 0).await).await;
}

async fn disconnect_closes_sessions_on_two_nodes_and_bans_on(redis: impl Backing) {
    let nodes = three_nodes(&redis).await;
    let (ann, bob, carol) = (token("ann"), token("bob"), token("carol"));
    let mut a1 = nodes[0].ws_query(&ann, "?presence=false").await;
    let mut a2 = nodes[1].ws_query(&ann, "?presence=false").await;
    let mut b = nodes[1].ws(&bob).await;
    let mut c = nodes[2].ws_query(&carol, "?presence=false").await;
    assert_eq!(nodes[0].camera_on(&ann).await.status, 200);
    let room = nodes[1].show(&bob, "ann").await;
    let m = nodes[2].post("meetings", &carol, json!({})).await.body["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    assert_eq!(nodes[2].post(&format!("meetings/{m}/join"), &carol, json!({"name": "Carol"})).await.status, 200);
    assert_eq!(nodes[0].post(&format!("meetings/{m}/join"), &ann, json!({"name": "Ann"})).await.status, 200);
    b.wait_user("ann", |u| u["camera"] == "on").await;
    c.expect("member_joined").await;

    let r = nodes[2].admin("/users/ann/disconnect", Some(json!({"reason": "spam", "ban_s": 4}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["user_id"].as_str(), r.body["sessions"].as_u64()), (Some("ann"), Some(2)), "{}", r.body);
    assert!(r.body["banned_until"].is_string());
    for ws in [&mut a1, &mut a2] {
        assert_eq!(ws.next_event().await["action"], "server-action:show_cam");
        let ev = ws.next_event().await;
        assert_eq!((ev["action"].as_str(), ev["data"]["reason"].as_str()), (Some("server-action:kicked"), Some("spam")), "{ev}");
        assert_eq!(ws.closed().await, Some(4003));
    }
    let gone = b.wait_user("ann", |u| u["online"] == false).await;
    assert_eq!(gone["camera"], "off", "offline and camera off in one change: {gone}");
    let ev = b.next_event().await;
    assert_eq!((ev["action"].as_str(), ev["data"]["room_id"].as_str(), ev["data"]["reason"].as_str()), (Some("server-action:hangup"), Some(room.as_str()), Some("kicked")), "{ev}");
    let ev = c.next_event().await;
    assert_eq!(ev["action"], "server-action:hangup", "{ev}");
    let ev = c.next_event().await;
    assert_eq!((ev["action"].as_str(), ev["data"]["user_id"].as_str(), ev["data"]["reason"].as_str()), (Some("server-action:member_left"), Some("ann"), Some("kicked")), "{ev}");

    // Banned everywhere: the node that banned at once, the others within a sweep.
    for n in &nodes {
        wait_until(WAIT, "the ban on every node", async || n.ws_status("", &format!("Bearer {ann}")).await == 403).await;
        n.camera_on(&ann).await.assert_error(403, "forbidden");
        n.poll(&ann, "?timeout_s=0").await.assert_error(403, "forbidden");
    }
    // A node started now reads the ban from Redis.
    let late = node(&redis, "late").await;
    assert_eq!(late.ws_status("", &format!("Bearer {ann}")).await, 403, "read at start");
    // Bob is not banned.
    assert_eq!(nodes[0].camera_on(&bob).await.status, 200);
    let state = nodes[0].admin("/users/ann", None).await;
    assert_eq!((state.body["user"]["online"].as_bool(), state.body["user"]["camera"].as_str()), (Some(false), Some("off")), "{}", state.body);
    assert!(state.body["meetings"].as_array().unwrap().is_empty());
    // The ban ends on time.
    wait_until(Duration::from_secs(8), "the ban to end", async || nodes[1].camera_on(&ann).await.status == 200).await;
    let mut again = nodes[1].ws_query(&ann, "?presence=false").await;
    assert!(again.try_next(Duration::from_millis(300)).await.is_none_or(|v| v["action"] != "server-action:kicked"));
}

/// Without a ban the user may come back at once; a socket opened after the
/// kick replays it (with `since`) and stays open.
#[actix_web::test]
async fn a_disconnect_without_ban_lets_the_user_back_and_a_replay_does_not_kick_again() {
    let redis = Redis::start().await;
    let (n1, n2) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let dan = token("dan");
    let mut ws = n1.ws_query(&dan, "?presence=false").await;
    let since = ws.hello["data"]["last_id"].as_str().unwrap().to_owned();
    let r = n2.admin("/users/dan/disconnect", Some(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ws.next_event().await["data"]["reason"], "kicked");
    assert_eq!(ws.closed().await, Some(4003));
    let mut back = n2.ws_query(&dan, &format!("?presence=false&since={since}")).await;
    assert_eq!(back.next_event().await["action"], "server-action:kicked", "the replay carries it");
    assert!(back.try_next(Duration::from_millis(500)).await.is_none(), "and the socket stays open");
    // Online again with the new socket (once the flap window since the kick ends).
    wait_until(WAIT, "dan online again", async || n1.admin("/users/dan", None).await.body["user"]["online"] == true).await;
    let state = n1.admin("/users/dan", None).await;
    assert_eq!(state.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(state.body["sessions"][0]["transport"], "websocket");
    n1.admin("/users/nobody-ever/disconnect", Some(json!({}))).await.assert_error(404, "user_not_found");
    n1.admin("/users/dan/disconnect", Some(json!({"ban_s": 0}))).await.assert_error(400, "bad_request");
    n1.admin("/users/dan/disconnect", Some(json!({"ban": 5}))).await.assert_error(400, "bad_request");
}

#[actix_web::test]
async fn close_room_hangs_up_both_sides() {
    let redis = Redis::start().await;
    let (n1, n2) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (mut a, mut b, room) = n1.ann_shows_bob().await;
    let r = n2.admin(&format!("/rooms/{room}/close"), Some(json!({"reason": "abuse"}))).await;
    assert_eq!((r.status, r.body["state"].as_str(), r.body["reason"].as_str()), (200, Some("closed"), Some("abuse")), "{}", r.body);
    for ws in [&mut a, &mut b] {
        let ev = ws.next_event().await;
        assert_eq!((ev["action"].as_str(), ev["data"]["user_id"].as_str(), ev["data"]["reason"].as_str()), (Some("server-action:hangup"), Some("ops"), Some("abuse")), "{ev}");
    }
    let again = n1.admin(&format!("/rooms/{room}/close"), Some(json!({}))).await;
    assert_eq!((again.status, again.body["reason"].as_str()), (200, Some("abuse")), "closed already: as it is");
    n1.admin("/rooms/01JD3Z5T8Q9W2E4R6T8Y0U2I4O/close", Some(json!({}))).await.assert_error(404, "room_not_found");
    n1.admin(&format!("/rooms/{room}/close"), Some(json!({"reason": ""}))).await.assert_error(400, "bad_request");
}

/// The counts follow the changes on every node, and the nodes list their sessions.
pub async fn stats_follow_the_changes_on(redis: impl Backing) {
    let (n1, n2) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (ann, bob) = (token("ann"), token("bob"));
    let base = n1.admin("/stats", None).await.body;
    assert_eq!(base["nodes"], 2, "{base}");
    let wa = n1.ws_query(&ann, "?presence=false").await;
    let wb = n2.ws_query(&bob, "?presence=false").await;
    n1.camera_on(&ann).await;
    let room = n2.show(&bob, "ann").await;
    let m = n1.post("meetings", &ann, json!({})).await.body["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    n2.post(&format!("meetings/{m}/join"), &ann, json!({"name": "Ann"})).await;
    let s = n2.admin("/stats", None).await.body;
    assert_eq!(s, json!({"nodes": 2, "sessions": 2, "users_online": 2, "cameras_on": 1, "rooms_open": 1, "meetings_open": 1}), "{s}");
    let nodes = n1.admin("/nodes", None).await.body;
    let mut listed: Vec<(String, u64)> = nodes["nodes"].as_array().unwrap().iter().map(|n| (n["node_id"].as_str().unwrap().to_owned(), n["sessions"].as_u64().unwrap())).collect();
    listed.sort();
    assert_eq!(listed, [("n1".to_owned(), 1), ("n2".to_owned(), 1)]);
    assert!(nodes["nodes"][0]["lease_expires_at"].is_string());
    let ann_view = n2.admin("/users/ann", None).await.body;
    assert_eq!(ann_view["sessions"][0]["node_id"], "n1", "{ann_view}");
    assert_eq!(ann_view["rooms"][0]["room_id"], room.as_str());
    assert_eq!(ann_view["meetings"], json!([m]));
    n2.post("hangup", &bob, json!({"room_id": room})).await;
    n1.post(&format!("meetings/{m}/leave"), &ann, json!({})).await;
    n1.post("cameraOff", &ann, json!({})).await;
    wa.close().await;
    wb.close().await;
    wait_until(WAIT, "the counts back to zero", async || {
        n1.admin("/stats", None).await.body == json!({"nodes": 2, "sessions": 0, "users_online": 0, "cameras_on": 0, "rooms_open": 0, "meetings_open": 0})
    })
    .await;
    n1.admin("/users/nobody-ever", None).await.assert_error(404, "user_not_found");
}

#[actix_web::test]
async fn stats_follow_the_changes_on_one_redis() {
    stats_follow_the_changes_on(Redis::start().await).await;
}

#[actix_web::test]
async fn stats_follow_the_changes_on_a_redis_cluster() {
    stats_follow_the_changes_on(RedisCluster::start(3, 0).await).await;
}

/// 200 disconnects with bans at once over two nodes, of 20 users with
/// sockets: each user ends banned, offline, with every socket closed 4003.
#[actix_web::test]
async fn two_hundred_concurrent_disconnects_over_two_nodes_leave_nothing_half_done() {
    let redis = Redis::start().await;
    let nodes = [node(&redis, "n1").await, node(&redis, "n2").await];
    let mut sockets = Vec::new();
    for u in 0..20 {
        let t = token(&format!("k{u}"));
        nodes[u % 2].camera_on(&t).await;
        sockets.push(nodes[(u + 1) % 2].ws_query(&t, "?presence=false").await);
    }
    let calls = (0..200).map(|i| {
        let n = &nodes[i % 2];
        async move { n.admin(&format!("/users/k{}/disconnect", i % 20), Some(json!({"ban_s": 30}))).await.status }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for mut ws in sockets {
        assert_eq!(ws.next_event().await["action"], "server-action:kicked");
        assert_eq!(ws.closed().await, Some(4003));
    }
    for u in 0..20 {
        let v = nodes[0].admin(&format!("/users/k{u}"), None).await.body;
        assert_eq!((v["user"]["online"].as_bool(), v["user"]["camera"].as_str()), (Some(false), Some("off")), "{v}");
        // A read, which changes nothing while the other node's copy of the bans catches up.
        wait_until(WAIT, "the ban on both nodes", async || nodes[1].get("/webrtc/users/k0", Some(&token(&format!("k{u}")))).await.status == 403).await;
    }
    let s = nodes[1].admin("/stats", None).await.body;
    assert_eq!((s["users_online"].as_i64(), s["cameras_on"].as_i64()), (Some(0), Some(0)), "{s}");
}
