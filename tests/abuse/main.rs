//! Abuse suite: what a hostile client with a valid token (or none) can do to
//! a node, each finding repeated as a test that fails on the behaviour it
//! fixed. Costs are measured from the node process (RSS, descriptors, log
//! bytes), never from inside.

#[path = "../support/mod.rs"]
pub mod support;

mod node;

mod broadcast;
mod connections;
mod flapping;
mod input;
mod logs;
mod polls;
mod resources;
