//! Leases and incarnations: how nodes know which sessions are still alive.
//!
//! Every process that runs (an incarnation of a node id) holds its own lease,
//! `node#incarnation`, renewed every `presence.ttl_s / 3`; its sessions are
//! registered under that lease. So:
//! - a node restarted under the same `node.id` ends its predecessor's sessions
//!   before it serves (`take_over`), and never renews the old lease;
//! - a lease that ends (the node died) is swept by one peer, which ends its
//!   sessions as if they had ended when the lease did (`sweep_dead_leases`);
//! - a node that finds its own lease swept or claimed (it stalled, or was cut
//!   off from Redis) re-registers every session it still holds (`Keeper`);
//! - a node that was itself cut off holds off sweeping its peers for one
//!   `ttl_s`, so that after a Redis stall every node renews before anyone is
//!   declared dead.

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use crate::domain::{SessionId, UserId};
use crate::error::Result;
use super::Service;

/// The node id a lease belongs to.
pub fn node_of(lease: &str) -> &str {
    lease.rsplit_once('#').map_or(lease, |(node, _)| node)
}

/// How much earlier than `ttl_s` a lease ends: a dead node is swept, and its
/// users' grace periods end, early enough that the sweeps' own period and work
/// still fit in the contract's bound of `ttl_s + grace_s`.
fn slack(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_millis(500))
}

impl Service {
    /// At start, before serving: ends the sessions of earlier incarnations of
    /// this node id (a restart after a crash), with the usual grace.
    pub async fn take_over(&self) -> Result<()> {
        for lease in self.store.leases().await? {
            if *lease == *self.lease || node_of(&lease) != &*self.node_id {
                continue;
            }
            let sessions = self.store.lease_sessions(&lease).await?;
            self.each(&sessions, |(u, s)| self.end_session(u, s, None, false)).await?;
            self.store.forget_lease(&lease).await?;
            tracing::warn!(predecessor = %lease, sessions = sessions.len(), "restarted under a used node id: ended the sessions of the earlier incarnation");
        }
        Ok(())
    }

    /// Ends the sessions of every peer whose lease ran out; their users' grace
    /// periods count from when the lease ended.
    pub async fn sweep_dead_leases(&self) -> Result<()> {
        for (lease, lease_end) in self.store.claim_dead_leases().await? {
            if *lease == *self.lease {
                // Our own, claimed after a stall: the next renewal sees it and re-registers.
                continue;
            }
            let sessions = self.store.lease_sessions(&lease).await?;
            tracing::warn!(dead = %lease, sessions = sessions.len(), "lease ended; closing its sessions");
            crate::failpoint::here("sweep.claimed");
            // Both Redis's clock: the lease's end, and the grace counted from it.
            let expire_at = Some(lease_end + self.grace());
            if let Some((u, s)) = sessions.first() {
                self.end_session(u, s, expire_at, false).await?;
                crate::failpoint::here("sweep.partial");
            }
            self.each(&sessions, |(u, s)| self.end_session(u, s, expire_at, false)).await?;
            // Only once every session is closed: a sweeper dying half-way leaves the
            // lease claimed, and another node takes it over when the claim lapses.
            self.store.forget_lease(&lease).await?;
        }
        Ok(())
    }

    /// Makes the store's list of this lease's sessions equal to `local`: after
    /// a peer swept it, after Redis came back empty, or after ends it could not record.
    pub async fn reconcile(&self, local: &[(UserId, SessionId)]) -> Result<usize> {
        let known = self.store.lease_sessions(&self.lease).await?;
        let stale: Vec<_> = known.into_iter().filter(|k| !local.contains(k)).collect();
        self.each(&stale, |(u, s)| self.close_session(u, s)).await?;
        self.each(local, |(u, s)| self.register(u, s)).await?;
        Ok(stale.len())
    }

    /// The last step of a drain: drops the lease once no session is left under
    /// it (any left are ended as the drain ends them). Returns how many were left.
    pub async fn release_lease(&self) -> Result<usize> {
        let left = self.store.lease_sessions(&self.lease).await?;
        self.each(&left, |(u, s)| self.end_session(u, s, None, true)).await?;
        self.store.forget_lease(&self.lease).await?;
        Ok(left.len())
    }
}

/// The sweeper's hold on this node's lease.
pub struct Keeper {
    ttl: Duration,
    /// The end of the lease as last written; None before the first renewal.
    held_until: Option<DateTime<Utc>>,
    renewed: Option<Instant>,
    /// No peer is swept before this (after this node was cut off itself).
    sweep_from: Instant,
    /// The lease was found swept: local sessions must be registered again.
    resync: bool,
    /// The last renewal did not come back: no claim is sent until one does.
    failed: bool,
}

impl Keeper {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, held_until: None, renewed: None, sweep_from: Instant::now(), resync: false, failed: false }
    }

    /// Renews the lease when a third of `ttl` has passed (at once after a
    /// failed renewal); if a peer swept or claimed it meanwhile, re-registers
    /// `local` at once. Then records the session ends that failed before.
    pub async fn renew(&mut self, service: &Service, local: impl FnOnce() -> Vec<(UserId, SessionId)>) {
        let valid = self.ttl - slack(self.ttl);
        if self.failed || self.renewed.is_none_or(|t| t.elapsed() >= self.ttl / 3) {
            match service.store().renew_lease(service.lease(), valid, self.held_until).await {
                Ok((kept, until)) => {
                    self.failed = false;
                    let cut_off = self.renewed.map(|t| t.elapsed()).filter(|gap| *gap > valid);
                    (self.held_until, self.renewed) = (Some(until), Some(Instant::now()));
                    if let Some(gap) = cut_off {
                        // Peers may have been cut off too (a Redis stall): give them a lease period to renew.
                        self.sweep_from = Instant::now() + self.ttl;
                        tracing::warn!(gap_ms = gap.as_millis() as u64, "lease renewed after a gap; holding off sweeping peers for one ttl");
                    }
                    self.resync |= !kept;
                }
                // Redis away is told once, by `redis::Redis`.
                Err(e) => {
                    self.failed = true;
                    match e {
                        crate::error::Error::Unavailable(_) | crate::error::Error::OutcomeUnknown(_) => tracing::debug!(error = %e, "could not renew the node lease"),
                        e => tracing::warn!(error = %e, "could not renew the node lease"),
                    }
                }
            }
        }
        if !self.failed {
            let pending = service.record_pending_ends().await;
            if pending > 0 {
                tracing::debug!(pending, "session ends still to record");
            }
        }
        if self.resync {
            let local = local();
            match service.reconcile(&local).await {
                Ok(stale) => {
                    self.resync = false;
                    tracing::warn!(sessions = local.len(), stale, "lease was swept by a peer (stall or partition): re-registered every session held here");
                }
                Err(e) => tracing::warn!(error = %e, "could not re-register sessions after the lease was swept"),
            }
        }
    }

    /// Whether this node may sweep its peers now: its own lease is renewed
    /// and current (a claim sent after a renewal that did not come back could
    /// run after a stall, before the peers renew), and it was not cut off
    /// itself within a `ttl`.
    pub fn may_sweep(&self) -> bool {
        let valid = self.ttl - slack(self.ttl);
        !self.failed && self.renewed.is_some_and(|t| t.elapsed() < valid) && Instant::now() >= self.sweep_from
    }
}
