//! Sessions at the edge: the WebSocket protocol by hand-written frames
//! (fragments, UTF-8, close), token lifetime and refresh, sessions per user,
//! and ICE servers in `hello` and renewed while TURN is configured.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;

/// One client frame (masked, as RFC 6455 requires of clients).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The text frames a raw client got before EOF, and the close code, if any.
async fn until_eof(raw: TcpStream) -> (Vec<Value>, Option<u16>) {
    let frames = tokio::time::timeout(WAIT, read_frames_until_eof(raw)).await.expect("the server closes the connection");
    let texts = frames.iter().filter(|(op, _)| *op == TEXT).map(|(_, p)| serde_json::from_slice(p).unwrap()).collect();
    let code = frames.iter().find(|(op, _)| *op == CLOSE).map(|(_, p)| u16::from_be_bytes([p[0], p[1]]));
    (texts, code)
}

/// Reads server frames until a text frame with `"ack": ack`.
async fn until_ack(raw: &mut TcpStream, ack: &str) -> Value {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, raw.read(&mut chunk)).await.expect("a reply in time").unwrap();
        assert!(n > 0, "EOF before the ack");
        buf.extend_from_slice(&chunk[..n]);
        // Server frames here are short: a 7-bit length, or 126 and a 16-bit one.
        while buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                126 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                break;
            }
            let (op, payload) = (buf[0] & 0x0f, buf[at..at + len].to_vec());
            buf.drain(..at + len);
            if op == TEXT {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                if v["ack"] == ack {
                    return v;
                }
            }
        }
    }
}

#[actix_web::test]
async fn a_fragmented_command_is_put_back_together() {
    let app = spawn_app().await;
    let mut raw = raw_ws(&app, &token("frag")).await;
    let cmd = br#"{"cmd":"cameraOn","ack":"f1"}"#;
    raw.write_all(&frame(false, TEXT, &cmd[..5])).await.unwrap();
    raw.write_all(&frame(false, CONTINUATION, &cmd[5..12])).await.unwrap();
    raw.write_all(&frame(true, CONTINUATION, &cmd[12..])).await.unwrap();
    let ack = until_ack(&mut raw, "f1").await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    assert_eq!(ack["result"]["user"]["camera"], "on");
    raw.write_all(&frame(true, CLOSE, &1000u16.to_be_bytes())).await.unwrap();
    assert_eq!(until_eof(raw).await.1, Some(1000));
}

#[actix_web::test]
async fn a_fragmented_message_over_the_limit_is_closed_with_1009() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 1024).await;
    let mut raw = raw_ws(&app, &token("frag-big")).await;
    raw.write_all(&frame(false, TEXT, &[b' '; 600])).await.unwrap();
    raw.write_all(&frame(false, CONTINUATION, &[b' '; 600])).await.unwrap();
    let (_, code) = until_eof(raw).await;
    assert_eq!(code, Some(1009));
}

#[actix_web::test]
async fn text_that_is_not_utf8_is_closed_with_1007() {
    let app = spawn_app().await;
    let mut raw = raw_ws(&app, &token("utf8")).await;
    raw.write_all(&frame(true, TEXT, b"{\"cmd\":\"\xff\xfe\"}")).await.unwrap();
    assert_eq!(until_eof(raw).await.1, Some(1007));
    // The same, split into fragments.
    let mut raw = raw_ws(&app, &token("utf8")).await;
    raw.write_all(&frame(false, TEXT, b"{\"cmd\":\"\xe2")).await.unwrap();
    raw.write_all(&frame(true, CONTINUATION, b"\x28\xa1\"}")).await.unwrap();
    assert_eq!(until_eof(raw).await.1, Some(1007));
}

#[actix_web::test]
async fn a_binary_message_gets_bad_request_even_in_fragments() {
    let app = spawn_app().await;
    let mut raw = raw_ws(&app, &token("bin")).await;
    raw.write_all(&frame(false, BINARY, b"\x01\x02")).await.unwrap();
    raw.write_all(&frame(true, CONTINUATION, b"\x03")).await.unwrap();
    raw.write_all(&frame(true, CLOSE, &1000u16.to_be_bytes())).await.unwrap();
    let (texts, code) = until_eof(raw).await;
    assert!(texts.iter().any(|v| v["cmd"] == "error" && v["error"]["code"] == "bad_request"), "{texts:?}");
    assert_eq!(code, Some(1000));
}

#[actix_web::test]
async fn a_close_is_answered_and_tcp_closed_at_once() {
    let app = spawn_app().await;
    let mut raw = raw_ws(&app, &token("closer")).await;
    let asked = Instant::now();
    raw.write_all(&frame(true, CLOSE, &1000u16.to_be_bytes())).await.unwrap();
    let (_, code) = until_eof(raw).await;
    let took = asked.elapsed();
    assert_eq!(code, Some(1000));
    assert!(took < Duration::from_millis(300), "TCP closed {took:?} after the Close");
}

#[actix_web::test]
async fn a_session_is_warned_before_its_token_expires_and_closed_with_4001() {
    let app = spawn_app_with(|s| s.auth.refresh_before = std::time::Duration::from_secs(2)).await;
    let exp = now() + 3;
    let t = token_with(json!({"sub": "short", "exp": exp}), SECRET);
    let mut ws = app.ws_query(&t, "?presence=false").await;
    let warned = ws.expect("token_expiring").await;
    assert_eq!(warned["data"]["exp"], exp);
    let close = ws.closed().await;
    assert_eq!(close, Some(4001));
    // A long poll with an expired token is refused (beyond the 5 s leeway on exp).
    let expired = token_with(json!({"sub": "short", "exp": now() - 10}), SECRET);
    app.poll(&expired, "?timeout_s=0").await.assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn a_refresh_moves_the_expiry_and_one_for_another_user_is_refused() {
    let app = spawn_app_with(|s| s.auth.refresh_before = std::time::Duration::from_secs(2)).await;
    let exp = now() + 3;
    let mut ws = app.ws_query(&token_with(json!({"sub": "renew", "exp": exp}), SECRET), "?presence=false").await;
    ws.expect("token_expiring").await;
    let other = ws.command(json!({"cmd": "refresh", "ack": 1, "token": token("someone-else")})).await;
    assert_eq!((other["cmd"].as_str(), other["error"]["code"].as_str()), (Some("error"), Some("forbidden")), "{other}");
    let later = now() + 3600;
    let ack = ws.command(json!({"cmd": "refresh", "ack": 2, "token": token_with(json!({"sub": "renew", "exp": later}), SECRET)})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    assert_eq!(ack["result"]["exp"], later);
    // Past the old exp, the session is still served.
    assert!(ws.try_next(Duration::from_secs(4)).await.is_none_or(|v| v["action"] != "server-action:token_expiring"));
    let ping = ws.command(json!({"cmd": "ping", "ack": 3})).await;
    assert_eq!(ping["cmd"], "ack");
}

#[actix_web::test]
async fn one_session_more_than_allowed_is_refused_with_409() {
    let app = spawn_app_with(|s| s.limits.max_sessions_per_user = 2).await;
    let t = token("greedy");
    let _a = app.ws(&t).await;
    let _b = app.ws(&t).await;
    assert_eq!(app.ws_refused("", Some(&format!("Bearer {t}"))).await, 409);
    app.poll(&t, "?timeout_s=0").await.assert_error(409, "too_many_sessions");
    // Someone else is not affected.
    let _c = app.ws(&token("modest")).await;
}

#[actix_web::test]
async fn hello_carries_ice_servers_and_turn_credentials_are_renewed() {
    let app = spawn_app_with(|s| {
        s.ice.stun_urls = vec!["stun:stun.example.org:3478".into()];
        s.ice.turn_urls = vec!["turn:turn.example.org:3478".into()];
        s.ice.turn_secret = Some(secrecy::SecretString::from("0123456789abcdef0123456789abcdef"));
        s.ice.turn_ttl = std::time::Duration::from_secs(2);
    })
    .await;
    let mut ws = app.ws_query(&token("caller"), "?presence=false").await;
    let first = ws.hello["data"]["ice_servers"].clone();
    assert_eq!(first.as_array().map(Vec::len), Some(2), "{first}");
    let fresh = ws.expect("ice_servers").await;
    assert_eq!(fresh["data"]["ttl_s"], 2);
    let turn = |v: &Value| v.as_array().unwrap().iter().find(|s| s["username"].is_string()).cloned().unwrap();
    assert_ne!(turn(&fresh["data"]["ice_servers"])["username"], turn(&first)["username"], "new credentials");
}

#[actix_web::test]
async fn the_heartbeat_closes_a_client_that_stopped_reading_even_with_writes_backed_up() {
    let app = spawn_app_with(|s| {
        s.ws.heartbeat = std::time::Duration::from_secs(1);
        s.ws.send_buffer_bytes = 4096;
    })
    .await;
    // A client with a tiny receive buffer that handshakes, then never reads again.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut raw = sock.connect(([127, 0, 0, 1], app.port).into()).await.unwrap();
    let req = format!(
        "GET /ws?presence=false HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token("stalled")
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let asked = Instant::now();
    let publisher = token("publisher");
    assert_eq!(app.camera_on(&publisher).await.status, 200);
    let room = app.show(&token("stalled"), "publisher").await;
    // Far more than the socket buffers hold: the node's writes back up.
    let mut offer = sdp("offer");
    let padded = format!("{}{}", offer["sdp"].as_str().unwrap(), format!("a=x-pad:{}\r\n", "0123456789".repeat(400)).repeat(12));
    offer["sdp"] = Value::String(padded);
    for _ in 0..40 {
        assert_eq!(app.post("offer", &publisher, json!({"room_id": room, "offer": offer})).await.status, 202);
    }
    wait_until(Duration::from_secs(8), "the stalled session to end", async || {
        app.get("/webrtc/users/stalled", Some(&publisher)).await.body["online"] == false
    })
    .await;
    // Ended by the heartbeat: a session is closed once silent for 3 × heartbeat_s,
    // counted from its handshake (the writes above may take longer than that).
    assert!(asked.elapsed() >= Duration::from_secs(3), "ended {:?} after its handshake, before three heartbeats", asked.elapsed());
    drop(raw);
}

/// Issue #23, item 12: with `server.allowed_origins` set, a browser page of
/// another origin cannot open a session; clients that send no Origin can.
#[actix_web::test]
async fn only_allowed_origins_open_sessions() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app_with(|s| s.server.allowed_origins = vec!["https://app.example.com".into()]).await;
    let open = |origin: Option<&'static str>| {
        let mut req = app.ws_url(&format!("/ws?token={}", token("orig"))).into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        async move { tokio_tungstenite::connect_async(req).await.map(drop).map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(res) => res.status().as_u16(),
            other => panic!("{other}"),
        }) }
    };
    assert_eq!(open(Some("https://evil.example")).await, Err(403));
    assert_eq!(open(Some("https://app.example.com")).await, Ok(()));
    assert_eq!(open(None).await, Ok(()));
}
