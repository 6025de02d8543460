//! Flow control for WebSocket sessions: one outbox for everything a session
//! writes (events, replays, command replies, pongs, pings), bounded by
//! `ws.max_queued` frames and `ws.max_queued_bytes` bytes; a session further
//! behind is closed with 4008.
//!
//! A session actor runs inside its response stream, which the HTTP layer
//! polls only while the socket takes data: a client that stops reading would
//! freeze the actor (no heartbeat, an ever-growing mailbox). So the actor's
//! stream is driven by a task of its own (`respond`) and hands its bytes to
//! the response through a queue, and the actor counts what is still in it
//! (`Outbox`). Connections whose client stopped reading are ended by the
//! kernel: TCP_USER_TIMEOUT is set on every accepted socket (`on_connect`).

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use futures_channel::{mpsc, oneshot};

/// The connection's socket, for cutting it (see `Pulled::cut`); a connection
/// datum, so it lives exactly as long as the connection.
#[derive(Clone, Copy)]
pub struct ConnFd(RawFd);

impl ConnFd {
    /// Ends the reading half of the connection: actix sees the end of the
    /// request stream, answers what it has, and closes. Called only while a
    /// request of this connection is being served, so `fd` is its own.
    pub fn shutdown_read(&self) {
        // SAFETY: see above; the descriptor is only borrowed for the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
    }
}

/// For `HttpServer::on_connect`: a socket whose unacknowledged (or, to a
/// client that stopped reading, unsent) data is older than `user_timeout` is
/// ended by the kernel; with `send_buffer` > 0, that is its SO_SNDBUF.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions, user_timeout: Duration, send_buffer: usize) {
    let Some(s) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    ext.insert(ConnFd(s.as_raw_fd()));
    // Small frames go out at once: with Nagle, an event written right after a
    // heartbeat ping waits for the client's delayed ACK (about 40 ms).
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let sock = socket2::SockRef::from(s);
    if let Err(e) = sock.set_tcp_user_timeout(Some(user_timeout)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
    if send_buffer > 0
        && let Err(e) = sock.set_send_buffer_size(send_buffer)
    {
        tracing::warn!(error = %e, "could not set ws.send_buffer_bytes");
    }
}

/// Bytes the HTTP layer took from the session's queue so far, and the
/// connection, to cut when the session falls too far behind.
pub struct Pulled {
    bytes: AtomicU64,
    fd: Option<ConnFd>,
    /// False once the response (and with it the connection) is dropped.
    open: AtomicBool,
}

impl Pulled {
    pub fn new(fd: Option<ConnFd>) -> Self {
        Self { bytes: AtomicU64::new(0), fd, open: AtomicBool::new(true) }
    }

    /// Ends the connection now, with whatever still waits for it: a client
    /// that does not read would otherwise hold the queue (and keep sending)
    /// until the kernel gives up on it.
    fn cut(&self) {
        let Some(ConnFd(fd)) = self.fd else { return };
        // The session and its connection run on one worker thread, and the
        // connection drops its response (clearing `open`) in the same step
        // that closes the socket: while `open` holds, `fd` is this connection's.
        if self.open.load(Ordering::Acquire) {
            // SAFETY: `fd` is open and owned by this connection (see above); it
            // is only borrowed for the call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What the session wrote and the HTTP layer has not taken yet.
pub struct Outbox {
    max_frames: usize,
    max_bytes: u64,
    pulled: Arc<Pulled>,
    written: u64,
    /// Where each frame written ends, in bytes written: those past `pulled` still wait.
    ends: VecDeque<u64>,
}

/// A server frame's size on the wire (unmasked): header and payload.
fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    (header + payload) as u64
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize, pulled: Arc<Pulled>) -> Self {
        Self { max_frames, max_bytes: max_bytes as u64, pulled, written: 0, ends: VecDeque::new() }
    }

    /// Counts a frame of `payload` bytes about to be written; false when it
    /// would make more than `max_frames` frames or `max_bytes` bytes wait:
    /// the session is too slow, and nothing may be written. Replays are no
    /// exception: a resume reads the log a page at a time, each page the size
    /// of the room left (`room`), and the next once the client took it.
    pub fn admit(&mut self, payload: usize) -> bool {
        self.forget_pulled();
        let len = frame_len(payload);
        if self.ends.len() >= self.max_frames || self.written.saturating_sub(self.pulled.bytes.load(Ordering::Acquire)) + len > self.max_bytes {
            return false;
        }
        self.written += len;
        self.ends.push_back(self.written);
        true
    }

    fn forget_pulled(&mut self) {
        let pulled = self.pulled.bytes.load(Ordering::Acquire);
        while self.ends.front().is_some_and(|end| *end <= pulled) {
            self.ends.pop_front();
        }
    }

    /// Room left now: frames, and bytes of payload.
    pub fn room(&mut self) -> (usize, usize) {
        self.forget_pulled();
        let waiting = self.written.saturating_sub(self.pulled.bytes.load(Ordering::Acquire));
        (self.max_frames.saturating_sub(self.ends.len()), (self.max_bytes.saturating_sub(waiting)) as usize)
    }

    /// The session is too slow: unless the client takes everything queued
    /// (the 4008 close included) within `grace`, its connection goes, queued
    /// frames and all.
    pub fn cut_after(&self, grace: Duration) {
        let (pulled, written) = (self.pulled.clone(), self.written);
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(grace).await;
            if pulled.bytes.load(Ordering::Acquire) < written {
                pulled.cut();
            }
        });
    }
}

/// Starts `actor` on its own task and answers with a response that takes its
/// bytes from a queue, counting them into `pulled`.
pub fn respond<S>(req: &HttpRequest, body: S, pulled: Arc<Pulled>) -> Result<HttpResponse, actix_web::Error>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let mut res = actix_web_actors::ws::handshake(req)?;
    // futures' channels allocate as they go; tokio's unbounded one starts with
    // a 32-slot block, 1.8 KiB for every idle socket.
    let (tx, rx) = mpsc::unbounded();
    let (mut gone, held) = oneshot::channel::<()>();
    actix_web::rt::spawn(async move {
        let mut body = std::pin::pin!(body);
        loop {
            tokio::select! {
                item = body.next() => match item {
                    Some(item) => if tx.unbounded_send(item).is_err() { return },
                    None => return,
                },
                // The connection is gone: dropping the stream stops the actor.
                () = gone.cancellation() => return,
            }
        }
    });
    Ok(res.streaming(Queued { rx, pulled, part: Bytes::new(), _held: held }))
}

/// The most the HTTP layer takes at once. It takes more only when its own
/// buffer is nearly empty, so what it took (`pulled`) is what went to the
/// kernel, within about this much: a chunk of megabytes would count as
/// taken while it still sat in the HTTP layer's buffer.
const PULL_AT_MOST: usize = 16 * 1024;

struct Queued {
    rx: mpsc::UnboundedReceiver<Result<Bytes, actix_web::Error>>,
    pulled: Arc<Pulled>,
    /// What is left of the chunk being handed out.
    part: Bytes,
    /// Dropped with the response: tells the task the connection is gone.
    _held: oneshot::Receiver<()>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.pulled.open.store(false, Ordering::Release);
    }
}

impl Stream for Queued {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.part.is_empty() {
            match this.rx.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => this.part = b,
                other => return other,
            }
        }
        let piece = this.part.split_to(this.part.len().min(PULL_AT_MOST));
        this.pulled.bytes.fetch_add(piece.len() as u64, Ordering::AcqRel);
        Poll::Ready(Some(Ok(piece)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_wait_until_pulled_at_most_max_frames_and_bytes() {
        let pulled = Arc::new(Pulled::new(None));
        let mut out = Outbox::new(2, 1_000, pulled.clone());
        assert!(out.admit(10));
        assert!(out.admit(200), "a reply counts as any frame");
        assert!(!out.admit(10), "a third frame waits: too slow");
        assert_eq!(out.room(), (0, 1_000 - 12 - 204));
        pulled.bytes.store(12 + 204, Ordering::Release);
        assert_eq!(out.room(), (2, 1_000));
        assert!(!out.admit(1000), "not past max_bytes");
        assert!(out.admit(700));
        pulled.bytes.store(12 + 204 + 704, Ordering::Release);
        assert!(out.admit(996), "everything taken: a frame of max_bytes fits");
        assert!(!out.admit(0));
    }

    #[actix_web::test]
    async fn accepted_sockets_send_small_frames_at_once() {
        let listener = actix_web::rt::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(actix_web::rt::net::TcpStream::connect(addr), listener.accept());
        let (_client, (server, _)) = (client.expect("connect"), accepted.expect("accept"));
        assert!(!server.nodelay().expect("read TCP_NODELAY"), "the kernel's default is Nagle on");
        on_connect(&server, &mut actix_web::dev::Extensions::new(), Duration::from_secs(30), 0);
        assert!(server.nodelay().expect("read TCP_NODELAY"), "no ACK wait behind a heartbeat ping");
    }
}
