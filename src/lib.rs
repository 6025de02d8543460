//! camsig: camera presence and WebRTC signaling. This file only lists modules.

pub mod actors;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod node;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
