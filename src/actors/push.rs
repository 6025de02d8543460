//! `Push`: what a session is handed, by its user actor, or (presence) by the registry.

use actix::Message;

use crate::domain::Frame;

#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum Push {
    /// An event to write.
    Event(Frame),
    /// Live delivery had a gap: write what the log has after the last event
    /// written, before any later frame.
    CatchUp,
    /// Presence changes were lost beyond recovery: `server-action:resync`
    /// with the last event id written, so the app reloads state through REST.
    Reload,
    /// The node drains: `server-action:reconnect`, then close with 1012.
    Drain,
    /// The user is banned: close with 4003 (a session that opened after the
    /// `kicked` event, before this node's copy of the bans had the ban).
    Banned,
}
