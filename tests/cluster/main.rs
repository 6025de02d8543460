//! Many nodes on one real Redis: each test starts its own `redis-server` on a
//! free port and the nodes it needs (in this process, in their own to kill
//! them, or behind nginx through `scripts/cluster`), and drives them over real
//! HTTP and WebSocket.

#[path = "../support/mod.rs"]
pub mod support;

mod proxy;

mod admin;
mod bounds;
mod failures;
mod flow;
mod lifecycle;
mod nginx;
mod peerconnection;
mod redis_cluster;
mod replicas;
mod rolling;
mod slow_clients;
mod watched;
mod webhooks;
