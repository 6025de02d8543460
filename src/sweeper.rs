//! Housekeeping, every `SWEEP_EVERY` on every node: renew this node's lease,
//! re-register sessions after a Redis reconnect, reap dead nodes, end grace
//! periods, close idle rooms, and drop stale rate-limiter keys and logs.
//! Every job is claimed in the store, so running it on many nodes is safe.
//!
//! The returned `Sweeper` is a shutdown guard: dropping it stops the loop
//! between two jobs, never in the middle of one.

use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::node::Node;

/// It bounds how late a grace period may end.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

pub struct Sweeper {
    stop: watch::Sender<bool>,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts housekeeping on the current runtime; it runs until the guard drops.
pub fn start(node: Node) -> Sweeper {
    let (stop, mut stopped) = watch::channel(false);
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
        let mut reconnects = node.reconnects();
        let ttl = Duration::from_secs(node.settings.presence.ttl_s);
        let mut renewed: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            let service = &node.service;
            if renewed.is_none_or(|t| t.elapsed() >= ttl / 3) {
                let until = chrono::Utc::now() + ttl;
                match service.store().renew_lease(&node.id, until).await {
                    Ok(()) => renewed = Some(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "could not renew the node lease"),
                }
            }
            if let Some(rx) = &mut reconnects
                && rx.has_changed().unwrap_or(false)
            {
                rx.mark_unchanged();
                renewed = None;
                if let Err(e) = service.reconcile(&node.registry.local_sessions()).await {
                    tracing::warn!(error = %e, "could not re-register sessions");
                    rx.mark_changed();
                }
            }
            if let Err(e) = service.reap_dead_nodes(|| node.registry.local_sessions()).await {
                tracing::warn!(error = %e, "dead-node sweep failed");
            }
            if let Err(e) = service.expire_due().await {
                tracing::warn!(error = %e, "presence expiry failed");
            }
            match service.close_idle().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "closed idle rooms"),
                Err(e) => tracing::warn!(error = %e, "idle sweep failed"),
            }
            node.sweep_local();
        }
    });
    Sweeper { stop }
}
