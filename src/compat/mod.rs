//! Listeners that speak other signaling protocols, so that apps built on
//! them talk to camsig unchanged. Each one is a thin edge over the service:
//! its clients are camsig users with sessions, events and logs.

pub mod peerconnection;
pub mod wire;
