//! Commands over the WebSocket: acks carry the REST body, errors carry the
//! REST codes, garbage is answered and the session stays, oversized frames close it.

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[actix_web::test]
async fn the_whole_flow_over_websocket_commands() {
    let app = spawn_app().await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    let mut b = app.ws_query(&token("bob"), "?presence=false").await;

    let r = a.command(json!({"cmd": "cameraOn", "ack": "a1", "meta": {"name": "Ann"}})).await;
    assert_eq!((r["cmd"].as_str(), r["ack"].as_str(), r["action"].as_str()), (Some("ack"), Some("a1"), Some("cameraOn")), "{r}");
    assert_eq!((r["result"]["user"]["camera"].as_str(), &r["result"]["user"]["meta"]), (Some("on"), &json!({"name": "Ann"})));

    let r = b.command(json!({"cmd": "cameraShow", "ack": 1, "user_id": "ann"})).await;
    assert_eq!((r["cmd"].as_str(), &r["ack"], r["action"].as_str()), (Some("ack"), &json!(1), Some("cameraShow")), "{r}");
    let room = r["result"]["connection"]["room_id"].as_str().unwrap().to_owned();
    assert_eq!((r["result"]["connection"]["state"].as_str(), &r["result"]["ice_servers"]), (Some("requested"), &json!([])));
    assert_eq!(a.expect("show_cam").await["data"], json!({"room_id": room, "user_id": "bob"}));

    let r = a.command(json!({"cmd": "offer", "ack": "a2", "room_id": room, "offer": sdp("offer")})).await;
    assert_eq!((r["action"].as_str(), r["result"]["connection"]["state"].as_str()), (Some("offer"), Some("offered")), "{r}");
    assert_eq!(b.expect("put_offer").await["data"]["offer"], sdp("offer"));

    let r = b.command(json!({"cmd": "answer", "ack": "b2", "room_id": room, "answer": sdp("answer")})).await;
    assert_eq!((r["action"].as_str(), r["result"]["connection"]["state"].as_str()), (Some("answer"), Some("answered")), "{r}");
    assert_eq!(a.expect("put_answer").await["data"]["answer"], sdp("answer"));

    let r = b.command(json!({"cmd": "ice", "ack": "b3", "room_id": room, "candidate": candidate(5), "dest": "owner"})).await;
    assert_eq!((r["action"].as_str(), &r["result"]), (Some("ice"), &json!({"room_id": room})), "{r}");
    assert_eq!(a.expect("put_ice").await["data"]["candidate"], candidate(5));

    let r = a.command(json!({"cmd": "hangup", "ack": "a3", "room_id": room, "reason": "done"})).await;
    assert_eq!((r["action"].as_str(), r["result"]["connection"]["state"].as_str()), (Some("hangup"), Some("closed")), "{r}");
    assert_eq!(b.expect("hangup").await["data"], json!({"room_id": room, "user_id": "ann", "reason": "done"}));

    let r = a.command(json!({"cmd": "cameraOff", "ack": "a4"})).await;
    assert_eq!((r["action"].as_str(), r["result"]["user"]["camera"].as_str()), (Some("cameraOff"), Some("off")), "{r}");
    assert_eq!(app.get("/webrtc/users/ann", Some(&token("bob"))).await.body["camera"], "off");
}

#[actix_web::test]
async fn errors_come_back_with_the_rest_codes_and_the_ack() {
    let app = spawn_app().await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    let cases = [
        (json!({"cmd": "cameraShow", "ack": "e1", "user_id": "ann"}), "cannot_show_self"),
        (json!({"cmd": "cameraShow", "ack": "e2", "user_id": "ghost"}), "user_not_found"),
        (json!({"cmd": "cameraShow", "ack": "e3"}), "bad_request"),
        (json!({"cmd": "hangup", "ack": "e4", "room_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}), "room_not_found"),
        (json!({"cmd": "cameraOn", "ack": "e5", "meta": [1]}), "bad_request"),
        (json!({"cmd": "launch", "ack": "e6"}), "bad_request"),
        (json!({"ack": "e7"}), "bad_request"),
    ];
    for (cmd, code) in cases {
        let r = a.command(cmd.clone()).await;
        assert_eq!((r["cmd"].as_str(), &r["ack"], r["error"]["code"].as_str()), (Some("error"), &cmd["ack"], Some(code)), "{cmd}: {r}");
        assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[actix_web::test]
async fn ping_is_acked_and_garbage_leaves_the_session_open() {
    let app = spawn_app().await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    let r = a.command(json!({"cmd": "ping", "ack": "p1"})).await;
    assert_eq!(r, json!({"cmd": "ack", "ack": "p1", "action": "ping", "result": {}}));

    for garbage in ["not json at all", "[1,2,3]", "\"cmd\"", "{\"cmd\": 5}"] {
        a.send_text(garbage).await;
        let r = a.next().await;
        assert_eq!((r["cmd"].as_str(), r["error"]["code"].as_str()), (Some("error"), Some("bad_request")), "{garbage}: {r}");
    }
    a.stream.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    let r = a.next().await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");

    // Still open and working.
    let r = a.command(json!({"cmd": "ping", "ack": 2})).await;
    assert_eq!((r["cmd"].as_str(), &r["ack"]), (Some("ack"), &json!(2)));
    assert_eq!(a.command(json!({"cmd": "cameraOn", "ack": 3})).await["cmd"], "ack");
}

#[actix_web::test]
async fn every_frame_is_rate_limited_ping_and_refresh_too() {
    // Two a second: the handshake is one, cameraOn the other.
    let app = spawn_app_with(|s| s.limits.rate_per_s = std::num::NonZeroU32::new(2).unwrap()).await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    assert_eq!(a.command(json!({"cmd": "cameraOn", "ack": 1})).await["cmd"], "ack");
    let r = a.command(json!({"cmd": "cameraOn", "ack": 2})).await;
    assert_eq!((r["cmd"].as_str(), r["error"]["code"].as_str()), (Some("error"), Some("rate_limited")), "{r}");
    // Each one makes a reply: a ping flood is a reply flood (issue #23).
    let r = a.command(json!({"cmd": "ping", "ack": 3})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    let r = a.command(json!({"cmd": "refresh", "ack": 4, "token": "x"})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
}

#[actix_web::test]
async fn a_frame_over_the_body_limit_closes_the_session_with_1009() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 1024).await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    a.send_text(&json!({"cmd": "cameraOn", "meta": {"pad": "x".repeat(2000)}}).to_string()).await;
    let close = loop {
        match tokio::time::timeout(WAIT, a.stream.next()).await.expect("the server closes in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Size));
    // Nothing was applied.
    let u = app.get("/webrtc/users/ann", Some(&token("bob"))).await;
    assert_eq!(u.body["camera"], "off");
}
