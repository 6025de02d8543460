//! Just enough of a PeerJS client to stand in for one against the PeerJS
//! server: the socket at `/peerjs?key=&id=&token=`, the server's `OPEN`, a
//! `HEARTBEAT` every 5 s as the real client sends (the server drops a client
//! silent for 60 s), and `{"type", "dst", "payload"}` frames, which the server
//! hands to `dst` as they are, with `src` added.

use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ws::{self, Ws, next_text};

/// The server's `--key`: every client must name it.
pub const KEY: &str = "peerjs";
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Where frames go out; shared with the heartbeat.
pub type Out = Arc<Mutex<SplitSink<Ws, Message>>>;

pub struct Peer {
    pub out: Out,
    incoming: SplitStream<Ws>,
}

/// Connects as `id` and waits for the server's `OPEN`. The heartbeat stops
/// once the `Peer` and every clone of its `out` are dropped.
pub async fn connect(port: u16, id: &str) -> Result<Peer> {
    let req = format!("ws://127.0.0.1:{port}/peerjs?key={KEY}&id={id}&token={id}-token").into_client_request()?;
    let (sink, mut incoming) = ws::open(port, req).await?.split();
    let first = next_text(&mut incoming).await.context("no frame after the PeerJS handshake")?;
    let open: Value = serde_json::from_str(&first).with_context(|| format!("not JSON: {first}"))?;
    if open["type"] != "OPEN" {
        bail!("PeerJS server refused {id}: {first}");
    }
    let out = Arc::new(Mutex::new(sink));
    tokio::spawn(heartbeat(Arc::downgrade(&out)));
    Ok(Peer { out, incoming })
}

async fn heartbeat(out: Weak<Mutex<SplitSink<Ws, Message>>>) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        let Some(out) = out.upgrade() else { return };
        if out.lock().await.send(Message::text(r#"{"type":"HEARTBEAT"}"#)).await.is_err() {
            return;
        }
    }
}

/// Sends `{"type": kind, "dst", "payload"}`; false when the socket is gone.
pub async fn send(out: &Out, kind: &str, dst: &str, payload: Value) -> bool {
    let frame = json!({"type": kind, "dst": dst, "payload": payload}).to_string();
    out.lock().await.send(Message::text(frame)).await.is_ok()
}

impl Peer {
    /// The next frame as JSON; None once the socket ends.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let text = next_text(&mut self.incoming).await?;
            if let Ok(v) = serde_json::from_str(&text) {
                return Some(v);
            }
        }
    }
}
