//! Presence flapping: opening and closing sessions fans out to every
//! observer, so it is bounded where it enters (each handshake counts against
//! the user's rate) and where it spreads (`online` changes at most once per
//! `presence.flap_window_ms`).

use futures_util::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::node::ProcNode;
use crate::support::token;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(node: &ProcNode, user: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://127.0.0.1:{}/ws?token={}", node.port, token(user));
    tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
}

/// The next `update_user` about `user` on `ws`, if one comes within `wait`.
async fn next_update(ws: &mut Socket, user: &str, wait: Duration) -> Option<Value> {
    let end = Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(end.into(), ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["action"] == "server-action:update_user" && v["data"]["user"]["user_id"] == user {
                return Some(v["data"]["user"].clone());
            }
        }
    }
}

/// Issue #23, item 5: one client toggled `online` 2 830 times a second, each
/// an `update_user` to every observer. Flapping for 3 s now costs at most one
/// change per window (1 s), and the user settles offline once it stops.
/// Mutation (never held back): 2 247 updates for 1 778 flaps in 3 s.
#[actix_web::test]
async fn a_flapping_user_costs_at_most_one_update_per_flap_window() {
    let node = ProcNode::start(&[("CAMSIG__LIMITS__RATE_PER_S", "100000")]).await;
    let mut observer = open(&node, "obs").await.unwrap();
    // Its hello: the observer hears everything from here on (the 101 alone
    // can come before its session is registered; CI once lost that race).
    observer.next().await;
    // Flap's first appearance (a user seen for the first time changes at once).
    let first = open(&node, "flap").await.unwrap();
    assert_eq!(next_update(&mut observer, "flap", Duration::from_secs(5)).await.unwrap()["online"], true);
    drop(first);
    let start = Instant::now();
    let mut flaps = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let mut ws = open(&node, "flap").await.unwrap();
        // Opened: its hello has come.
        ws.next().await;
        drop(ws);
        flaps += 1;
    }
    let flapped = start.elapsed();
    let mut updates = Vec::new();
    // Everything it caused, and the settling after: offline once it stopped.
    while let Some(u) = next_update(&mut observer, "flap", Duration::from_secs(3)).await {
        updates.push(u);
    }
    eprintln!("{flaps} opens and closes in {flapped:?}: {} update_user to the observer", updates.len());
    assert!(flaps >= 20, "the flapping ran ({flaps} in {flapped:?})");
    let bound = flapped.as_secs_f64().ceil() as usize + 2;
    assert!(updates.len() <= bound, "{} updates for {flaps} flaps in {flapped:?} (bound {bound})", updates.len());
    assert_eq!(updates.last().map(|u| u["online"].clone()), Some(Value::Bool(false)), "settled offline: {updates:?}");
}

/// Issue #23, item 5: the handshake had no rate limit. With `rate_per_s` at
/// 5, the sixth handshake within the second is refused 429 before it opens.
/// Mutation (the handshake not counted): 0 of 10 refused.
#[actix_web::test]
async fn handshakes_count_against_the_users_rate() {
    let node = ProcNode::start(&[("CAMSIG__LIMITS__RATE_PER_S", "5")]).await;
    let mut refused = 0;
    for _ in 0..10 {
        match open(&node, "eager").await {
            Ok(ws) => drop(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 429);
                assert!(r.headers().contains_key("retry-after"));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 4, "{refused} of 10 handshakes refused at 5 a second");
}

/// Found by the no-list attack of issue #23: WebSocket pings and binary
/// frames were not counted (43 000 pongs and 72 000 error replies a second).
/// Past the rate they are dropped unanswered. Mutation (not counted): 300
/// pongs and 300 errors for 300 of each.
#[actix_web::test]
async fn protocol_pings_and_binary_frames_count_against_the_rate() {
    use futures_util::SinkExt;
    let node = ProcNode::start(&[("CAMSIG__LIMITS__RATE_PER_S", "10")]).await;
    let mut ws = open(&node, "pinger").await.unwrap();
    for i in 0..300u32 {
        ws.send(Message::Ping(i.to_be_bytes().to_vec().into())).await.unwrap();
        ws.send(Message::Binary(vec![1u8].into())).await.unwrap();
    }
    let (mut pongs, mut errors) = (0, 0);
    let end = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end.into(), ws.next()).await {
        match msg {
            Message::Pong(_) => pongs += 1,
            Message::Text(t) if t.contains("bad_request") => errors += 1,
            _ => {}
        }
    }
    eprintln!("300 pings and 300 binary frames at 10 a second: {pongs} pongs, {errors} errors");
    // A burst of 10, and at most 2 s of refill.
    assert!(pongs + errors <= 40, "{pongs} pongs and {errors} errors");
}
