//! The directory: reads of who is online and who has a camera on.

use super::Service;
use crate::domain::{UserId, UserState};
use crate::error::{Error, Result};
use crate::store::{Read, UserPage, UserQuery};

impl Service {
    pub async fn user(&self, id: &str) -> Result<UserState> {
        let id = UserId::parse(id).map_err(|_| Error::UserNotFound)?;
        let s = self.store.read(&Read { users: vec![id.clone()], ..Read::default() }).await?;
        s.users.get(&id).cloned().ok_or(Error::UserNotFound)
    }

    /// The state now of each of `ids` that was ever seen, in their order
    /// (one read, however many): what a `watch` is acked with.
    pub async fn user_states(&self, ids: &[UserId]) -> Result<Vec<UserState>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.store.read(&Read { users: ids.to_vec(), ..Read::default() }).await?;
        Ok(ids.iter().filter_map(|id| s.users.get(id).cloned()).collect())
    }

    pub async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        self.store.users(q).await
    }
}
