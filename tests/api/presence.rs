//! Presence: online while a session is open; after the last one ends, the
//! camera goes off once `presence.grace_s` passes unless the user comes back.
//! No sleeps: a later grace period of another user is the clock.

use crate::support::*;
use serde_json::json;

async fn app() -> TestApp {
    // Flapping is coalesced over a window (tests/abuse/presence_flaps.rs); here each change is heard.
    spawn_app_with(|s| {
        s.presence.grace = std::time::Duration::from_secs(1);
        s.presence.flap_window = std::time::Duration::from_millis(1);
    })
    .await
}

/// Starts a grace period for `marker` now (cameraOn with no session) and waits,
/// on `obs`, for it to end. Any grace period started before has ended by then.
async fn grace_passes(app: &TestApp, obs: &mut Ws, marker: &str) {
    app.camera_on(&token(marker)).await;
    obs.wait_user(marker, |u| u["camera"] == "off").await;
}

#[actix_web::test]
async fn the_camera_goes_off_after_the_grace_with_every_effect_of_camera_off() {
    let app = app().await;
    let (ann, bob, cat) = (token("ann"), token("bob"), token("cat"));
    let mut obs = app.ws(&token("obs")).await;
    let mut b = app.ws_query(&bob, "?presence=false").await;
    let mut c = app.ws_query(&cat, "?presence=false").await;
    let a = app.ws(&ann).await;
    app.camera_on(&ann).await;
    app.camera_on(&cat).await;
    let watched = app.show(&bob, "ann").await; // Bob watches Ann
    let watching = app.show(&ann, "cat").await; // Ann watches Cat
    assert_eq!(c.expect("show_cam").await["data"]["room_id"], watching);
    obs.wait_user("cat", |u| u["camera"] == "on").await;

    a.close().await;
    // Offline at once, camera still on; then off when the grace ends.
    let offline = obs.expect_user("ann", false, "on").await;
    let off = obs.expect_user("ann", false, "off").await;
    let (t0, t1) = (offline["updated_at"].as_str().unwrap(), off["updated_at"].as_str().unwrap());
    let gap = chrono_ms(t1) - chrono_ms(t0);
    assert!(gap >= 900, "the camera stayed on for the grace period: {gap} ms");

    let to_bob = b.expect("hangup").await;
    assert_eq!(to_bob["data"], json!({"room_id": watched, "user_id": "ann", "reason": "camera_off"}));
    let to_cat = c.expect("hangup").await;
    assert_eq!(to_cat["data"], json!({"room_id": watching, "user_id": "ann", "reason": "gone"}));
    let u = app.get("/webrtc/users/ann", Some(&bob)).await;
    assert_eq!((u.body["online"].as_bool(), u.body["camera"].as_str()), (Some(false), Some("off")));
}

#[actix_web::test]
async fn a_reconnect_within_the_grace_keeps_the_camera_on() {
    let app = app().await;
    let ann = token("ann");
    let mut obs = app.ws(&token("obs")).await;
    let a = app.ws(&ann).await;
    app.camera_on(&ann).await;
    obs.wait_user("ann", |u| u["camera"] == "on").await;

    a.close().await;
    obs.expect_user("ann", false, "on").await;
    let _back = app.ws(&ann).await;
    let back = obs.expect_user("ann", true, "on").await;

    // Two grace periods, each started after the one before ended: Ann's would be long over.
    grace_passes(&app, &mut obs, "m1").await;
    grace_passes(&app, &mut obs, "m2").await;
    let u = app.get("/webrtc/users/ann", Some(&ann)).await;
    assert_eq!((u.body["online"].as_bool(), u.body["camera"].as_str()), (Some(true), Some("on")));
    assert_eq!(u.body["version"], back["version"], "nothing changed since she came back");
}

#[actix_web::test]
async fn camera_on_with_no_session_starts_the_grace_and_a_session_stops_it() {
    let app = app().await;
    let mut obs = app.ws(&token("obs")).await;
    obs.expect_user("obs", true, "off").await;

    // Turned on with no session: off again after the grace.
    let r = app.camera_on(&token("ann")).await;
    assert_eq!((r.body["user"]["online"].as_bool(), r.body["user"]["camera"].as_str()), (Some(false), Some("on")));
    obs.expect_user("ann", false, "on").await;
    obs.expect_user("ann", false, "off").await;

    // Turned on just before opening the WebSocket: stays on.
    app.camera_on(&token("bob")).await;
    let _b = app.ws(&token("bob")).await;
    obs.expect_user("bob", false, "on").await;
    obs.expect_user("bob", true, "on").await;
    grace_passes(&app, &mut obs, "m1").await;
    grace_passes(&app, &mut obs, "m2").await;
    assert_eq!(app.get("/webrtc/users/bob", Some(&token("x"))).await.body["camera"], "on");
}

#[actix_web::test]
async fn online_flips_only_when_the_last_session_closes() {
    let app = app().await;
    let ann = token("ann");
    let mut obs = app.ws(&token("obs")).await;
    obs.expect_user("obs", true, "off").await;
    let one = app.ws(&ann).await;
    let two = app.ws(&ann).await;
    obs.expect_user("ann", true, "off").await;

    one.close().await;
    // No update for the first close: the next one about Ann is her cameraOn, still online.
    app.camera_on(&ann).await;
    obs.expect_user("ann", true, "on").await;
    two.close().await;
    obs.expect_user("ann", false, "on").await;
}

#[actix_web::test]
async fn a_viewer_who_leaves_closes_the_rooms_they_watch_with_gone() {
    let app = app().await;
    let ann = token("ann");
    let (mut a, b, room) = app.ann_shows_bob().await;

    b.close().await;
    let ev = a.expect("hangup").await;
    assert_eq!(ev["data"], json!({"room_id": room, "user_id": "bob", "reason": "gone"}));
    let conn = app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await;
    assert_eq!((conn.body["state"].as_str(), conn.body["reason"].as_str()), (Some("closed"), Some("gone")));
}

fn chrono_ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts).unwrap().timestamp_millis()
}
