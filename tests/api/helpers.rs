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
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.auth.jwt_secret = Some(SecretString::from(SECRET));
    s.limits.rate_per_s = 10_000;
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

    /// POST `/webrtc/<op>` as the holder of `token`.
    pub async fn post(&self, op: &str, token: &str, body: Value) -> Res {
        self.post_raw(op, Some(token), body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, op: &str, token: Option<&str>, body: Vec<u8>) -> Res {
        self.send(self.http.post(self.url(&format!("/webrtc/{op}"))), token, Some(body)).await
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

    /// Opens `/ws` with a bearer header and reads the hello frame.
    pub async fn ws(&self, token: &str) -> Ws {
        self.ws_query(token, "").await
    }

    pub async fn ws_query(&self, token: &str, query: &str) -> Ws {
        let mut req = self.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("websocket opens");
        let mut ws = Ws { stream, hello: Value::Null };
        let hello = ws.next().await;
        assert_eq!(hello["action"], "server-action:hello", "{hello}");
        ws.hello = hello;
        ws
    }
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
}

impl Ws {
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

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        // Drain until the server confirms, so the session is really gone.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.stream.next()).await {}
    }
}

/// A small valid SDP offer or answer (one video m-line).
pub fn sdp(kind: &str) -> Value {
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let sdp = format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
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
