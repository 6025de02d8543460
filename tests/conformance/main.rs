//! One conformance suite for both implementations of the store and broker:
//! the embedded memory ones (one node) and the Redis ones (nodes on a
//! `redis-server` each test starts). Every scenario runs on both, as two
//! tests: `<module>::<scenario>::memory` and `<module>::<scenario>::redis`.
//! The memory half needs no Redis: `cargo test --test conformance memory`.
//!
//! - `store`: the `Store` trait itself: guards, the one-step commit, records,
//!   events in the log with their state.
//! - `ops`: the contract's operations under concurrency and across nodes.
//! - `round_trips`: Redis round trips per call, counted by the node (Redis only).
//! - `script_keys`: every script declares the keys it touches, in one slot (Redis only).

#[path = "../support/mod.rs"]
pub mod support;

/// Which implementation a scenario runs on.
#[derive(Clone, Copy)]
pub enum Kind {
    Memory,
    Redis,
    /// Redis with `redis.shards = 4`: steps that span shards go through the outbox.
    Sharded,
}

/// Makes each `async fn <scenario>(kind: Kind)` three tests,
/// `<scenario>::memory`, `<scenario>::redis` and `<scenario>::sharded`.
macro_rules! on_both {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[actix_web::test]
            async fn memory() {
                super::$scenario($crate::Kind::Memory).await
            }

            #[actix_web::test]
            async fn redis() {
                super::$scenario($crate::Kind::Redis).await
            }

            #[actix_web::test]
            async fn sharded() {
                super::$scenario($crate::Kind::Sharded).await
            }
        }
    )+};
}

mod ops;
mod round_trips;
mod script_keys;
mod store;
