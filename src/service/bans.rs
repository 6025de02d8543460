//! Bans (`admin/users/{id}/disconnect` with `ban_s`): kept in the store,
//! which dates them by its clock and drops the ended ones, and copied on
//! every node, which checks its copy at each authentication (REST, poll,
//! WebSocket handshake) without a round trip. The copy is read again every
//! sweep, so a ban taken on another node holds here within one sweep, and a
//! ban outlives any node restart.

use std::collections::HashSet;
use std::sync::RwLock;

use super::Service;
use crate::domain::UserId;
use crate::error::{Error, Result};

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

    fn add(&self, user: &UserId) {
        self.banned.write().unwrap_or_else(|p| p.into_inner()).insert(user.clone());
    }

    /// Replaces the copy; returns the users banned since the last copy.
    fn replace(&self, now: HashSet<UserId>) -> Vec<UserId> {
        let mut b = self.banned.write().unwrap_or_else(|p| p.into_inner());
        let new = now.difference(&b).cloned().collect();
        *b = now;
        new
    }
}

impl Service {
    pub fn bans(&self) -> &Bans {
        &self.bans
    }

    /// Bans `user` for `for_` (in the store, and at once in this node's copy).
    pub(crate) async fn ban(&self, user: &UserId, for_: std::time::Duration) -> Result<chrono::DateTime<chrono::Utc>> {
        let until = self.store.ban(user, for_).await?;
        self.bans.add(user);
        Ok(until)
    }

    /// Reads the store's bans into this node's copy; returns the users banned
    /// since the last read, whose sessions here the caller closes (a session
    /// opened here between the ban and this read).
    pub async fn refresh_bans(&self) -> Result<Vec<UserId>> {
        let now = self.store.bans().await?;
        Ok(self.bans.replace(now.into_iter().map(|(u, _)| u).collect()))
    }
}
