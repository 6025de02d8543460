//! Integration tests: real nodes on port 0, driven over real HTTP and WebSocket.

mod helpers;
mod smoke;
