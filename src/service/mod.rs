//! The service layer: the contract's operations, which REST handlers and
//! WebSocket commands both reach through `Service::execute` with a typed
//! `command::Command`, so the two never disagree.
//!
//! Every operation is a read and one atomic `commit` (`store::Step`) that
//! writes the new state together with every event it causes and, with an
//! `Idempotency-Key`, its answer. The rules are the pure `domain` ones; when a
//! guard finds that another node changed what was read, the operation reads
//! again and decides again (`Service::run`, here).
//!
//! One file per concept: `command` (dispatch), `changes` (webhooks and
//! counters derived from every step), `admin` (the operators' API), `camera`, `rooms` (signaling
//! and idle rooms), `meetings`, `peers` (the peerconnection_client lobby), `directory` (reads), `presence` (sessions,
//! grace, forgetting), `lease` (node incarnations and dead-node sweeps),
//! `idempotency`, and `reply` (what commands answer).

pub mod admin;
pub mod bans;
pub mod camera;
pub(crate) mod changes;
pub mod command;
pub mod directory;
pub mod idempotency;
pub mod lease;
pub mod meetings;
pub mod peers;
pub mod presence;
pub mod reply;
pub mod rooms;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::broker::Broker;
use crate::config::Settings;
use crate::domain::{Event, RoomId, SessionId, UserId};
use crate::error::{Error, Result};
use crate::store::{Commit, Read, RoomRead, Snapshot, Step, Store};
use idempotency::{Idem, InFlight};
use reply::{Executed, Reply};

/// Reads and decisions one operation may repeat when other nodes keep
/// changing what it read. Each repeat means another call went through, so
/// this is only reached under extreme contention on one user or room.
const MAX_TRIES: usize = 64;
/// How many users one sweep works on at once.
const SWEEP_PARALLELISM: usize = 16;

/// What one try of an operation decided from what it read.
pub(crate) struct Plan {
    pub step: Step,
    pub reply: Option<Reply>,
}

#[derive(Clone)]
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) node_id: Arc<str>,
    /// This incarnation's lease, under which its sessions are registered (see `lease`).
    pub(crate) lease: Arc<str>,
    /// Set once when the node starts draining (see `crate::drain`).
    draining: Arc<AtomicBool>,
    /// Rooms' members, which never change (see `rooms`).
    members: Arc<Mutex<HashMap<RoomId, (UserId, UserId)>>>,
    in_flight: Arc<InFlight>,
    /// Session ends that could not be recorded yet, by session: user, and
    /// whether the user stays online (a drain). See `close_session`.
    unrecorded: Arc<Mutex<HashMap<SessionId, (UserId, bool)>>>,
    /// The highest `version` this node has seen (see `keep_versions_ahead`).
    version_floor: Arc<AtomicU64>,
    /// This node's copy of the bans (see `bans`).
    bans: Arc<bans::Bans>,
    /// Told when a step recorded webhooks, so this node delivers them at once.
    pub(crate) hooks_recorded: Arc<tokio::sync::Notify>,
    /// Told when the webhook deliverer has let go for a drain (`crate::drain` waits for it).
    pub hooks_drained: Arc<tokio::sync::Notify>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, settings: Arc<Settings>, node_id: Arc<str>) -> Self {
        // A lease is this process's incarnation of the node id.
        let lease = format!("{node_id}#{}", ulid::Ulid::new()).into();
        Self { store, broker, settings, node_id, lease, draining: Arc::default(), members: Arc::default(), in_flight: Arc::default(), unrecorded: Arc::default(), version_floor: Arc::default(), bans: Arc::default(), hooks_recorded: Arc::default(), hooks_drained: Arc::default() }
    }

    /// This incarnation's lease name.
    pub fn lease(&self) -> &str {
        &self.lease
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on, sessions that end leave their users online for the grace period.
    pub(crate) fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Reads, decides, commits; reads again when a guard says another node
    /// changed what was read. With `idem`, the answer is kept in the same
    /// commit, and a kept answer found on the way is returned instead.
    pub(crate) async fn run(&self, read: Read, idem: Option<&Idem>, mut decide: impl FnMut(&Snapshot) -> Result<Plan>) -> Result<Option<Executed>> {
        let mut read = read;
        if let Some(i) = idem {
            read.record = Some((i.user.clone(), i.key.clone()));
        }
        for _ in 0..MAX_TRIES {
            let mut snap = self.store.read(&read).await?;
            self.keep_versions_ahead(&mut snap);
            if let (Some(i), Some(raw)) = (idem, &snap.record) {
                return i.replay(raw, Some(&snap)).map(Some);
            }
            let Plan { mut step, reply } = decide(&snap)?;
            changes::derive(&snap, &mut step, !self.settings.webhooks.urls.is_empty());
            if let (Some(i), Some(reply)) = (idem, &reply) {
                i.seal(&mut step, reply);
            }
            let fresh = |reply: Option<Reply>| Ok(reply.map(|reply| Executed { reply, replayed: false }));
            if step.is_empty() {
                return fresh(reply);
            }
            match self.commit(&step).await? {
                Commit::Done => {
                    if !step.hooks.is_empty() {
                        self.hooks_recorded.notify_one();
                    }
                    for u in &step.users {
                        self.version_floor.fetch_max(u.version, Ordering::Relaxed);
                    }
                    return fresh(reply);
                }
                Commit::Conflict => continue,
                // Another node won the key: the next read finds its answer
                // with the room the answer's peer SDP is taken from.
                Commit::Recorded(_) => continue,
                Commit::Closed => return Err(Error::RoomClosed),
                Commit::Missing => return Err(Error::RoomNotFound),
            }
        }
        tracing::warn!("gave up after {MAX_TRIES} conflicting tries");
        Err(Error::unavailable(anyhow::anyhow!("too many concurrent changes; retry")))
    }

    /// `version` never goes back, even across a Redis that came back empty
    /// with its clock behind: every version this node has seen is a floor,
    /// and a step's time is at least just above it (a new version is at
    /// least its time in µs, see `UserState`).
    fn keep_versions_ahead(&self, snap: &mut Snapshot) {
        let seen = snap.users.values().map(|u| u.version).max().unwrap_or(0);
        let floor = self.version_floor.fetch_max(seen, Ordering::Relaxed).max(seen);
        if let Some(above) = DateTime::<Utc>::from_timestamp_micros(floor.saturating_add(1).min(i64::MAX as u64) as i64)
            && snap.now < above
        {
            snap.now = above;
        }
    }

    /// `run` for a client's call, whose every plan carries its reply.
    pub(crate) async fn call(&self, read: Read, idem: Option<&Idem>, decide: impl FnMut(&Snapshot) -> Result<Plan>) -> Result<Executed> {
        Ok(self.run(read, idem, decide).await?.expect("a call's plan always carries its reply"))
    }

    /// Runs `job` for each item, a few at a time: a sweep after many sessions
    /// ended at once (a node died) must finish within the sweep's bound.
    pub(crate) async fn each<'a, T: 'a, F>(&self, items: &'a [T], job: impl Fn(&'a T) -> F) -> Result<()>
    where
        F: Future<Output = Result<()>>,
    {
        let results: Vec<Result<()>> = futures_util::stream::iter(items).map(job).buffer_unordered(SWEEP_PARALLELISM).collect().await;
        results.into_iter().collect()
    }

    /// The one place a step is committed, so that test builds can fail around it.
    pub(crate) async fn commit(&self, step: &Step) -> Result<Commit> {
        let keyed = step.record.is_some();
        crate::failpoint::hit("before_commit", keyed);
        let c = self.store.commit(step).await?;
        if c == Commit::Done {
            crate::failpoint::hit("after_commit", keyed);
        }
        Ok(c)
    }

    pub(crate) fn grace(&self) -> std::time::Duration {
        self.settings.presence.grace
    }
}

/// Closes the open rooms in `rooms` (where `user` has a role), into `step`:
/// each guarded by its revision, and the other side hears `hangup` from `user`.
pub(crate) fn close_rooms(step: &mut Step, rooms: &[RoomRead], user: &UserId, reason: &str, now: DateTime<Utc>) {
    for r in rooms.iter().filter(|r| r.room.is_open()) {
        let Some(role) = r.room.role_of(user) else { continue };
        let mut c = r.room.clone();
        c.close(reason, now);
        step.guards.push(crate::store::Guard::Room(c.room_id.clone(), r.rev));
        step.events.push((c.user(role.other()).clone(), Event::hangup(&c, user, reason)));
        step.rooms.push((c, false));
    }
}
