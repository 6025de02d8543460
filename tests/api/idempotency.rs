//! `Idempotency-Key` on every POST: a retry gets the first answer again, and
//! what the call causes happens once.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Asserts that nothing else reaches `ws` for a while.
async fn quiet(ws: &mut Ws) {
    if let Some(f) = ws.try_next(Duration::from_millis(500)).await {
        panic!("unexpected frame {f}");
    }
}

#[actix_web::test]
async fn an_offer_retried_with_the_same_key_is_delivered_once() {
    let app = spawn_app().await;
    let (_a, mut b, room) = app.ann_shows_bob().await;
    let ann = token("ann");
    let body = json!({"room_id": room, "offer": sdp("offer")});
    let first = app.post_once("offer", &ann, "retry-1", body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = app.post_once("offer", &ann, "retry-1", body.clone()).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(b.expect("put_offer").await["data"]["offer"], sdp("offer"));
    quiet(&mut b).await;
    // A new key is a new call.
    assert_eq!(app.post_once("offer", &ann, "retry-2", body).await.status, 202);
    b.expect("put_offer").await;
}

#[actix_web::test]
async fn concurrent_duplicates_run_once() {
    let app = spawn_app().await;
    let (a, _b, room) = app.ann_shows_bob().await;
    let start = a.hello["data"]["last_id"].as_str().unwrap().to_owned();
    let bob = token("bob");
    let body = json!({"room_id": room, "candidate": candidate(1)});
    let (r1, r2, r3) = futures_util::join!(
        app.post_once("ice", &bob, "same", body.clone()),
        app.post_once("ice", &bob, "same", body.clone()),
        app.post_once("ice", &bob, "same", body.clone()),
    );
    // The first runs; a duplicate while it runs is told so (409), one after it gets its answer.
    let rs = [&r1, &r2, &r3];
    assert!(rs.iter().any(|r| r.status == 202 && r.header("idempotent-replayed").is_none()), "one ran");
    for r in rs {
        match r.status {
            202 => assert_eq!(r.body, json!({"room_id": room})),
            409 => {
                r.assert_error(409, "request_in_progress");
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            s => panic!("status {s}: {}", r.body),
        }
    }
    let after = app.post_once("ice", &bob, "same", body).await;
    assert_eq!((after.status, after.header("idempotent-replayed")), (202, Some("true")));
    // Ann's log holds the candidate once.
    let mut a = app.ws_query(&token("ann"), &format!("?presence=false&since={start}")).await;
    a.expect("show_cam").await;
    a.expect("put_ice").await;
    quiet(&mut a).await;
}

#[actix_web::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = spawn_app().await;
    let (_a, _b, room) = app.ann_shows_bob().await;
    let bob = token("bob");
    let ice = |n| json!({"room_id": room, "candidate": candidate(n)});
    assert_eq!(app.post_once("ice", &bob, "k", ice(1)).await.status, 202);
    app.post_once("ice", &bob, "k", ice(2)).await.assert_error(422, "idempotency_key_reused");
    app.post_once("hangup", &bob, "k", json!({"room_id": room})).await.assert_error(422, "idempotency_key_reused");
    // The room is still open: nothing of the refused calls happened.
    assert_eq!(app.get(&format!("/webrtc/connections/{room}"), Some(&bob)).await.body["state"], "requested");
}

#[actix_web::test]
async fn errors_are_not_kept_so_a_retry_runs_again() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let _a = app.ws(&ann).await;
    let show = json!({"user_id": "ann"});
    app.post_once("cameraShow", &bob, "show-1", show.clone()).await.assert_error(409, "camera_off");
    app.camera_on(&ann).await;
    let r = app.post_once("cameraShow", &bob, "show-1", show.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let again = app.post_once("cameraShow", &bob, "show-1", show).await;
    assert_eq!((again.status, &again.body), (201, &r.body));
}

#[actix_web::test]
async fn keys_belong_to_their_user_and_must_be_well_formed() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let a = app.post_once("cameraOn", &ann, "shared", json!({})).await;
    let b = app.post_once("cameraOn", &bob, "shared", json!({})).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(b.body["user"]["user_id"], "bob");
    app.post_once("cameraOn", &ann, "has space", json!({})).await.assert_error(400, "bad_request");
    app.post_once("cameraOn", &ann, &"x".repeat(256), json!({})).await.assert_error(400, "bad_request");
    // 401 still comes first.
    let r = app.request_with_header("POST", "/webrtc/cameraOn", None, Some(json!({}))).await;
    r.assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn websocket_commands_take_an_idempotency_key_too() {
    let app = spawn_app().await;
    let (mut a, mut b, room) = app.ann_shows_bob().await;
    let cmd = |ack: u32| json!({"cmd": "offer", "ack": ack, "idempotency_key": "ws-1", "room_id": room, "offer": sdp("offer")});
    let first = a.command(cmd(1)).await;
    assert_eq!(first["cmd"], "ack", "{first}");
    let second = a.command(cmd(2)).await;
    assert_eq!(second["cmd"], "ack", "{second}");
    assert_eq!(second["result"], first["result"]);
    b.expect("put_offer").await;
    quiet(&mut b).await;
    // The same key over REST is the same call: replayed, not run.
    let r = app.post_once("offer", &token("ann"), "ws-1", json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    quiet(&mut b).await;
    let bad: Value = a.command(json!({"cmd": "hangup", "ack": 4, "idempotency_key": 5, "room_id": room})).await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
}
