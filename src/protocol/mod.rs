//! The wire protocol that REST and the WebSocket share: the request bodies
//! and where they become typed commands (`bodies`), and JSON as the contract
//! reads it (`json`).

pub mod bodies;
pub mod json;
