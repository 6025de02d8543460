//! Many nodes on one real Redis: each test starts its own `redis-server` on a
//! free port and three nodes, and drives them over real HTTP and WebSocket.

#[path = "../support/mod.rs"]
pub mod support;

mod proxy;

mod failures;
mod flow;
mod lifecycle;
mod nginx;
mod rolling;
mod slow_clients;
