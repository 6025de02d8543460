//! libwebrtc's sample `peerconnection_server` protocol, on its own listener
//! (`compat.peerconnection`), so that apps built on its `peerconnection_client`
//! talk to camsig unchanged: `GET /sign_in?<name>`, `GET /wait?peer_id=`,
//! `POST /message?peer_id=&to=`, `GET /sign_out?peer_id=`.
//!
//! Inside, each peer is a camsig user `pc-<id>` (ids from the store, unique
//! over nodes) in the peers' lobby (`service::peers`): a notification or a
//! message is an event in the receiver's log, so it waits there between two
//! hanging GETs, on any node, and `/wait` is a long poll of that log from the
//! peer's cursor, which moves only once an answer was written. A peer that
//! stops polling ends like any long-poll session, and the others hear
//! `name,id,0`. Bounded per IP (connections, requests a second) and by
//! `max_peers` and `max_message_bytes`; no authentication (docs/security.md).

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::wire::{self, ReadError, Request};
use crate::domain::EventId;
use crate::error::Error;
use crate::node::Node;
use crate::service::peers::{MAX_PEER_NAME, peer_user};

/// How long one long poll of a `/wait` lasts at most before the next (the
/// client sees one hanging GET); each renews the peer's cursor and log.
const POLL: Duration = Duration::from_secs(25);
const GONE: &[u8] = b"Peer most likely gone.";
/// How long an answer waits for the client to close its end, which tells that it read it.
const LINGER: Duration = Duration::from_secs(5);
/// How long a sign-in or sign-out waits for this node's turn at the lobby.
const LOBBY_WAIT: Duration = Duration::from_secs(10);

/// Binds the listener when the protocol is on (port 0 works, for tests).
pub fn bind(settings: &crate::config::Settings) -> anyhow::Result<Option<std::net::TcpListener>> {
    let pc = &settings.compat.peerconnection;
    if !pc.enabled {
        return Ok(None);
    }
    let addr = pc.bind.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8888)));
    let l = std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("compat.peerconnection.bind: cannot listen on {addr}: {e}"))?;
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// The listener's own state on this node.
struct Listener {
    /// Connections open per IP address, and in all.
    open: Mutex<HashMap<IpAddr, usize>>,
    open_total: AtomicUsize,
    max_open: usize,
    max_open_total: usize,
    rate: DefaultKeyedRateLimiter<IpAddr>,
    /// The highest signed-in peer id seen here (`Store::next_peer_id`).
    floor: AtomicU64,
    /// Sign-ins and sign-outs go to the lobby one at a time from this node,
    /// so that a storm of them costs each node one step at a time, not a
    /// storm of conflicting steps.
    lobby: tokio::sync::Semaphore,
}

impl Listener {
    /// A place for one more connection from `ip`, freed when the guard drops.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<impl Drop + use<>> {
        let mut open = self.open.lock().expect("not poisoned");
        if self.open_total.load(Ordering::Relaxed) >= self.max_open_total {
            return None;
        }
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_open {
            return None;
        }
        *n += 1;
        self.open_total.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        Some(scopeguard::guard((), move |()| {
            let mut open = me.open.lock().expect("not poisoned");
            me.open_total.fetch_sub(1, Ordering::Relaxed);
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }))
    }
}

/// Serves the listener until the node stops.
pub async fn serve(node: Node, listener: std::net::TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "compat.peerconnection: cannot serve"),
    };
    let pc = node.settings.compat.peerconnection.clone();
    let state = Arc::new(Listener {
        open: Mutex::new(HashMap::new()),
        open_total: AtomicUsize::new(0),
        max_open: pc.max_conns_per_ip,
        max_open_total: pc.max_conns,
        rate: RateLimiter::keyed(Quota::per_second(pc.rate_per_s)),
        floor: AtomicU64::new(0),
        lobby: tokio::sync::Semaphore::new(1),
    });
    tracing::info!(addr = ?listener.local_addr().ok(), "peerconnection_client listener");
    let mut tidy = tokio::time::interval(Duration::from_secs(60));
    // Each second the store's id counter is held above every id this node
    // has seen in use: a store that came back empty is caught up within it.
    let mut floor = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (stream, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "compat.peerconnection: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tidy.tick() => { state.rate.retain_recent(); continue; }
            _ = floor.tick() => {
                let at_least = state.floor.load(Ordering::Relaxed);
                if at_least > 0 {
                    let (node, at_least) = (node.clone(), at_least);
                    actix_web::rt::spawn(async move {
                        let _ = node.service.store().raise_peer_ids(at_least).await;
                    });
                }
                continue;
            }
        };
        let Some(place) = state.enter(addr.ip()) else {
            drop(stream); // over a connection limit: shut at once
            continue;
        };
        let (node, state) = (node.clone(), state.clone());
        actix_web::rt::spawn(async move {
            let _place = place;
            connection(&node, stream, addr.ip(), &state).await;
        });
    }
}

async fn connection(node: &Node, mut stream: TcpStream, ip: IpAddr, state: &Listener) {
    let s = &node.settings;
    let req = match wire::read_request(&mut stream, s.server.header_timeout, s.server.body_timeout, s.compat.peerconnection.max_message_bytes).await {
        Ok(r) => r,
        Err(ReadError::Gone) => return,
        Err(ReadError::Malformed) => return answer(&mut stream, sorry()).await,
        Err(ReadError::TooLarge(max)) => return answer(&mut stream, error(format!("A message is at most {max} bytes.").as_bytes())).await,
    };
    if state.rate.check_key(&ip).is_err() {
        return answer(&mut stream, wire::response("429 Too Many Requests", "text/plain", None, b"Too many requests; slow down.")).await;
    }
    let peer = req.int_arg("peer_id");
    let span = tracing::info_span!("peerconnection", path = %req.path, user_id = tracing::field::Empty, room_id = tracing::field::Empty);
    if let Some(id) = peer {
        span.record("user_id", peer_user(id).as_str());
    }
    async {
        // None: a hanging GET that ended without an answer; the client opens another.
        if let Some(bytes) = handle(node, state, &req, &mut stream).await {
            answer(&mut stream, bytes).await;
        }
    }
    .instrument(span)
    .await
}

async fn answer(stream: &mut TcpStream, bytes: Vec<u8>) {
    wire::send(stream, &bytes, LINGER).await;
}

fn sorry() -> Vec<u8> {
    wire::response("500 Sorry", "text/html", None, b"<html><body>Sorry, not yet implemented</body></html>")
}

fn error(body: &[u8]) -> Vec<u8> {
    wire::response("500 Error", "text/plain", None, body)
}

fn ok() -> Vec<u8> {
    wire::response("200 OK", "text/plain", None, b"")
}

fn busy() -> Vec<u8> {
    wire::response("503 Service Unavailable", "text/plain", None, b"Try again shortly.")
}

/// A store or broker failure, as this protocol can say it.
fn failed(e: Error) -> Vec<u8> {
    match e {
        Error::Unavailable(_) | Error::OutcomeUnknown(_) => busy(),
        Error::Forbidden(_) => error(GONE),
        Error::MeetingFull => error(b"Too many peers are signed in."),
        e => {
            tracing::warn!(error = %e, "peerconnection request failed");
            error(b"The request failed.")
        }
    }
}

/// The sample server's dispatch: a request naming a signed-in peer
/// (`/wait`, `/sign_out`, `/message`), else a new peer (`/sign_in`), else
/// what a browser sends (OPTIONS, and anything else: `500 Sorry`).
async fn handle(node: &Node, l: &Listener, req: &Request, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let svc = &node.service;
    let named = matches!(req.path.as_str(), "/wait" | "/sign_out" | "/message") && matches!(req.method.as_str(), "GET" | "POST");
    if named && let Some(id) = req.int_arg("peer_id") {
        match svc.peer_signed_in(id).await {
            Err(e) => return Some(failed(e)),
            Ok(true) => {
                // Only ids the store vouches for raise the floor, so a made-up one cannot use up the ids.
                l.floor.fetch_max(id, Ordering::Relaxed);
                return signed_in(node, l, id, req, stream).await;
            }
            Ok(false) => {}
        }
    }
    if req.method == "GET" && req.path == "/sign_in" {
        return Some(sign_in(node, l, req).await.unwrap_or_else(failed));
    }
    if req.method == "POST" && !req.body.is_empty() {
        return Some(error(GONE));
    }
    if req.method == "OPTIONS" {
        return Some(wire::response("200 OK", "", None, b""));
    }
    Some(sorry())
}

async fn signed_in(node: &Node, l: &Listener, id: u64, req: &Request, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let svc = &node.service;
    if req.path == "/wait" {
        return wait(node, id, stream).await;
    }
    if let Some(to) = req.int_arg("to") {
        // Text, as the client sends (SDP and JSON): no control characters but
        // tab and line ends, so a message kept as JSON is at most twice its size.
        let Ok(data) = String::from_utf8(req.body.clone()) else {
            return Some(error(b"A message must be UTF-8 text."));
        };
        if data.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) {
            return Some(error(b"A message must be text, without control characters."));
        }
        if to == id {
            // To oneself: the sample answers the message straight back.
            return Some(wire::response("200 OK", &req.content_type, Some(id), &req.body));
        }
        let ct = if req.content_type.is_empty() { "text/plain" } else { req.content_type.as_str() };
        return Some(match svc.peer_message(id, to, ct, data).await {
            Ok(()) => ok(),
            Err(e) => failed(e),
        });
    }
    if req.path == "/sign_out" {
        let Ok(Ok(_turn)) = tokio::time::timeout(LOBBY_WAIT, l.lobby.acquire()).await else {
            return Some(busy());
        };
        return Some(match svc.peer_sign_out(id).await {
            Ok(()) | Err(Error::Forbidden(_) | Error::MeetingNotFound) => ok(),
            Err(e) => failed(e),
        });
    }
    Some(error(GONE))
}

/// The name as the sample keeps it: URL-decoded, `peer_<id>` when empty,
/// commas (the list's separator) and control characters made `_`, at most
/// `MAX_PEER_NAME` bytes.
fn peer_name(args: &str, id: u64) -> String {
    let raw = percent_encoding::percent_decode_str(&args.replace('+', " ")).decode_utf8_lossy().into_owned();
    let mut name: String = raw.chars().map(|c| if c == ',' || c.is_control() { '_' } else { c }).collect();
    if name.is_empty() {
        name = format!("peer_{id}");
    }
    while name.len() > MAX_PEER_NAME {
        name.pop();
    }
    name
}

async fn sign_in(node: &Node, l: &Listener, req: &Request) -> crate::error::Result<Vec<u8>> {
    let Ok(Ok(_turn)) = tokio::time::timeout(LOBBY_WAIT, l.lobby.acquire()).await else {
        return Ok(busy());
    };
    let store = node.service.store();
    let id = store.next_peer_id(l.floor.load(Ordering::Relaxed)).await?;
    l.floor.fetch_max(id, Ordering::Relaxed);
    if id > i32::MAX as u64 {
        // The client keeps its id in an `int`.
        return Ok(error(b"No peer ids are left."));
    }
    let user = peer_user(id);
    tracing::Span::current().record("user_id", user.as_str());
    // The cursor first: every notification after the sign-in is after it.
    let start = node.service.broker().last_id(&user).await?;
    store.set_peer_cursor(&user, &start.to_string(), cursor_keep(node)).await?;
    let peers = node.service.peer_sign_in(id, &peer_name(&req.args, id)).await?;
    let body: String = peers.iter().map(|p| format!("{},{},1\n", p.name, p.id)).collect();
    Ok(wire::response("200 Added", "text/plain", Some(id), body.as_bytes()))
}

/// How long a cursor outlives its last move: past it, the peer is long gone.
fn cursor_keep(node: &Node) -> Duration {
    node.settings.events.keep * 2 + node.settings.presence.grace
}

/// A hanging GET: the first notification or message after the peer's cursor,
/// whenever it comes. None: the client went away, the node is draining, or a
/// newer hanging GET of the same peer took over; either way no answer.
async fn wait(node: &Node, id: u64, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let user = peer_user(id);
    let store = node.service.store();
    // Within `events.keep_s`, so that each poll keeps an idle peer's log alive.
    let poll = POLL.min(node.settings.events.keep / 2).max(Duration::from_secs(1));
    let mut first = true;
    loop {
        if node.service.is_draining() {
            return None; // closed unanswered: the client opens its next one elsewhere
        }
        // Signed out meanwhile (by this client or another): the sample drops the peer.
        if !first && !matches!(node.service.peer_signed_in(id).await, Ok(true)) {
            return Some(error(GONE));
        }
        first = false;
        let cursor = match store.peer_cursor(&user).await {
            Ok(c) => c,
            Err(e) => return Some(failed(e)),
        };
        // Each cycle renews the cursor: it lapses only for a peer long gone.
        if let Some(c) = &cursor {
            let _ = store.set_peer_cursor(&user, c, cursor_keep(node)).await;
        }
        let since = cursor.and_then(|c| c.parse::<EventId>().ok());
        let started = tokio::time::Instant::now();
        let polled = tokio::select! {
            p = crate::actors::poll::poll(&node.actors, &user, since, poll) => p,
            _ = client_gone(stream) => return None,
        };
        let polled = match polled {
            Ok(p) => p,
            Err(e) => return Some(failed(e)),
        };
        let mut skipped = None;
        for frame in &polled.events {
            let v: serde_json::Value = serde_json::from_str(&frame.json).unwrap_or_default();
            let d = &v["data"];
            let bytes = match frame.action {
                "peer" => {
                    let line = format!("{},{},{}\n", d["name"].as_str().unwrap_or_default(), d["peer_id"], u8::from(d["connected"].as_bool() == Some(true)));
                    wire::response("200 OK", "text/plain", Some(id), line.as_bytes())
                }
                "peer_message" => {
                    let ct = d["content_type"].as_str().unwrap_or("text/plain");
                    wire::response("200 OK", ct, d["peer_id"].as_u64(), d["data"].as_str().unwrap_or_default().as_bytes())
                }
                "resync" => {
                    // More waited than the log keeps (`events.keep_max`): say so, as an error
                    // (the client then disconnects), rather than skip what was lost.
                    let _ = store.set_peer_cursor(&user, &polled.last_id.to_string(), cursor_keep(node)).await;
                    return Some(error(b"Messages for this peer were lost: sign in again."));
                }
                _ => {
                    skipped = frame.id;
                    continue;
                }
            };
            // The cursor moves only once the client has taken the answer (closed
            // its end after reading it); else the next hanging GET gets it again.
            if wire::send(stream, &bytes, LINGER).await
                && let Some(at) = frame.id
                && let Err(e) = store.set_peer_cursor(&user, &at.to_string(), cursor_keep(node)).await
            {
                tracing::warn!(error = %e, "could not move a peer's cursor; its next hanging GET gets this again");
            }
            return None; // answered already
        }
        if let Some(at) = skipped {
            let _ = store.set_peer_cursor(&user, &at.to_string(), cursor_keep(node)).await;
            continue;
        }
        // Empty well before its time: a newer hanging GET of this peer took its place.
        if started.elapsed() + Duration::from_secs(1) < poll && !node.service.is_draining() {
            return None;
        }
    }
}

/// Resolves when the client closes its end (or sends more than its one request).
async fn client_gone(stream: &TcpStream) {
    let mut b = [0u8; 1];
    let _ = stream.peek(&mut b).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_as_the_sample_keeps_them() {
        assert_eq!(peer_name("ann%40box", 3), "ann@box");
        assert_eq!(peer_name("a,b+c", 3), "a_b c");
        assert_eq!(peer_name("", 9), "peer_9");
        assert_eq!(peer_name("x%0Ay", 1), "x_y");
        assert_eq!(peer_name(&"é".repeat(300), 1).len(), MAX_PEER_NAME);
    }
}
