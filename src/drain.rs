//! Draining a node, on SIGTERM or SIGINT (or `Node::request_drain`), so that
//! a rolling restart loses nothing and nobody flickers offline:
//! 1. `/readyz` answers 503 and new sockets and polls get 503 at once;
//! 2. every session gets `server-action:reconnect` `{reason: "drain", last_id}`
//!    and close 1012, and waiting long polls answer at once;
//! 3. sessions that end now leave their users online, cameras on and rooms
//!    open for `presence.grace_s` (see `Service::close_session`), so a client
//!    that reconnects to another node meanwhile changes nothing;
//! 4. the lease is released, calls already accepted finish, and the process
//!    exits, all within `server.drain_s`.

use actix_web::dev::ServerHandle;
use std::time::{Duration, Instant};

use crate::actors::push::Push;
use crate::node::Node;
use crate::sweeper::Sweeper;

/// The binary's signal handling: SIGTERM or SIGINT starts a drain.
pub async fn on_signals(node: Node) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    node.request_drain();
    Ok(())
}

/// The share of `server.drain_s` each stage may take.
fn share(total: Duration, tenths: u32) -> Duration {
    total * tenths / 10
}

/// Drains the node, then stops its server.
pub async fn run(node: &Node, server: ServerHandle, sweeper: Sweeper) {
    let started = Instant::now();
    let total = node.settings.server.drain;
    if !node.service.start_draining() {
        return;
    }
    let sessions = node.registry.session_count();
    tracing::info!(sessions, drain_s = total.as_secs(), "draining: sessions are told to reconnect elsewhere");
    node.registry.to_every_user(Push::Drain);
    let close_by = started + share(total, 4);
    // Load balancers polling /readyz get to see the 503 before the port closes.
    let linger_until = started + share(total, 1).min(Duration::from_secs(1));
    while (node.registry.session_count() > 0 || Instant::now() < linger_until) && Instant::now() < close_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Webhooks: on Redis the deliverer lets its shards go at once (another
    // node takes them); on the embedded store it first sends what it holds.
    if !node.settings.webhooks.urls.is_empty() && node.settings.webhooks.secret.is_some() {
        let _ = tokio::time::timeout(share(total, 5), node.service.hooks_drained.notified()).await;
    }
    // No renewal may bring the lease back once it is released.
    let _ = tokio::time::timeout(share(total, 1), sweeper.stop()).await;
    match tokio::time::timeout(share(total, 2), node.service.release_lease()).await {
        Ok(Ok(left)) => tracing::info!(left, "lease released"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease; peers sweep it when it ends"),
        Err(_) => tracing::warn!("releasing the lease timed out; peers sweep it when it ends"),
    }
    // Calls already accepted finish (bounded by the server's shutdown timeout).
    server.stop(true).await;
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "drained");
}

/// How long the HTTP server may wait for calls under way once it stops.
pub fn shutdown_timeout(drain: Duration) -> u64 {
    (drain.as_secs() * 2 / 10).max(1)
}
