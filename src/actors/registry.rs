//! This node's map of user actors and presence sessions; the broker's `Sink`.
//!
//! Owned by the node and passed through app data, never a global, so several
//! nodes can run in one process. Generic over the user actor (`A`), which
//! holds the registry in turn, so that neither file imports the other.

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::push::Push;
use crate::broker::Sink;
use crate::domain::{Frame, SessionId, UserId};

pub struct Registry<A: Actor> {
    users: Mutex<HashMap<UserId, Addr<A>>>,
    /// Sessions that receive every `update_user` (`presence=all`); reached
    /// directly, not through user actors, because a presence change fans out
    /// to everyone.
    presence: RwLock<HashMap<SessionId, Recipient<Push>>>,
    /// `presence=watched` sessions, by the user each watches.
    watchers: RwLock<HashMap<UserId, HashMap<SessionId, Recipient<Push>>>>,
    /// Every open session on this node, to re-register after Redis loses them.
    sessions: Mutex<HashMap<SessionId, UserId>>,
}

impl<A: Actor> Default for Registry<A> {
    fn default() -> Self {
        Self { users: Mutex::default(), presence: RwLock::default(), watchers: RwLock::default(), sessions: Mutex::default() }
    }
}

impl<A> Registry<A>
where
    A: Actor + Handler<Push>,
    A::Context: ToEnvelope<A, Push>,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's live actor, or a new one from `start`.
    pub fn get_or_start(&self, user: &UserId, start: impl FnOnce() -> Addr<A>) -> Addr<A> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = users.get(user).filter(|a| a.connected()) {
            return a.clone();
        }
        let a = start();
        users.insert(user.clone(), a.clone());
        a
    }

    /// Forgets `addr` if it is still the user's actor (a newer one may have replaced it).
    pub fn remove(&self, user: &UserId, addr: &Addr<A>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.get(user) == Some(addr) {
            users.remove(user);
        }
    }

    /// A session that hears everyone.
    pub fn add_presence(&self, id: SessionId, to: Recipient<Push>) {
        self.presence.write().unwrap_or_else(|p| p.into_inner()).insert(id, to);
    }

    pub fn remove_presence(&self, id: &SessionId) {
        self.presence.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// `id` watches `user`.
    pub fn watch(&self, id: SessionId, to: Recipient<Push>, user: &UserId) {
        self.watchers.write().unwrap_or_else(|p| p.into_inner()).entry(user.clone()).or_default().insert(id, to);
    }

    pub fn unwatch(&self, id: &SessionId, user: &UserId) {
        let mut w = self.watchers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(of) = w.get_mut(user) {
            of.remove(id);
            if of.is_empty() {
                w.remove(user);
            }
        }
    }

    pub fn add_session(&self, id: SessionId, user: UserId) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id, user);
    }

    pub fn remove_session(&self, id: &SessionId) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Hands `push` to the user's actor here, if any, which passes it to each of their sessions.
    pub fn to_user_actor(&self, user: &UserId, push: Push) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = users.get(user) {
            a.do_send(push);
        }
    }

    /// Hands `push` to every user actor, which passes it to each of its sessions.
    pub fn to_every_user(&self, push: Push) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for a in users.values() {
            a.do_send(push.clone());
        }
    }

    /// Open sessions on this node, long-poll presence sessions included.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn local_sessions(&self) -> Vec<(UserId, SessionId)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().map(|(s, u)| (u.clone(), s.clone())).collect()
    }
}

impl<A> Sink for Registry<A>
where
    A: Actor + Handler<Push>,
    A::Context: ToEnvelope<A, Push>,
{
    fn to_user(&self, user: &UserId, frame: Frame) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = users.get(user) {
            a.do_send(Push::Event(frame));
        }
    }

    fn to_presence(&self, user: &UserId, frame: Frame) {
        let presence = self.presence.read().unwrap_or_else(|p| p.into_inner());
        for to in presence.values() {
            to.do_send(Push::Event(frame.clone()));
        }
        drop(presence);
        let watchers = self.watchers.read().unwrap_or_else(|p| p.into_inner());
        for to in watchers.get(user).into_iter().flat_map(HashMap::values) {
            to.do_send(Push::Event(frame.clone()));
        }
    }

    fn catch_up(&self) {
        self.to_every_user(Push::CatchUp);
    }

    fn presence_gap(&self) {
        let presence = self.presence.read().unwrap_or_else(|p| p.into_inner());
        let watchers = self.watchers.read().unwrap_or_else(|p| p.into_inner());
        let mut told = std::collections::HashSet::new();
        for (id, to) in presence.iter().chain(watchers.values().flat_map(|w| w.iter())) {
            if told.insert(id.clone()) {
                to.do_send(Push::Reload);
            }
        }
    }
}
