//! Nothing is lost on a reconnect: `?since=` replays what was missed, in order,
//! then goes live; a `since` the log no longer covers gets `resync` first.
//! `?presence=false` sessions get no `update_user`.

use crate::support::*;
use serde_json::{Value, json};

fn ice(room: &str, n: u16) -> Value {
    json!({"room_id": room, "candidate": candidate(n)})
}

#[actix_web::test]
async fn since_replays_missed_events_in_order_then_live_ones() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut a = app.ws_query(&ann, "?presence=false").await;
    let start = a.hello["data"]["last_id"].as_str().unwrap().to_owned();
    assert_ne!(start, "0-0", "hello hands out a real position even for an empty log");
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    let seen = a.expect("show_cam").await;
    let since = seen["id"].as_str().unwrap().to_owned();
    a.close().await;

    // Missed while away.
    app.post("ice", &bob, ice(&room, 1)).await;
    app.post("ice", &bob, ice(&room, 2)).await;
    app.post("hangup", &bob, json!({"room_id": room, "reason": "left"})).await;

    let mut back = app.ws_query(&ann, &format!("?presence=false&since={since}")).await;
    let e1 = back.expect("put_ice").await;
    let e2 = back.expect("put_ice").await;
    let e3 = back.expect("hangup").await;
    assert_eq!((&e1["data"]["candidate"], &e2["data"]["candidate"]), (&candidate(1), &candidate(2)));
    assert_eq!(e3["data"], json!({"room_id": room, "user_id": "bob", "reason": "left"}));
    assert!(event_id(&seen) < event_id(&e1) && event_id(&e1) < event_id(&e2) && event_id(&e2) < event_id(&e3));
    assert_eq!(back.hello["data"]["last_id"], e3["id"]);

    // Then live, with a newer id.
    let again = app.show(&bob, "ann").await;
    let live = back.expect("show_cam").await;
    assert_eq!(live["data"]["room_id"], again);
    assert!(event_id(&live) > event_id(&e3));

    // Older than anything the log ever held: resync, not a replay.
    let mut old = app.ws_query(&ann, "?presence=false&since=999999999999-0").await;
    assert_eq!(old.expect("resync").await["data"]["last_id"], live["id"]);

    // `0-0` may predate the log (it could have been trimmed or expired): resync.
    let mut zero = app.ws_query(&ann, "?presence=false&since=0-0").await;
    assert_eq!(zero.expect("resync").await["data"]["last_id"], live["id"]);

    // From the position the first hello gave, everything; with no since, nothing old.
    let mut all = app.ws_query(&ann, &format!("?presence=false&since={start}")).await;
    for (want, id) in [("show_cam", &seen), ("put_ice", &e1), ("put_ice", &e2), ("hangup", &e3), ("show_cam", &live)] {
        assert_eq!(all.expect(want).await["id"], id["id"]);
    }
    let mut fresh = app.ws_query(&ann, "?presence=false").await;
    app.post("ice", &bob, ice(&again, 3)).await;
    assert_eq!(fresh.expect("put_ice").await["data"]["candidate"], candidate(3));
}

#[actix_web::test]
async fn a_since_the_log_does_not_cover_gets_resync_first() {
    let app = spawn_app_with(|s| s.events.keep_max = 2).await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut a = app.ws_query(&ann, "?presence=false").await;
    let start = a.hello["data"]["last_id"].as_str().unwrap().to_owned();

    // Never issued, for a user with an empty log.
    let mut r = app.ws_query(&ann, "?presence=false&since=999999999999-0").await;
    assert_eq!(r.expect("resync").await["data"], json!({"last_id": start}));

    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    let first = a.expect("show_cam").await;
    for n in 1..=3 {
        app.post("ice", &bob, ice(&room, n)).await;
    }
    let mut last = Value::Null;
    for _ in 1..=3 {
        last = a.expect("put_ice").await;
    }

    // The first event was trimmed (keep_max 2): resync, then live events only.
    // The same from the position hello gave for the empty log.
    for since in [&start, first["id"].as_str().unwrap()] {
        let mut r = app.ws_query(&ann, &format!("?presence=false&since={since}")).await;
        let resync = r.expect("resync").await;
        assert_eq!(resync["data"]["last_id"], last["id"], "{since}");
    }
    let mut r = app.ws_query(&ann, &format!("?presence=false&since={}", first["id"].as_str().unwrap())).await;
    let resync = r.expect("resync").await;
    assert_eq!(resync["data"]["last_id"], last["id"]);
    assert!(resync.get("id").is_none(), "{resync}");
    app.post("ice", &bob, ice(&room, 9)).await;
    assert_eq!(r.expect("put_ice").await["data"]["candidate"], candidate(9));

    // Older than anything the log ever held, or newer than anything issued: resync too.
    for since in ["999999999999-0", "99999999999999-0"] {
        let mut r = app.ws_query(&ann, &format!("?presence=false&since={since}")).await;
        assert_eq!(r.expect("resync").await["action"], "server-action:resync", "{since}");
    }
    assert_eq!(app.ws_refused("?since=yesterday", Some(&format!("Bearer {ann}"))).await, 400);
    assert_eq!(app.ws_refused("?presence=maybe", Some(&format!("Bearer {ann}"))).await, 400);
}

#[actix_web::test]
async fn presence_false_sessions_get_no_update_user() {
    let app = spawn_app().await;
    let ann = token("ann");
    app.camera_on(&ann).await;
    let mut quiet = app.ws_query(&ann, "?presence=false").await;
    let mut loud = app.ws(&token("obs")).await;

    // Others come and go and change; Ann's quiet session hears only what is hers.
    let b = app.ws(&token("bob")).await;
    app.camera_on(&token("bob")).await;
    b.close().await;
    loud.wait_user("bob", |u| u["online"] == false).await;
    let room = app.show(&token("cat"), "ann").await;
    let ev = quiet.next().await;
    assert_eq!((ev["action"].as_str(), ev["data"]["room_id"].as_str()), (Some("server-action:show_cam"), Some(room.as_str())), "{ev}");
}
