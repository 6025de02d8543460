//! Housekeeping, every `SWEEP_EVERY` on every node: hold this node's lease
//! (see `crate::service::lease`), sweep peers whose lease ended, end grace periods,
//! forget long-gone users, close idle rooms, relay what a dead node left in
//! an outbox, and drop stale rate-limiter keys
//! and logs. Every job is claimed in the store, so running it on many nodes is
//! safe.
//!
//! The returned `Sweeper` is a shutdown guard: dropping it (or `stop`) ends
//! the loop between two jobs, never in the middle of one.

use std::time::Duration;
use tokio::sync::watch;

use crate::service::lease::Keeper;
use crate::node::Node;

/// It bounds how late a grace period may end.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Forgetting has a bound of a day, not of a sweep: one Redis call every 5 s is enough.
const FORGET_EVERY_SWEEPS: u32 = 20;

pub struct Sweeper {
    stop: watch::Sender<bool>,
    done: Option<actix_web::rt::task::JoinHandle<()>>,
}

impl Sweeper {
    /// Stops the loop and waits for the job under way to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts housekeeping on the current runtime; it runs until the guard drops.
pub fn start(node: Node) -> Sweeper {
    let (stop, mut stopped) = watch::channel(false);
    let done = actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
        let mut lease = Keeper::new(node.settings.presence.ttl);
        let mut sweeps = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            let service = &node.service;
            lease.renew(service, || node.registry.local_sessions()).await;
            node.metrics.session_ends_pending.set(service.pending_ends() as i64);
            if lease.may_sweep()
                && let Err(e) = service.sweep_dead_leases().await
            {
                failed("dead-node sweep", &e);
            }
            match service.refresh_bans().await {
                Ok(banned) => banned.iter().for_each(|u| node.registry.to_user_actor(u, crate::actors::push::Push::Banned)),
                Err(e) => failed("reading bans", &e),
            }
            if let Err(e) = service.expire_due().await {
                failed("presence expiry", &e);
            }
            if let Err(e) = service.settle_flaps().await {
                failed("presence flaps", &e);
            }
            sweeps = sweeps.wrapping_add(1);
            if sweeps.is_multiple_of(FORGET_EVERY_SWEEPS) {
                match service.forget_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(users = n, "forgot long-gone users"),
                    Err(e) => failed("forgetting users", &e),
                }
            }
            match service.close_idle().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "closed idle rooms"),
                Err(e) => failed("idle sweep", &e),
            }
            if let Err(e) = service.store().relay_stale().await {
                failed("outbox relay", &e);
            }
            node.sweep_local();
        }
    });
    Sweeper { stop, done: Some(done) }
}

/// A job that failed: a warning, unless Redis is away, which `redis::Redis`
/// tells once (a line per job per sweep would be 16 a second).
fn failed(job: &str, e: &crate::error::Error) {
    match e {
        crate::error::Error::Unavailable(_) => tracing::debug!(error = %e, job, "housekeeping job failed"),
        _ => tracing::warn!(error = %e, job, "housekeeping job failed"),
    }
}
