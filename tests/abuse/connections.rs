//! What a connection can hold before it authenticates: its place among its
//! address's `server.max_conns_per_ip`, a request head for at most
//! `server.header_timeout_s`, a body for at most `server.body_timeout_s`,
//! and nothing once it has been answered without its body being read.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::node::ProcNode;
use crate::support::{token, wait_until};

/// Reads until the peer closes: what it sent, and how long that took.
/// Panics when the connection is still open after `limit`.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn chunked_head(auth: Option<&str>) -> String {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("POST /webrtc/cameraOn HTTP/1.1\r\nHost: camsig\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{{\"a\r\n")
}

/// Issue #23, item 3: a chunked body with no token, one chunk, then silence,
/// was answered 401 and its socket kept for good (500 of them, 120 s later).
/// Mutation (the unread-body close removed from `close_unread`): answered,
/// and still open after 8 s; so is the 408 of the next test.
#[actix_web::test]
async fn an_unauthenticated_chunked_body_that_stalls_is_answered_401_and_closed() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__BODY_TIMEOUT_S", "30")]).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    tcp.write_all(chunked_head(None).as_bytes()).await.unwrap();
    let (text, took) = read_to_close(&mut tcp, Duration::from_secs(8)).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    eprintln!("chunked hold without a token: 401 and closed after {took:?}");
}

/// The authenticated form: 408 once `server.body_timeout_s` passes, and the
/// connection closed with it (it was answered and held before).
#[actix_web::test]
async fn an_authenticated_chunked_body_that_stalls_gets_408_and_is_closed() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__BODY_TIMEOUT_S", "1")]).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    tcp.write_all(chunked_head(Some(&token("ann"))).as_bytes()).await.unwrap();
    let (text, took) = read_to_close(&mut tcp, Duration::from_secs(8)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(took >= Duration::from_millis(900), "answered before the body timeout: {took:?}");
}

/// A request head that never ends, or no request at all: closed once
/// `server.header_timeout_s` passes, whoever it is.
/// Mutation (actix's default client request timeout): half a head held 5 s.
#[actix_web::test]
async fn a_request_head_not_sent_in_time_closes_the_connection() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__HEADER_TIMEOUT_S", "1")]).await;
    let mut half = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nX-Slow: ").await.unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let authed = format!("GET /webrtc/users HTTP/1.1\r\nHost: camsig\r\nAuthorization: Bearer {}\r\n", token("ann"));
    let mut slow_authed = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    slow_authed.write_all(authed.as_bytes()).await.unwrap();
    for (name, tcp) in [("half a head", &mut half), ("nothing", &mut silent), ("a token, no end of head", &mut slow_authed)] {
        let (_, took) = read_to_close(tcp, Duration::from_secs(8)).await;
        assert!(took < Duration::from_secs(4), "{name}: held {took:?}");
    }
}

/// Issue #23, item 1: past `server.max_conns_per_ip` unauthenticated
/// connections, one more is shut at once and runs nothing; a connection that
/// authenticates gives its place back; descriptors stay bounded, however many
/// more come and sit on half a head (the hostile bench held 1 119 when the
/// refused ones were kept until their head timed out).
/// Mutation (the cap at 100 000): the 21st connection's request is served.
#[actix_web::test]
async fn an_address_holds_at_most_max_conns_per_ip_unauthenticated_connections() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__MAX_CONNS_PER_IP", "20"), ("CAMSIG__SERVER__HEADER_TIMEOUT_S", "60")]).await;
    let baseline = node.fds();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(("127.0.0.1", node.port)).await.unwrap());
    }
    // The start-up's readiness probe may still hold a place for a moment, and
    // a connection opened meanwhile is shut: open a new one for each shut.
    wait_until(Duration::from_secs(10), "20 connections held open", async || {
        for c in held.iter_mut() {
            let mut b = [0u8; 1];
            if matches!(c.try_read(&mut b), Ok(0) | Err(_)) && !matches!(c.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *c = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut b = [0u8; 1];
        held.iter().all(|c| matches!(c.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
    })
    .await;
    // Counted once a worker has taken each (not when the kernel accepts it):
    // wait until a probe is refused, each probe closed before the next.
    wait_until(Duration::from_secs(10), "the 20 connections to be counted", async || {
        let mut probe = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        let _ = probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nConnection: close\r\n\r\n").await;
        !read_to_close(&mut probe, Duration::from_secs(8)).await.0.starts_with("HTTP/1.1 200")
    })
    .await;
    // One more: shut at once, whatever it asks (a 429 if the answer got out first).
    for _ in 0..50 {
        let mut extra = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\n\r\n").await;
        let (text, took) = read_to_close(&mut extra, Duration::from_secs(8)).await;
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 429"), "the 21st connection: {text}");
        assert!(took < Duration::from_secs(1), "held {took:?}");
    }
    // Many more sitting on half a head hold nothing either.
    let mut halves = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nX-Slow: ").await;
        halves.push(c);
    }
    let what = format!("descriptors back to at most {baseline} + 20 + 4");
    wait_until(Duration::from_secs(5), &what, async || node.fds() <= baseline + 20 + 4).await;
    // Every half is shut before a place is freed: one still in the kernel's
    // backlog would take the freed place before the probe below does.
    for mut c in halves {
        let (text, _) = read_to_close(&mut c, Duration::from_secs(8)).await;
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 429"), "a half head over the cap: {text}");
    }
    // An authenticated request on a held connection gives its place back.
    let mut first = held.remove(0);
    let req = format!("GET /webrtc/users/ann HTTP/1.1\r\nHost: camsig\r\nAuthorization: Bearer {}\r\n\r\n", token("ann"));
    first.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf[..n]));
    let mut next = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nConnection: close\r\n\r\n").await.unwrap();
    let (text, _) = read_to_close(&mut next, Duration::from_secs(8)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "after one authenticated: {text}");
    // And every place comes back when the connections go.
    drop(held);
    wait_until(Duration::from_secs(10), "the held connections' places to come back", async || {
        let conns = futures_util::future::join_all((0..25).map(|_| healthz(&node))).await;
        conns.iter().all(|t| t.starts_with("HTTP/1.1 200"))
    })
    .await;
}

/// A `/healthz` on a new connection, held open until all of them are asked:
/// the answer.
async fn healthz(node: &ProcNode) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nConnection: close\r\n\r\n").await.unwrap();
    read_to_close(&mut c, Duration::from_secs(8)).await.0
}

/// Found by the no-list attack of issue #23: after one authenticated request,
/// a kept-alive connection that trickled its next head a byte every 2 s was
/// held for good (1 002 of them took every descriptor of a node). Every head
/// is now timed, the later ones as the first.
/// Mutation (no watchdog): still open after 8 s.
#[actix_web::test]
async fn a_kept_alive_connection_that_trickles_its_next_head_is_closed() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__HEADER_TIMEOUT_S", "1")]).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let first = format!("GET /webrtc/users/ann HTTP/1.1\r\nHost: camsig\r\nAuthorization: Bearer {}\r\n\r\n", token("ann"));
    tcp.write_all(first.as_bytes()).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf[..n]));
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: camsig\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(8), rd.read(&mut buf)).await {
            Err(_) => panic!("still open after 8 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    trickle.abort();
    assert!(start.elapsed() < Duration::from_secs(4), "held {:?}", start.elapsed());
}

/// Issue #23, item 1: a connection that has not authenticated within
/// `server.header_timeout_s` is closed, whatever it does meanwhile: one
/// asking `/healthz` twice a second on a kept-alive connection too.
#[actix_web::test]
async fn a_connection_that_never_authenticates_is_closed_after_the_head_timeout() {
    let node = ProcNode::start(&[("CAMSIG__SERVER__HEADER_TIMEOUT_S", "1")]).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut answered = 0;
    loop {
        assert!(start.elapsed() < Duration::from_secs(5), "still served after {:?} ({answered} answers)", start.elapsed());
        if tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: camsig\r\n\r\n").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => answered += 1,
            Err(_) => panic!("no answer and not closed"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(answered >= 1, "served until the timeout");
    assert!(start.elapsed() < Duration::from_secs(3), "closed after {:?}", start.elapsed());
}
