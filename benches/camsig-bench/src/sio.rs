//! Just enough of a Socket.IO client to receive the reference relay's events:
//! Socket.IO v5 packets over Engine.IO v4, on a WebSocket from the first byte
//! (`EIO=4&transport=websocket`, no long-polling, no upgrade), the main
//! namespace only, text packets only.
//!
//! Engine.IO packets are one frame each, a type digit then the payload:
//! `0` open (JSON handshake), `1` close, `2` ping (answered with `3` pong),
//! `4` message. A `4` carries a Socket.IO packet: `40` connect (ack with the
//! socket id), `41` disconnect, `42` event (`42["name", arg…]`, optionally
//! with an ack id between `42` and the array), `44` connect error.

use anyhow::{Context, Result, bail};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ws::{self, Ws, next_text};

pub struct Socket {
    ws: Ws,
}

/// Connects to the Socket.IO server on `port` as `user` (in the handshake's
/// `auth`, and in the query for servers that read it there), and waits for
/// the server's connect ack.
pub async fn connect(port: u16, user: &str) -> Result<Socket> {
    let req = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&user={user}").into_client_request()?;
    let mut ws = ws::open(port, req).await?;
    let open = next_text(&mut ws).await.context("no Engine.IO open packet")?;
    let handshake: Value = open.strip_prefix('0').and_then(|j| serde_json::from_str(j).ok()).with_context(|| format!("not an Engine.IO open packet: {open}"))?;
    if handshake["sid"].as_str().is_none() {
        bail!("Engine.IO open packet without a sid: {open}");
    }
    ws.send(Message::text(format!("40{}", json!({ "user": user })))).await.context("send Socket.IO connect")?;
    loop {
        let packet = next_text(&mut ws).await.context("no Socket.IO connect ack")?;
        match packet.as_str() {
            "2" => ws.send(Message::text("3")).await?,
            p if p.starts_with("40") => return Ok(Socket { ws }),
            p if p.starts_with("44") => bail!("Socket.IO connect refused: {p}"),
            p if p.starts_with('1') || p.starts_with("41") => bail!("closed during the Socket.IO handshake: {p}"),
            _ => {}
        }
    }
}

impl Socket {
    /// The next event as its name and first argument, answering pings on the
    /// way; None once the socket is closed or disconnected.
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        loop {
            let packet = next_text(&mut self.ws).await?;
            if packet == "2" {
                self.ws.send(Message::text("3")).await.ok()?;
            } else if let Some(rest) = packet.strip_prefix("42") {
                let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(rest) else { continue };
                if args.is_empty() {
                    continue;
                }
                let Value::String(name) = args.remove(0) else { continue };
                return Some((name, args.into_iter().next().unwrap_or(Value::Null)));
            } else if packet.starts_with('1') || packet.starts_with("41") {
                return None;
            }
        }
    }
}
