//! What the test crates share. Each crate includes this tree once, from its
//! root: `#[path = "../support/mod.rs"] pub mod support;`.
//!
//! - `app`: a node in the test's own process (`spawn_app`), HTTP calls to it
//!   (`TestApp`), tokens, metrics, SDP and candidate fixtures.
//! - `ws`: WebSocket clients of a node (`Ws`), and one that misbehaves.
//! - `process`: a node in its own process, to kill, signal or measure.
//! - `cluster`: a `redis-server` each test owns, and nodes on it.
//! - `receiver`: a webhook receiver, and signature checks.
//!
//! The crates declare it `pub`: rustc counts what a crate's root makes public
//! as used, so the helpers one crate does not call raise no `dead_code`
//! warning there.

mod app;
pub mod cluster;
pub mod process;
pub mod receiver;
mod ws;

pub use app::*;
pub use ws::*;

use std::time::{Duration, Instant};

/// Checks `f` every 20 ms until it is true, failing after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `f` holds on every check (each 100 ms) for `window`, for "nothing
/// happens" claims.
pub async fn stays(window: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(f().await, "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
