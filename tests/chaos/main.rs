//! Chaos: three camsig nodes (child processes) on one Redis, each behind its
//! own proxy, driven through a random schedule of faults drawn from a seed
//! while 24 users come and go; when the faults stop, a checker asserts the
//! contract's invariants from the outside.
//!
//! - `CHAOS_SEED=<n>` replays a schedule (the faults, their targets and
//!   timings, and every user's choices are drawn from it; the interleaving
//!   with real time is not, so a replay is close, not identical).
//! - `CHAOS_SECONDS=<n>` sets the fault phase (default 90); quiescence and
//!   the checks add about 10 to 30 s.
//! - `CHAOS_REPORT=<file>` writes the run's counts there as JSON (faults,
//!   facts checked per invariant, violations): `camsig-bench --only chaos`
//!   reads it.
//! - `CAMSIG_BIN=<path>` runs another build of the node (a debug one: the
//!   failpoints exist only there).
//! - `CHAOS_BREAK=i1,i2,i3,i4,i5` corrupts what the clients recorded before
//!   the checks (never the system under test): each named invariant must
//!   then fail, which shows the checker can see it.
//!
//! Every fault is printed as it is injected, with its offset from the start,
//! and a failing run ends with `replay with CHAOS_SEED=<seed>` and the
//! directory holding every node incarnation's log.
//!
//! Module map: `schedule` owns Redis, the proxies, the node processes and the
//! faults; `workload` owns the clients and records what they saw; `checker`
//! owns the invariants.

#[path = "../support/mod.rs"]
pub mod support;

// The proxy names `crate::support::cluster::Redis`: `support` sits at the
// crate root here as in tests/cluster/main.rs.
#[path = "../cluster/proxy.rs"]
mod proxy;

mod checker;
mod schedule;
mod workload;

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// SplitMix64: small, seedable and good enough to draw a schedule from. No
/// dependency, so a seed means the same draws whatever `rand` does next.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// true `pct` times in a hundred.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    /// An independent stream (per user, for the schedule), so that one
    /// stream's draws do not shift another's when timing differs.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

static START: OnceLock<Instant> = OnceLock::new();
static TIMELINE: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());

/// An instant as an offset from the start of the run, as every line prints it.
pub fn at(i: Instant) -> String {
    let start = *START.get_or_init(Instant::now);
    if i >= start {
        format!("+{:.3}s", (i - start).as_secs_f64())
    } else {
        format!("-{:.3}s", (start - i).as_secs_f64())
    }
}

/// Prints a line of the fault log and keeps it for the report.
pub fn note(msg: impl std::fmt::Display) {
    let now = Instant::now();
    eprintln!("[{}] {msg}", at(now));
    TIMELINE.lock().unwrap().push((now, msg.to_string()));
}

/// The fault log lines between two instants, for a violation's context.
pub fn timeline_between(from: Instant, to: Instant) -> Vec<String> {
    TIMELINE.lock().unwrap().iter().filter(|(t, _)| *t >= from && *t <= to).map(|(t, m)| format!("[{}] {m}", at(*t))).collect()
}

/// What the schedule and the clients share.
pub struct Shared {
    /// The port each node listens on now (its last one while it is down:
    /// clients then meet a refused connection, as behind a balancer).
    pub ports: RefCell<[u16; schedule::NODES]>,
    /// When Redis lost its data (killed, then started empty): a `resync`
    /// after one of these is the contract's, and state may vanish.
    pub data_lost: RefCell<Vec<Instant>>,
    /// Departures the schedule asks for: a user in a meeting leaves for
    /// good, so that a node armed in the expiry path has an expiry to take
    /// whose damage no later expiry of that user repairs.
    pub depart: std::cell::Cell<u32>,
}

/// Prints how to replay when the test fails anywhere, assertions in
/// support code included.
struct ReplayHint(u64);

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("replay with CHAOS_SEED={}", self.0);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}")))
}

#[actix_web::test]
async fn chaos() {
    START.get_or_init(Instant::now);
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        (t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
    });
    let seconds = env_u64("CHAOS_SECONDS").unwrap_or(90);
    // Straight to stderr, not through eprintln!: the test harness captures
    // the macros, and the seed must show even in a run that passes.
    let _ = writeln!(std::io::stderr(), "chaos seed {seed}: replay with CHAOS_SEED={seed} ({seconds}s of faults)");
    let _hint = ReplayHint(seed);

    // Redis's working directory: a restart that keeps its data writes and
    // reads dump.rdb here (support's redis-server inherits our cwd). Node
    // logs go here too.
    let dir = std::env::temp_dir().join(format!("camsig-chaos-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_current_dir(&dir).unwrap();
    eprintln!("logs and Redis data in {}", dir.display());

    let mut rng = Rng::new(seed);
    let (schedule_rng, work_rng, final_rng) = (rng.fork(), rng.fork(), rng.fork());
    let shared = std::rc::Rc::new(Shared { ports: RefCell::new([0; schedule::NODES]), data_lost: RefCell::default(), depart: Default::default() });

    let mut cluster = schedule::Cluster::start(&dir, shared.clone()).await;
    let work = workload::Workload::start(work_rng, shared.clone()).await;
    note(format!("workload: {} users on {} nodes; faults for {seconds}s", workload::USERS, schedule::NODES));

    schedule::run(&mut cluster, schedule_rng, Duration::from_secs(seconds)).await;
    note("faults stopped; every fault healed, every node up and ready");

    work.settle(final_rng).await;
    if let Ok(list) = std::env::var("CHAOS_BREAK") {
        checker::break_on_purpose(&work, &list);
    }
    let mut violations = checker::after_quiescence(&work, &cluster).await;
    violations.extend(checker::from_records(&work, &cluster));
    eprintln!("{}", checker::summary(&work, &cluster));
    cluster.save_logs();
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        // One JSON object per run, for `camsig-bench --only chaos`.
        let mut faults: std::collections::BTreeMap<&str, usize> = Default::default();
        for k in &cluster.injected {
            *faults.entry(k.as_str()).or_default() += 1;
        }
        let mut by_inv: std::collections::BTreeMap<&str, usize> = Default::default();
        for x in &violations {
            *by_inv.entry(x.inv).or_default() += 1;
        }
        let report = serde_json::json!({
            "seed": seed,
            "fault_seconds": seconds,
            "faults": cluster.injected.len(),
            "fault_kinds": faults,
            "failpoints_reached": cluster.failpoints.iter().filter(|(_, hit)| *hit).count(),
            "checked": checker::checked(&work),
            "violations": violations.len(),
            "violations_by_invariant": by_inv,
            "first_violations": violations.iter().take(5).map(|x| format!("{}: {}", x.inv, x.what)).collect::<Vec<_>>(),
        });
        std::fs::write(&path, report.to_string()).unwrap_or_else(|e| panic!("CHAOS_REPORT {path}: {e}"));
    }

    if violations.is_empty() {
        eprintln!("chaos seed {seed}: every invariant held");
        drop(cluster);
        let _ = std::env::set_current_dir(std::env::temp_dir());
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    eprintln!("{}", checker::report(&violations, 12));
    let _ = std::fs::write(dir.join("violations.txt"), checker::report(&violations, usize::MAX));
    eprintln!("every violation: {}", dir.join("violations.txt").display());
    eprintln!("node logs (one file per node id, every incarnation): {}", dir.display());
    panic!("{} invariant violation(s) with seed {seed}; replay with CHAOS_SEED={seed}", violations.len());
}
