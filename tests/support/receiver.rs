//! A webhook receiver a test starts: a real HTTP server on 127.0.0.1 that
//! records every POST (its body and `Camsig-Signature`), answers as the test
//! says (`Mode`), and can go down (its port closed) and come back on the
//! same port. `verify` checks a signature independently of camsig's code.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{TestApp, WAIT, token, wait_until};

pub const HOOK_SECRET: &str = "webhook-secret-0123456789";

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Ok,
    /// 500 to every POST.
    Fail,
    /// 500 to the first `n` tries of each webhook id, then 200.
    FailFirst(usize),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub raw: String,
    pub signature: String,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    got: Vec<Received>,
    tries: HashMap<String, usize>,
}

pub struct Receiver {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    state: Arc<Mutex<State>>,
    handle: Option<actix_web::dev::ServerHandle>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver { port: 0, mode: Arc::new(Mutex::new(Mode::Ok)), state: Arc::default(), handle: None };
        r.up().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Listens (again, on the same port once it had one).
    pub async fn up(&mut self) {
        let (mode, state) = (self.mode.clone(), self.state.clone());
        // std sets SO_REUSEADDR: the same port binds again after `down`.
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("the receiver binds");
        self.port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            let (mode, state) = (mode.clone(), state.clone());
            App::new().route(
                "/hooks",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let (mode, state) = (mode.clone(), state.clone());
                    async move {
                        let raw = String::from_utf8_lossy(&body).into_owned();
                        let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                        let id = v["id"].as_str().unwrap_or_default().to_owned();
                        let mut s = state.lock().unwrap();
                        let tries = s.tries.entry(id).or_default();
                        *tries += 1;
                        let status = match *mode.lock().unwrap() {
                            Mode::Ok => 200,
                            Mode::Fail => 500,
                            Mode::FailFirst(n) if *tries <= n => 500,
                            Mode::FailFirst(_) => 200,
                        };
                        let signature = req.headers().get("camsig-signature").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
                        s.got.push(Received { body: v, raw, signature, status });
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("the receiver listens")
        .run();
        self.handle = Some(server.handle());
        actix_web::rt::spawn(server);
    }

    /// Stops listening: deliveries meet a closed port.
    pub async fn down(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop(false).await;
        }
    }

    /// Every POST so far, in the order it came.
    pub fn all(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// The webhooks answered with a 2xx, once each (by id), in the order they were taken.
    pub fn taken(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.all().into_iter().filter(|r| r.status == 200 && seen.insert(r.body["id"].as_str().unwrap_or_default().to_owned())).map(|r| r.body).collect()
    }

    /// Taken webhooks of this type.
    pub fn of_type(&self, t: &str) -> Vec<Value> {
        self.taken().into_iter().filter(|v| v["type"] == t).collect()
    }
}

/// Whether `signature` (`t=..,v1=..`) is HMAC-SHA256 of `"<t>.<raw>"` with `secret`.
pub fn verify(secret: &str, signature: &str, raw: &str) -> bool {
    let parts: HashMap<&str, &str> = signature.split(',').filter_map(|p| p.split_once('=')).collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{raw}").as_bytes());
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    want == *v1
}

/// A node's settings for webhooks to `url`, with quick retries.
pub fn hooked(s: &mut camsig::config::Settings, url: &str) {
    s.webhooks.urls = vec![url.to_owned()];
    s.webhooks.secret = Some(secrecy::SecretString::from(HOOK_SECRET));
    s.webhooks.backoff = Duration::from_millis(50);
    s.webhooks.max_backoff = Duration::from_secs(1);
}

pub async fn wait_for(rx: &Receiver, what: &str, limit: Duration, f: impl Fn(&[Value]) -> bool) {
    wait_until(limit, what, async || f(&rx.taken())).await;
}

/// Whether `list` holds a webhook of type `t` about `user` (their state, or a room they own).
pub fn has(list: &[Value], t: &str, user: &str) -> bool {
    list.iter().any(|v| v["type"] == t && (v["data"]["user_id"] == user || v["data"]["owner"] == user))
}

/// Every type of webhook, caused through `nodes` in turn; each arrives once
/// with a signature that verifies, and one user's arrive in the order of
/// their changes.
pub async fn every_type_arrives_signed_through(nodes: &[TestApp], rx: &Receiver) {
    let n = |i: usize| &nodes[i % nodes.len()];
    let (ann, bob) = (token("ann"), token("bob"));
    let ann_ws = n(0).ws_query(&ann, "?presence=false").await;
    let bob_ws = n(1).ws_query(&bob, "?presence=false").await;
    assert_eq!(n(0).camera_on(&ann).await.status, 200);
    let room = n(1).show(&bob, "ann").await;
    assert_eq!(n(0).post("hangup", &bob, json!({"room_id": room})).await.status, 200);
    let m = n(1).post("meetings", &ann, json!({"title": "standup"})).await;
    let id = m.body["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    assert_eq!(n(0).post(&format!("meetings/{id}/join"), &ann, json!({"name": "Ann"})).await.status, 200);
    assert_eq!(n(1).post(&format!("meetings/{id}/join"), &bob, json!({"name": "Bob"})).await.status, 200);
    assert_eq!(n(0).post(&format!("meetings/{id}/leave"), &bob, json!({})).await.status, 200);
    assert_eq!(n(1).post("cameraOff", &ann, json!({})).await.status, 200);
    bob_ws.close().await;
    wait_for(rx, "every type of webhook", WAIT, |l| {
        has(l, "user.online", "ann")
            && has(l, "user.online", "bob")
            && has(l, "camera.on", "ann")
            && has(l, "camera.off", "ann")
            && l.iter().filter(|v| v["type"] == "room.opened").count() >= 2
            && l.iter().filter(|v| v["type"] == "room.closed").count() >= 2
            && has(l, "meeting.member_joined", "ann")
            && has(l, "meeting.member_joined", "bob")
            && has(l, "meeting.member_left", "bob")
            && has(l, "user.offline", "bob")
    })
    .await;
    ann_ws.close().await;
    let all = rx.all();
    let mut ids = HashSet::new();
    for r in all.iter().filter(|r| r.status == 200) {
        assert!(verify(HOOK_SECRET, &r.signature, &r.raw), "the signature verifies: {} {}", r.signature, r.raw);
        assert!(!verify("another-secret-0123456", &r.signature, &r.raw));
        assert!(ids.insert(r.body["id"].as_str().unwrap().to_owned()), "each webhook once (a 2xx was never retried): {}", r.raw);
        let at = r.body["at"].as_str().expect("at");
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }
    let taken = rx.taken();
    let room_opened = taken.iter().find(|v| v["type"] == "room.opened" && v["data"]["room_id"] == room.as_str()).expect("the camera's room");
    assert_eq!((room_opened["data"]["owner"].as_str(), room_opened["data"]["abonent"].as_str()), (Some("ann"), Some("bob")));
    assert!(room_opened["data"].get("offer").is_none(), "no SDP in webhooks");
    let left = taken.iter().find(|v| v["type"] == "meeting.member_left").unwrap();
    assert_eq!(left["data"], json!({"meeting_id": id, "user_id": "bob", "name": "Bob", "reason": "left"}));
    let joined = taken.iter().find(|v| v["type"] == "meeting.member_joined" && v["data"]["user_id"] == "ann").unwrap();
    assert_eq!(joined["data"]["name"], "Ann");
    let on = taken.iter().find(|v| v["type"] == "camera.on").unwrap();
    assert_eq!((on["data"]["user_id"].as_str(), on["data"]["camera"].as_str()), (Some("ann"), Some("on")));
    // Ann's own changes, in the order they happened.
    let anns: Vec<&str> = taken
        .iter()
        .filter(|v| v["data"]["user_id"] == "ann" && v["type"].as_str().is_some_and(|t| t.starts_with("user.") || t.starts_with("camera.")))
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(&anns[..3], ["user.online", "camera.on", "camera.off"], "{anns:?}");
}

