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

    pub async fn users(&self, q: &UserQuery) -> Result<UserPage> {
        self.store.users(q).await
    }
}
