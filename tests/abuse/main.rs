//! Abuse suite: hostile clients against a real node over HTTP and WebSocket.
//! Each module is one kind of abuse; every test fails on the behaviour it fixed.

#[path = "../api/helpers.rs"]
mod helpers;
mod input;
