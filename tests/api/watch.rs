//! Presence at scale, on one node: `?presence=all|watched|none`, the `watch`
//! and `unwatch` commands, `limits.max_watch` and `presence.broadcast`. A
//! frame that must not come is shown absent by a later one that must: the
//! next `update_user` is the marker's, not the unwatched user's.

use crate::support::*;
use serde_json::json;

async fn app_with(f: impl FnOnce(&mut camsig::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.presence.flap_window = std::time::Duration::from_millis(1);
        f(s);
    })
    .await
}

#[actix_web::test]
async fn a_watched_session_hears_only_the_users_it_watches() {
    let app = app_with(|_| {}).await;
    let mut w = app.ws_query(&token("watcher"), "?presence=watched").await;
    app.camera_on(&token("ann")).await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["ann", "bob", "ann"]})).await;
    assert_eq!((ack["cmd"].as_str(), ack["ack"].as_i64(), ack["action"].as_str()), (Some("ack"), Some(1), Some("watch")), "{ack}");
    // Their state now: ann's camera is on; bob was never seen, so he is left out.
    let users = ack["result"]["users"].as_array().unwrap();
    assert_eq!(users.len(), 1, "{ack}");
    assert_eq!((users[0]["user_id"].as_str(), users[0]["camera"].as_str()), (Some("ann"), Some("on")));

    // cat is not watched: her change does not come, ann's (after it) does.
    app.camera_on(&token("cat")).await;
    app.post("cameraOff", &token("ann"), json!({})).await;
    let u = w.next_update_is("ann").await;
    assert_eq!(u["camera"], "off");
    app.camera_on(&token("bob")).await;
    assert_eq!(w.next_update_is("bob").await["camera"], "on");

    // Unwatched: ann's next change does not come, bob's does.
    let ack = w.command(json!({"cmd": "unwatch", "ack": 2, "user_ids": ["ann"]})).await;
    assert_eq!((ack["cmd"].as_str(), ack["result"].clone()), (Some("ack"), json!({})), "{ack}");
    app.camera_on(&token("ann")).await;
    app.post("cameraOff", &token("bob"), json!({})).await;
    assert_eq!(w.next_update_is("bob").await["camera"], "off");
}

#[actix_web::test]
async fn presence_none_hears_nobody_and_all_hears_everyone() {
    let app = app_with(|_| {}).await;
    let mut none = app.ws_query(&token("quiet"), "?presence=none").await;
    let mut all = app.ws_query(&token("loud"), "?presence=all").await;
    app.camera_on(&token("ann")).await;
    all.wait_user("ann", |u| u["camera"] == "on").await;
    // The quiet session's next frame is its own ack, not ann's change.
    none.send_text(&json!({"cmd": "ping", "ack": 9}).to_string()).await;
    let ack = none.next().await;
    assert_eq!(ack["ack"], 9, "{ack}");
    // A watch on it acks the state, and still brings no update_user.
    none.send_text(&json!({"cmd": "watch", "ack": 10, "user_ids": ["ann"]}).to_string()).await;
    let ack = none.next().await;
    assert_eq!(ack["result"]["users"][0]["user_id"], "ann", "{ack}");
    app.post("cameraOff", &token("ann"), json!({})).await;
    all.wait_user("ann", |u| u["camera"] == "off").await;
    none.send_text(&json!({"cmd": "ping", "ack": 11}).to_string()).await;
    let ack = none.next().await;
    assert_eq!(ack["ack"], 11, "an update_user came before the ack: {ack}");
    // Only the state: no list is kept, so limits.max_watch does not apply (found by an attack: 409 after 1000).
    let many: Vec<String> = (0..1001).map(|i| format!("n{i}")).collect();
    let ack = none.command(json!({"cmd": "watch", "ack": 12, "user_ids": many})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
}

#[actix_web::test]
async fn broadcast_watched_turns_everyone_broadcast_off() {
    let app = app_with(|s| s.presence.broadcast = camsig::config::Broadcast::Watched).await;
    let mut w = app.ws(&token("watcher")).await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["bob"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    app.camera_on(&token("ann")).await;
    app.camera_on(&token("bob")).await;
    assert_eq!(w.next_update_is("bob").await["camera"], "on");
}

#[actix_web::test]
async fn max_watch_is_all_or_nothing_and_bad_lists_are_400() {
    let app = app_with(|s| s.limits.max_watch = 3).await;
    let mut w = app.ws_query(&token("watcher"), "?presence=watched").await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["a1", "a2"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    // Two more would make four: refused, and neither is added.
    let err = w.command(json!({"cmd": "watch", "ack": 2, "user_ids": ["a3", "a4"]})).await;
    assert_eq!((err["cmd"].as_str(), err["ack"].as_i64(), err["error"]["code"].as_str()), (Some("error"), Some(2), Some("too_many_watched")), "{err}");
    // Watching one already watched adds nothing, so a1 and a3 fit.
    let ack = w.command(json!({"cmd": "watch", "ack": 3, "user_ids": ["a1", "a3"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    app.camera_on(&token("a4")).await;
    app.camera_on(&token("a3")).await;
    assert_eq!(w.next_update_is("a3").await["camera"], "on");
    for (bad, ack) in [(json!({"cmd": "watch", "ack": 4, "user_ids": "a1"}), 4), (json!({"cmd": "watch", "ack": 5, "user_ids": ["no spaces"]}), 5), (json!({"cmd": "unwatch", "ack": 6}), 6)] {
        let err = w.command(bad).await;
        assert_eq!((err["ack"].as_i64(), err["error"]["code"].as_str()), (Some(ack), Some("bad_request")), "{err}");
    }
}

#[actix_web::test]
async fn a_bad_presence_mode_is_refused_before_the_upgrade() {
    let app = app_with(|_| {}).await;
    assert_eq!(app.ws_refused("?presence=some", Some(&format!("Bearer {}", token("x")))).await, 400);
}
