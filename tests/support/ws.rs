//! WebSocket clients of a test node: `Ws` reads frames and commands as the
//! feature under test speaks them; `raw_ws` is a client that misbehaves.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestApp, WAIT, token};

impl TestApp {
    /// `ann` with her camera on and `bob` viewing it in one room, each with a
    /// `presence=false` socket (ann's `show_cam` already read): (ann, bob, room).
    pub async fn ann_shows_bob(&self) -> (Ws, Ws, String) {
        let (ann, bob) = (token("ann"), token("bob"));
        let mut a = self.ws_query(&ann, "?presence=false").await;
        let b = self.ws_query(&bob, "?presence=false").await;
        self.camera_on(&ann).await;
        let room = self.show(&bob, "ann").await;
        a.expect("show_cam").await;
        (a, b, room)
    }

    /// The token's user's position in their log, from a socket's hello (the socket then closes).
    pub async fn position(&self, token: &str) -> String {
        let ws = self.ws_query(token, "?presence=false").await;
        let since = ws.hello["data"]["last_id"].as_str().unwrap().to_owned();
        ws.close().await;
        since
    }

    /// Opens `/ws` with a bearer header and reads the hello frame.
    pub async fn ws(&self, token: &str) -> Ws {
        self.ws_query(token, "").await
    }

    /// The status a refused `/ws` handshake answers with (panics if it upgrades).
    pub async fn ws_refused(&self, query: &str, authorization: Option<&str>) -> u16 {
        let mut req = self.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
        if let Some(a) = authorization {
            req.headers_mut().insert("Authorization", HeaderValue::from_str(a).unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("the handshake was expected to be refused"),
        }
    }

    /// The status of a `/ws` handshake: 101 when it upgrades (the socket is then dropped).
    pub async fn ws_status(&self, query: &str, authorization: &str) -> u16 {
        let mut req = self.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", HeaderValue::from_str(authorization).unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            Err(e) => panic!("expected an HTTP answer, got {e}"),
            Ok(_) => 101,
        }
    }

    /// Opens `/ws` with no header at all (e.g. `?token=`), reading the hello frame.
    pub async fn ws_bare(&self, query: &str) -> Ws {
        Ws::connect(&self.ws_url(&format!("/ws{query}")), None).await
    }

    /// Opens `/ws<query>` with a bearer header and reads the hello frame.
    pub async fn ws_query(&self, token: &str, query: &str) -> Ws {
        Ws::connect(&self.ws_url(&format!("/ws{query}")), Some(token)).await
    }
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// The last `version` seen per user, to check that versions only grow.
    pub versions: std::collections::HashMap<String, u64>,
}

impl Ws {
    /// Opens the WebSocket at `url` (with a bearer header when `token` is
    /// given) and reads the hello frame.
    pub async fn connect(url: &str, token: Option<&str>) -> Ws {
        let mut req = url.into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("websocket opens");
        let mut ws = Ws { stream, hello: Value::Null, versions: Default::default() };
        let hello = ws.next().await;
        assert_eq!(hello["action"], "server-action:hello", "{hello}");
        ws.hello = hello;
        ws
    }

    /// The next frame, asserting its action (`show_cam`, `update_user`, ...); returns the whole frame.
    #[track_caller]
    pub fn expect<'a>(&'a mut self, action: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let v = self.next().await;
            assert_eq!(v["action"], format!("server-action:{action}"), "at {caller}: {v}");
            v
        }
    }

    /// The next frame must be `update_user` for `user` with these values, and a
    /// `version` above any seen before for that user; returns the user.
    #[track_caller]
    pub fn expect_user<'a>(&'a mut self, user: &'a str, online: bool, camera: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let v = self.next().await;
            let u = &v["data"]["user"];
            assert_eq!(
                (v["action"].as_str(), u["user_id"].as_str(), u["online"].as_bool(), u["camera"].as_str()),
                (Some("server-action:update_user"), Some(user), Some(online), Some(camera)),
                "at {caller}: {v}"
            );
            let version = u["version"].as_u64().expect("a version");
            let last = self.versions.insert(user.to_owned(), version).unwrap_or(0);
            assert!(version > last, "at {caller}: version {version} after {last}: {v}");
            assert!(v.get("id").is_none(), "update_user carries no id: {v}");
            u.clone()
        }
    }

    /// The next JSON text frame; fails the test after `WAIT`.
    pub async fn next(&mut self) -> Value {
        self.try_next(WAIT).await.expect("a frame arrives in time")
    }

    /// The next JSON text frame, or None on timeout or close.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("frames are JSON")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next frame that is not an `update_user`.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let v = self.next().await;
            if v["action"] != "server-action:update_user" {
                return v;
            }
        }
    }

    /// The next `update_user` is about `user` (no other user's comes first); returns the user.
    pub async fn next_update_is(&mut self, user: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["action"] == "server-action:update_user" {
                assert_eq!(v["data"]["user"]["user_id"], user, "{v}");
                return v["data"]["user"].clone();
            }
        }
    }

    /// Skips frames until an `update_user` about `user` matching `pred`.
    pub async fn wait_user(&mut self, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if v["action"] == "server-action:update_user" && v["data"]["user"]["user_id"] == user && pred(&v["data"]["user"]) {
                return v["data"]["user"].clone();
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.expect("frame sent");
    }

    /// Sends a command and returns its ack or error reply, skipping events.
    pub async fn command(&mut self, cmd: Value) -> Value {
        self.send_text(&cmd.to_string()).await;
        loop {
            let v = self.next().await;
            if v.get("cmd").is_some() {
                return v;
            }
        }
    }

    /// Reads until the server closes; its close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.stream.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        // Drain until the server confirms, so the session is really gone.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.stream.next()).await {}
    }
}

/// The id of a logged event as (ms, seq), for ordering.
pub fn event_id(frame: &Value) -> (u64, u64) {
    let id = frame["id"].as_str().unwrap_or_else(|| panic!("an event id: {frame}"));
    let (ms, seq) = id.split_once('-').expect("ids are <ms>-<seq>");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// A raw WebSocket upgrade over a plain TCP stream, for clients that misbehave:
/// returns the stream just after the `101` head.
pub async fn raw_ws(app: &TestApp, token: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connects");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n",
        app.port
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "the head ends before EOF");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Server frames (unmasked) read until EOF: (opcode, payload).
pub async fn read_frames_until_eof(mut s: TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read until EOF");
    let (mut frames, mut i) = (Vec::new(), 0);
    while i + 2 <= buf.len() {
        let opcode = buf[i] & 0x0f;
        let (mut len, mut at) = ((buf[i + 1] & 0x7f) as usize, i + 2);
        if len == 126 {
            len = u16::from_be_bytes([buf[at], buf[at + 1]]) as usize;
            at += 2;
        } else if len == 127 {
            len = u64::from_be_bytes(buf[at..at + 8].try_into().unwrap()) as usize;
            at += 8;
        }
        frames.push((opcode, buf[at..at + len].to_vec()));
        i = at + len;
    }
    frames
}
