//! What one client connection may hold before it has earned anything:
//! - at most `server.max_conns_per_ip` connections per client address that
//!   have not authenticated yet (a trusted proxy carries many clients and has
//!   no cap). A connection's place is given back with its first authenticated
//!   request: from then on the user's own bounds hold it (sessions, rate).
//!   A connection past the cap is shut at once, and runs nothing even if a
//!   request of it was already read (it would be answered 429
//!   `rate_limited`, had the socket not gone);
//! - a request head must arrive within `server.header_timeout_s` of the
//!   connection opening or of the previous answer ending, the first as every
//!   later one on a kept-alive connection (`Watch`: actix times only the
//!   first), and a body within `server.body_timeout_s` (`extract::Body`);
//! - a request whose body was not read to its end (refused before it was
//!   read: 401, 429, 413, a body timeout) closes its connection with the
//!   answer, so a client that sends one chunk and falls silent holds nothing.

use actix_web::body::MessageBody;
use actix_http::BoxedPayloadStream;
use actix_web::HttpMessage;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, header};
use futures_util::Stream;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use crate::http::request_log::TrustedProxies;

/// Open connections by client address, shared by every worker of a node.
#[derive(Clone)]
pub struct PerIp {
    max: usize,
    trusted: TrustedProxies,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection: a connection datum, so its place is given back
/// when it authenticates, or else when it ends.
pub struct Counted {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    released: Cell<bool>,
}

impl Counted {
    fn release(&self) {
        if self.released.replace(true) {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.release();
    }
}

/// A connection past its address's cap: a connection datum.
#[derive(Clone, Copy)]
struct Refused;

/// The request's connection has authenticated: it no longer counts against
/// its address's cap.
pub fn authenticated(req: &actix_web::HttpRequest) {
    if let Some(c) = req.conn_data::<Rc<Counted>>() {
        c.release();
    }
}

impl PerIp {
    pub fn new(max: usize, trusted: TrustedProxies) -> Self {
        Self { max, trusted, open: Arc::default() }
    }

    /// For `HttpServer::on_connect`: counts the connection, or shuts it and
    /// marks it refused when its address already holds `max`
    /// unauthenticated ones. (The mark matters: a request already in the
    /// receive buffer would still be read, and must not run.)
    pub fn on_connect(&self, conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
        let Some(s) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
        let Ok(peer) = s.peer_addr() else { return };
        let ip = peer.ip().to_canonical();
        if self.trusted.trusts(ip) {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(open);
            tracing::debug!(%ip, max = self.max, "connection refused: server.max_conns_per_ip");
            ext.insert(Refused);
            let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Both);
            return;
        }
        *n += 1;
        ext.insert(Rc::new(Counted { ip, open: self.open.clone(), released: Cell::new(false) }));
    }

    /// Unauthenticated connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

/// A connection's watchdog state: requests under way, and since when none
/// is. A connection with none under way for `server.header_timeout_s` is
/// waiting for a head that does not come (or idling): it is shut. A
/// WebSocket is a request under way for as long as it lives.
pub struct Watch {
    busy: Cell<u32>,
    idle_since: Cell<std::time::Instant>,
    /// A WebSocket now: its session keeps its own heartbeat, and the watchdog ends.
    upgraded: Cell<bool>,
}

/// The request's connection became a WebSocket: its session times it from here.
pub fn upgraded(req: &actix_web::HttpRequest) {
    if let Some(w) = req.conn_data::<Rc<Watch>>() {
        w.upgraded.set(true);
    }
}

/// For `HttpServer::on_connect`: starts the connection's watchdog. It lives
/// on the connection's worker and stops with the connection (it holds the
/// state weakly, and the state is a connection datum).
pub fn watch(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions, header_timeout: std::time::Duration) {
    use std::os::fd::AsRawFd;
    let Some(s) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
    let fd = s.as_raw_fd();
    let w = Rc::new(Watch { busy: Cell::new(0), idle_since: Cell::new(std::time::Instant::now()), upgraded: Cell::new(false) });
    let weak = Rc::downgrade(&w);
    // A counted connection (one not yet authenticated, from an address that is
    // not a trusted proxy) gets `header_timeout` in all to authenticate.
    let counted = ext.get::<Rc<Counted>>().map(Rc::downgrade);
    let opened = std::time::Instant::now();
    ext.insert(w);
    let period = (header_timeout / 4).max(std::time::Duration::from_millis(100));
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(period).await;
            // Gone with its connection: the descriptor may be another's now.
            let Some(w) = weak.upgrade() else { return };
            if w.upgraded.get() {
                return;
            }
            let unauthenticated = counted.as_ref().and_then(|c| c.upgrade()).is_some_and(|c| !c.released.get());
            let idle = w.busy.get() == 0 && w.idle_since.get().elapsed() > header_timeout;
            if idle || (w.busy.get() == 0 && unauthenticated && opened.elapsed() > header_timeout) {
                // SAFETY: the connection (and so `fd`) is open while its data lives.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    });
}

/// Marks a request under way until its answer's body has been handed out
/// (or dropped).
struct Busy(Rc<Watch>);

impl Busy {
    fn start(w: &Rc<Watch>) -> Self {
        w.busy.set(w.busy.get() + 1);
        Busy(w.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
        self.0.idle_since.set(std::time::Instant::now());
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that holds its request's `Busy` until it ends.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        busy: Option<Busy>,
    }
}

impl<B: MessageBody> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        let this = self.project();
        let r = this.body.poll_next(cx);
        if let Poll::Ready(None) = r {
            *this.busy = None;
        }
        r
    }
}

/// Whether the request announces a body (a length above 0, or chunks).
fn has_body(req: &ServiceRequest) -> bool {
    let h = req.headers();
    h.get(header::TRANSFER_ENCODING).is_some() || h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0")
}

/// Middleware, the outermost: a refused connection's request runs nothing
/// and is answered 429; the answer to a request whose body was not read to
/// its end closes the connection.
pub async fn close_unread(
    mut req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.conn_data::<Refused>().is_some() {
        let mut res = actix_web::ResponseError::error_response(&crate::error::Error::RateLimited { retry_after_s: 1 });
        res.head_mut().set_connection_type(ConnectionType::Close);
        return Ok(req.into_response(res).map_into_right_body());
    }
    let busy = req.conn_data::<Rc<Watch>>().map(Busy::start);
    let read = Rc::new(Cell::new(true));
    if has_body(&req) {
        read.set(false);
        let mut inner = req.take_payload();
        let done = read.clone();
        let tracked = futures_util::stream::poll_fn(move |cx| {
            let r = Pin::new(&mut inner).poll_next(cx);
            if let Poll::Ready(None) = r {
                done.set(true);
            }
            r
        });
        req.set_payload(Payload::from(Box::pin(tracked) as BoxedPayloadStream));
    }
    // Handler and extractor errors arrive here as responses; an `Err` is a
    // middleware's, answered by actix as it stands.
    let mut res = next.call(req).await?.map_body(|_, body| Tracked { body, busy }).map_into_left_body();
    if !read.get() {
        res.response_mut().head_mut().set_connection_type(ConnectionType::Close);
        // actix would keep the connection to read the rest of the body first,
        // for ever if it never comes: the read side ends here, so the
        // connection closes once the answer is written.
        if let Some(fd) = res.request().conn_data::<crate::actors::flow::ConnFd>() {
            fd.shutdown_read();
        }
    }
    Ok(res)
}
