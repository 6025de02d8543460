//! `GET /webrtc/events`: the same per-user log as `/ws?since=`, by long poll.
//! It answers when an event arrives, not on a timer tick.

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[actix_web::test]
async fn a_waiting_poll_answers_as_soon_as_an_event_arrives() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let since = app.position(&ann).await;
    app.camera_on(&ann).await;

    let started = Instant::now();
    let poll = app.parked_poll(&ann, &format!("?since={since}&timeout_s=30")).await;
    let shown = Instant::now();
    let room = app.show(&bob, "ann").await;
    let r = poll.await.unwrap();
    let woke = shown.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["action"], "server-action:show_cam");
    assert_eq!(events[0]["data"], json!({"room_id": room, "user_id": "bob"}));
    assert_eq!(r.body["last_id"], events[0]["id"]);
    // Woken by the event: far sooner than the 30 s it would otherwise wait.
    assert!(woke < Duration::from_secs(2) && started.elapsed() < Duration::from_secs(10), "woke after {woke:?}");
}

#[actix_web::test]
async fn polls_page_through_the_log_in_order_and_time_out_empty() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    app.camera_on(&ann).await;
    // With timeout_s=0, an answer at once: nothing yet, and the position to poll from.
    let start = app.poll(&ann, "?timeout_s=0").await;
    assert_eq!((start.status, &start.body["events"]), (200, &json!([])), "{}", start.body);
    let start = start.body["last_id"].as_str().unwrap().to_owned();
    assert_ne!(start, "0-0");
    let room = app.show(&bob, "ann").await;
    for n in 1..=3 {
        assert_eq!(app.post("ice", &bob, json!({"room_id": room, "candidate": candidate(n)})).await.status, 202);
    }
    let all = app.poll(&ann, &format!("?since={start}&timeout_s=5")).await;
    let events = all.body["events"].as_array().unwrap();
    let actions: Vec<_> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["server-action:show_cam", "server-action:put_ice", "server-action:put_ice", "server-action:put_ice"]);
    for (n, e) in events[1..].iter().enumerate() {
        assert_eq!(e["data"]["candidate"], candidate(n as u16 + 1));
    }
    assert!(events.windows(2).all(|w| event_id(&w[0]) < event_id(&w[1])));

    // From the middle: only what came after.
    let mid = events[1]["id"].as_str().unwrap();
    let rest = app.poll(&ann, &format!("?since={mid}&timeout_s=5")).await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(rest.body["last_id"], events[3]["id"]);

    // Nothing new: empty after the timeout, with the same cursor.
    let last = all.body["last_id"].as_str().unwrap();
    let asked = Instant::now();
    let idle = app.poll(&ann, &format!("?since={last}&timeout_s=1")).await;
    assert!(asked.elapsed() >= Duration::from_millis(900));
    assert_eq!(idle.body, json!({"events": [], "last_id": last}));
}

#[actix_web::test]
async fn a_poll_without_since_returns_only_what_comes_after_it() {
    // A grace period longer than the test: ann's camera stays on while she is offline.
    let app = spawn_app_with(|s| s.presence.grace = std::time::Duration::from_secs(60)).await;
    let (ann, bob) = (token("ann"), token("bob"));
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    assert_eq!(app.post("ice", &bob, json!({"room_id": room, "candidate": candidate(1)})).await.status, 202);
    // ann's log holds show_cam and put_ice; a poll without since skips them.
    let later = app.parked_poll(&ann, "?timeout_s=30").await;
    app.post("hangup", &bob, json!({"room_id": room})).await;
    let r = later.await.unwrap();
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["action"], "server-action:hangup");
}

#[actix_web::test]
async fn a_since_the_log_does_not_cover_gets_resync() {
    let app = spawn_app_with(|s| s.events.keep_max = 2).await;
    let (ann, bob) = (token("ann"), token("bob"));
    app.camera_on(&ann).await;
    let start = app.poll(&ann, "?timeout_s=0").await.body["last_id"].as_str().unwrap().to_owned();
    let room = app.show(&bob, "ann").await;
    let first = app.poll(&ann, &format!("?since={start}&timeout_s=0")).await.body["events"][0]["id"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        app.post("ice", &bob, json!({"room_id": room, "candidate": candidate(n)})).await;
    }
    let r = app.poll(&ann, &format!("?since={first}&timeout_s=5")).await;
    assert_eq!(r.status, 200);
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.body);
    assert_eq!(events[0]["action"], "server-action:resync");
    assert_eq!(events[0]["data"]["last_id"], r.body["last_id"]);
    // The cursor it gives works: nothing after it yet.
    let next = app.poll(&ann, &format!("?since={}&timeout_s=0", r.body["last_id"].as_str().unwrap())).await;
    assert_eq!(next.body["events"], json!([]));
}

#[actix_web::test]
async fn bad_polls_get_contract_errors() {
    let app = spawn_app().await;
    let ann = token("ann");
    app.poll(&ann, "?timeout_s=61").await.assert_error(400, "bad_request");
    app.poll(&ann, "?timeout_s=-1").await.assert_error(400, "bad_request");
    app.poll(&ann, "?since=yesterday").await.assert_error(400, "bad_request");
    assert_eq!(app.get("/webrtc/events?timeout_s=0", None).await.code(), "unauthorized");
}

#[actix_web::test]
async fn a_polling_user_is_online_until_the_polls_stop() {
    // Linger is 3 × heartbeat_s = 3 s; grace 1 s.
    let app = spawn_app_with(|s| {
        s.ws.heartbeat = std::time::Duration::from_secs(1);
        s.presence.grace = std::time::Duration::from_secs(1);
    })
    .await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut watcher = app.ws(&bob).await;
    app.camera_on(&ann).await;
    assert_eq!(app.poll(&ann, "?timeout_s=0").await.status, 200);
    watcher.wait_user("ann", |u| u["online"] == true && u["camera"] == "on").await;
    // Past the grace period the camera stays on while polls keep coming.
    for _ in 0..3 {
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
        app.poll(&ann, "?timeout_s=0").await;
    }
    assert_eq!(app.get("/webrtc/users/ann", Some(&bob)).await.body["camera"], "on");
    // Polls stop: offline after the linger, camera off after the grace.
    let off = watcher.wait_user("ann", |u| u["camera"] == "off").await;
    assert_eq!(off["online"], false);
}
