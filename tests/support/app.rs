//! `spawn_app()` starts a real node in this process on 127.0.0.1:0; `TestApp`
//! gives tests request helpers so they read like the feature they check.

use camsig::config::Settings;
use camsig::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;

use super::wait_until;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// How long a test waits for one expected frame or state before failing,
/// unless it gives its own limit.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct TestApp {
    pub port: u16,
    pub base: String,
    pub http: awc::Client,
    pub handle: actix_web::dev::ServerHandle,
    pub node: camsig::node::Node,
    /// The peerconnection_client listener's port, when `compat.peerconnection.enabled`.
    pub compat_port: Option<u16>,
}

/// Settings for a test node: fixed secret, port 0, generous rate limit.
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.server.bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    s.server.data_dir = Some(std::env::temp_dir().join("camsig-test-data").display().to_string());
    s.server.workers = 2;
    s.auth.jwt_secret = Some(SecretString::from(SECRET));
    s.limits.rate_per_s = std::num::NonZeroU32::new(10_000).unwrap();
    s.limits.presence_per_min = std::num::NonZeroU32::new(100_000).unwrap();
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
    let compat_port = app.compat_port();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    TestApp { port, base: format!("http://127.0.0.1:{port}"), http, handle, node, compat_port }
}

/// A signed token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_with(json!({"sub": user, "exp": now() + 3600}), SECRET)
}

/// An operator's token (the `admin` claim), valid for an hour.
pub fn admin_token() -> String {
    token_with(json!({"sub": "ops", "exp": now() + 3600, "admin": true}), SECRET)
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

    /// `/admin<path>` with an admin token: GET, or POST with `body`.
    pub async fn admin(&self, path: &str, body: Option<Value>) -> Res {
        let auth = format!("Bearer {}", admin_token());
        let method = if body.is_some() { "POST" } else { "GET" };
        self.request_with_header(method, &format!("/admin{path}"), Some(&auth), body).await
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

    /// Starts a long poll and returns once the node holds it at its position
    /// in the log (`camsig_long_polls_waiting` went up): any event from then
    /// on answers it. A poll never sent fails here.
    pub async fn parked_poll(&self, token: &str, query: &str) -> actix_web::rt::task::JoinHandle<Res> {
        let waiting = async || metric(&self.metrics().await, "camsig_long_polls_waiting", &[]);
        let before = waiting().await;
        let poll = actix_web::rt::spawn({
            let (app, token, query) = (self.clone(), token.to_owned(), query.to_owned());
            async move { app.poll(&token, &query).await }
        });
        wait_until(WAIT, "the node to hold the poll", async || waiting().await > before).await;
        assert!(!poll.is_finished(), "the poll answered before there was anything to say");
        poll
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.send(self.http.get(self.url(path)), token, None).await
    }

    /// GET a text document (`/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let mut r = self.http.get(self.url(path)).send().await.expect("request sent");
        String::from_utf8_lossy(&r.body().limit(8 << 20).await.expect("body read")).into_owned()
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

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let mut res = self.http.get(self.url("/metrics")).send().await.expect("metrics answer");
        assert_eq!(res.status().as_u16(), 200);
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
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
