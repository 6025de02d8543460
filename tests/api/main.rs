//! Integration tests: real nodes on port 0, driven over real HTTP and WebSocket.

#[path = "../support/mod.rs"]
pub mod support;

mod admin;
mod smoke;
mod camera_flow;
mod errors;
mod auth;
mod ws_commands;
mod heartbeat;
mod presence;
mod directory;
mod ops;
mod resume;
mod cli;
mod long_poll;
mod idempotency;
mod meetings;
mod session_edges;
mod operating;
mod readme;
mod deploy;
mod watch;
