//! Failpoints for fault tests, compiled only into debug (test) builds: a
//! release build has none. `CAMSIG_FAILPOINT=<name>` makes the process abort
//! at that point:
//! - `before_commit`, `after_commit`: around the atomic step of the first
//!   call that carries an `Idempotency-Key` (`hit`), which is how a test kills
//!   a node exactly between the step and the answer, or just before the step;
//! - the points between the steps of a multi-step path (`here`), the first
//!   time one is reached: `sweep.claimed` (a dead lease claimed, none of its
//!   sessions ended), `sweep.partial` (one of them ended), `expire.claimed`,
//!   `expire.between` (meetings left, the user not yet offline),
//!   `leave.between` (one meeting left of several), `flaps.claimed`,
//!   `session.end` (a socket gone, its end not yet recorded);
//! - `commit.relay` (`hit`, keyed calls only): with `redis.shards` > 1, a
//!   step committed in its shard, what it wrote for other shards still in
//!   its outbox.

#[cfg(debug_assertions)]
fn armed() -> Option<&'static str> {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("CAMSIG_FAILPOINT").ok().filter(|s| !s.is_empty())).as_deref()
}

#[cfg(debug_assertions)]
pub fn hit(name: &str, keyed: bool) {
    if keyed {
        here(name);
    }
}

#[cfg(debug_assertions)]
pub fn here(name: &str) {
    if armed() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str, _keyed: bool) {}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn here(_name: &str) {}
