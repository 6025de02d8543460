//! Clients that stop reading: at most `ws.max_queued` events wait for one
//! session, the node's memory stays bounded (RSS read from the node process),
//! stalled connections are closed, and every client catches up from the log
//! when it comes back. A frame that declares more than `limits.max_body_bytes`
//! is refused at its header, however much of it is streamed.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::cluster::*;
use crate::support::*;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A WebSocket handshake on a socket with a tiny receive buffer; reads the
/// hello frame and returns its `last_id`, then the caller stops reading.
async fn stalled_client(port: u16, token: &str) -> (TcpStream, String) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let req = format!(
        "GET /ws?presence=false HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "EOF during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let body = &buf[end + 4..];
        let (len, at) = match body.get(1).map(|b| b & 0x7f) {
            Some(126) if body.len() >= 4 => (u16::from_be_bytes([body[2], body[3]]) as usize, 4),
            Some(n) if n < 126 => (n as usize, 2),
            _ => continue,
        };
        if body.len() >= at + len {
            let hello: Value = serde_json::from_slice(&body[at..at + len]).unwrap();
            return (s, hello["data"]["last_id"].as_str().unwrap().to_owned());
        }
    }
}

/// An offer of about `kb` KB: a valid SDP padded with attribute lines.
fn big_offer(kb: usize) -> Value {
    let mut v = sdp("offer");
    let mut text = v["sdp"].as_str().unwrap().to_owned();
    // Few long lines: the SDP parser's cost is per line.
    let line = format!("a=x-pad:{}\r\n", "0123456789".repeat(400));
    while text.len() < kb * 1024 {
        text.push_str(&line);
    }
    v["sdp"] = Value::String(text);
    v
}

#[actix_web::test]
async fn two_hundred_clients_that_stop_reading_cannot_grow_a_node() {
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 8;
    const KB: usize = 60;
    let redis = Redis::start().await;
    let env = [
        ("CAMSIG__WS__MAX_QUEUED", "2"),
        // Small kernel buffers: backpressure reaches the node after an event or two.
        ("CAMSIG__WS__SEND_BUFFER_BYTES", "8192"),
        // A long heartbeat: only flow control can close these sessions during
        // the test, and a closed one is cut off (no close frame) only a
        // heartbeat later, after the test has read it (on a loaded machine the
        // rounds took more than 30 s).
        ("CAMSIG__WS__HEARTBEAT_S", "180"),
        ("CAMSIG__LIMITS__MAX_VIEWERS", "1000"),
        ("CAMSIG__PRESENCE__GRACE_S", "600"),
        ("CAMSIG__EVENTS__KEEP_S", "600"),
    ];
    let node = ProcNode::start_with(&redis, "slow", &env).await;
    let pid = node.pid();
    let owner = token("slow-own");
    assert_eq!(node.post_json("cameraOn", &owner, json!({})).await.0, 200);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("slow-{i}");
        let (sock, last_id) = stalled_client(node.port, &token(&name)).await;
        let (status, body) = node.post_json("cameraShow", &token(&name), json!({"user_id": "slow-own"})).await;
        assert_eq!(status, 201, "{body}");
        clients.push((name, sock, last_id, body["connection"]["room_id"].as_str().unwrap().to_owned()));
    }
    let before = rss_kb(pid);
    let offer = big_offer(KB);
    let mut peak = before;
    for _ in 0..ROUNDS {
        let posts = clients.iter().map(|(_, _, _, room)| node.post_json("offer", &owner, json!({"room_id": room, "offer": offer})));
        let answers: Vec<(u16, Value)> = futures_util::stream::iter(posts).buffer_unordered(4).collect().await;
        assert!(answers.iter().all(|(status, _)| *status == 202), "{:?}", answers.iter().find(|(s, _)| *s != 202));
        peak = peak.max(rss_kb(pid));
    }
    let sent_mb = (CLIENTS * ROUNDS * KB) as f64 / 1024.0;
    let grew_mb = (peak - before) as f64 / 1024.0;
    eprintln!("slow clients: {CLIENTS} stalled, {sent_mb:.0} MB of events for them; node RSS {} MB -> peak {} MB", before / 1024, peak / 1024);
    // Per stalled session: ws.max_queued events waiting, plus about three in the
    // HTTP layer's buffers; without flow control it grows with what is sent.
    let bound_mb = (CLIENTS * (2 + 3) * KB) as f64 / 1024.0;
    assert!(grew_mb < bound_mb, "RSS grew {grew_mb:.0} MB (bound {bound_mb:.0} MB) for {sent_mb:.0} MB sent to stalled clients");

    // Every stalled session was closed with 4008: reading on, a client finds
    // what was sent before, then the close frame, then the end.
    for (name, sock, _, _) in clients.iter_mut() {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut got)).await.unwrap_or_else(|_| panic!("{name}: never closed")).unwrap();
        let tail = &got[got.len().saturating_sub(64)..];
        let close = tail.windows(4).rev().find(|w| w[0] == 0x88).map(|w| u16::from_be_bytes([w[2], w[3]]));
        assert_eq!(close, Some(4008), "{name}: closed as too slow ({} bytes, then the end)", got.len());
    }
    // Back with `since`: everything, in order, from the log.
    for (name, _, last_id, room) in &clients {
        let mut ws = node.ws_query(&token(name), &format!("?presence=false&since={last_id}")).await;
        for r in 0..ROUNDS {
            let ev = ws.try_next(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{name}: only {r} of {ROUNDS} events came back"));
            assert_eq!(ev["action"], "server-action:put_offer", "{name} event {r}: {ev}");
            assert_eq!(ev["data"]["room_id"], room.as_str());
        }
    }
}

#[actix_web::test]
async fn a_frame_declaring_a_gigabyte_is_refused_at_its_header() {
    let redis = Redis::start().await;
    let node = ProcNode::start(&redis, "big-frame").await;
    let pid = node.pid();
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let req = format!(
        "GET /ws?presence=false HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token("huge")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let before = rss_kb(pid);
    // A masked text frame header declaring 1 GiB, then as much payload as the node takes.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = actix_web::rt::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        while sent < 1 << 30 {
            match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut got)).await.expect("the node closes the connection");
    let sent = writer.await.unwrap();
    let after = rss_kb(pid);
    eprintln!("1 GiB frame: closed after {} MB streamed; node RSS {} MB -> {} MB", sent >> 20, before / 1024, after / 1024);
    let close = got.windows(2).position(|w| w[0] == 0x88).map(|i| u16::from_be_bytes([got[i + 2], got[i + 3]]));
    assert_eq!(close, Some(1009), "closed with 1009 (message too big)");
    assert!(sent < 256 << 20, "the node kept reading: {} MB", sent >> 20);
    assert!(after < before + 32 * 1024, "RSS grew from {before} kB to {after} kB");
}
