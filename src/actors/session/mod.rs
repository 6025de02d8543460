//! WebSocket sessions: the actor that holds one socket. It opens the session
//! (hello, replay), keeps the heartbeat, writes events through its outbox, and
//! runs what frames ask for. The parts that need no actor live beside it:
//! `envelope` (what a frame asks), `fragments` (messages in pieces), `expiry`
//! (token and TURN lifetimes).
//!
//! Only this module and `flow` (the handshake) know `actix-web-actors`
//! (deprecated upstream in favour of `actix-ws`), so a later move touches two.

mod envelope;
mod expiry;
mod fragments;

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, Span};

use super::flow::{self, Outbox, Pulled};
use super::frame_limit::{FrameLimit, Oversize};
use super::user::{Attach, Detach, ask};
use super::Ctx;
use super::push::Push;
use crate::auth::Caller;
use crate::broker::Replay;
use crate::config::WsSettings;
use crate::domain::event::{Hello, ReconnectData, ResyncData, TokenExpiringData, now_us};
use crate::domain::names::{CommandKind, EventKind};
use crate::domain::{Event, EventId, Frame, SessionId, UserId};
use std::collections::HashSet;
use crate::error::Error;
use crate::protocol::bodies::{RefreshBody, RefreshReply, WatchBody, WatchReply};
use crate::service::presence::Opened;
use envelope::Request;
use fragments::{Broken, Fragments, Whole};
/// Reads of the log a catch-up tries before the session closes (1013).
const CATCH_UP_TRIES: u32 = 4;
/// The close code for a session whose token expired (the contract's Sessions).
const TOKEN_EXPIRED: ws::CloseCode = ws::CloseCode::Other(4001);
/// The close code for a session that fell `ws.max_queued` frames or `ws.max_queued_bytes` behind.
const TOO_SLOW: ws::CloseCode = ws::CloseCode::Other(4008);
/// The close code for a session an operator disconnected (`admin/users/{id}/disconnect`).
const KICKED: ws::CloseCode = ws::CloseCode::Other(4003);
/// How long a session of a user this node just learned is banned stays open.
const BANNED_CLOSE_AFTER: Duration = Duration::from_secs(1);

/// Closes the session with `code` and stops it.
fn close(ctx: &mut ws::WebsocketContext<WsSession>, code: ws::CloseCode, why: &str) {
    ctx.close(Some(ws::CloseReason { code, description: Some(why.into()) }));
    ctx.stop();
}

/// A frame toward the client.
enum Outgoing {
    Text(String),
    Ping,
    Pong(actix_web::web::Bytes),
}

/// Which `update_user`s a session hears (`/ws?presence=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceMode {
    /// Everyone's.
    All,
    /// Only those of the users it watches (`watch`).
    Watched,
    None,
}

/// How a session was asked for: `/ws?since=<id>&presence=watched`.
pub struct Options {
    /// Registered already, before the handshake is answered.
    pub session: SessionId,
    pub since: Option<EventId>,
    pub presence: PresenceMode,
    /// The shared store could not register the session: the socket opens
    /// only to say so (an error frame, close 1013).
    pub refused: Option<Error>,
}

/// Users of a `watch` or `unwatch` that weigh one call against the rate.
const WATCH_PER_CALL: usize = 100;

/// The user ids of a `watch` or `unwatch`, each once, in their order.
fn user_ids(raw: &[String]) -> Result<Vec<UserId>, Error> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for r in raw {
        let id = UserId::parse(r).map_err(|_| Error::BadRequest(format!("{r:?} is not a user id")))?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// 400 unless `req` is a WebSocket handshake (checked before a session is registered).
pub fn check_handshake(req: &HttpRequest) -> Result<(), Error> {
    ws::handshake(req).map(drop).map_err(|e| Error::BadRequest(format!("not a WebSocket handshake: {e}")))
}

/// Upgrades the request to a session of `caller`.
pub fn start(req: &HttpRequest, stream: web::Payload, node: Ctx, caller: Caller, opts: Options) -> Result<HttpResponse, actix_web::Error> {
    let frame_size = node.settings.limits.max_body_bytes;
    let pulled = Arc::new(Pulled::new(req.conn_data::<flow::ConnFd>().copied()));
    let out = Outbox::new(node.settings.ws.max_queued, node.settings.ws.max_queued_bytes, pulled.clone());
    let oversize = Arc::new(Oversize::default());
    let stream = FrameLimit::new(stream, frame_size, oversize.clone());
    let session = WsSession::new(node, caller, opts, out, oversize);
    let body = ws::WebsocketContext::with_codec(session, stream, actix_http::ws::Codec::new().max_size(frame_size));
    flow::respond(req, body, pulled).map_err(|e| Error::BadRequest(format!("not a WebSocket handshake: {e}")).into())
}

pub struct WsSession {
    id: SessionId,
    caller: Caller,
    /// The node's context: service, registry, settings, auth, rates, metrics.
    node: Ctx,
    opts: Options,
    heartbeat: Duration,
    last_seen: Instant,
    /// The newest logged event written to the socket; replay and live overlap is dropped by it.
    last_id: Option<EventId>,
    /// The log position `hello` handed out: nothing before it is owed.
    hello_id: Option<EventId>,
    /// The token's `exp`; `refresh` moves it later.
    exp: u64,
    /// The `token_expiring` warning and the 4001 close, rescheduled by `refresh`.
    expiry: Vec<SpawnHandle>,
    partial: Fragments,
    /// Flow control: what waits to be sent (see `flow`).
    out: Outbox,
    /// Set when the incoming stream ended at a frame over the size limit.
    oversize: Arc<Oversize>,
    attached: bool,
    /// The users this session watches (`watch`), at most `limits.max_watch`.
    watching: HashSet<UserId>,
    span: Span,
}

impl WsSession {
    fn new(node: Ctx, caller: Caller, opts: Options, out: Outbox, oversize: Arc<Oversize>) -> Self {
        let id = opts.session.clone();
        let span = tracing::info_span!("session", session_id = %id, user_id = %caller.user, room_id = tracing::field::Empty, node_id = %node.node_id);
        let heartbeat = node.settings.ws.heartbeat;
        let exp = caller.exp;
        Self {
            id,
            caller,
            node,
            opts,
            heartbeat,
            last_seen: Instant::now(),
            last_id: None,
            hello_id: None,
            exp,
            expiry: Vec::new(),
            partial: Fragments::default(),
            out,
            oversize,
            attached: false,
            watching: HashSet::new(),
            span,
        }
    }

    /// Every frame toward the client goes through here, and so through the
    /// one outbox: events, replays, replies, pings and pongs. False when it
    /// was not written (the session is closing, or is now closed as too slow).
    fn send(&mut self, out: Outgoing, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if ctx.state() != ActorState::Running {
            return false;
        }
        let len = match &out {
            Outgoing::Text(t) => t.len(),
            Outgoing::Ping => 0,
            Outgoing::Pong(p) => p.len(),
        };
        if !self.out.admit(len) {
            self.too_slow(ctx);
            return false;
        }
        match out {
            Outgoing::Text(t) => ctx.text(t),
            Outgoing::Ping => ctx.ping(b""),
            Outgoing::Pong(p) => ctx.pong(&p),
        }
        true
    }

    fn write(&mut self, frame: &Frame, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(id) = frame.id {
            if self.last_id.is_some_and(|last| id <= last) {
                return;
            }
            self.last_id = Some(id);
        }
        if self.send(Outgoing::Text(frame.json.to_string()), ctx) {
            self.node.metrics.delivered(frame.action, frame.accepted_us);
        }
        // Only a session open when the operator acted is closed: one opened
        // since (its hello is past the kick) replays it and stays.
        if frame.action == EventKind::Kicked.name() && frame.id.is_some_and(|id| self.hello_id.is_none_or(|h| id > h)) {
            close(ctx, KICKED, "disconnected by an operator");
        }
    }

    /// The room one logged event may need: the biggest body, and its envelope.
    fn one_event(&self) -> usize {
        (self.node.settings.limits.max_body_bytes + 4096).min(self.node.settings.ws.max_queued_bytes)
    }

    /// Writes a page of the log, read with at most `budget` bytes (0: all).
    /// What does not fit the outbox, and what a page cut short left in the
    /// log, is read on once the client has taken enough (`read_on`). Live
    /// frames wait meanwhile (`ctx.wait`), so the order holds.
    /// `from`: the id the page was read after (a resume's `since` is before
    /// `hello`'s position, so the position cannot say where to read on).
    fn write_page(&mut self, frames: Vec<Frame>, budget: usize, from: EventId, ctx: &mut ws::WebsocketContext<Self>) {
        let (mut bytes, mut next) = (0, from);
        for f in &frames {
            let (n, room) = self.out.room();
            if n == 0 || room < f.json.len() + 16 {
                return self.read_on(next, Instant::now(), ctx);
            }
            bytes += f.json.len();
            self.write(f, ctx);
            next = f.id.unwrap_or(next);
        }
        if budget > 0 && !frames.is_empty() && bytes + self.one_event() > budget {
            self.read_on(next, Instant::now(), ctx);
        }
    }

    /// Reads the next page of the log once the outbox has room for an event;
    /// a client that takes nothing for a heartbeat meanwhile is too slow (4008).
    fn read_on(&mut self, from: EventId, waiting_since: Instant, ctx: &mut ws::WebsocketContext<Self>) {
        let (n, room) = self.out.room();
        if n == 0 || room < self.one_event() {
            if waiting_since.elapsed() > self.heartbeat {
                return self.too_slow(ctx);
            }
            ctx.wait(actix::clock::sleep(Duration::from_millis(20)).into_actor(self).map(move |_, act, ctx| act.read_on(from, waiting_since, ctx)));
            return;
        }
        let (broker, user) = (self.node.service.broker.clone(), self.caller.user.clone());
        ctx.wait(async move { broker.replay(&user, from, room).await }.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Replay::Events(frames)) => act.write_page(frames, room, from, ctx),
            Ok(Replay::Gone { last_id }) => act.resync(last_id, ctx),
            Err(e) => {
                tracing::warn!(parent: &act.span, error = %e, "could not read on from the log; closing");
                ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Again, description: Some("replay failed; reconnect with since".into()) }));
                ctx.stop();
            }
        }));
    }

    /// The first page of a resume: the outbox's bytes, but for the hello.
    fn replay_budget(&self) -> usize {
        self.node.settings.ws.max_queued_bytes.saturating_sub(4096).max(1)
    }

    /// Everything up to here was written (or was before `hello`): where to resume from.
    fn position(&self) -> EventId {
        self.last_id.max(self.hello_id).unwrap_or_default()
    }

    fn on_open(&mut self, opened: Opened, ctx: &mut ws::WebsocketContext<Self>) {
        self.attached = true;
        self.hello_id = Some(opened.last_id);
        let hello = Event::Hello(Hello {
            session_id: self.id.to_string(),
            user_id: self.caller.user.to_string(),
            node_id: self.node.node_id.to_string(),
            heartbeat_s: self.heartbeat.as_secs(),
            last_id: opened.last_id.to_string(),
            ice_servers: self.node.service.ice_servers(&self.caller.user).ice_servers,
        });
        self.write(&Frame::from_event(None, &hello, now_us()), ctx);
        match opened.replay {
            None => {}
            Some(Replay::Events(frames)) => {
                let from = self.opts.since.unwrap_or_default();
                self.write_page(frames, self.replay_budget(), from, ctx)
            }
            Some(Replay::Gone { last_id }) => self.resync(last_id, ctx),
        }
        self.schedule_expiry(ctx);
        self.schedule_ice_servers(ctx);
        if self.node.service.is_draining() {
            self.drain(ctx);
        }
    }

    fn resync(&mut self, last_id: EventId, ctx: &mut ws::WebsocketContext<Self>) {
        // The app reloads through REST and resumes from here; so does any later catch-up.
        self.last_id = self.last_id.max(Some(last_id));
        let ev = Event::Resync(ResyncData { last_id: last_id.to_string() });
        self.write(&Frame::from_event(None, &ev, now_us()), ctx);
    }

    /// After a gap in live delivery: writes what the log holds after the last
    /// event written, holding every later frame until then.
    fn catch_up(&mut self, tries: u32, ctx: &mut ws::WebsocketContext<Self>) {
        let (broker, user, since) = (self.node.service.broker.clone(), self.caller.user.clone(), self.position());
        let budget = self.out.room().1.max(1);
        ctx.wait(async move { broker.replay(&user, since, budget).await }.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Replay::Events(frames)) => {
                tracing::debug!(parent: &act.span, events = frames.len(), "caught up after a live-delivery gap");
                act.write_page(frames, budget, since, ctx);
            }
            Ok(Replay::Gone { last_id }) => act.resync(last_id, ctx),
            // Redis may still be coming back: a few tries, holding later frames meanwhile.
            Err(_) if tries < CATCH_UP_TRIES => {
                ctx.wait(actix::clock::sleep(Duration::from_millis(500)).into_actor(act));
                act.catch_up(tries + 1, ctx);
            }
            Err(e) => {
                // The client resumes with `since` and loses nothing.
                tracing::warn!(parent: &act.span, error = %e, "could not catch up; closing");
                ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Again, description: Some("catch up failed; reconnect with since".into()) }));
                ctx.stop();
            }
        }));
    }

    /// Warns `auth.refresh_before_s` before the token's `exp`, and closes with 4001 at `exp`.
    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        for h in self.expiry.drain(..) {
            ctx.cancel_future(h);
        }
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let (warn, close_in) = expiry::token_timers(self.exp, now, &self.node.settings.auth);
        self.expiry.push(ctx.run_later(warn, |act, ctx| {
            let ev = Event::TokenExpiring(TokenExpiringData { exp: act.exp });
            act.write(&Frame::from_event(None, &ev, now_us()), ctx);
        }));
        self.expiry.push(ctx.run_later(close_in, |act, ctx| {
            tracing::info!(parent: &act.span, "token expired; closing");
            close(ctx, TOKEN_EXPIRED, "token expired");
        }));
    }

    /// `{"cmd": "refresh", "token"}`: the same user, a later `exp`.
    fn refresh(&mut self, ack: Value, body: Result<RefreshBody, Error>, ctx: &mut ws::WebsocketContext<Self>) {
        match body.and_then(|b| expiry::refreshed_exp(&self.node.auth, &self.caller.user, self.exp, &b)) {
            Ok(exp) => {
                self.exp = exp;
                self.schedule_expiry(ctx);
                self.reply(ctx, json!({"cmd": "ack", "ack": ack, "action": CommandKind::Refresh.name(), "result": RefreshReply { exp }}));
            }
            Err(e) => self.error(ctx, &ack, &e),
        }
    }

    /// With TURN configured: fresh credentials at 80 % of their lifetime.
    fn schedule_ice_servers(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(every) = expiry::ice_refresh_every(&self.node.settings.ice) else { return };
        ctx.run_interval(every, |act, ctx| {
            let ev = Event::IceServers(act.node.service.ice_servers(&act.caller.user));
            act.write(&Frame::from_event(None, &ev, now_us()), ctx);
        });
    }

    /// A fragment of a message; the whole one is handled as any other frame.
    fn fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        match self.partial.push(item, self.node.settings.limits.max_body_bytes) {
            Ok(None) => {}
            Ok(Some(Whole::Binary)) => self.error(ctx, &Value::Null, &Error::BadRequest("commands are JSON text frames".into())),
            Ok(Some(Whole::Text(buf))) => match std::str::from_utf8(&buf) {
                Ok(text) => {
                    let _e = self.span.clone().entered();
                    self.on_text(text, ctx);
                }
                Err(_) => close(ctx, ws::CloseCode::Invalid, "text is not UTF-8"),
            },
            Err(Broken::Protocol(why)) => close(ctx, ws::CloseCode::Protocol, why),
            Err(Broken::TooBig) => close(ctx, ws::CloseCode::Size, "message too big"),
        }
    }

    /// The outbox is full: close with 4008; the client
    /// resumes with `since` from the log, which has every event it missed.
    fn too_slow(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        tracing::info!(parent: &self.span, "session too slow; closing");
        close(ctx, TOO_SLOW, "too slow");
        // The Close frame waits behind what the client does not read: a client
        // that takes none of it within a heartbeat is cut off.
        self.out.cut_after(self.heartbeat);
    }

    /// The node is going away: the client reconnects elsewhere from here.
    fn drain(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let ev = Event::Reconnect(ReconnectData { reason: "drain".into(), last_id: self.position().to_string() });
        self.write(&Frame::from_event(None, &ev, now_us()), ctx);
        ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Restart, description: Some("draining".into()) }));
        ctx.stop();
    }

    /// `{"cmd": "watch", "user_ids"}`: the users join this session's watch
    /// list (all or none, within `limits.max_watch`); on a `presence=watched`
    /// session their `update_user`s come from then on. Acked with their state
    /// read after the node receives their changes, so nothing falls between.
    fn watch(&mut self, ack: Value, body: Result<WatchBody, Error>, ctx: &mut ws::WebsocketContext<Self>) {
        let ids = match self.weighed_ids(body) {
            Ok(ids) => ids,
            Err(e) => return self.error(ctx, &ack, &e),
        };
        // On an `all` or `none` session a watch only acks the state: no list, no limit.
        let routed = self.opts.presence == PresenceMode::Watched;
        let mut added = Vec::new();
        if routed {
            let new = ids.iter().filter(|u| !self.watching.contains(*u)).count();
            if self.watching.len() + new > self.node.settings.limits.max_watch {
                return self.error(ctx, &ack, &Error::TooManyWatched);
            }
            for u in &ids {
                if self.watching.insert(u.clone()) {
                    self.node.registry.watch(self.id.clone(), ctx.address().recipient(), u);
                    added.push(u.clone());
                }
            }
        }
        let (node, id) = (self.node.clone(), self.id.clone());
        ctx.spawn(
            async move {
                // Every one asked, not only the new: a subscribe that failed before is tried again.
                if routed {
                    node.service.broker().watch(&id, &ids).await?;
                }
                node.service.user_states(&ids).await
            }
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(users) => act.reply(ctx, json!({"cmd": "ack", "ack": ack, "action": CommandKind::Watch.name(), "result": WatchReply { users }})),
                Err(e) => {
                    // An error changed nothing: the users this watch added leave the list again.
                    act.drop_watches(added);
                    act.error(ctx, &ack, &e)
                }
            }),
        );
    }

    /// `{"cmd": "unwatch", "user_ids"}`: the users leave the watch list.
    fn unwatch(&mut self, ack: Value, body: Result<WatchBody, Error>, ctx: &mut ws::WebsocketContext<Self>) {
        let ids = match self.weighed_ids(body) {
            Ok(ids) => ids,
            Err(e) => return self.error(ctx, &ack, &e),
        };
        let gone = ids.into_iter().filter(|u| self.watching.contains(u)).collect();
        self.drop_watches(gone);
        self.reply(ctx, json!({"cmd": "ack", "ack": ack, "action": CommandKind::Unwatch.name(), "result": {}}));
    }

    /// The users a `watch` or `unwatch` names, once each, after its weight
    /// against the rate: a hundred users weigh one call (the frame itself
    /// paid the first), since each is a subscription.
    fn weighed_ids(&self, body: Result<WatchBody, Error>) -> Result<Vec<UserId>, Error> {
        let ids = body.and_then(|b| user_ids(&b.user_ids))?;
        let weight = ids.len().div_ceil(WATCH_PER_CALL).saturating_sub(1) as u32;
        self.node.rates.check_calls(&self.caller.user, weight, &self.node.settings.limits)?;
        Ok(ids)
    }

    /// `users` (watched) leave the list, the node's routing and, with their
    /// last watcher here, the node's subscriptions.
    fn drop_watches(&mut self, users: Vec<UserId>) {
        for u in &users {
            self.watching.remove(u);
            self.node.registry.unwatch(&self.id, u);
        }
        if !users.is_empty() {
            let (node, id) = (self.node.clone(), self.id.clone());
            actix::spawn(async move { node.service.broker().unwatch(&id, &users).await });
        }
    }

    fn reply(&mut self, ctx: &mut ws::WebsocketContext<Self>, v: Value) {
        self.send(Outgoing::Text(v.to_string()), ctx);
    }

    fn error(&mut self, ctx: &mut ws::WebsocketContext<Self>, ack: &Value, e: &Error) {
        self.reply(ctx, json!({"cmd": "error", "ack": ack, "error": e.body()}));
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let (ack, request) = envelope::parse(text);
        // Every frame counts, ping and refresh too: each one makes a reply.
        if let Err(e) = self.node.rates.check_call(&self.caller.user) {
            return self.error(ctx, &ack, &e);
        }
        let call = match request {
            Err(e) => return self.error(ctx, &ack, &e),
            Ok(Request::Ping) => return self.reply(ctx, json!({"cmd": "ack", "ack": ack, "action": CommandKind::Ping.name(), "result": {}})),
            Ok(Request::Refresh(body)) => return self.refresh(ack, body, ctx),
            Ok(Request::Watch(body)) => return self.watch(ack, body, ctx),
            Ok(Request::Unwatch(body)) => return self.unwatch(ack, body, ctx),
            Ok(Request::Call(call)) => call,
        };
        let name = call.name.clone();
        let (key, cmd) = match call.typed() {
            Ok(typed) => typed,
            Err(e) => return self.error(ctx, &ack, &e),
        };
        let span = tracing::info_span!(parent: &self.span, "command", cmd = %name, user_id = %self.caller.user, room_id = tracing::field::Empty);
        let (node, user) = (self.node.clone(), self.caller.user.clone());
        ctx.spawn(
            async move { node.execute(&user, cmd, key).instrument(span).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(done) => act.reply(ctx, json!({"cmd": "ack", "ack": ack, "action": name, "result": done.reply.body()})),
                    Err(e) => act.error(ctx, &ack, &e),
                }),
        );
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _e = self.span.clone().entered();
        tracing::debug!("session opened");
        self.node.metrics.sessions_open.inc();
        if let Some(e) = self.opts.refused.take() {
            tracing::debug!(error = %e, "session could not be registered");
            self.error(ctx, &Value::Null, &e);
            ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Again, description: Some(e.to_string()) }));
            ctx.stop();
            return;
        }
        ctx.run_interval(self.heartbeat, |act, ctx| {
            if act.last_seen.elapsed() > act.heartbeat * WsSettings::MISSED_HEARTBEATS {
                tracing::info!(parent: &act.span, "session silent too long; closing");
                ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Away, description: Some("heartbeat timeout".into()) }));
                ctx.stop();
                return;
            }
            act.send(Outgoing::Ping, ctx);
        });
        let all = self.opts.presence == PresenceMode::All;
        if all {
            self.node.registry.add_presence(self.id.clone(), ctx.address().recipient());
        }
        self.node.registry.add_session(self.id.clone(), self.caller.user.clone());
        let msg = Attach { session: self.id.clone(), to: ctx.address().recipient(), since: self.opts.since, registered: true, budget: self.replay_budget() };
        let (node, user, id) = (self.node.clone(), self.caller.user.clone(), self.id.clone());
        // Wait: nothing else is written before hello, and pushes queue until then.
        ctx.wait(
            async move {
                // Receiving everyone's presence before hello: a directory read after it misses nothing.
                if all && let Err(e) = node.service.broker().presence_all(&id, true).await {
                    tracing::warn!(error = %e, "could not subscribe to everyone's presence; the next link will");
                }
                ask(&node, &user, msg).await.and_then(|r| r)
            }
            .into_actor(self)
            .map(|res, act, ctx| match res {
            Ok(opened) => act.on_open(opened, ctx),
            Err(e) => {
                tracing::warn!(parent: &act.span, error = %e, "session could not open");
                act.error(ctx, &Value::Null, &e);
                ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Again, description: Some(e.to_string()) }));
                ctx.stop();
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let _e = self.span.clone().entered();
        tracing::debug!("session closed");
        self.node.metrics.sessions_open.dec();
        if self.opts.presence == PresenceMode::All {
            self.node.registry.remove_presence(&self.id);
            let (node, id) = (self.node.clone(), self.id.clone());
            actix::spawn(async move {
                if let Err(e) = node.service.broker().presence_all(&id, false).await {
                    tracing::debug!(error = %e, "could not unsubscribe from everyone's presence");
                }
            });
        }
        let watched = self.watching.iter().cloned().collect();
        self.drop_watches(watched);
        self.node.registry.remove_session(&self.id);
        // Registered before it started, opened or not: its end is recorded.
        let (node, user, session) = (self.node.clone(), self.caller.user.clone(), self.id.clone());
        actix::spawn(async move {
            let _ = ask(&node, &user, Detach { session }).await;
        });
    }
}

impl Handler<Push> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        match msg {
            Push::Event(frame) => self.write(&frame, ctx),
            // Before hello, the open itself reads from the log.
            Push::CatchUp if self.attached => self.catch_up(1, ctx),
            Push::CatchUp => {}
            Push::Reload => self.resync(self.position(), ctx),
            Push::Drain => self.drain(ctx),
            // Later: a session open at the kick closes on its `kicked` event
            // first, so its client hears why; this is for one opened since.
            Push::Banned => {
                ctx.run_later(BANNED_CLOSE_AFTER, |_, ctx| close(ctx, KICKED, "banned by an operator"));
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    /// The client's stream ended: it went away, or a frame was over the limit.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.oversize.happened() {
            tracing::debug!(parent: &self.span, "frame over limits.max_body_bytes; closing");
            return close(ctx, ws::CloseCode::Size, "message too big");
        }
        ctx.stop();
    }

    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => {
                let _e = self.span.clone().entered();
                self.on_text(&text, ctx);
            }
            // Each makes a reply, so each counts against the rate; past it,
            // they are dropped unanswered (a pong or an error per frame is
            // what a flood wants).
            Ok(ws::Message::Ping(p)) => {
                if self.node.rates.check_call(&self.caller.user).is_ok() {
                    self.send(Outgoing::Pong(p), ctx);
                }
            }
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) => {
                if self.node.rates.check_call(&self.caller.user).is_ok() {
                    self.error(ctx, &Value::Null, &Error::BadRequest("commands are JSON text frames".into()));
                }
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(item)) => self.fragment(item, ctx),
            Ok(ws::Message::Nop) => {}
            Err(e) => {
                tracing::debug!(parent: &self.span, error = ?e.to_string(), "protocol error; closing");
                let (code, why) = match &e {
                    ws::ProtocolError::Overflow => (ws::CloseCode::Size, "message too big"),
                    // actix-web-actors reports a text frame that is not UTF-8 as an I/O error.
                    ws::ProtocolError::Io(io) if io.to_string().contains("utf-8") => (ws::CloseCode::Invalid, "text is not UTF-8"),
                    _ => (ws::CloseCode::Protocol, "protocol error"),
                };
                close(ctx, code, why);
            }
        }
    }
}
