//! camsig: camera presence and WebRTC signaling. This file only lists modules.

pub mod actors;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod compat;
pub mod config;
pub mod dev;
pub mod domain;
pub mod drain;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod rate;
pub mod redis;
pub mod service;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod turn;
pub mod webhooks;
