//! Bans (`admin/users/{id}/disconnect` with `ban_s`): kept in the store,
//! which dates them by its clock and drops the ended ones, and copied on
//! every node (`Service::refresh_bans`, in `admin`), which checks its copy at each authentication (REST, poll,
//! WebSocket handshake) without a round trip. The copy is read again every
//! sweep, so a ban taken on another node holds here within one sweep, and a
//! ban outlives any node restart.

use std::collections::HashSet;
use std::sync::RwLock;

use crate::domain::UserId;
use crate::error::Error;

#[derive(Default)]
pub struct Bans {
    banned: RwLock<HashSet<UserId>>,
}

impl Bans {
    /// 403 `forbidden` for a banned user.
    pub fn check(&self, user: &UserId) -> std::result::Result<(), Error> {
        if self.banned.read().unwrap_or_else(|p| p.into_inner()).contains(user) {
            return Err(Error::Forbidden("this user is banned for now by an operator".into()));
        }
        Ok(())
    }

    pub(crate) fn add(&self, user: &UserId) {
        self.banned.write().unwrap_or_else(|p| p.into_inner()).insert(user.clone());
    }

    /// Replaces the copy; returns the users banned since the last copy.
    pub(crate) fn replace(&self, now: HashSet<UserId>) -> Vec<UserId> {
        let mut b = self.banned.write().unwrap_or_else(|p| p.into_inner());
        let new = now.difference(&b).cloned().collect();
        *b = now;
        new
    }
}
