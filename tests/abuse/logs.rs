//! The log: no token in it, no line forged through it, no flood into it.

use serde_json::{Value, json};
use std::time::Duration;

use crate::node::ProcNode;
use crate::support::{sdp_version, token};

fn lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[actix_web::test]
async fn a_token_in_the_url_never_reaches_the_log() {
    // Debug level: even the per-request lines of 4xx answers.
    let node = ProcNode::start(&[("RUST_LOG", "debug")]).await;
    let t = token("ann");
    assert_eq!(node.get(&format!("/ws?token={t}&since=bad"), &[]).await, 400);
    assert_eq!(node.get(&format!("/webrtc/users?token={t}&limit=nope"), &[]).await, 401);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?token={t}", node.port)).await.expect("opens");
    ws.close(None).await.unwrap();
    // Percent-encoded names: the query parser decodes them, so they authenticate; masked all the same.
    for name in ["tok%65n", "%74oken"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws?{name}={t}", node.port)).await.expect("opens");
        ws.close(None).await.unwrap();
    }
    assert_eq!(node.get(&format!("/webrtc/users?TOKEN={t}"), &[]).await, 401);
    let signature = t.rsplit('.').next().unwrap();
    let log = node.log_text();
    assert!(log.contains("token=***"), "the request lines are there, masked:\n{log}");
    assert!(!log.contains(signature), "the token is in the log:\n{log}");
}

/// An offer of about 51 KB: a real one, then thousands of attributes the
/// parser does not know, each with a NUL and a stray CR.
fn crafted_offer(lines: usize) -> Value {
    let mut sdp = sdp_version("offer", 1)["sdp"].as_str().unwrap().to_owned();
    for i in 0..lines {
        sdp.push_str(&format!("a=x{i}\0\r\r\n"));
    }
    json!({"type": "offer", "sdp": sdp})
}

#[actix_web::test]
async fn a_crafted_offer_writes_no_line_per_attribute_and_no_raw_control_characters() {
    let node = ProcNode::start(&[]).await;
    let (ann, bob) = (token("ann"), token("bob"));
    assert_eq!(node.post("cameraOn", &ann, None, &json!({})).await.0, 200);
    let (status, show) = node.post("cameraShow", &bob, None, &json!({"user_id": "ann"})).await;
    assert_eq!(status, 201, "{show}");
    let room = show["connection"]["room_id"].as_str().unwrap().to_owned();
    let offer = crafted_offer(3_000);
    let before = node.log_bytes();
    for _ in 0..5 {
        let (status, body) = node.post("offer", &ann, None, &json!({"room_id": room, "offer": offer})).await;
        assert_eq!(status, 202, "{body}");
    }
    let written = node.log_bytes() - before;
    eprintln!("5 crafted offers: {written} bytes of log");
    assert!(written < 2048, "5 crafted offers wrote {written} bytes of log");
    let raw = node.log_raw();
    assert!(!raw.contains(&0) && !raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "a raw NUL or CR in the log");
}

#[actix_web::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy_and_cannot_add_fields() {
    let forged = [("x-forwarded-for", r#"6.6.6.6", "injected": "yes"#), ("forwarded", "for=6.6.6.6;by=\"x injected=yes\"")];
    let direct = ProcNode::start(&[("RUST_LOG", "camsig=debug")]).await;
    assert_eq!(direct.get("/webrtc/users", &forged).await, 401);
    let behind = ProcNode::start(&[("RUST_LOG", "camsig=debug"), ("CAMSIG__SERVER__TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    assert_eq!(behind.get("/webrtc/users", &[("x-forwarded-for", "9.9.9.9, 8.8.8.8")]).await, 401);
    assert_eq!(behind.get("/webrtc/users", &forged[..1]).await, 401);
    let client_ips = |node: &ProcNode| -> Vec<String> {
        lines(&node.log_text()).iter().filter(|l| l["message"] == "client error").map(|l| l["span"]["http.client_ip"].as_str().unwrap_or("?").to_owned()).collect()
    };
    assert_eq!(client_ips(&direct), ["127.0.0.1"], "from a client, the headers are ignored");
    assert_eq!(client_ips(&behind), ["8.8.8.8", "127.0.0.1"], "from a proxy, the nearest address it did not add; garbage is ignored");
    for node in [&direct, &behind] {
        let log = node.log_text();
        assert!(!log.contains("injected") && !log.contains("6.6.6.6"), "a forged header reached the log:\n{log}");
    }
}

#[actix_web::test]
async fn unauthenticated_clients_cannot_flood_the_log() {
    let node = ProcNode::start(&[]).await;
    let before = node.log_bytes();
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    for i in 0..2_000 {
        let r = http.get(node.url("/webrtc/users")).insert_header(("Authorization", format!("Bearer not-a-token-{i}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let written = node.log_bytes() - before;
    eprintln!("2 000 refused requests: {written} bytes of log");
    assert!(written < 512, "2 000 refused requests wrote {written} bytes of log");
}

/// Found by the no-list attack of issue #23: actix-http wrote an ERROR line
/// for each malformed request head (a control byte in a header value), 38
/// KiB of log a second from one client. Mutation (the directive removed from
/// `telemetry`): 39 300 bytes for 300 connections.
#[actix_web::test]
async fn malformed_request_heads_write_nothing_to_the_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = ProcNode::start(&[]).await;
    let before = node.log_bytes();
    for _ in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    }
    let written = node.log_bytes() - before;
    assert!(written < 512, "300 malformed heads wrote {written} bytes of log");
}
