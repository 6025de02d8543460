//! The `chaos` scenario: the chaos suite (`tests/chaos`) run round after
//! round for `--seconds` (default 1800), each round a fresh schedule of faults
//! drawn from its own seed, and the sum of what they injected, checked and
//! found.
//!
//! The suite is the test itself, not a copy: this builds it with cargo
//! (`--no-run`), copies the test binary and a debug build of camsig (the
//! failpoints exist only in debug builds) beside the report, and runs each
//! round with `CHAOS_SEED`, `CHAOS_SECONDS`, `CAMSIG_BIN` and
//! `CHAOS_REPORT`, reading back the JSON each round writes. A round's whole
//! log stays in `<out>/chaos/<seed>.log`.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Faults per round: long enough for every kind of fault to come up, short
/// enough that a 30-minute run is ten schedules, not one.
const ROUND_FAULT_S: u64 = 150;
/// What a round adds to its fault phase: three nodes to start, quiescence
/// (`ttl + grace + slack`) and the checks.
const ROUND_EXTRA_S: u64 = 40;

#[derive(Serialize, Clone, Debug)]
pub struct Round {
    pub seed: u64,
    pub fault_seconds: u64,
    pub took_s: f64,
    /// The test binary's exit: false on a violation or any other failure.
    pub passed: bool,
    pub faults: u64,
    pub fault_kinds: BTreeMap<String, u64>,
    pub failpoints_reached: u64,
    /// Facts checked per invariant (users, rooms, events, versions, calls).
    pub checked: BTreeMap<String, u64>,
    pub violations: u64,
    pub first_violations: Vec<String>,
    pub log: String,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub seconds: u64,
    pub rounds: Vec<Round>,
    pub faults: u64,
    pub fault_kinds: BTreeMap<String, u64>,
    pub failpoints_reached: u64,
    pub checked: BTreeMap<String, u64>,
    pub violations: u64,
    /// Rounds that failed with no report (a panic outside the checker).
    pub failed_without_report: u64,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.rounds.iter().any(|r| !r.passed)
    }
}

/// The test binary of `tests/chaos` and the debug camsig beside it, copied
/// into `dir` so that rebuilding the tree meanwhile touches neither.
fn build(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    eprintln!("chaos: building the chaos suite and a debug camsig (cargo test --no-run --test chaos)");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["test", "--locked", "--no-run", "--test", "chaos", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo test --no-run --test chaos failed");
    }
    let (mut test, mut bin) = (None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) else { continue };
        let kind = v["target"]["kind"][0].as_str().unwrap_or("");
        match (name, kind) {
            ("chaos", "test") => test = Some(PathBuf::from(exe)),
            ("camsig", "bin") => bin = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    let (test, bin) = (test.context("cargo named no chaos test binary")?, bin.context("cargo named no camsig binary")?);
    std::fs::create_dir_all(dir)?;
    // Absolute: the suite hands the binary's path on to processes of its own.
    let dir = &std::fs::canonicalize(dir)?;
    let (t, b) = (dir.join("chaos-suite"), dir.join("camsig-debug"));
    std::fs::copy(&test, &t).with_context(|| format!("copying {}", test.display()))?;
    std::fs::copy(&bin, &b).with_context(|| format!("copying {}", bin.display()))?;
    Ok((t, b))
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object().map(|o| o.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

async fn round(suite: &Path, camsig: &Path, dir: &Path, seed: u64, fault_seconds: u64) -> Result<Round> {
    let (log, report) = (dir.join(format!("{seed}.log")), dir.join(format!("{seed}.json")));
    let _ = std::fs::remove_file(&report);
    let started = Instant::now();
    let status = tokio::process::Command::new(suite)
        .args(["--nocapture", "--test-threads", "1"])
        .env("CHAOS_SEED", seed.to_string())
        .env("CHAOS_SECONDS", fault_seconds.to_string())
        .env("CHAOS_REPORT", &report)
        .env("CAMSIG_BIN", camsig)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .status()
        .await
        .context("running the chaos suite")?;
    let took_s = started.elapsed().as_secs_f64();
    let mut r = Round {
        seed,
        fault_seconds,
        took_s,
        passed: status.success(),
        faults: 0,
        fault_kinds: BTreeMap::new(),
        failpoints_reached: 0,
        checked: BTreeMap::new(),
        violations: 0,
        first_violations: Vec::new(),
        log: log.display().to_string(),
    };
    if let Ok(text) = std::fs::read_to_string(&report) {
        let v: Value = serde_json::from_str(&text).context("the round's report")?;
        r.faults = v["faults"].as_u64().unwrap_or(0);
        r.fault_kinds = counts(&v["fault_kinds"]);
        r.failpoints_reached = v["failpoints_reached"].as_u64().unwrap_or(0);
        r.checked = counts(&v["checked"]);
        r.violations = v["violations"].as_u64().unwrap_or(0);
        r.first_violations = v["first_violations"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default();
    }
    Ok(r)
}

/// Rounds until `total` has passed (one at least); a smoke run is one short round.
pub async fn run(out: &Path, total: Duration, seed: u64, smoke: bool) -> Result<Report> {
    // Absolute: the suite changes directory, and writes CHAOS_REPORT after.
    let dir = out.join("chaos");
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    let (suite, camsig) = build(&dir)?;
    let started = Instant::now();
    let mut report = Report { seed, seconds: total.as_secs(), ..Report::default() };
    let mut i = 0;
    loop {
        let left = total.saturating_sub(started.elapsed()).as_secs();
        let fault_seconds = if smoke { 15 } else { ROUND_FAULT_S.min(left.saturating_sub(ROUND_EXTRA_S)).max(30) };
        // Each round its own seed, printed: any one replays alone with the suite.
        let s = seed.wrapping_add(i) % 1_000_000_000;
        eprintln!("chaos round {}: seed {s}, {fault_seconds}s of faults (replay: CHAOS_SEED={s} CHAOS_SECONDS={fault_seconds} cargo test --test chaos)", i + 1);
        let r = round(&suite, &camsig, &dir, s, fault_seconds).await?;
        eprintln!(
            "chaos round {}: {} in {:.0}s; {} faults, {} failpoints reached, checked {:?}, {} violation(s){}",
            i + 1,
            if r.passed { "passed" } else { "FAILED" },
            r.took_s,
            r.faults,
            r.failpoints_reached,
            r.checked,
            r.violations,
            if r.passed { String::new() } else { format!(": see {}", r.log) }
        );
        report.faults += r.faults;
        report.failpoints_reached += r.failpoints_reached;
        report.violations += r.violations;
        for (k, n) in &r.fault_kinds {
            *report.fault_kinds.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &r.checked {
            *report.checked.entry(k.clone()).or_default() += n;
        }
        if !r.passed && r.violations == 0 {
            report.failed_without_report += 1;
        }
        report.rounds.push(r);
        i += 1;
        if smoke || started.elapsed() + Duration::from_secs(ROUND_EXTRA_S + 30) >= total {
            break;
        }
    }
    Ok(report)
}

pub fn table(report: &Report) -> String {
    if report.rounds.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n## chaos: {} rounds in {:.0} min (seed {}), 3 nodes on one Redis\n\n| seed | faults | failpoints reached | checked (I1 users, I2 rooms+meetings, I3 events, I4 versions, I5 calls) | violations | result |\n|---|---|---|---|---|---|\n",
        report.rounds.len(),
        report.rounds.iter().map(|r| r.took_s).sum::<f64>() / 60.0,
        report.seed
    );
    let checked = |c: &BTreeMap<String, u64>| c.values().map(u64::to_string).collect::<Vec<_>>().join(" / ");
    for r in &report.rounds {
        out += &format!("| {} | {} | {} | {} | {} | {} |\n", r.seed, r.faults, r.failpoints_reached, checked(&r.checked), r.violations, if r.passed { "pass" } else { "FAIL" });
    }
    out += &format!(
        "| all | {} | {} | {} | {} | {} |\n\nfaults by kind: {:?}\n",
        report.faults,
        report.failpoints_reached,
        checked(&report.checked),
        report.violations,
        if report.failed() { "FAIL" } else { "pass" },
        report.fault_kinds
    );
    out
}
