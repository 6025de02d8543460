//! Broadcast amplification: presence changes go to every session, so one
//! that says nothing new is not sent, and their rate has its own limit.

use serde_json::json;

use crate::support::{spawn_app, spawn_app_with, token};

#[actix_web::test]
async fn the_same_camera_state_again_is_answered_but_not_broadcast() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut watcher = app.ws(&bob).await;
    let meta = json!({"meta": {"name": "Ann", "bio": "x".repeat(1000)}});
    for _ in 0..50 {
        let r = app.post("cameraOn", &ann, meta.clone()).await;
        assert_eq!((r.status, r.body["user"]["camera"].as_str()), (200, Some("on")));
    }
    assert_eq!(app.post("cameraOff", &ann, json!({})).await.status, 200);
    let mut ons = 0;
    loop {
        let v = watcher.expect("update_user").await;
        if v["data"]["user"]["user_id"] != "ann" {
            continue;
        }
        match v["data"]["user"]["camera"].as_str() {
            Some("on") => ons += 1,
            _ => break,
        }
    }
    assert_eq!(ons, 1, "50 identical cameraOn were broadcast {ons} times");
}

#[actix_web::test]
async fn camera_changes_have_their_own_rate() {
    let app = spawn_app_with(|s| s.limits.presence_per_min = std::num::NonZeroU32::new(5).unwrap()).await;
    let ann = token("ann");
    for i in 0..5 {
        let r = app.post("cameraOn", &ann, json!({"meta": {"n": i}})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = app.post("cameraOff", &ann, json!({})).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // Other calls are not held back by it.
    assert_eq!(app.get("/webrtc/users", Some(&ann)).await.status, 200);
}
