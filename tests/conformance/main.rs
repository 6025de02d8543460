//! One conformance suite for both implementations of the store and broker:
//! the embedded memory ones (one node) and the Redis ones (nodes on a
//! `redis-server` each test starts). Every scenario runs on both.
//!
//! - `store`: the `Store` trait itself: guards, the one-step commit, records,
//!   events in the log with their state.
//! - `ops`: the contract's operations under concurrency and across nodes.
//! - `round_trips`: Redis round trips per call, counted by the node.

#[path = "../support/mod.rs"]
pub mod support;

mod ops;
mod round_trips;
mod store;
