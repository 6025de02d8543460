//! The actors of one node: a per-user actor that serializes that user's
//! operations and knows their local sessions, and the WebSocket session actors
//! that deliver. The registry maps users to their actor; it lives in app data.

pub mod registry;
pub mod session;
pub mod user;

use actix::Message;

use crate::domain::Frame;

/// A frame for a session (from its user actor, or presence from the registry).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Push(pub Frame);
