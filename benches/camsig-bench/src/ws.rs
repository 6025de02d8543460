//! WebSocket clients as a phone app would hold them: small buffers (4 KiB
//! read, no write batching), spread over 127.0.0.x source addresses so that
//! tens of thousands of sockets do not run out of ephemeral ports.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Source addresses 127.0.0.1 to 127.0.0.16, round robin.
const SOURCES: u32 = 16;
static NEXT: AtomicU32 = AtomicU32::new(0);

pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// A TCP connection to `port` on loopback, from the next source address.
async fn tcp(port: u16) -> Result<TcpStream> {
    tcp_with(port, None).await
}

/// The same, with a kernel receive buffer of `rcvbuf` bytes.
async fn tcp_with(port: u16, rcvbuf: Option<u32>) -> Result<TcpStream> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % SOURCES;
    tcp_from(port, Ipv4Addr::new(127, 0, 0, 1 + n as u8), rcvbuf).await
}

/// A TCP connection to `port` on loopback from the source address `src`
/// (any of 127/8), with a kernel receive buffer of `rcvbuf` bytes if given
/// (set before connecting, so the window it advertises is small from the start).
pub async fn tcp_from(port: u16, src: Ipv4Addr, rcvbuf: Option<u32>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(b) = rcvbuf {
        socket.set_recv_buffer_size(b)?;
    }
    socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens the WebSocket `req` names on `port`, with the same client settings as for camsig.
pub async fn open(port: u16, req: Request) -> Result<Ws> {
    let stream = tcp(port).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config())).await.context("ws handshake")?;
    Ok(ws)
}

/// A client with a 4 KiB kernel receive buffer, as a phone on a bad link; reads the hello frame.
pub async fn connect_small(port: u16, token: &str, query: &str) -> Result<(Ws, serde_json::Value)> {
    let mut req = format!("ws://127.0.0.1:{port}/ws{query}").into_client_request()?;
    req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let stream = tcp_with(port, Some(4096)).await?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config())).await.context("ws handshake")?;
    let hello = next_json(&mut ws).await.context("no hello")?;
    Ok((ws, hello))
}

/// Opens `/ws{query}` on `port` as the holder of `token`, and reads the hello frame.
pub async fn connect(port: u16, token: &str, query: &str) -> Result<(Ws, serde_json::Value)> {
    let mut req = format!("ws://127.0.0.1:{port}/ws{query}").into_client_request()?;
    req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let mut ws = open(port, req).await?;
    let hello = next_json(&mut ws).await.context("no hello")?;
    Ok((ws, hello))
}

/// The next text frame (of a socket or its read half); None once it is closed.
pub async fn next_text<S>(incoming: &mut S) -> Option<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = incoming.next().await {
        match msg {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
    None
}

/// The next text frame as JSON; None when the socket ends (or the frame is not JSON).
pub async fn next_json(ws: &mut Ws) -> Option<serde_json::Value> {
    serde_json::from_str(&next_text(ws).await?).ok()
}
