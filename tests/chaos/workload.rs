//! The clients: 24 users with one or two devices each. A device holds at
//! most one WebSocket, opened on a random node and resumed with `since`
//! (its chain of sessions); users turn cameras on and off, show cameras,
//! join and leave meetings and signal, every POST with an `Idempotency-Key`
//! retried with the same key on 5xx and connection errors. Everything they
//! send and receive is recorded (`Record`) for the checker; the clients
//! themselves assert nothing.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::schedule::NODES;
use crate::support::{sdp_version, token};
use crate::{Rng, Shared, note};

pub const USERS: usize = 24;
/// Users below this hold two devices (two chains each).
const TWO_DEVICES: usize = 8;
const MEETINGS: usize = 3;
/// At most this many users leave for good during the faults.
const MAX_DEPARTED: usize = 9;
/// A call that has no definite answer after this long is recorded unresolved.
const CALL_GIVE_UP: Duration = Duration::from_secs(120);

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn user_id(i: usize) -> String {
    format!("u{i:02}")
}

/// The user index of an id the workload made; None for any other.
pub fn user_idx(id: &str) -> Option<usize> {
    id.strip_prefix('u').and_then(|n| n.parse().ok()).filter(|i| *i < USERS)
}

// ---- what the checker reads -------------------------------------------------

/// One HTTP try of a call.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub node: usize,
    pub sent: Instant,
    pub recv: Instant,
    /// None: no answer (connection refused or lost, client timeout).
    pub status: Option<u16>,
    pub code: String,
    pub replayed: bool,
    pub error: Option<String>,
}

impl Attempt {
    /// Whether the call may have run without us knowing: no answer, a 504,
    /// or a 5xx the contract does not have.
    pub fn unknown(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 && s != 503,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Final {
    Ok { replayed: bool, at: Instant },
    /// A 4xx (409 request_in_progress and 429 are retried, never final).
    Rejected { status: u16, code: String },
    /// Given up after 503s only: nothing may have happened.
    Abandoned,
    /// Still no definite answer after `CALL_GIVE_UP`.
    Unresolved,
    Running,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub user: usize,
    pub op: String,
    pub key: String,
    /// The event this call causes, when it causes one we can name
    /// (`ice:<n>`, `offer:<n>`, `answer:<n>`): it must never be seen
    /// unless the call succeeded.
    pub tag: Option<String>,
    pub attempts: Vec<Attempt>,
    pub fin: Final,
}

/// An event an acknowledged call put into a user's log.
#[derive(Debug, Clone)]
pub struct Deliverable {
    pub to: usize,
    pub tag: String,
    /// The first try was sent: the event was committed after this.
    pub sent: Instant,
    /// The success came back: the event was committed before this.
    pub acked: Instant,
    pub call: usize,
}

/// A frame with an id (an event of the user's log) as a chain got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: (u64, u64),
    pub raw: String,
    pub action: String,
    pub tag: Option<String>,
    pub at: Instant,
    pub session: usize,
}

#[derive(Debug, Clone)]
pub struct Resync {
    pub at: Instant,
    pub last_id: String,
    pub session: usize,
}

/// A device's sessions linked by `since`: the frames of the user's log it
/// got, in order, across every session of the chain.
#[derive(Debug, Clone)]
pub struct Chain {
    pub user: usize,
    pub device: usize,
    /// The first session's handshake began.
    pub connecting: Instant,
    /// Its hello came: every event committed after this is owed.
    pub started: Instant,
    /// The device forgot its position (a fresh start later, no `since`).
    pub ended: Option<Instant>,
    pub frames: Vec<Got>,
    pub resyncs: Vec<Resync>,
    pub sessions: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct SessionRec {
    pub user: usize,
    pub device: usize,
    pub chain: usize,
    pub node: usize,
    pub node_id: String,
    pub session_id: String,
    pub connecting: Instant,
    pub opened: Instant,
    pub since: Option<String>,
    pub hello_last: String,
    /// When it ended for the client (we closed it, or it was closed).
    pub closed: Option<Instant>,
    pub close_code: Option<u16>,
    pub deliberate: bool,
    /// Every update_user: (user, version, when).
    pub versions: Vec<(usize, u64, Instant)>,
    pub resyncs: Vec<Instant>,
    /// `reconnect` frames: (their last_id, the chain's position then).
    pub reconnects: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ObsKind {
    /// update_user: proves a version was committed, may arrive late.
    Event,
    /// GET users/{id} or GET users: the state when it was read.
    Get,
    /// A cameraOn/cameraOff answer that ran (not replayed).
    Reply,
}

/// A version of a user someone saw; `version` None is a 404.
#[derive(Debug, Clone)]
pub struct Obs {
    /// What it was: "GET users/{id}", "GET users", "cameraOn answer", "update_user".
    pub what: &'static str,
    pub user: usize,
    pub version: Option<u64>,
    pub sent: Instant,
    pub recv: Instant,
    pub kind: ObsKind,
    pub node: usize,
}

#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub owner: usize,
    pub abonent: usize,
    pub meeting: Option<String>,
}

#[derive(Default)]
pub struct Record {
    pub calls: Vec<Call>,
    pub deliverables: Vec<Deliverable>,
    pub chains: Vec<Chain>,
    pub sessions: Vec<SessionRec>,
    pub obs: Vec<Obs>,
    pub rooms: HashMap<String, RoomInfo>,
    /// Pair rooms some join answer named (a join again names the same ones).
    pub join_rooms: HashSet<String>,
    pub meetings: Vec<String>,
    /// Frames the contract does not have, errors on sockets.
    pub anomalies: Vec<(Instant, String)>,
    /// WebSocket opens that failed, by reason.
    pub ws_failures: HashMap<String, usize>,
}

// ---- the clients --------------------------------------------------------------

struct Live {
    session: usize,
    sink: SplitSink<WsStream, Message>,
    reader: actix_web::rt::task::JoinHandle<()>,
}

#[derive(Default)]
struct Device {
    chain: Option<usize>,
    /// The chain's position: the last event id got, or the first hello's last_id.
    cursor: Option<String>,
    live: Option<Live>,
    /// The device means to be online: a lost socket is resumed.
    want: bool,
}

struct MyRoom {
    owner: bool,
    peer: usize,
    offered: bool,
}

#[derive(Default)]
struct Mine {
    rooms: HashMap<String, MyRoom>,
    meetings: HashSet<String>,
    /// Who has the camera on, as the last update_user said.
    cameras: HashMap<usize, bool>,
}

struct User {
    idx: usize,
    id: String,
    token: String,
    http: awc::Client,
    rng: RefCell<Rng>,
    devices: Vec<RefCell<Device>>,
    mine: RefCell<Mine>,
    keys: Cell<u32>,
    /// Left for good: no session, no call, from then on.
    departed: Cell<bool>,
    departures: Rc<Cell<usize>>,
    last_failure: RefCell<String>,
    rec: Rc<RefCell<Record>>,
    shared: Rc<Shared>,
    /// Unique numbers for candidates and SDP versions, shared by all users.
    serial: Rc<Cell<u32>>,
}

pub struct Workload {
    pub rec: Rc<RefCell<Record>>,
    /// Events still missing on the chains resumed after the faults.
    pub undelivered: RefCell<Vec<crate::checker::Violation>>,
    /// Chains that could not be resumed after the faults: (chain, why).
    pub unresumed: RefCell<Vec<(usize, String)>>,
    /// Users the checker is told hold no session whatever they hold
    /// (`CHAOS_BREAK`, to see I1 and I2 fail).
    pub pretend_gone: RefCell<HashSet<usize>>,
    users: Vec<Rc<User>>,
    stop: Rc<Cell<bool>>,
    tasks: RefCell<Vec<actix_web::rt::task::JoinHandle<()>>>,
}

/// What a frame's tag is: the event named by what the call that caused it
/// carried (a unique candidate foundation or SDP version), or by its room.
pub fn tag_of(action: &str, data: &Value) -> Option<String> {
    let room = || data["room_id"].as_str().unwrap_or("?").to_owned();
    match action {
        "server-action:put_ice" => {
            let c = data["candidate"]["candidate"].as_str()?;
            let n = c.split_whitespace().next()?.strip_prefix("candidate:")?;
            Some(format!("ice:{n}"))
        }
        "server-action:put_offer" => Some(format!("offer:{}", sdp_serial(&data["offer"]["sdp"])?)),
        "server-action:put_answer" => Some(format!("answer:{}", sdp_serial(&data["answer"]["sdp"])?)),
        "server-action:show_cam" => Some(format!("show:{}", room())),
        "server-action:member_joined" => Some(format!("joined:{}", room())),
        "server-action:hangup" => Some(format!("hangup:{}", room())),
        _ => None,
    }
}

/// The session version of an SDP's `o=` line, which the workload makes unique.
fn sdp_serial(sdp: &Value) -> Option<String> {
    let line = sdp.as_str()?.lines().find(|l| l.starts_with("o="))?;
    line.split_whitespace().nth(2).map(str::to_owned)
}

pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Workload {
    /// Creates the meetings, connects every user's first device, and starts the users.
    pub async fn start(mut rng: Rng, shared: Rc<Shared>) -> Workload {
        let rec = Rc::new(RefCell::new(Record::default()));
        let serial = Rc::new(Cell::new(1000));
        let departures = Rc::new(Cell::new(0));
        let users: Vec<Rc<User>> = (0..USERS)
            .map(|i| {
                let devices = if i < TWO_DEVICES { 2 } else { 1 };
                Rc::new(User {
                    idx: i,
                    id: user_id(i),
                    token: token(&user_id(i)),
                    http: awc::Client::builder().timeout(Duration::from_secs(15)).finish(),
                    rng: RefCell::new(rng.fork()),
                    devices: (0..devices).map(|_| RefCell::new(Device::default())).collect(),
                    mine: RefCell::default(),
                    keys: Cell::new(0),
                    departed: Cell::new(false),
                    departures: departures.clone(),
                    last_failure: RefCell::default(),
                    rec: rec.clone(),
                    shared: shared.clone(),
                    serial: serial.clone(),
                })
            })
            .collect();
        for _ in 0..MEETINGS {
            let (call, ok) = users[0].call("meetings", "meetings", json!({"title": "chaos", "max_members": 8}), None).await;
            let id = ok.and_then(|(b, _)| b["meeting"]["meeting_id"].as_str().map(str::to_owned));
            let id = id.unwrap_or_else(|| panic!("a meeting is created before the faults: {:?}", rec.borrow().calls[call]));
            rec.borrow_mut().meetings.push(id);
        }
        for u in &users {
            u.devices[0].borrow_mut().want = true;
            u.open(0).await;
        }
        let w = Workload { rec, undelivered: RefCell::default(), unresumed: RefCell::default(), pretend_gone: RefCell::default(), users, stop: Rc::new(Cell::new(false)), tasks: RefCell::default() };
        for u in &w.users {
            let (u, stop) = (u.clone(), w.stop.clone());
            w.tasks.borrow_mut().push(actix_web::rt::spawn(async move {
                while !stop.get() {
                    let pause = u.rng.borrow_mut().ms(300, 1200);
                    tokio::time::sleep(pause).await;
                    if stop.get() {
                        break;
                    }
                    u.act().await;
                }
            }));
        }
        w
    }

    /// Ends the workload: every user finishes what it is doing (calls are
    /// retried until they have an answer), then every device that keeps a
    /// chain resumes it (with `since`) so that what it missed can be
    /// checked, then each user picks a final state: online on some devices,
    /// or gone.
    pub async fn settle(&self, mut rng: Rng) {
        self.stop.set(true);
        let tasks: Vec<_> = self.tasks.borrow_mut().drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        note("workload stopped: every call has its answer");
        // Resume every kept chain, so the checker sees what each missed.
        for u in &self.users {
            for d in 0..u.devices.len() {
                let needs = {
                    let dev = u.devices[d].borrow();
                    dev.chain.is_some() && dev.live.is_none()
                };
                if needs {
                    let start = Instant::now();
                    let mut opened = u.open(d).await;
                    while !opened && start.elapsed() < Duration::from_secs(15) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        opened = u.open(d).await;
                    }
                    if !opened {
                        let chain = u.devices[d].borrow().chain.unwrap();
                        self.unresumed.borrow_mut().push((chain, format!("every try for 15 s failed, the last with {:?}", u.last_failure.borrow())));
                    }
                }
            }
        }
        note("every device that kept its position resumed it");
        self.wait_delivered().await;
        *self.undelivered.borrow_mut() = crate::checker::missing_on_live_chains(self);
        // Final states: some users leave for good, the rest stay on one or both devices.
        for u in &self.users {
            let gone = rng.chance(40) | u.departed.get();
            for d in 0..u.devices.len() {
                // Drawn whatever the rest: a seed sets the same final states.
                let second = rng.chance(50);
                let keep = !gone && (d == 0 || second);
                let live = u.devices[d].borrow().live.is_some();
                if live && !keep {
                    u.close(d, false).await;
                } else if !live && keep {
                    u.devices[d].borrow_mut().want = true;
                    let start = Instant::now();
                    while !u.open(d).await && start.elapsed() < Duration::from_secs(15) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                u.devices[d].borrow_mut().want = keep;
            }
        }
        note("final states set: quiescence starts");
    }

    /// Waits (a bounded while) until every live chain got every event owed
    /// to it; the checker then reports what is still missing.
    async fn wait_delivered(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if crate::checker::missing_on_live_chains(self).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// For each user, whether a device holds an open session now.
    pub fn live_users(&self) -> Vec<bool> {
        let gone = self.pretend_gone.borrow();
        self.users.iter().map(|u| !gone.contains(&u.idx) && u.devices.iter().any(|d| d.borrow().live.is_some())).collect()
    }

    /// The chains with an open session now, with that session.
    pub fn live_chains(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for u in &self.users {
            for d in &u.devices {
                let d = d.borrow();
                if let (Some(c), Some(l)) = (d.chain, &d.live) {
                    out.push((c, l.session));
                }
            }
        }
        out
    }

    pub fn token(&self, user: usize) -> &str {
        &self.users[user].token
    }
}

impl User {
    fn pick_node(&self) -> usize {
        self.rng.borrow_mut().below(NODES as u64) as usize
    }

    fn port(&self, node: usize) -> u16 {
        self.shared.ports.borrow()[node]
    }

    fn serial(&self) -> u32 {
        let n = self.serial.get();
        self.serial.set(n + 1);
        n
    }

    fn anomaly(&self, what: String) {
        self.rec.borrow_mut().anomalies.push((Instant::now(), format!("{}: {what}", self.id)));
    }

    fn ws_failed(&self, why: &str) {
        *self.last_failure.borrow_mut() = why.to_owned();
        *self.rec.borrow_mut().ws_failures.entry(why.to_owned()).or_default() += 1;
    }

    /// Opens a session for device `d` on a random node: resuming its chain
    /// with `since`, or starting a new chain. False when it did not open.
    async fn open(self: &Rc<Self>, d: usize) -> bool {
        let node = self.pick_node();
        let port = self.port(node);
        let (chain, since) = {
            let dev = self.devices[d].borrow();
            if dev.live.is_some() {
                return true;
            }
            (dev.chain, dev.chain.and(dev.cursor.clone()))
        };
        let url = match &since {
            Some(s) => format!("ws://127.0.0.1:{port}/ws?since={s}"),
            None => format!("ws://127.0.0.1:{port}/ws"),
        };
        let connecting = Instant::now();
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap());
        let ws = match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
                self.ws_failed(&format!("handshake {}", r.status().as_u16()));
                return false;
            }
            Ok(Err(_)) => {
                self.ws_failed("connect error");
                return false;
            }
            Err(_) => {
                self.ws_failed("handshake timeout");
                return false;
            }
        };
        let (sink, mut stream) = ws.split();
        let hello = match tokio::time::timeout(Duration::from_secs(10), first_text(&mut stream)).await {
            Ok(Some(v)) if v["action"] == "server-action:hello" => v,
            Ok(Some(v)) if v["cmd"] == "error" => {
                self.ws_failed(&format!("error frame {}", v["error"]["code"].as_str().unwrap_or("?")));
                return false;
            }
            Ok(Some(v)) => {
                self.anomaly(format!("first frame is not hello: {v}"));
                return false;
            }
            Ok(None) => {
                self.ws_failed("closed before hello");
                return false;
            }
            Err(_) => {
                self.ws_failed("no hello in 10 s");
                return false;
            }
        };
        let opened = Instant::now();
        let hello_last = hello["data"]["last_id"].as_str().unwrap_or("").to_owned();
        let (session, chain) = {
            let mut rec = self.rec.borrow_mut();
            let chain = match chain {
                Some(c) => c,
                None => {
                    rec.chains.push(Chain { user: self.idx, device: d, connecting, started: opened, ended: None, frames: vec![], resyncs: vec![], sessions: vec![] });
                    rec.chains.len() - 1
                }
            };
            rec.sessions.push(SessionRec {
                user: self.idx,
                device: d,
                chain,
                node,
                node_id: hello["data"]["node_id"].as_str().unwrap_or("").to_owned(),
                session_id: hello["data"]["session_id"].as_str().unwrap_or("").to_owned(),
                connecting,
                opened,
                since: since.clone(),
                hello_last: hello_last.clone(),
                closed: None,
                close_code: None,
                deliberate: false,
                versions: vec![],
                resyncs: vec![],
                reconnects: vec![],
            });
            let session = rec.sessions.len() - 1;
            rec.chains[chain].sessions.push(session);
            (session, chain)
        };
        let reader = actix_web::rt::spawn(read(self.clone(), d, session, chain, stream));
        let mut dev = self.devices[d].borrow_mut();
        if dev.chain.is_none() {
            // A new chain starts where hello says the log is; a resume keeps
            // the position it got frames up to (hello's last_id may be ahead
            // of a replay still on its way).
            dev.chain = Some(chain);
            dev.cursor = Some(hello_last);
        }
        dev.live = Some(Live { session, sink, reader });
        true
    }

    /// Closes device `d`'s session; with `forget`, the device also drops
    /// its position (its next session starts a new chain).
    async fn close(&self, d: usize, forget: bool) {
        let live = self.devices[d].borrow_mut().live.take();
        if let Some(mut live) = live {
            {
                let mut rec = self.rec.borrow_mut();
                let s = &mut rec.sessions[live.session];
                s.closed.get_or_insert(Instant::now());
                s.deliberate = true;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), live.sink.send(Message::Close(None))).await;
            // The reader ends on the server's Close; frames before it still count.
            if tokio::time::timeout(Duration::from_secs(5), &mut live.reader).await.is_err() {
                live.reader.abort();
            }
        }
        let mut dev = self.devices[d].borrow_mut();
        dev.want = false;
        if forget {
            if let Some(c) = dev.chain.take() {
                self.rec.borrow_mut().chains[c].ended = Some(Instant::now());
            }
            dev.cursor = None;
        }
    }

    /// POST `/webrtc/<path>` with a new `Idempotency-Key`, retried with the
    /// same key until it has a definite answer (or, after 503s only, given
    /// up now and then). Returns the call's index and, on success, the body
    /// and whether it was replayed.
    async fn call(&self, op: &str, path: &str, body: Value, tag: Option<String>) -> (usize, Option<(Value, bool)>) {
        let n = self.keys.get();
        self.keys.set(n + 1);
        let key = format!("{}-{n}", self.id);
        let idx = {
            let mut rec = self.rec.borrow_mut();
            rec.calls.push(Call { user: self.idx, op: op.to_owned(), key: key.clone(), tag, attempts: vec![], fin: Final::Running });
            rec.calls.len() - 1
        };
        let start = Instant::now();
        loop {
            let node = self.pick_node();
            let url = format!("http://127.0.0.1:{}/webrtc/{path}", self.port(node));
            let sent = Instant::now();
            let res = self.http.post(url).insert_header(("Authorization", format!("Bearer {}", self.token))).insert_header(("Idempotency-Key", key.as_str())).send_json(&body).await;
            let (status, replayed, reply, error) = match res {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
                    match r.body().limit(1 << 20).await {
                        Ok(b) => (Some(status), replayed, serde_json::from_slice(&b).unwrap_or(Value::Null), None),
                        Err(e) => (None, false, Value::Null, Some(format!("{status}, body lost: {e}"))),
                    }
                }
                Err(e) => (None, false, Value::Null, Some(e.to_string())),
            };
            let recv = Instant::now();
            let code = reply["error"]["code"].as_str().unwrap_or("").to_owned();
            let a = Attempt { node, sent, recv, status, code: code.clone(), replayed, error };
            let all_503 = {
                let mut rec = self.rec.borrow_mut();
                let c = &mut rec.calls[idx];
                c.attempts.push(a);
                c.attempts.iter().all(|a| a.status == Some(503) || a.status == Some(429))
            };
            let pause = self.rng.borrow_mut().ms(200, 800);
            match status {
                Some(s) if (200..300).contains(&s) => {
                    self.rec.borrow_mut().calls[idx].fin = Final::Ok { replayed, at: recv };
                    return (idx, Some((reply, replayed)));
                }
                Some(409) if code == "request_in_progress" => tokio::time::sleep(Duration::from_secs(1)).await,
                Some(429) => tokio::time::sleep(Duration::from_secs(1)).await,
                Some(503) => {
                    // Some clients give up on a 503: the call must then have done nothing.
                    if all_503 && self.rng.borrow_mut().chance(25) {
                        self.rec.borrow_mut().calls[idx].fin = Final::Abandoned;
                        return (idx, None);
                    }
                    tokio::time::sleep(pause).await;
                }
                Some(s) if s >= 500 => tokio::time::sleep(pause).await,
                Some(408) => tokio::time::sleep(pause).await,
                Some(s) => {
                    self.rec.borrow_mut().calls[idx].fin = Final::Rejected { status: s, code };
                    return (idx, None);
                }
                None => tokio::time::sleep(pause).await,
            }
            if start.elapsed() > CALL_GIVE_UP {
                self.rec.borrow_mut().calls[idx].fin = Final::Unresolved;
                return (idx, None);
            }
        }
    }

    /// Records that the successful call `call` put `tag` into `to`'s log.
    fn owe(&self, to: usize, tag: String, call: usize) {
        let mut rec = self.rec.borrow_mut();
        let c = &rec.calls[call];
        let Final::Ok { at, .. } = c.fin else { return };
        let d = Deliverable { to, tag, sent: c.attempts[0].sent, acked: at, call };
        rec.deliverables.push(d);
    }

    fn remember_room(&self, room: &str, owner: usize, abonent: usize, meeting: Option<String>) {
        self.rec.borrow_mut().rooms.entry(room.to_owned()).or_insert(RoomInfo { owner, abonent, meeting });
        let peer = if owner == self.idx { abonent } else { owner };
        self.mine.borrow_mut().rooms.entry(room.to_owned()).or_insert(MyRoom { owner: owner == self.idx, peer, offered: false });
    }

    /// One random action; a device that wants to be online and lost its socket comes first.
    async fn act(self: &Rc<Self>) {
        if self.departed.get() {
            return;
        }
        // Now and then a user leaves for good: what its expiry (and a fault
        // in the middle of it) leaves behind is never repaired by a later one.
        let asked = self.shared.depart.get() > 0 && !self.mine.borrow().meetings.is_empty();
        if (asked || self.rng.borrow_mut().below(600) == 0) && self.departures.get() < MAX_DEPARTED {
            if asked {
                self.shared.depart.set(self.shared.depart.get() - 1);
            }
            self.departures.set(self.departures.get() + 1);
            self.departed.set(true);
            for d in 0..self.devices.len() {
                self.close(d, true).await;
            }
            let meetings = self.mine.borrow().meetings.len();
            note(format!("  workload: {} leaves for good ({meetings} meeting(s) joined as far as it knows)", self.id));
            return;
        }
        for d in 0..self.devices.len() {
            let lost = {
                let dev = self.devices[d].borrow();
                dev.want && dev.live.is_none()
            };
            if lost {
                self.open(d).await;
                return;
            }
        }
        let roll = self.rng.borrow_mut().below(100);
        match roll {
            0..=9 => self.toggle().await,
            10..=17 => self.camera().await,
            18..=25 => self.show().await,
            26..=51 => self.ice().await,
            52..=58 => self.offer().await,
            59..=64 => self.answer().await,
            65..=67 => self.hangup().await,
            68..=74 => self.join().await,
            75..=78 => self.leave().await,
            79..=83 => self.look().await,
            _ => {}
        }
    }

    /// A device goes (keeping its position, or forgetting it) or comes (back).
    async fn toggle(self: &Rc<Self>) {
        let (d, forget) = {
            let mut r = self.rng.borrow_mut();
            (r.below(self.devices.len() as u64) as usize, r.chance(25))
        };
        if self.devices[d].borrow().live.is_some() {
            self.close(d, forget).await;
        } else {
            self.devices[d].borrow_mut().want = true;
            self.open(d).await;
        }
    }

    async fn camera(&self) {
        let (on, name) = {
            let mut r = self.rng.borrow_mut();
            (r.chance(60), r.chance(30))
        };
        let (op, body) = if on {
            let meta = if name { json!({"name": format!("U{} {}", self.idx, self.serial())}) } else { json!({"name": format!("U{}", self.idx)}) };
            ("cameraOn", json!({"meta": meta}))
        } else {
            ("cameraOff", json!({}))
        };
        let (call, ok) = self.call(op, op, body, None).await;
        if let Some((b, false)) = ok {
            let mut rec = self.rec.borrow_mut();
            let a = rec.calls[call].attempts.last().unwrap().clone();
            if let Some(v) = b["user"]["version"].as_u64() {
                let what = if op == "cameraOn" { "cameraOn answer" } else { "cameraOff answer" };
                rec.obs.push(Obs { what, user: self.idx, version: Some(v), sent: a.sent, recv: a.recv, kind: ObsKind::Reply, node: a.node });
            }
        }
    }

    async fn show(&self) {
        // Mostly someone whose camera is on, as far as this user heard.
        let mut on: Vec<usize> = self.mine.borrow().cameras.iter().filter(|(u, on)| **on && **u != self.idx).map(|(u, _)| *u).collect();
        on.sort();
        let any = self.rng.borrow_mut().chance(20);
        let other = if on.is_empty() || any {
            let o = self.rng.borrow_mut().below(USERS as u64 - 1) as usize;
            if o >= self.idx { o + 1 } else { o }
        } else {
            on[self.rng.borrow_mut().below(on.len() as u64) as usize]
        };
        let (call, ok) = self.call("cameraShow", "cameraShow", json!({"user_id": user_id(other)}), None).await;
        let Some((b, _)) = ok else { return };
        let Some(room) = b["connection"]["room_id"].as_str() else { return };
        self.remember_room(room, other, self.idx, None);
        let status = self.rec.borrow().calls[call].attempts.last().unwrap().status;
        if status == Some(201) {
            self.owe(other, format!("show:{room}"), call);
        }
    }

    /// A random room of mine matching `f`: (room, I own it, peer).
    fn room(&self, f: impl Fn(&MyRoom) -> bool) -> Option<(String, bool, usize)> {
        let mine = self.mine.borrow();
        let mut rooms: Vec<_> = mine.rooms.iter().filter(|(_, r)| f(r)).map(|(id, r)| (id.clone(), r.owner, r.peer)).collect();
        rooms.sort();
        if rooms.is_empty() {
            return None;
        }
        let i = self.rng.borrow_mut().below(rooms.len() as u64) as usize;
        Some(rooms.swap_remove(i))
    }

    /// A 4xx on a room: it is closed or gone; forget it.
    fn drop_room_if_closed(&self, call: usize, room: &str) {
        let rec = self.rec.borrow();
        if let Final::Rejected { code, .. } = &rec.calls[call].fin
            && matches!(code.as_str(), "room_closed" | "room_not_found" | "forbidden")
        {
            self.mine.borrow_mut().rooms.remove(room);
        }
    }

    async fn ice(&self) {
        let Some((room, _, peer)) = self.room(|_| true) else { return self.show().await };
        let n = self.serial();
        let cand = json!({"candidate": format!("candidate:{n} 1 udp 2113937151 192.0.2.1 {} typ host", 1024 + n % 60000), "sdpMid": "0", "sdpMLineIndex": 0});
        let tag = format!("ice:{n}");
        // To the other side, whichever side this is (no `dest`).
        let (call, ok) = self.call("ice", "ice", json!({"room_id": room, "candidate": cand}), Some(tag.clone())).await;
        if ok.is_some() {
            self.owe(peer, tag, call);
        }
        self.drop_room_if_closed(call, &room);
    }

    async fn offer(&self) {
        let Some((room, _, peer)) = self.room(|r| r.owner) else { return };
        let n = self.serial();
        let tag = format!("offer:{n}");
        let (call, ok) = self.call("offer", "offer", json!({"room_id": room, "offer": sdp_version("offer", n)}), Some(tag.clone())).await;
        if ok.is_some() {
            self.owe(peer, tag, call);
        }
        self.drop_room_if_closed(call, &room);
    }

    async fn answer(&self) {
        let Some((room, _, peer)) = self.room(|r| !r.owner && r.offered) else { return };
        let n = self.serial();
        let tag = format!("answer:{n}");
        let (call, ok) = self.call("answer", "answer", json!({"room_id": room, "answer": sdp_version("answer", n)}), Some(tag.clone())).await;
        if ok.is_some() {
            self.owe(peer, tag, call);
        }
        self.drop_room_if_closed(call, &room);
    }

    async fn hangup(&self) {
        let Some((room, _, peer)) = self.room(|_| true) else { return };
        let (call, ok) = self.call("hangup", "hangup", json!({"room_id": room, "reason": "bye"}), None).await;
        if ok.is_some() {
            self.owe(peer, format!("hangup:{room}"), call);
            self.mine.borrow_mut().rooms.remove(&room);
        }
        self.drop_room_if_closed(call, &room);
    }

    async fn join(&self) {
        let meeting = {
            let rec = self.rec.borrow();
            let i = self.rng.borrow_mut().below(rec.meetings.len() as u64) as usize;
            rec.meetings[i].clone()
        };
        let (call, ok) = self.call("join", &format!("meetings/{meeting}/join"), json!({"name": self.id}), None).await;
        let Some((b, _)) = ok else { return };
        self.mine.borrow_mut().meetings.insert(meeting.clone());
        for c in b["connections"].as_array().cloned().unwrap_or_default() {
            let (Some(room), Some(owner)) = (c["room_id"].as_str(), c["owner"].as_str().and_then(user_idx)) else { continue };
            // A pair first named by a join answer was made by that join (a
            // join again answers the pairs the first one made). Not
            // `rooms`: the owner's member_joined may be recorded first.
            let new = self.rec.borrow_mut().join_rooms.insert(room.to_owned());
            self.remember_room(room, owner, self.idx, Some(meeting.clone()));
            if new {
                self.owe(owner, format!("joined:{room}"), call);
            }
        }
    }

    async fn leave(&self) {
        let meeting = {
            let mine = self.mine.borrow();
            let mut ms: Vec<_> = mine.meetings.iter().cloned().collect();
            ms.sort();
            if ms.is_empty() {
                return;
            }
            let i = self.rng.borrow_mut().below(ms.len() as u64) as usize;
            ms.swap_remove(i)
        };
        // Whatever the answer (403: the expiry already took the user out), forget it.
        self.call("leave", &format!("meetings/{meeting}/leave"), json!({}), None).await;
        self.mine.borrow_mut().meetings.remove(&meeting);
        let rec = self.rec.borrow();
        self.mine.borrow_mut().rooms.retain(|id, _| rec.rooms.get(id).is_none_or(|r| r.meeting.as_deref() != Some(meeting.as_str())));
    }

    /// GET users (the directory) or one user: versions seen from outside.
    async fn look(&self) {
        let node = self.pick_node();
        let one = self.rng.borrow_mut().chance(50);
        let other = self.rng.borrow_mut().below(USERS as u64) as usize;
        let path = if one { format!("/webrtc/users/{}", user_id(other)) } else { "/webrtc/users?limit=200".to_owned() };
        let sent = Instant::now();
        let Ok(mut r) = self.http.get(format!("http://127.0.0.1:{}{path}", self.port(node))).insert_header(("Authorization", format!("Bearer {}", self.token))).send().await else { return };
        let status = r.status().as_u16();
        let Ok(b) = r.body().limit(1 << 20).await else { return };
        let recv = Instant::now();
        let body: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        let mut rec = self.rec.borrow_mut();
        match (one, status) {
            (true, 200) => {
                if let Some(v) = body["version"].as_u64() {
                    rec.obs.push(Obs { what: "GET users/{id}", user: other, version: Some(v), sent, recv, kind: ObsKind::Get, node });
                }
            }
            (true, 404) => rec.obs.push(Obs { what: "GET users/{id}", user: other, version: None, sent, recv, kind: ObsKind::Get, node }),
            (false, 200) => {
                for u in body["users"].as_array().cloned().unwrap_or_default() {
                    if let (Some(who), Some(v)) = (u["user_id"].as_str().and_then(user_idx), u["version"].as_u64()) {
                        rec.obs.push(Obs { what: "GET users", user: who, version: Some(v), sent, recv, kind: ObsKind::Get, node });
                    }
                }
            }
            (_, s) if s >= 500 && s != 503 => rec.anomalies.push((recv, format!("GET {path} answered {s}: {body}"))),
            _ => {}
        }
    }

    /// Handles one text frame of `session` (device `d`, chain `chain`).
    fn frame(&self, d: usize, session: usize, chain: usize, text: &str) {
        let now = Instant::now();
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return self.anomaly(format!("a frame that is not JSON: {text:.200}"));
        };
        let action = v["action"].as_str().unwrap_or("");
        let data = &v["data"];
        let ours = self.devices[d].borrow().chain == Some(chain);
        if action == "server-action:update_user" {
            let u = &data["user"];
            match (u["user_id"].as_str().map(user_idx), u["version"].as_u64()) {
                (Some(Some(who)), Some(ver)) => {
                    self.mine.borrow_mut().cameras.insert(who, u["camera"] == "on");
                    let mut rec = self.rec.borrow_mut();
                    rec.sessions[session].versions.push((who, ver, now));
                    let node = rec.sessions[session].node;
                    rec.obs.push(Obs { what: "update_user", user: who, version: Some(ver), sent: now, recv: now, kind: ObsKind::Event, node });
                }
                (Some(None), _) => {}
                _ => self.anomaly(format!("update_user without user_id/version: {v}")),
            }
            return;
        }
        if let Some(id) = v["id"].as_str() {
            let Some(parsed) = parse_id(id) else {
                return self.anomaly(format!("an event id that is not <ms>-<seq>: {v}"));
            };
            let tag = tag_of(action, data);
            self.rec.borrow_mut().chains[chain].frames.push(Got { id: parsed, raw: id.to_owned(), action: action.to_owned(), tag, at: now, session });
            if ours {
                self.devices[d].borrow_mut().cursor = Some(id.to_owned());
            }
        }
        let room = data["room_id"].as_str().unwrap_or("").to_owned();
        let peer = data["user_id"].as_str().and_then(user_idx);
        match action {
            "server-action:resync" => {
                let last = data["last_id"].as_str().unwrap_or("").to_owned();
                let mut rec = self.rec.borrow_mut();
                rec.chains[chain].resyncs.push(Resync { at: now, last_id: last.clone(), session });
                rec.sessions[session].resyncs.push(now);
                drop(rec);
                if ours {
                    self.devices[d].borrow_mut().cursor = Some(last);
                }
            }
            "server-action:reconnect" => {
                let at = self.devices[d].borrow().cursor.clone().unwrap_or_default();
                self.rec.borrow_mut().sessions[session].reconnects.push((data["last_id"].as_str().unwrap_or("").to_owned(), at));
            }
            "server-action:show_cam" => {
                if let Some(p) = peer {
                    self.remember_room(&room, self.idx, p, None);
                }
            }
            "server-action:member_joined" => {
                if let Some(p) = peer {
                    self.remember_room(&room, self.idx, p, data["meeting_id"].as_str().map(str::to_owned));
                }
            }
            "server-action:put_offer" => {
                if let Some(p) = peer {
                    self.remember_room(&room, p, self.idx, None);
                }
                if let Some(r) = self.mine.borrow_mut().rooms.get_mut(&room) {
                    r.offered = true;
                }
            }
            "server-action:hangup" => {
                self.mine.borrow_mut().rooms.remove(&room);
            }
            "server-action:member_left" => {
                let (meeting, who) = (data["meeting_id"].as_str().unwrap_or(""), data["user_id"].as_str().and_then(user_idx));
                let rec = self.rec.borrow();
                self.mine.borrow_mut().rooms.retain(|id, r| !(Some(r.peer) == who && rec.rooms.get(id).is_some_and(|i| i.meeting.as_deref() == Some(meeting))));
            }
            "server-action:put_ice" | "server-action:put_answer" | "server-action:token_expiring" | "server-action:ice_servers" => {}
            _ if v["cmd"] == "error" => self.anomaly(format!("an error frame on an open session: {v}")),
            _ => self.anomaly(format!("a frame the contract does not have: {v}")),
        }
    }
}

/// The first text frame, as JSON; None when the socket ends first.
async fn first_text(stream: &mut SplitStream<WsStream>) -> Option<Value> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads a session until it ends; then the device is without a socket (and
/// resumes it if it wants to be online).
async fn read(user: Rc<User>, d: usize, session: usize, chain: usize, mut stream: SplitStream<WsStream>) {
    let code = loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => user.frame(d, session, chain, &t),
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    {
        let mut rec = user.rec.borrow_mut();
        let s = &mut rec.sessions[session];
        s.closed.get_or_insert(Instant::now());
        s.close_code = code;
    }
    let mut dev = user.devices[d].borrow_mut();
    if dev.live.as_ref().is_some_and(|l| l.session == session) {
        dev.live = None;
    }
}
