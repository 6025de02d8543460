//! libwebrtc's peerconnection_client against camsig's compatibility listener,
//! on two nodes sharing one Redis. `Sample` speaks the client's bytes, as
//! `peer_connection_client.cc` writes and reads them: HTTP/1.0 with no
//! `Host`, a new TCP connection per request, the answer read until its
//! `Content-Length` is in, `\r\nContent-Length: ` and `\r\nPragma: ` found
//! by exact, case-sensitive match.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::cluster::{GRACE_S, Redis, node_with};
use crate::support::TestApp;

/// An answer as the sample client reads it.
#[derive(Debug, Clone)]
struct Answer {
    status: i64,
    /// `Pragma` (-1 when absent, as the client leaves it).
    pragma: i64,
    body: Vec<u8>,
    raw: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What `GetHeaderValue` does: the integer after an exact pattern, within the head.
fn header_int(data: &[u8], eoh: usize, pattern: &str) -> Option<i64> {
    let at = data.windows(pattern.len()).position(|w| w == pattern.as_bytes())?;
    if at >= eoh {
        return None;
    }
    let digits: String = data[at + pattern.len()..].iter().map(|b| *b as char).take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn exchange(port: u16, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("the listener accepts");
    s.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        // As ReadIntoBuffer: done once the head and Content-Length bytes are in.
        if let Some(eoh) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && let Some(len) = header_int(&raw, eoh, "\r\nContent-Length: ")
            && raw.len() >= eoh + 4 + len as usize
        {
            break;
        }
    }
    let eoh = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let len = header_int(&raw, eoh, "\r\nContent-Length: ").unwrap_or_else(|| panic!("no exact `Content-Length: ` in {:?}", String::from_utf8_lossy(&raw)));
    let status = String::from_utf8_lossy(&raw).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(-1);
    let pragma = header_int(&raw, eoh, "\r\nPragma: ").unwrap_or(-1);
    let body = raw[eoh + 4..eoh + 4 + len as usize].to_vec();
    Answer { status, pragma, body, raw }
}

/// One sample peer, signed in through `port`.
struct Sample {
    id: i64,
    name: String,
}

impl Sample {
    async fn sign_in(port: u16, name: &str) -> (Sample, Answer) {
        let a = exchange(port, format!("GET /sign_in?{name} HTTP/1.0\r\n\r\n").as_bytes()).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.raw.starts_with(b"HTTP/1.1 200 Added\r\n"), "{a:?}");
        (Sample { id: a.pragma, name: name.to_owned() }, a)
    }

    fn wait_request(&self) -> Vec<u8> {
        format!("GET /wait?peer_id={} HTTP/1.0\r\n\r\n", self.id).into_bytes()
    }

    async fn wait(&self, port: u16) -> Answer {
        tokio::time::timeout(Duration::from_secs(20), exchange(port, &self.wait_request())).await.expect("a hanging GET is answered")
    }

    async fn send(&self, port: u16, to: i64, message: &[u8]) -> Answer {
        let mut req = format!("POST /message?peer_id={}&to={to} HTTP/1.0\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n", self.id, message.len()).into_bytes();
        req.extend_from_slice(message);
        exchange(port, &req).await
    }

    async fn sign_out(&self, port: u16) -> Answer {
        exchange(port, format!("GET /sign_out?peer_id={} HTTP/1.0\r\n\r\n", self.id).as_bytes()).await
    }
}

/// A node on `redis` with the listener on (port 0), then `f`.
async fn compat_node_with(redis: &Redis, name: &str, f: impl FnOnce(&mut camsig::config::Settings)) -> TestApp {
    node_with(redis, name, |s| {
        s.compat.peerconnection.enabled = true;
        s.compat.peerconnection.bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        f(s);
    })
    .await
}

async fn compat_node(redis: &Redis, name: &str) -> TestApp {
    compat_node_with(redis, name, |s| {
        // A peer that stops polling ends after this (a long poll's presence outlives its last poll by silent_after).
        s.ws.heartbeat = Duration::from_secs(1);
    })
    .await
}

#[actix_web::test]
async fn two_peers_on_two_nodes_trade_messages_and_nothing_waits_lost() {
    let redis = Redis::start().await;
    let (n1, n2) = (compat_node(&redis, "pc1").await, compat_node(&redis, "pc2").await);
    let (p1, p2) = (n1.compat_port.unwrap(), n2.compat_port.unwrap());

    let (ann, first) = Sample::sign_in(p1, "ann%40box").await;
    assert_eq!(first.text(), format!("ann@box,{},1\n", ann.id), "the own line first, name URL-decoded");
    let ann_waits = tokio::spawn({
        let req = ann.wait_request();
        async move { exchange(p1, &req).await }
    });
    let (bob, listed) = Sample::sign_in(p2, "bob").await;
    assert!(ann.id > 0 && bob.id > 0 && ann.id != bob.id, "integer ids unique over nodes: {} {}", ann.id, bob.id);
    assert_eq!(listed.text(), format!("bob,{},1\nann@box,{},1\n", bob.id, ann.id));
    let told = tokio::time::timeout(Duration::from_secs(10), ann_waits).await.expect("ann hears bob").unwrap();
    assert_eq!((told.status, told.pragma, told.text()), (200, ann.id, format!("bob,{},1\n", bob.id)), "a notification carries the receiver's own id");

    // Bob's messages, sent while Ann has no hanging GET open, on the other node.
    let offer = br#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#;
    let candidate = br#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host"}"#;
    for m in [&offer[..], &candidate[..], b"BYE"] {
        let sent = bob.send(p2, ann.id, m).await;
        assert_eq!((sent.status, sent.body.len()), (200, 0), "{sent:?}");
    }
    // Ann's hanging GETs, now on node 2 (a load balancer without stickiness), get them in order, byte for byte.
    for (i, want) in [&offer[..], &candidate[..], b"BYE"].into_iter().enumerate() {
        let port = if i % 2 == 0 { p2 } else { p1 };
        let got = ann.wait(port).await;
        assert_eq!((got.status, got.pragma), (200, bob.id), "a message carries the sender's id: {got:?}");
        assert_eq!(got.body, want, "message {i} byte for byte");
    }
    // To oneself: answered straight back, as the sample does.
    let echo = ann.send(p1, ann.id, b"hi me").await;
    assert_eq!((echo.status, echo.pragma, echo.text().as_str()), (200, ann.id, "hi me"));

    let out = bob.sign_out(p1).await;
    assert_eq!(out.status, 200);
    let gone = ann.wait(p1).await;
    assert_eq!((gone.pragma, gone.text()), (ann.id, format!("bob,{},0\n", bob.id)));
    // Signed out: Bob is unknown now.
    assert_eq!(bob.send(p2, ann.id, b"late").await.status, 500);
    let _ = bob.name;
}

#[actix_web::test]
async fn a_peer_that_stops_polling_is_signed_out_for_the_others() {
    let redis = Redis::start().await;
    let (n1, n2) = (compat_node(&redis, "pc1").await, compat_node(&redis, "pc2").await);
    let (p1, p2) = (n1.compat_port.unwrap(), n2.compat_port.unwrap());
    let (ann, _) = Sample::sign_in(p1, "ann").await;
    let (bob, _) = Sample::sign_in(p2, "bob").await;
    let joined = ann.wait(p1).await;
    assert_eq!(joined.text(), format!("bob,{},1\n", bob.id));
    // Bob opens one hanging GET, gives up on it, and never polls again.
    {
        let mut s = TcpStream::connect(("127.0.0.1", p2)).await.unwrap();
        s.write_all(&bob.wait_request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t0 = Instant::now();
    let left = ann.wait(p1).await;
    assert_eq!((left.pragma, left.text()), (ann.id, format!("bob,{},0\n", bob.id)));
    // silent_after (3 heartbeats of 1 s) + grace, with a sweep's slack.
    let bound = Duration::from_secs(3 + GRACE_S + 2);
    assert!(t0.elapsed() <= bound, "bob was announced gone after {:?}, bound {bound:?}", t0.elapsed());
    // Unknown to the sample protocol now: his hanging GET is a browser's request.
    assert_eq!(bob.wait(p2).await.status, 500);
}

#[actix_web::test]
async fn unknown_peers_and_malformed_requests_get_the_sample_servers_answers() {
    let redis = Redis::start().await;
    let n = compat_node(&redis, "pc1").await;
    let p = n.compat_port.unwrap();
    let (ann, _) = Sample::sign_in(p, "ann").await;
    let sorry = |a: &Answer| a.raw.starts_with(b"HTTP/1.1 500 Sorry\r\n") && a.text().contains("not yet implemented");
    let error = |a: &Answer| a.raw.starts_with(b"HTTP/1.1 500 Error\r\n");
    // An unknown peer_id: /wait and /sign_out are a browser's requests (500 Sorry); a message with a body is 500 Error.
    assert!(sorry(&exchange(p, b"GET /wait?peer_id=999999 HTTP/1.0\r\n\r\n").await));
    assert!(sorry(&exchange(p, b"GET /sign_out?peer_id=999999 HTTP/1.0\r\n\r\n").await));
    assert!(error(&exchange(p, b"POST /message?peer_id=999999&to=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi").await));
    // A known sender, an unknown target.
    let to_nobody = ann.send(p, 999_999, b"hi").await;
    assert!(error(&to_nobody) && to_nobody.text() == "Peer most likely gone.", "{to_nobody:?}");
    // What the sample does not serve.
    assert!(sorry(&exchange(p, b"GET /quit HTTP/1.0\r\n\r\n").await), "no remote shutdown");
    assert!(sorry(&exchange(p, b"GET /nothing HTTP/1.0\r\n\r\n").await));
    assert!(sorry(&exchange(p, b"BREW /pot HTCPCP/1.0\r\n\r\n").await));
    assert!(sorry(&exchange(p, b"\x00\x01garbage\r\n\r\n").await));
    let options = exchange(p, b"OPTIONS /sign_in HTTP/1.1\r\nOrigin: http://example.com\r\n\r\n").await;
    assert_eq!(options.status, 200);
    assert!(String::from_utf8_lossy(&options.raw).contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
    // Text only: a control character is refused (kept as JSON it would weigh six times its size).
    assert!(error(&ann.send(p, ann.id, b"a\x01b").await));
    // One plain Content-Length, no chunked bodies.
    assert!(sorry(&exchange(p, format!("POST /message?peer_id={0}&to={0} HTTP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", ann.id).as_bytes()).await));
    assert!(sorry(&exchange(p, format!("POST /message?peer_id={0}&to={0} HTTP/1.0\r\nContent-Length: +1\r\n\r\nx", ann.id).as_bytes()).await));
    assert!(sorry(&exchange(p, format!("POST /message?peer_id={0}&to={0} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", ann.id).as_bytes()).await));
    // Over compat.peerconnection.max_message_bytes (64 KiB): refused, nothing queued.
    let big = vec![b'x'; 64 * 1024 + 1];
    assert!(error(&ann.send(p, ann.id, &big).await));
    // Every answer spells its headers exactly as the client searches them.
    let raw = String::from_utf8_lossy(&ann.send(p, ann.id, b"x").await.raw).into_owned();
    assert!(raw.contains("\r\nContent-Length: 1\r\n") && raw.contains(&format!("\r\nPragma: {}\r\n", ann.id)), "{raw}");
}

#[actix_web::test]
async fn max_peers_holds_under_200_concurrent_sign_ins_over_two_nodes() {
    let redis = Redis::start().await;
    let limited = async |name: &str| {
        compat_node_with(&redis, name, |s| {
            s.compat.peerconnection.max_peers = 50;
            s.compat.peerconnection.rate_per_s = std::num::NonZeroU32::new(10_000).unwrap();
            s.compat.peerconnection.max_conns_per_ip = 1_000;
            // Peers that never poll would otherwise end (and free places) within the test.
            s.presence.grace = Duration::from_secs(120);
        })
        .await
    };
    let (n1, n2) = (limited("pc1").await, limited("pc2").await);
    let ports = [n1.compat_port.unwrap(), n2.compat_port.unwrap()];
    let tries: Vec<_> = (0..200)
        .map(|i| {
            let port = ports[i % 2];
            tokio::spawn(async move { exchange(port, format!("GET /sign_in?p{i} HTTP/1.0\r\n\r\n").as_bytes()).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut refused = 0;
    for t in tries {
        let a = t.await.unwrap();
        match a.status {
            200 => assert!(ids.insert(a.pragma), "id {} handed out twice", a.pragma),
            500 => refused += 1,
            s => panic!("unexpected {s}: {a:?}"),
        }
    }
    assert_eq!((ids.len(), refused), (50, 150), "exactly max_peers signed in");
}

#[actix_web::test]
async fn a_draining_node_closes_hanging_gets_unanswered_and_the_next_on_another_node_gets_everything() {
    let redis = Redis::start().await;
    let (n1, n2) = (compat_node(&redis, "pc1").await, compat_node(&redis, "pc2").await);
    let (p1, p2) = (n1.compat_port.unwrap(), n2.compat_port.unwrap());
    let (ann, _) = Sample::sign_in(p2, "ann").await;
    let (bob, _) = Sample::sign_in(p2, "bob").await;
    assert_eq!(ann.wait(p2).await.text(), format!("bob,{},1\n", bob.id));
    // Ann's hanging GET waits on node 1, which drains.
    let mut held = TcpStream::connect(("127.0.0.1", p1)).await.unwrap();
    held.write_all(&ann.wait_request()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    n1.node.request_drain();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut rest)).await.expect("the drain ends the hanging GET").unwrap_or(0);
    assert_eq!(n, 0, "closed with no answer (the sample client then opens another): {:?}", String::from_utf8_lossy(&rest));
    // Meanwhile Bob sends; Ann's next hanging GET, on node 2, gets it.
    assert_eq!(bob.send(p2, ann.id, b"after the drain").await.status, 200);
    let got = ann.wait(p2).await;
    assert_eq!((got.pragma, got.body.as_slice()), (bob.id, &b"after the drain"[..]));
}

#[actix_web::test]
async fn an_answer_the_client_never_read_is_sent_again() {
    let redis = Redis::start().await;
    let n = compat_node(&redis, "pc1").await;
    let p = n.compat_port.unwrap();
    let (ann, _) = Sample::sign_in(p, "ann").await;
    let (bob, _) = Sample::sign_in(p, "bob").await;
    assert_eq!(ann.wait(p).await.text(), format!("bob,{},1\n", bob.id));
    // Ann's hanging GET is answered, but her end resets without reading it.
    let held = TcpStream::connect(("127.0.0.1", p)).await.unwrap();
    let mut held = held;
    held.write_all(&ann.wait_request()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bob.send(p, ann.id, b"the offer").await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    socket2::SockRef::from(&held).set_linger(Some(Duration::ZERO)).unwrap();
    drop(held);
    // The next hanging GET gets it: nothing taken for read that was not.
    let again = ann.wait(p).await;
    assert_eq!((again.pragma, again.body.as_slice()), (bob.id, &b"the offer"[..]));
}

#[actix_web::test]
async fn a_signed_out_peers_hanging_get_ends_and_ids_stay_unique_after_redis_comes_back_empty() {
    let redis = Redis::start().await;
    let n = compat_node_with(&redis, "pc1", |s| {
        // Short polls: each one checks the peer is still signed in.
        s.events.keep = Duration::from_secs(4);
    })
    .await;
    let p = n.compat_port.unwrap();
    let (ann, _) = Sample::sign_in(p, "ann").await;
    let (bob, _) = Sample::sign_in(p, "bob").await;
    assert_eq!(ann.wait(p).await.text(), format!("bob,{},1\n", bob.id));
    let bob_waits = tokio::spawn({
        let req = bob.wait_request();
        async move { exchange(p, &req).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bob.sign_out(p).await.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), bob_waits).await.expect("a signed-out peer's hanging GET ends").unwrap();
    assert_eq!((ended.status, ended.text().as_str()), (500, "Peer most likely gone."));
    // Redis comes back empty: the ids this node has seen in use are not handed out again.
    let mut c = redis.conn().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let (carl, _) = Sample::sign_in(p, "carl").await;
    assert!(carl.id > ann.id.max(bob.id), "carl got {}, after {} and {}", carl.id, ann.id, bob.id);
}

#[actix_web::test]
async fn a_node_holds_at_most_max_conns_connections_on_the_listener() {
    let redis = Redis::start().await;
    let n = compat_node_with(&redis, "pc1", |s| {
        s.compat.peerconnection.max_conns = 5;
        s.compat.peerconnection.max_conns_per_ip = 100;
    })
    .await;
    let p = n.compat_port.unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(("127.0.0.1", p)).await.unwrap());
    }
    // Accepted in order: the sixth is shut at once, with nothing read or answered.
    let mut sixth = TcpStream::connect(("127.0.0.1", p)).await.unwrap();
    let mut buf = [0u8; 16];
    let n6 = tokio::time::timeout(Duration::from_secs(3), sixth.read(&mut buf)).await.expect("shut at once").unwrap_or(0);
    assert_eq!(n6, 0);
    drop(held);
    // Places come back as connections end.
    let ok = crate::support::wait_until(Duration::from_secs(5), "a place on the listener", async || {
        tokio::time::timeout(Duration::from_secs(1), exchange(p, b"OPTIONS / HTTP/1.0\r\n\r\n")).await.is_ok_and(|a| a.status == 200)
    });
    ok.await;
}

#[actix_web::test]
async fn after_redis_comes_back_empty_no_node_hands_out_an_id_in_use() {
    let redis = Redis::start().await;
    let (n1, n2) = (compat_node(&redis, "pc1").await, compat_node(&redis, "pc2").await);
    let (p1, p2) = (n1.compat_port.unwrap(), n2.compat_port.unwrap());
    let (ann, _) = Sample::sign_in(p1, "ann").await;
    let (bob, _) = Sample::sign_in(p1, "bob").await;
    assert_eq!(ann.wait(p1).await.text(), format!("bob,{},1\n", bob.id));
    let mut c = redis.conn().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    // Node 1, which saw ann and bob, raises the counter again within a second ...
    crate::support::wait_until(Duration::from_secs(5), "the id counter raised again", async || {
        let v: Option<i64> = redis::cmd("GET").arg("camsig:pc:ids").query_async(&mut c).await.unwrap_or(None);
        v.is_some_and(|v| v >= ann.id.max(bob.id))
    })
    .await;
    // ... so node 2, which never saw them, hands out a fresh id.
    let (carl, _) = Sample::sign_in(p2, "carl").await;
    assert!(carl.id > ann.id.max(bob.id), "carl got {}", carl.id);
}
