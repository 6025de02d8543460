//! The operations of the contract. REST handlers and WebSocket commands both
//! call `Service::execute`, so the two can never disagree. Each operation is
//! one atomic store step followed by the events it causes.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Span;
use utoipa::ToSchema;

use crate::broker::{Broker, Replay};
use crate::config::Settings;
use crate::domain::event::{self, HangupData, PutAnswerData, PutIceData, PutOfferData, ShowCamData};
use crate::domain::{Connection, Event, EventId, IceCandidate, IdempotencyKey, Role, RoomId, SessionDescription, SessionId, UserId, UserState};
use crate::error::{Error, Result};
use crate::store::{Change, Show, Store, UserPage, UserQuery};

/// Largest `meta` accepted on cameraOn, serialized.
pub const MAX_META_BYTES: usize = 1024;
/// Longest hangup reason accepted.
pub const MAX_REASON_LEN: usize = 64;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CameraOnBody {
    /// Free-form JSON object shown to others (at most 1 KiB).
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>, example = json!({"name": "Ann"}))]
    pub meta: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CameraOffBody {}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ShowBody {
    /// The owner of the camera to see.
    #[schema(example = "42")]
    pub user_id: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OfferBody {
    pub room_id: String,
    pub offer: SessionDescription,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AnswerBody {
    pub room_id: String,
    pub answer: SessionDescription,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct IceBody {
    pub room_id: String,
    pub candidate: IceCandidate,
    /// Who the candidate is for; when given it must be the other side.
    #[serde(default)]
    pub dest: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HangupBody {
    pub room_id: String,
    /// Defaults to `hangup`; 1 to 64 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub reason: Option<String>,
}

/// Every call that changes something, as REST bodies and WebSocket commands share them.
#[derive(Debug, Clone)]
pub enum Command {
    CameraOn(CameraOnBody),
    CameraOff,
    CameraShow(ShowBody),
    Offer(OfferBody),
    Answer(AnswerBody),
    Ice(IceBody),
    Hangup(HangupBody),
}

impl Command {
    /// Builds a command from its name and JSON fields (the WebSocket form).
    pub fn parse(name: &str, fields: serde_json::Value) -> Result<Command> {
        fn body<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
            serde_json::from_value(v).map_err(|e| Error::BadRequest(e.to_string()))
        }
        Ok(match name {
            "cameraOn" => Command::CameraOn(body(fields)?),
            "cameraOff" => Command::CameraOff,
            "cameraShow" => Command::CameraShow(body(fields)?),
            "offer" => Command::Offer(body(fields)?),
            "answer" => Command::Answer(body(fields)?),
            "ice" => Command::Ice(body(fields)?),
            "hangup" => Command::Hangup(body(fields)?),
            other => return Err(Error::BadRequest(format!("unknown cmd {other:?}"))),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::CameraOn(_) => "cameraOn",
            Command::CameraOff => "cameraOff",
            Command::CameraShow(_) => "cameraShow",
            Command::Offer(_) => "offer",
            Command::Answer(_) => "answer",
            Command::Ice(_) => "ice",
            Command::Hangup(_) => "hangup",
        }
    }

    pub fn room_id(&self) -> Option<&str> {
        match self {
            Command::Offer(b) => Some(&b.room_id),
            Command::Answer(b) => Some(&b.room_id),
            Command::Ice(b) => Some(&b.room_id),
            Command::Hangup(b) => Some(&b.room_id),
            _ => None,
        }
    }
}

/// One STUN or TURN server, as `RTCIceServer` takes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    /// How long TURN credentials stay valid.
    pub ttl_s: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserReply {
    pub user: UserState,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShowReply {
    pub connection: Connection,
    pub ice_servers: Vec<IceServer>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionReply {
    pub connection: Connection,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IceReply {
    pub room_id: String,
}

/// The result of a command; `status` is its REST status.
#[derive(Debug, Clone)]
pub enum Reply {
    User(UserReply),
    Show { reply: ShowReply, created: bool },
    Offer(ConnectionReply),
    Answer(ConnectionReply),
    Ice(IceReply),
    Hangup(ConnectionReply),
    /// The answer given before to the same `Idempotency-Key`.
    Replayed { status: u16, body: serde_json::Value },
}

impl Reply {
    pub fn status(&self) -> u16 {
        match self {
            Reply::Replayed { status, .. } => *status,
            Reply::User(_) | Reply::Hangup(_) => 200,
            Reply::Show { created: true, .. } => 201,
            Reply::Show { created: false, .. } => 200,
            Reply::Offer(_) | Reply::Answer(_) | Reply::Ice(_) => 202,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let v = match self {
            Reply::User(r) => serde_json::to_value(r),
            Reply::Show { reply, .. } => serde_json::to_value(reply),
            Reply::Offer(r) | Reply::Answer(r) | Reply::Hangup(r) => serde_json::to_value(r),
            Reply::Ice(r) => serde_json::to_value(r),
            Reply::Replayed { body, .. } => return body.clone(),
        };
        v.expect("replies always serialize")
    }
}

/// How long the answer to an `Idempotency-Key` is kept.
pub const IDEMPOTENCY_KEEP: Duration = Duration::from_secs(600);
/// How long a claimed key waits for its answer: long enough for any command,
/// short enough that a node dying mid-call does not block retries for long.
const IDEMPOTENCY_CLAIM: Duration = Duration::from_secs(10);
/// How long a duplicate waits for the first call to finish before it gets 503.
const IDEMPOTENCY_WAIT: Duration = Duration::from_secs(5);

/// What is kept under an `Idempotency-Key`: the request's fingerprint, and its
/// answer once there is one.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<serde_json::Value>,
}

/// What makes two requests "the same" under one key: the command and every field.
fn fingerprint(cmd: &Command) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(format!("{cmd:?}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a new session needs before it goes live.
pub struct Opened {
    pub last_id: EventId,
    /// Present when the session asked with `since`.
    pub replay: Option<Replay>,
}

#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    settings: Arc<Settings>,
    node_id: Arc<str>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, settings: Arc<Settings>, node_id: Arc<str>) -> Self {
        Self { store, broker, settings, node_id }
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Runs `cmd` once per `key`: a repeat within `IDEMPOTENCY_KEEP` gets the first
    /// answer again and causes nothing. Errors are not kept (they change nothing),
    /// so a repeat after an error runs again.
    pub async fn execute_once(&self, caller: &UserId, key: Option<&IdempotencyKey>, cmd: Command) -> Result<Reply> {
        let Some(key) = key else { return self.execute(caller, cmd).await };
        let fp = fingerprint(&cmd);
        let claim = serde_json::to_string(&Record { fp: fp.clone(), status: None, body: None }).expect("records serialize");
        let deadline = Instant::now() + IDEMPOTENCY_WAIT;
        while let Some(raw) = self.store.record_once(caller, key.as_str(), &claim, IDEMPOTENCY_CLAIM).await? {
            let rec: Record = serde_json::from_str(&raw).map_err(|e| Error::Unexpected(anyhow::anyhow!("idempotency record: {e}")))?;
            if rec.fp != fp {
                return Err(Error::BadRequest("this Idempotency-Key was already used for a different request".into()));
            }
            if let (Some(status), Some(body)) = (rec.status, rec.body) {
                tracing::debug!(key = key.as_str(), "idempotent replay");
                return Ok(Reply::Replayed { status, body });
            }
            if Instant::now() >= deadline {
                return Err(Error::InProgress);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match self.execute(caller, cmd).await {
            Ok(reply) => {
                let rec = Record { fp, status: Some(reply.status()), body: Some(reply.body()) };
                let rec = serde_json::to_string(&rec).expect("records serialize");
                // The effects happened: answer even if the record cannot be kept.
                if let Err(e) = self.store.record(caller, key.as_str(), &rec, IDEMPOTENCY_KEEP).await {
                    tracing::warn!(error = %e, "could not keep an idempotent answer");
                }
                Ok(reply)
            }
            Err(e) => {
                if let Err(e) = self.store.forget_record(caller, key.as_str()).await {
                    tracing::warn!(error = %e, "could not release an Idempotency-Key");
                }
                Err(e)
            }
        }
    }

    pub async fn execute(&self, caller: &UserId, cmd: Command) -> Result<Reply> {
        if let Some(room) = cmd.room_id() {
            Span::current().record("room_id", room);
        }
        let accepted = event::now_us();
        match cmd {
            Command::CameraOn(b) => self.camera_on(caller, b, accepted).await,
            Command::CameraOff => self.camera_off(caller, accepted).await,
            Command::CameraShow(b) => self.show(caller, b, accepted).await,
            Command::Offer(b) => self.offer(caller, b, accepted).await,
            Command::Answer(b) => self.answer(caller, b, accepted).await,
            Command::Ice(b) => self.ice(caller, b, accepted).await,
            Command::Hangup(b) => self.hangup(caller, b, accepted).await,
        }
    }

    async fn camera_on(&self, caller: &UserId, b: CameraOnBody, accepted: i64) -> Result<Reply> {
        if let Some(meta) = &b.meta {
            if !meta.is_object() {
                return Err(Error::BadRequest("meta must be a JSON object".into()));
            }
            if meta.to_string().len() > MAX_META_BYTES {
                return Err(Error::PayloadTooLarge(format!("meta is over {MAX_META_BYTES} bytes")));
            }
        }
        let now = Utc::now();
        let user = self.store.camera_on(caller, b.meta, now, now + self.grace()).await?;
        self.broker.broadcast(&Event::user(user.clone()), accepted).await?;
        Ok(Reply::User(UserReply { user }))
    }

    async fn camera_off(&self, caller: &UserId, accepted: i64) -> Result<Reply> {
        let change = self.store.camera_off(caller, Utc::now()).await?;
        let user = match &change.user {
            Some(u) => u.clone(),
            None => self.store.user(caller).await?.unwrap_or_else(|| UserState::new(caller.clone(), Utc::now())),
        };
        self.emit(change, Some(caller), accepted).await?;
        Ok(Reply::User(UserReply { user }))
    }

    async fn show(&self, caller: &UserId, b: ShowBody, accepted: i64) -> Result<Reply> {
        let owner = UserId::parse(&b.user_id)?;
        if owner == *caller {
            return Err(Error::CannotShowSelf);
        }
        let limits = &self.settings.limits;
        let (connection, created) = match self.store.show(&owner, caller, limits.max_viewers, Utc::now()).await? {
            Show::Created(c) => (c, true),
            Show::Existing(c) => (c, false),
        };
        Span::current().record("room_id", connection.room_id.as_str());
        if created {
            let ev = Event::ShowCam(ShowCamData { room_id: connection.room_id.clone(), user_id: caller.clone() });
            self.broker.publish(&owner, &ev, accepted).await?;
        }
        let ice_servers = self.ice_servers(caller).ice_servers;
        Ok(Reply::Show { reply: ShowReply { connection, ice_servers }, created })
    }

    async fn offer(&self, caller: &UserId, b: OfferBody, accepted: i64) -> Result<Reply> {
        let room = RoomId::parse(&b.room_id)?;
        let now = Utc::now();
        let (conn, to) = self
            .store
            .update_room(&room, &|c| c.offer(caller, b.offer.clone(), now).map(|_| Role::Abonent))
            .await?;
        let ev = Event::PutOffer(PutOfferData { room_id: room, user_id: caller.clone(), offer: b.offer });
        self.broker.publish(conn.user(to), &ev, accepted).await?;
        Ok(Reply::Offer(ConnectionReply { connection: conn }))
    }

    async fn answer(&self, caller: &UserId, b: AnswerBody, accepted: i64) -> Result<Reply> {
        let room = RoomId::parse(&b.room_id)?;
        let now = Utc::now();
        let (conn, to) = self
            .store
            .update_room(&room, &|c| c.answer(caller, b.answer.clone(), now).map(|_| Role::Owner))
            .await?;
        let ev = Event::PutAnswer(PutAnswerData { room_id: room, user_id: caller.clone(), answer: b.answer });
        self.broker.publish(conn.user(to), &ev, accepted).await?;
        Ok(Reply::Answer(ConnectionReply { connection: conn }))
    }

    async fn ice(&self, caller: &UserId, b: IceBody, accepted: i64) -> Result<Reply> {
        let room = RoomId::parse(&b.room_id)?;
        let now = Utc::now();
        let (conn, to) = self.store.update_room(&room, &|c| c.ice(caller, b.dest, &b.candidate, now)).await?;
        let ev = Event::PutIce(PutIceData { room_id: room.clone(), user_id: caller.clone(), candidate: b.candidate });
        self.broker.publish(conn.user(to), &ev, accepted).await?;
        Ok(Reply::Ice(IceReply { room_id: room.to_string() }))
    }

    async fn hangup(&self, caller: &UserId, b: HangupBody, accepted: i64) -> Result<Reply> {
        let reason = b.reason.unwrap_or_else(|| "hangup".into());
        if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
            return Err(Error::BadRequest(format!("reason is 1 to {MAX_REASON_LEN} characters")));
        }
        let room = RoomId::parse(&b.room_id)?;
        let now = Utc::now();
        let (conn, to) = self.store.update_room(&room, &|c| c.hangup(caller, &reason, now)).await?;
        let ev = Event::Hangup(HangupData { room_id: room, user_id: caller.clone(), reason });
        self.broker.publish(conn.user(to), &ev, accepted).await?;
        Ok(Reply::Hangup(ConnectionReply { connection: conn }))
    }

    /// Tells everyone about a user change and each room's other side about its end;
    /// with no `actor` (the server closed the rooms) both sides hear it.
    async fn emit(&self, change: Change, actor: Option<&UserId>, accepted: i64) -> Result<()> {
        if let Some(u) = change.user {
            self.broker.broadcast(&Event::user(u), accepted).await?;
        }
        for c in change.closed {
            let reason = c.reason.clone().unwrap_or_default();
            match actor.and_then(|a| c.role_of(a).map(|r| (a, r))) {
                Some((actor, role)) => {
                    let ev = Event::hangup(&c, actor, &reason);
                    self.broker.publish(c.user(role.other()), &ev, accepted).await?;
                }
                // Closed by the server (timeout): both sides hear it, each naming the other.
                None => {
                    for role in [Role::Owner, Role::Abonent] {
                        let ev = Event::hangup(&c, c.user(role.other()), &reason);
                        self.broker.publish(c.user(role), &ev, accepted).await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn user(&self, id: &str) -> Result<UserState> {
        let id = UserId::parse(id).map_err(|_| Error::UserNotFound)?;
        self.store.user(&id).await?.ok_or(Error::UserNotFound)
    }

    pub async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        self.store.users(q).await
    }

    pub async fn room(&self, caller: &UserId, id: &str) -> Result<Connection> {
        Span::current().record("room_id", id);
        let id = RoomId::parse(id)?;
        let c = self.store.room(&id).await?.ok_or(Error::RoomNotFound)?;
        if c.role_of(caller).is_none() {
            return Err(Error::Forbidden("you are not a participant of this room".into()));
        }
        Ok(c)
    }

    /// STUN as configured, TURN with TURN REST API credentials for `caller`.
    pub fn ice_servers(&self, caller: &UserId) -> IceServers {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        use secrecy::ExposeSecret;
        let ice = &self.settings.ice;
        let mut servers = Vec::new();
        if !ice.stun_urls.is_empty() {
            servers.push(IceServer { urls: ice.stun_urls.clone(), username: None, credential: None });
        }
        if let (false, Some(secret)) = (ice.turn_urls.is_empty(), &ice.turn_secret) {
            let expiry = Utc::now().timestamp() as u64 + ice.turn_ttl_s;
            let username = format!("{expiry}:{caller}");
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key");
            mac.update(username.as_bytes());
            let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            servers.push(IceServer { urls: ice.turn_urls.clone(), username: Some(username), credential: Some(credential) });
        }
        IceServers { ice_servers: servers, ttl_s: ice.turn_ttl_s }
    }

    /// A session opens: record it, then read what it missed. The caller must already
    /// receive live events, so that nothing falls between replay and live.
    pub async fn open_session(&self, user: &UserId, session: &SessionId, since: Option<EventId>) -> Result<Opened> {
        if let Some(u) = self.store.session_opened(user, session, &self.node_id, Utc::now()).await? {
            self.broker.broadcast(&Event::user(u), event::now_us()).await?;
        }
        let replay = match since {
            Some(since) => Some(self.broker.replay(user, since).await?),
            None => None,
        };
        let last_id = self.broker.last_id(user).await?;
        Ok(Opened { last_id, replay })
    }

    fn grace(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.settings.presence.grace_s as i64)
    }

    /// A session ends; if it was the user's last, they go offline and their grace period starts.
    pub async fn close_session(&self, user: &UserId, session: &SessionId) -> Result<()> {
        self.end_session(user, session, Utc::now() + self.grace()).await
    }

    /// Forgets a session; if it was the user's last, everyone hears they went offline.
    async fn end_session(&self, user: &UserId, session: &SessionId, expire_at: chrono::DateTime<Utc>) -> Result<()> {
        if let Some(u) = self.store.session_closed(user, session, Utc::now(), expire_at).await? {
            self.broker.broadcast(&Event::user(u), event::now_us()).await?;
        }
        Ok(())
    }

    /// Expires every user whose grace period has ended: with no session back,
    /// their camera goes off with every effect of cameraOff. Returns how many.
    pub async fn expire_due(&self) -> Result<usize> {
        let due = self.store.claim_expired(Utc::now()).await?;
        for user in &due {
            let change = self.store.expire(user, Utc::now()).await?;
            self.emit(change, Some(user), event::now_us()).await?;
        }
        Ok(due.len())
    }

    /// Closes the sessions of nodes whose lease ran out; their users' grace
    /// periods count from when the lease ended. A node that finds itself
    /// declared dead (it stalled) re-registers instead.
    pub async fn reap_dead_nodes(&self, local: impl Fn() -> Vec<(UserId, SessionId)>) -> Result<()> {
        for (node, lease_end) in self.store.claim_dead_nodes(Utc::now()).await? {
            if *node == *self.node_id {
                self.reconcile(&local()).await?;
                continue;
            }
            let sessions = self.store.take_node_sessions(&node).await?;
            tracing::warn!(dead_node = %node, sessions = sessions.len(), "node lease ended; closing its sessions");
            for (user, session) in sessions {
                self.end_session(&user, &session, lease_end + self.grace()).await?;
            }
        }
        Ok(())
    }

    /// Makes the store's list of this node's sessions equal to `local`: after
    /// Redis comes back (maybe empty) or after ends it could not record.
    pub async fn reconcile(&self, local: &[(UserId, SessionId)]) -> Result<()> {
        let known = self.store.take_node_sessions(&self.node_id).await?;
        let stale: Vec<_> = known.iter().filter(|k| !local.contains(k)).collect();
        for (user, session) in &stale {
            self.end_session(user, session, Utc::now() + self.grace()).await?;
        }
        for (user, session) in local {
            if let Some(u) = self.store.session_opened(user, session, &self.node_id, Utc::now()).await? {
                self.broker.broadcast(&Event::user(u), event::now_us()).await?;
            }
        }
        tracing::info!(sessions = local.len(), stale = stale.len(), "sessions re-registered");
        Ok(())
    }

    /// Closes rooms stuck negotiating; both sides hear `hangup` with reason `timeout`.
    pub async fn close_idle(&self) -> Result<usize> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::seconds(self.settings.connections.idle_ttl_s as i64);
        let closed = self.store.close_idle(cutoff, now).await?;
        let n = closed.len();
        self.emit(Change { user: None, closed }, None, event::now_us()).await?;
        Ok(n)
    }

    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }
}
