//! Flow control for WebSocket sessions: at most `ws.max_queued` events wait
//! for one session, and a session that cannot run is cut.
//!
//! A session actor runs only while the HTTP layer polls its response stream,
//! and that stops when the client stops reading (the socket is full). So the
//! bound is kept where events are handed over (`Gate::admit`), and a stalled
//! session is cut from outside: each session holds a duplicate of its
//! connection's socket, which `shutdown` ends even while the actor is frozen.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a session that fell `ws.max_queued` behind has to close itself
/// (with 4008, which a client that reads gets) before its connection is cut.
pub const TOO_SLOW_GRACE: Duration = Duration::from_secs(1);

/// The raw descriptor of a connection, noted when it is accepted (`on_connect`).
#[derive(Clone, Copy)]
pub struct ConnFd(RawFd);

/// For `HttpServer::on_connect`: notes the connection's descriptor.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    if let Some(s) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ConnFd(s.as_raw_fd()));
    }
}

/// One session's share of flow control, shared by whoever hands it events.
pub struct Gate {
    max: usize,
    /// Events handed over and not yet written by the session.
    queued: AtomicUsize,
    overflowed: AtomicBool,
    born: Instant,
    /// When the session last ran (ms since `born`), or when it overflowed.
    beat_ms: AtomicU64,
    overflow_ms: AtomicU64,
    /// A duplicate of the connection's socket, to cut it.
    sock: Mutex<Option<TcpStream>>,
}

impl Gate {
    /// `conn` is the descriptor of the connection serving the handshake now;
    /// `send_buffer` (when not 0) becomes its SO_SNDBUF.
    pub fn new(max: usize, conn: Option<ConnFd>, send_buffer: usize) -> Self {
        // SAFETY: the descriptor belongs to the connection whose request is being
        // handled, so it is open for the duration of this call; the duplicate is ours.
        let sock = conn.and_then(|c| unsafe { BorrowedFd::borrow_raw(c.0) }.try_clone_to_owned().ok()).map(TcpStream::from);
        if let Some(s) = &sock
            && send_buffer > 0
            && let Err(e) = socket2::SockRef::from(s).set_send_buffer_size(send_buffer)
        {
            tracing::warn!(error = %e, "could not set ws.send_buffer_bytes");
        }
        Self {
            max,
            queued: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            born: Instant::now(),
            beat_ms: AtomicU64::new(0),
            overflow_ms: AtomicU64::new(0),
            sock: Mutex::new(sock),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Whether one more event may be handed over; past `max`, the session is
    /// marked too slow and gets nothing more (its client resumes from the log).
    pub fn admit(&self) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) < self.max {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            self.overflow_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        false
    }

    /// The session took one event off its queue.
    pub fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// The session ran just now.
    pub fn beat(&self) {
        self.beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Cuts the connection when the session has not run for `silent`, or
    /// overflowed more than `grace` ago without closing itself. True when cut.
    pub fn cut_if_stalled(&self, silent: Duration, grace: Duration) -> bool {
        let now = self.now_ms();
        let stalled = now.saturating_sub(self.beat_ms.load(Ordering::Relaxed)) > silent.as_millis() as u64;
        let too_slow = self.is_overflowed() && now.saturating_sub(self.overflow_ms.load(Ordering::Relaxed)) > grace.as_millis() as u64;
        if !(stalled || too_slow) {
            return false;
        }
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner()).take();
        sock.is_some_and(|s| s.shutdown(Shutdown::Both).is_ok())
    }
}
