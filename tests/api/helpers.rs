//! `spawn_app()` starts a real node on 127.0.0.1:0; `TestApp` and `Ws` give
//! tests request helpers so they read like the feature they check.

#![allow(dead_code)]

use camsig::config::Settings;
use camsig::startup::Application;
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// Longest any test waits for one expected event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct TestApp {
    pub port: u16,
    pub base: String,
    pub http: awc::Client,
    pub handle: actix_web::dev::ServerHandle,
    pub node: camsig::node::Node,
}

/// Settings for a test node: fixed secret, port 0, generous rate limit.
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.server.bind = Some("127.0.0.1:0".into());
    s.server.data_dir = Some(std::env::temp_dir().join("camsig-test-data").display().to_string());
    s.server.workers = 2;
    s.auth.jwt_secret = Some(SecretString::from(SECRET));
    s.limits.rate_per_s = 10_000;
    s.limits.presence_per_min = 100_000;
    s.node.id = Some(format!("test-{}", rand_suffix()));
    s
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(f: impl FnOnce(&mut Settings)) -> TestApp {
    let mut s = test_settings();
    f(&mut s);
    s.validate().expect("test settings are valid");
    let app = Application::build(s).await.expect("the app builds");
    let port = app.port();
    let handle = app.handle();
    let node = app.node().clone();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    TestApp { port, base: format!("http://127.0.0.1:{port}"), http, handle, node }
}

/// A signed token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_with(json!({"sub": user, "exp": now() + 3600}), SECRET)
}

pub fn token_with(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A response: status, JSON body (Null when empty or not JSON), headers.
pub struct Res {
    pub status: u16,
    pub body: Value,
    pub headers: awc::http::header::HeaderMap,
}

impl Res {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts an error answer: this status, this code, and a message for a person.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.body);
        let message = self.body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "an error has a message: {}", self.body);
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    async fn send(&self, mut req: awc::ClientRequest, token: Option<&str>, body: Option<Vec<u8>>) -> Res {
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut res = match body {
            Some(b) => req.insert_header(("Content-Type", "application/json")).send_body(b).await,
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = res.body().limit(10 * 1024 * 1024).await.expect("body read");
        Res {
            status: res.status().as_u16(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: res.headers().clone(),
        }
    }

    /// A request with this exact `Authorization` header (or none).
    pub async fn request_with_header(&self, method: &str, path: &str, authorization: Option<&str>, body: Option<Value>) -> Res {
        let mut req = match method {
            "GET" => self.http.get(self.url(path)),
            _ => self.http.post(self.url(path)),
        };
        if let Some(a) = authorization {
            req = req.insert_header(("Authorization", a.to_owned()));
        }
        self.send(req, None, body.map(|b| b.to_string().into_bytes())).await
    }

    /// POST `/webrtc/<op>` as the holder of `token`.
    pub async fn post(&self, op: &str, token: &str, body: Value) -> Res {
        self.post_raw(op, Some(token), body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, op: &str, token: Option<&str>, body: Vec<u8>) -> Res {
        self.send(self.http.post(self.url(&format!("/webrtc/{op}"))), token, Some(body)).await
    }

    /// POST `/webrtc/<op>` with an `Idempotency-Key`.
    pub async fn post_once(&self, op: &str, token: &str, key: &str, body: Value) -> Res {
        let req = self.http.post(self.url(&format!("/webrtc/{op}"))).insert_header(("Idempotency-Key", key));
        self.send(req, Some(token), Some(body.to_string().into_bytes())).await
    }

    /// GET `/webrtc/events<query>`, a long poll: the client waits longer than any poll.
    pub async fn poll(&self, token: &str, query: &str) -> Res {
        let http = awc::Client::builder().timeout(Duration::from_secs(90)).finish();
        self.send(http.get(self.url(&format!("/webrtc/events{query}"))), Some(token), None).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.send(self.http.get(self.url(path)), token, None).await
    }

    pub async fn camera_on(&self, token: &str) -> Res {
        self.post("cameraOn", token, json!({})).await
    }

    /// cameraShow, asserting 201; returns the room id.
    pub async fn show(&self, token: &str, owner: &str) -> String {
        let r = self.post("cameraShow", token, json!({"user_id": owner})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["connection"]["room_id"].as_str().unwrap().to_owned()
    }

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

    /// Opens `/ws` with no header at all (e.g. `?token=`), reading the hello frame.
    pub async fn ws_bare(&self, query: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_url(&format!("/ws{query}"))).await.expect("websocket opens");
        Ws::opened(stream).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let mut res = self.http.get(self.url("/metrics")).send().await.expect("metrics answer");
        assert_eq!(res.status().as_u16(), 200);
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
    }

    pub async fn ws_query(&self, token: &str, query: &str) -> Ws {
        let mut req = self.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("websocket opens");
        Ws::opened(stream).await
    }
}

/// The value of one Prometheus sample: `name` with all of `labels`; 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series == &name || series.starts_with(&format!("{name}{{")))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, value)| value.parse::<f64>().expect("a sample value"))
        .sum()
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// The last `version` seen per user, to check that versions only grow.
    pub versions: std::collections::HashMap<String, u64>,
}

impl Ws {
    async fn opened(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
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

/// A small valid SDP offer or answer (one video m-line).
pub fn sdp(kind: &str) -> Value {
    sdp_version(kind, 2)
}

/// The same description with another session version (`o=` line), as a renegotiation sends.
pub fn sdp_version(kind: &str, version: u32) -> Value {
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let sdp = format!(
        "v=0\r\no=- 4611731400430051336 {version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
         a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    );
    json!({"type": kind, "sdp": sdp})
}

/// A host candidate with port `n`.
pub fn candidate(n: u16) -> Value {
    json!({"candidate": format!("candidate:1 1 udp 2113937151 192.0.2.1 {n} typ host"), "sdpMid": "0", "sdpMLineIndex": 0})
}

/// Polls `f` every 20 ms until it is true, failing after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
