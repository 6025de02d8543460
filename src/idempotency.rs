//! `Idempotency-Key`: retries that get the first answer and cause nothing.
//!
//! The answer is kept in the same atomic step as the call's effects and events
//! (`store::Guard::Fresh` + `Step::record`), so after a node dies mid-call a
//! retry finds either the answer (the step happened) or nothing (it did not,
//! and the retry runs the call), at once: no claim that must time out first.
//! A duplicate that arrives while the first call still runs on the same node
//! gets 409 `request_in_progress`; on another node, the two race to the one
//! step, and the loser answers with the winner's kept answer.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::domain::{IdempotencyKey, UserId};
use crate::error::{Error, Result};
use crate::service::{Command, Executed, Reply};
use crate::store::{Guard, Step};

/// What is kept under a key: the request's fingerprint and its answer.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fp: String,
    reply: Reply,
}

/// A caller's key, with the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idem {
    pub user: UserId,
    pub key: IdempotencyKey,
    fp: String,
}

impl Idem {
    pub fn new(user: &UserId, key: IdempotencyKey, cmd: &Command) -> Self {
        Self { user: user.clone(), key, fp: fingerprint(cmd) }
    }

    /// Makes `step` keep `reply` under the key, and run only if nothing is
    /// kept there yet (checked before any other guard).
    pub fn seal(&self, step: &mut Step, reply: &Reply) {
        let record = serde_json::to_string(&Record { fp: self.fp.clone(), reply: reply.clone() }).expect("records serialize");
        step.guards.insert(0, Guard::Fresh(self.user.clone(), self.key.clone()));
        step.record = Some((self.user.clone(), self.key.clone(), record));
    }

    /// The kept answer for a retry; 422 when the key came with another request.
    pub fn replay(&self, raw: &str) -> Result<Executed> {
        let rec: Record = serde_json::from_str(raw).map_err(|e| Error::Unexpected(anyhow::anyhow!("idempotency record: {e}")))?;
        if rec.fp != self.fp {
            return Err(Error::IdempotencyKeyReused);
        }
        tracing::debug!(key = self.key.as_str(), "idempotent replay");
        Ok(Executed { reply: rec.reply, replayed: true })
    }
}

/// What makes two requests "the same" under one key: the command and every field.
fn fingerprint(cmd: &Command) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(format!("{cmd:?}").as_bytes());
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
