//! `Idempotency-Key`: retries that get the first answer and cause nothing.
//!
//! The answer is kept in the same atomic step as the call's effects and events
//! (`store::Guard::Fresh` + `Step::record`), so after a node dies mid-call a
//! retry finds either the answer (the step happened) or nothing (it did not,
//! and the retry runs the call), at once: no claim that must time out first.
//! A duplicate that arrives while the first call still runs on the same node
//! gets 409 `request_in_progress`; on another node, the two race to the one
//! step, and the loser answers with the winner's kept answer.
//!
//! Kept answers are bounded: at most `limits.max_idempotency_keys` per user
//! (the oldest go first), and no SDP is kept twice. The caller's own SDP comes
//! back with the retry (the fingerprint says it is the same); the peer's is in
//! the room, which the retry reads anyway, so a replay takes it from there
//! (absent once the room itself is gone).

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::reply::{Executed, Reply};
use crate::domain::{Connection, IdempotencyKey, SessionDescription, UserId};
use crate::error::{Error, Result};
use crate::store::{Guard, Kept, Snapshot, Step};

/// Where a room keeps the SDP of the other side of a reply.
type PeerField = fn(&Connection) -> &Option<SessionDescription>;

/// What is kept under a key: the request's fingerprint and its answer.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fp: String,
    reply: Reply,
    /// The caller's own SDP was left out of `reply`; the retry brings it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    elided: bool,
    /// The peer's SDP was left out of `reply`; the room read with the retry has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    peer_elided: bool,
}

/// A caller's key, with the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idem {
    pub user: UserId,
    pub key: IdempotencyKey,
    fp: String,
    /// The SDP the call carries (offer or answer), if any.
    sent: Option<SessionDescription>,
    per_user_max: usize,
}

impl Idem {
    /// `request` is the whole typed request (its `Debug` is fingerprinted);
    /// `sent` is the SDP it carries, if any.
    pub fn new(user: &UserId, key: IdempotencyKey, request: &impl std::fmt::Debug, sent: Option<SessionDescription>, per_user_max: usize) -> Self {
        Self { user: user.clone(), key, fp: fingerprint(request), sent, per_user_max }
    }

    /// The caller's own SDP inside `reply`, where it is the one they sent.
    fn own_sdp(reply: &mut Reply) -> Option<&mut Option<SessionDescription>> {
        match reply {
            Reply::Offer(r) => Some(&mut r.connection.offer),
            Reply::Answer(r) => Some(&mut r.connection.answer),
            _ => None,
        }
    }

    /// The peer's SDP inside `reply`, and where the room keeps it.
    fn peer_sdp(reply: &mut Reply) -> Option<(&mut Option<SessionDescription>, PeerField)> {
        match reply {
            Reply::Offer(r) => Some((&mut r.connection.answer, |c| &c.answer)),
            Reply::Answer(r) => Some((&mut r.connection.offer, |c| &c.offer)),
            _ => None,
        }
    }

    /// Makes `step` keep `reply` under the key, and run only if nothing is
    /// kept there yet (checked before any other guard).
    pub fn seal(&self, step: &mut Step, reply: &Reply) {
        let mut reply = reply.clone();
        let mut elided = false;
        if let Some(own) = Self::own_sdp(&mut reply)
            && own.is_some()
            && *own == self.sent
        {
            *own = None;
            elided = true;
        }
        let mut peer_elided = false;
        if let Some((peer, _)) = Self::peer_sdp(&mut reply)
            && peer.take().is_some()
        {
            peer_elided = true;
        }
        let record = serde_json::to_string(&Record { fp: self.fp.clone(), reply, elided, peer_elided }).expect("records serialize");
        step.guards.insert(0, Guard::Fresh(self.user.clone(), self.key.clone()));
        step.record = Some(Kept { user: self.user.clone(), key: self.key.clone(), record, per_user_max: self.per_user_max });
    }

    /// The kept answer for a retry; 422 when the key came with another request.
    /// `read` is what the retry read, where the peer's SDP is found again.
    pub fn replay(&self, raw: &str, read: Option<&Snapshot>) -> Result<Executed> {
        let mut rec: Record = serde_json::from_str(raw).map_err(|e| Error::Unexpected(anyhow::anyhow!("idempotency record: {e}")))?;
        if rec.fp != self.fp {
            return Err(Error::IdempotencyKeyReused);
        }
        if rec.elided
            && let Some(own) = Self::own_sdp(&mut rec.reply)
        {
            *own = self.sent.clone();
        }
        if rec.peer_elided {
            let room = match &rec.reply {
                Reply::Offer(r) | Reply::Answer(r) => Some(r.connection.room_id.clone()),
                _ => None,
            };
            if let Some((peer, from)) = Self::peer_sdp(&mut rec.reply) {
                *peer = room.and_then(|id| read?.rooms.get(&id)).and_then(|r| from(&r.room).clone());
            }
        }
        tracing::debug!(key = ?self.key.as_str(), "idempotent replay");
        Ok(Executed { reply: rec.reply, replayed: true })
    }
}

/// What makes two requests "the same" under one key: the command and every field.
fn fingerprint(request: &impl std::fmt::Debug) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(format!("{request:?}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keys whose first request is running on this node.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<(UserId, IdempotencyKey)>>);

/// Holds a key in flight; dropping it (however the call ends) releases it.
pub struct Running {
    set: Arc<InFlight>,
    entry: (UserId, IdempotencyKey),
}

impl InFlight {
    /// 409 `request_in_progress` while the same key runs here.
    pub fn enter(self: &Arc<Self>, user: &UserId, key: &IdempotencyKey) -> Result<Running> {
        let entry = (user.clone(), key.clone());
        if !self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(entry.clone()) {
            return Err(Error::InProgress);
        }
        Ok(Running { set: self.clone(), entry })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.set.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.entry);
    }
}
