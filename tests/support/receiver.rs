//! A webhook receiver a test starts: a real HTTP server on 127.0.0.1 that
//! records every POST (its body and `Camsig-Signature`), answers as the test
//! says (`Mode`), and can go down (its port closed) and come back on the
//! same port. `verify` checks a signature independently of camsig's code.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
