//! Failpoints for fault tests, compiled only into debug (test) builds: a
//! release build has none. `CAMSIG_FAILPOINT=<name>` makes the process abort
//! at that point of the first call that carries an `Idempotency-Key`, which
//! is how a test kills a node exactly between the atomic step and the answer
//! (`after_commit`), or just before the step (`before_commit`).

#[cfg(debug_assertions)]
pub fn hit(name: &str, keyed: bool) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("CAMSIG_FAILPOINT").ok().filter(|s| !s.is_empty()));
    if keyed && armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str, _keyed: bool) {}
