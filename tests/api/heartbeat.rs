//! Heartbeat: the server pings every `heartbeat_s` and closes a session silent
//! for three of them; a client that answers pings stays.

use crate::support::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

const PING: u8 = 0x9;
const CLOSE: u8 = 0x8;

#[actix_web::test]
async fn a_client_that_never_answers_pings_is_closed_and_one_that_does_stays() {
    let app = spawn_app_with(|s| s.ws.heartbeat = std::time::Duration::from_secs(1)).await;
    let mut watcher = app.ws(&token("watcher")).await;
    assert_eq!(watcher.hello["data"]["heartbeat_s"], 1);
    watcher.expect_user("watcher", true, "off").await;

    let raw = raw_ws(&app, &token("mute")).await;
    watcher.expect_user("mute", true, "off").await;
    let started = tokio::time::Instant::now();

    // Read the mute client to EOF while the watcher keeps answering pings.
    let eof = tokio::time::timeout(Duration::from_secs(20), read_frames_until_eof(raw));
    tokio::pin!(eof);
    let frames = loop {
        tokio::select! {
            frames = &mut eof => break frames.expect("the silent client is closed in time"),
            msg = watcher.stream.next() => {
                let msg = msg.expect("the watcher stays open").expect("the watcher reads");
                assert!(!msg.is_close(), "the watcher answers pings and must not be closed");
            }
        }
    };
    let elapsed = started.elapsed();

    let opcodes: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
    let pings = opcodes.iter().filter(|op| **op == PING).count();
    assert!(pings >= 2, "pinged before giving up: {opcodes:?}");
    let (last_op, payload) = frames.last().unwrap();
    assert_eq!(*last_op, CLOSE, "{opcodes:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001, "going away");
    assert!(elapsed >= Duration::from_secs(2), "closed after ~3 silent heartbeats, not at once: {elapsed:?}");

    // The watcher, older than the mute client, is still served; the mute user is offline.
    let r = watcher.command(json!({"cmd": "ping", "ack": "still-here"})).await;
    assert_eq!(r["ack"], "still-here");
    // (The update_user may have come before the ack, which `command` skips over.)
    wait_until(Duration::from_secs(5), "mute to be offline", async || {
        app.get("/webrtc/users/mute", Some(&token("x"))).await.body["online"] == false
    })
    .await;
    assert_eq!(app.get("/webrtc/users/mute", Some(&token("x"))).await.body["online"], false);
}
