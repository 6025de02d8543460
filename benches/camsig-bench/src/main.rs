//! camsig-bench: starts Redis and two camsig nodes on loopback, runs the load
//! scenarios, and writes one JSON file and one SVG plot per run.
//!
//!   cargo run --release -p camsig-bench -- [--smoke] [--camsig target/release/camsig] [--out target/bench]
//!
//! `--smoke` runs every scenario for a moment, to keep the tool working in CI;
//! it asserts nothing about speed.
//!
//! The `socketio` scenario runs the latency load against a reference
//! competitor on the same Redis: `benches/socketio-relay`, two Node.js
//! Socket.IO servers joined by `@socket.io/redis-adapter` (needs `node`, and
//! `npm` the first time to install its packages).
//!
//! The `peerjs` scenario runs the same latency load on one camsig node with
//! no Redis (the `ice` command on the sender's socket) and on the PeerJS
//! server (`benches/peerjs-server`, its `CANDIDATE` frames), then opens the
//! same number of idle sockets on a fresh one of each for memory per socket.
//!
//! The `hostile` scenario (`hostile.rs`) runs 64 honest signaling pairs beside
//! every attack shape of docs/security.md, on one node and then on two nodes
//! sharing one Redis, and prints PASS/FAIL lines; `--seconds` is its attack
//! phase (default 300). A FAIL exits non-zero, except with `--smoke`. To see
//! which attack costs what: `--attacks slow,poll` runs only those shapes,
//! `--topology solo` (or `two-nodes`) only that half.
//!
//! The `chaos` scenario (`chaos.rs`) runs the chaos suite of `tests/chaos`
//! round after round, three nodes on one Redis under a seeded schedule of
//! faults, for `--seconds` (default 1800), and reports the faults injected,
//! the facts checked per invariant and the violations; `--seed` fixes the
//! first round's seed. It runs only when asked (`--only chaos`), and one
//! short round in `--smoke`. A violation exits non-zero, except with `--smoke`.
//!
//! The `webhooks` scenario (`webhooks.rs`) makes the bench a webhook receiver,
//! toggles cameras open loop on two fresh nodes that POST each change to it,
//! and reports the calls' latency, webhooks received per second, delivery
//! latency (receipt − the change's `at`), missing, duplicates and out of order;
//! then the same load on fresh nodes with webhooks off (the cost on the
//! calls), then (full plan only) a saturation ramp.

mod chaos;
mod cluster;
mod hostile;
mod peerjs;
mod presence;
mod report;
mod scenarios;
mod sio;
mod webhooks;
mod ws;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

const SCENARIOS: [&str; 14] = ["control", "latency", "throughput", "socketio", "peerjs", "fanout", "idle", "stalled", "hostile", "chaos", "replicas", "presence", "rediscluster", "webhooks"];

struct Plan {
    pairs: usize,
    /// Load at the first latency rate before anything is measured, the same for
    /// camsig and the Socket.IO relay: connections, caches, and Node's JIT (the
    /// relay's first 5 s after a 0.5 s warm-up had 2-3x the p99 of the next 5 s).
    warmup: Duration,
    latency_rates: Vec<u64>,
    latency_for: Duration,
    ramp: Vec<u64>,
    ramp_for: Duration,
    fanout: Vec<usize>,
    idle: Vec<usize>,
    /// Idle sockets on camsig and on the PeerJS server, side by side.
    idle_vs_peerjs: usize,
    /// The presence scenario: sessions, pool of changing users, watched per session, changes/s, for how long.
    presence: (usize, usize, usize, u64, Duration),
    /// The webhooks scenario: users, camera toggles/s (for `latency_for`), then
    /// the saturation rates and how long each (none: no saturation ramp).
    webhooks: (usize, u64, Vec<u64>, Duration),
}

impl Plan {
    fn full() -> Plan {
        Plan {
            pairs: 64,
            warmup: Duration::from_secs(5),
            latency_rates: vec![1000, 5000, 10000],
            latency_for: Duration::from_secs(10),
            ramp: vec![2000, 4000, 6000, 8000, 10000, 12000, 15000, 20000],
            ramp_for: Duration::from_secs(5),
            fanout: vec![100, 1000, 10000],
            idle: vec![10000, 18000],
            idle_vs_peerjs: 5000,
            presence: (10_000, 1000, 50, 20, Duration::from_secs(10)),
            webhooks: (200, 1000, vec![1000, 2000, 4000, 8000, 16000], Duration::from_secs(5)),
        }
    }

    fn smoke() -> Plan {
        Plan {
            pairs: 4,
            warmup: Duration::from_millis(500),
            latency_rates: vec![200],
            latency_for: Duration::from_secs(1),
            ramp: vec![200, 400],
            ramp_for: Duration::from_secs(1),
            fanout: vec![20],
            idle: vec![100],
            idle_vs_peerjs: 50,
            presence: (100, 20, 5, 10, Duration::from_secs(1)),
            webhooks: (20, 100, vec![], Duration::from_secs(1)),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut smoke, mut camsig, mut out) = (false, PathBuf::from("target/release/camsig"), PathBuf::from("target/bench"));
    let mut only: Option<Vec<String>> = None;
    let (mut rates, mut seconds): (Option<Vec<u64>>, Option<u64>) = (None, None);
    let mut relay_dir = cluster::Relay::default_dir();
    let mut peerjs_dir = cluster::PeerJs::default_dir();
    let (mut attacks, mut topologies): (Option<Vec<String>>, Option<Vec<String>>) = (None, None);
    let mut seed: Option<u64> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--camsig" => camsig = args.next().context("--camsig <path>")?.into(),
            "--out" => out = args.next().context("--out <dir>")?.into(),
            "--rates" => rates = Some(args.next().context("--rates 1000,5000")?.split(',').map(str::parse).collect::<Result<_, _>>()?),
            "--seconds" => seconds = Some(args.next().context("--seconds N")?.parse()?),
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--only" => {
                let o: Vec<String> = args.next().context("--only a,b")?.split(',').map(str::to_owned).collect();
                if let Some(x) = o.iter().find(|x| !SCENARIOS.contains(&x.as_str())) {
                    bail!("--only: unknown scenario {x} (one of {})", SCENARIOS.join(", "));
                }
                only = Some(o);
            }
            "--relay" => relay_dir = args.next().context("--relay <dir>")?.into(),
            "--peerjs" => peerjs_dir = args.next().context("--peerjs <dir>")?.into(),
            "--attacks" => {
                let a: Vec<String> = args.next().context("--attacks slow,ping,...")?.split(',').map(str::to_owned).collect();
                if let Some(x) = a.iter().find(|x| !hostile::ATTACKS.contains(&x.as_str())) {
                    bail!("--attacks: unknown attack {x} (one of {})", hostile::ATTACKS.join(", "));
                }
                attacks = Some(a);
            }
            "--topology" => {
                let t: Vec<String> = args.next().context("--topology solo,two-nodes")?.split(',').map(str::to_owned).collect();
                if let Some(x) = t.iter().find(|x| !["solo", "two-nodes"].contains(&x.as_str())) {
                    bail!("--topology: unknown topology {x} (solo or two-nodes)");
                }
                topologies = Some(t);
            }
            "-h" | "--help" => {
                println!("camsig-bench [--smoke] [--camsig PATH] [--out DIR] [--only latency,throughput,socketio,peerjs,fanout,idle,stalled,control,hostile,chaos,replicas,presence,rediscluster,webhooks] [--rates R1,R2] [--seconds S] [--seed N] [--relay DIR] [--peerjs DIR] [--attacks slow,ping,poll,chunked,header,flap,idem,big] [--topology solo,two-nodes]");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    // Chaos is half an hour of one machine's both cores: only when asked for.
    let runs = |s: &str| match &only {
        Some(o) => o.iter().any(|x| x == s),
        None => s != "chaos" || smoke,
    };
    let mut plan = if smoke { Plan::smoke() } else { Plan::full() };
    if let Some(r) = rates {
        plan.latency_rates = r;
    }
    if let Some(s) = seconds {
        plan.latency_for = Duration::from_secs(s);
    }
    let nofile = cluster::raise_nofile();
    let machine = report::Machine::read(nofile);
    eprintln!("machine: {} × {} cores, {} GiB, open files ≤ {}", machine.cpu, machine.cores, machine.memory_gib, nofile);
    let started_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let command = std::env::args().collect::<Vec<_>>().join(" ");

    // The shared cluster only for the scenarios that use it: the others start
    // their own processes, and idle nodes beside them would only be noise.
    let cluster = if ["control", "latency", "throughput", "socketio", "fanout", "presence"].iter().any(|s| runs(s)) {
        let c = cluster::Cluster::start(&camsig, 2).await?;
        eprintln!("cluster: redis :{}, nodes :{} and :{}", c.redis.port, c.nodes[0].port, c.nodes[1].port);
        Some(c)
    } else {
        None
    };

    let mut control = Vec::new();
    if runs("control")
        && let Some(cluster) = &cluster
    {
        // The wire floor at every rate the latency scenario offers.
        for &rate in &plan.latency_rates {
            let c = scenarios::control(cluster, rate, plan.latency_for).await?;
            eprintln!("control  redis pub/sub {}/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms", c.rate_per_s, c.latency.p50_ms, c.latency.p99_ms, c.latency.p999_ms);
            control.push(c);
        }
    }

    let (mut latency, mut throughput, mut max_delivered) = (Vec::new(), Vec::new(), 0.0);
    if (runs("latency") || runs("throughput"))
        && let Some(cluster) = &cluster
    {
        let mut pairs = scenarios::Pairs::setup(&cluster.nodes[0], &cluster.nodes[1], plan.pairs, scenarios::Via::Rest).await?;
        scenarios::load(&mut pairs, plan.latency_rates[0], plan.warmup).await;
        if runs("latency") {
            for &rate in &plan.latency_rates {
                let r = measured_load(cluster, &cluster.nodes, &mut pairs, rate, plan.latency_for).await;
                print_load("latency", &r);
                latency.push(r);
            }
        }
        if runs("throughput") {
            for &rate in &plan.ramp {
                let r = measured_load(cluster, &cluster.nodes, &mut pairs, rate, plan.ramp_for).await;
                print_load("ramp", &r);
                let good = r.latency.p99_ms <= 50.0 && r.lost == 0 && r.duplicates == 0 && r.out_of_order == 0;
                if good {
                    max_delivered = f64::max(max_delivered, r.delivered_per_s);
                }
                throughput.push(r);
                if !good {
                    break;
                }
            }
        }
    }

    // The same latency load against the reference competitor, on the same Redis.
    let (mut socketio, mut socketio_skipped) = (Vec::new(), None);
    if runs("socketio") {
        match cluster::Relay::missing_tools(&relay_dir) {
            Some(why) => {
                eprintln!("socketio skipped: {why}");
                socketio_skipped = Some(why);
            }
            None => {
                let cluster = cluster.as_ref().context("the shared cluster")?;
                let relay = cluster::Relay::start(&relay_dir, cluster.redis.port, 2).await?;
                eprintln!("socketio-relay: nodes :{} and :{} on redis :{}", relay.nodes[0].port, relay.nodes[1].port, cluster.redis.port);
                let mut pairs = scenarios::Pairs::setup_socketio(&relay, plan.pairs).await?;
                scenarios::load(&mut pairs, plan.latency_rates[0], plan.warmup).await;
                for &rate in &plan.latency_rates {
                    // No round-trip counter there: each call is one PUBLISH, which the command count shows.
                    let r = measured_load(cluster, &[], &mut pairs, rate, plan.latency_for).await;
                    print_load("socketio-relay", &r);
                    socketio.push(r);
                }
            }
        }
    }

    // One node each, no Redis: camsig on its embedded broker against the PeerJS server.
    let (mut one_node, mut one_node_idle, mut peerjs_skipped) = (Vec::new(), Vec::new(), None);
    if runs("peerjs") {
        match cluster::PeerJs::missing_tools(&peerjs_dir) {
            Some(why) => {
                eprintln!("peerjs skipped: {why}");
                peerjs_skipped = Some(why);
            }
            None => {
                {
                    let solo = cluster::Cluster::solo(&camsig).await?;
                    let mut pairs = scenarios::Pairs::setup(&solo, &solo, plan.pairs, scenarios::Via::Ws).await?;
                    one_node.extend(latency_steps(&mut pairs, &plan, "camsig-1node").await);
                }
                {
                    let server = cluster::PeerJs::start(&peerjs_dir).await?;
                    let mut pairs = scenarios::Pairs::setup_peerjs(server.port, plan.pairs).await?;
                    one_node.extend(latency_steps(&mut pairs, &plan, "peerjs").await);
                }
                // Fresh servers: what earlier load left in the allocator would hide the cost.
                let solo = cluster::Cluster::solo(&camsig).await?;
                one_node_idle.push(scenarios::idle(&solo, plan.idle_vs_peerjs, scenarios::Idle::Camsig).await?);
                drop(solo);
                let server = cluster::PeerJs::start(&peerjs_dir).await?;
                one_node_idle.push(scenarios::idle(&server, plan.idle_vs_peerjs, scenarios::Idle::PeerJs).await?);
                for r in &one_node_idle {
                    print_idle(r);
                }
            }
        }
    }

    let mut fanout = Vec::new();
    if runs("fanout")
        && let Some(cluster) = &cluster
    {
        for &n in &plan.fanout {
            let f = scenarios::fanout(cluster, n).await?;
            eprintln!("fanout   {:>6} sessions: last after {:.1} ms (rounds {:?}), p50 {:.1} ms, missing {}", n, f.last_ms, f.rounds_ms, f.arrival.p50_ms, f.missing);
            fanout.push(f);
        }
    }

    let mut stalled = Vec::new();
    if runs("stalled") {
        // The same offers to readers that read and to readers that do not: a fresh node each.
        let (n, events) = if smoke { (20, 4) } else { (200, 8) };
        const MAX_QUEUED: usize = 2;
        for stall in [false, true] {
            let env = [("CAMSIG__WS__MAX_QUEUED", "2"), ("CAMSIG__WS__SEND_BUFFER_BYTES", "8192"), ("CAMSIG__LIMITS__MAX_VIEWERS", "1000")];
            let fresh = cluster::Cluster::start_with(&camsig, 1, &env).await?;
            let r = scenarios::stalled(&fresh, n, events, 60, stall, MAX_QUEUED).await?;
            eprintln!(
                "stalled  {:>6} {} readers: {:.0} MiB of offers, RSS {} → peak {} KiB (+{:.1} MiB; ws.max_queued {})",
                n, r.readers, r.sent_mib, r.rss_baseline_kib, r.rss_peak_kib, r.grew_mib, r.max_queued
            );
            stalled.push(r);
        }
    }

    let mut idle = Vec::new();
    if runs("idle") {
        for &n in &plan.idle {
            // A fresh node each time: freed memory stays in the allocator and would hide the cost.
            let fresh = cluster::Cluster::start(&camsig, 1).await?;
            let r = scenarios::idle(&fresh.nodes[0], n, scenarios::Idle::Camsig).await?;
            print_idle(&r);
            idle.push(r);
        }
    }

    // Honest pairs beside every attack, on one node and on two (their own processes).
    let mut hostile = Vec::new();
    if runs("hostile") {
        let mut plan = hostile::Plan::new(smoke, seconds);
        // To find which attack costs what: a subset of the shapes, on one topology.
        plan.attacks = attacks;
        plan.topologies = topologies;
        hostile = hostile::run(&camsig, &plan).await?;
    }

    // Everyone-broadcast against watch lists, on the shared cluster.
    let mut presence = Vec::new();
    if runs("presence")
        && let Some(cluster) = &cluster
    {
        let (sessions, pool, each, rate, for_) = plan.presence;
        let held = presence::hold_pool(cluster, pool).await?;
        for all in [true, false] {
            let r = presence::run(cluster, sessions, pool, each, rate, for_, all).await?;
            eprintln!(
                "presence {:>7}: {} of {} sessions, {} changes/s: {:.0} update_user frames/s (owed {:.0}), node CPU {:?}, redis CPU {:.2}",
                r.mode, r.opened, r.sessions, r.changes_per_s, r.frames_per_s, r.owed_per_s, r.node_cpu, r.redis_cpu
            );
            presence.push(r);
        }
        for h in held {
            h.abort();
        }
    }

    // Webhooks to the bench's own receiver, then the same load with none (their own processes).
    let mut webhooks = Vec::new();
    if runs("webhooks") {
        let (users, rate, saturation, saturation_for) = plan.webhooks.clone();
        let p = webhooks::Plan { users, rate, duration: plan.latency_for, warmup: plan.warmup, saturation, saturation_for };
        webhooks = webhooks::run(&camsig, &p).await?;
    }

    // The cost of redis.min_replicas_acked = 1: the same load on the same
    // topology (a master with one replica), without and with the WAIT.
    let mut replicas = Vec::new();
    if runs("replicas") {
        for acked in ["0", "1"] {
            let c = cluster::Cluster::start_replicated(&camsig, 2, &[("CAMSIG__REDIS__MIN_REPLICAS_ACKED", acked)]).await?;
            eprintln!("replicas: redis :{} with its replica :{}, min_replicas_acked = {acked}", c.redis.port, c.replica.as_ref().map_or(0, |r| r.port));
            let mut pairs = scenarios::Pairs::setup(&c.nodes[0], &c.nodes[1], plan.pairs, scenarios::Via::Rest).await?;
            scenarios::load(&mut pairs, plan.latency_rates[0], plan.warmup).await;
            for &rate in &plan.latency_rates {
                let mut r = measured_load(&c, &c.nodes, &mut pairs, rate, plan.latency_for).await;
                r.system = if acked == "0" { "camsig replicated, acked=0" } else { "camsig replicated, acked=1" };
                print_load(&format!("acked={acked}"), &r);
                replicas.push(r);
            }
        }
    }

    // One Redis against a three-master Redis Cluster: the same ramp on each,
    // with the Redis CPU each call costs, every Redis process counted.
    let mut redis_cluster = Vec::new();
    if runs("rediscluster") {
        for on_cluster in [false, true] {
            let c = if on_cluster { cluster::Cluster::start_on_redis_cluster(&camsig, 2, 3).await? } else { cluster::Cluster::start(&camsig, 2).await? };
            let ports: Vec<u16> = c.redis_procs().iter().map(|p| p.port).collect();
            eprintln!("rediscluster: {} on redis {ports:?}", if on_cluster { "a three-master cluster" } else { "one Redis" });
            let mut pairs = scenarios::Pairs::setup(&c.nodes[0], &c.nodes[1], plan.pairs, scenarios::Via::Rest).await?;
            scenarios::load(&mut pairs, plan.latency_rates[0], plan.warmup).await;
            for &rate in &plan.ramp {
                let cpu = || c.redis_procs().iter().map(|p| presence::cpu_s(p.pid())).sum::<f64>();
                let before = cpu();
                let mut r = measured_load(&c, &c.nodes, &mut pairs, rate, plan.ramp_for).await;
                r.redis_cpu_ms_per_call = Some((cpu() - before) * 1000.0 / r.sent.max(1) as f64);
                r.system = if on_cluster { "camsig Redis Cluster (3 masters)" } else { "camsig one Redis" };
                print_load(if on_cluster { "cluster" } else { "one" }, &r);
                eprintln!("         redis CPU {:.3} ms/call", r.redis_cpu_ms_per_call.unwrap_or(0.0));
                let good = r.latency.p99_ms <= 50.0 && r.lost == 0 && r.duplicates == 0 && r.out_of_order == 0;
                redis_cluster.push(r);
                if !good {
                    break;
                }
            }
        }
    }

    let mut chaos_report = None;
    if runs("chaos") {
        let seed = seed.unwrap_or_else(|| chrono::Utc::now().timestamp_subsec_nanos() as u64 % 1_000_000_000);
        let total = Duration::from_secs(seconds.unwrap_or(1800));
        eprintln!("chaos: seed {seed}, {total:?} in all");
        chaos_report = Some(chaos::run(&out, total, seed, smoke).await?);
    }

    let run = report::Run {
        started_at,
        command,
        smoke,
        machine,
        latency,
        throughput,
        max_delivered_per_s: max_delivered,
        socketio,
        socketio_skipped,
        one_node,
        one_node_idle,
        peerjs_skipped,
        fanout,
        idle,
        stalled,
        control,
        hostile,
        chaos: chaos_report,
        replicas,
        presence,
        redis_cluster,
        webhooks,
    };
    let (json, svg) = report::write(&run, &out)?;
    print!("{}", report::load_table(&run));
    print!("{}", report::webhooks_table(&run));
    print!("{}", report::hostile_table(&run));
    if let Some(c) = &run.chaos {
        print!("{}", chaos::table(c));
    }
    println!("wrote {} and {}", json.display(), svg.display());
    let failed = run.hostile.iter().flat_map(|h| &h.checks).any(|c| !c.pass);
    if failed && !smoke {
        drop(cluster);
        eprintln!("hostile: FAIL");
        std::process::exit(1);
    }
    if run.chaos.as_ref().is_some_and(chaos::Report::failed) && !smoke {
        drop(cluster);
        eprintln!("chaos: FAIL");
        std::process::exit(1);
    }
    Ok(())
}

/// camsig's count of Redis round trips, on each node's `/metrics`.
const ROUND_TRIPS: &str = "camsig_redis_round_trips_total";

/// One load step, with the Redis commands it cost per call, and the round
/// trips per call where `counted` (camsig's nodes) count them.
async fn measured_load(cluster: &cluster::Cluster, counted: &[cluster::Proc], pairs: &mut scenarios::Pairs, rate: u64, duration: Duration) -> scenarios::LoadResult {
    let trips_before = cluster::metric_total(counted, ROUND_TRIPS).await;
    let commands = async || {
        let mut n = 0;
        for p in cluster.redis_procs() {
            n += cluster::redis_commands(p.port).await;
        }
        n
    };
    let before = commands().await;
    let mut r = scenarios::load(pairs, rate, duration).await;
    let after = commands().await;
    let trips_after = cluster::metric_total(counted, ROUND_TRIPS).await;
    r.redis_commands_per_call = after.saturating_sub(before) as f64 / r.sent.max(1) as f64;
    if let (Some(b), Some(a)) = (trips_before, trips_after) {
        r.redis_round_trips_per_call = Some((a - b).max(0.0) / r.sent.max(1) as f64);
    }
    r
}

fn print_load(what: &str, r: &scenarios::LoadResult) {
    let trips = r.redis_round_trips_per_call.map_or("n/a".to_owned(), |t| format!("{t:.1}"));
    eprintln!(
        "{what:<8} {:>6}/s: {:.1} redis cmds/call, {trips} redis round trips/call, delivered {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, answered p50 {:.2} ms, p99 {:.2} ms, lost {}, dup {}, out of order {}, http errors {}",
        r.offered_per_s, r.redis_commands_per_call, r.delivered_per_s, r.latency.p50_ms, r.latency.p99_ms, r.latency.p999_ms, r.latency.max_ms, r.answer.p50_ms, r.answer.p99_ms, r.lost, r.duplicates, r.out_of_order, r.http_errors
    );
}

/// A warm-up at the first latency rate, then every latency rate, on a service
/// with no Redis to count.
async fn latency_steps(pairs: &mut scenarios::Pairs, plan: &Plan, name: &str) -> Vec<scenarios::LoadResult> {
    scenarios::load(pairs, plan.latency_rates[0], plan.warmup).await;
    let mut steps = Vec::new();
    for &rate in &plan.latency_rates {
        let r = scenarios::load(pairs, rate, plan.latency_for).await;
        print_load(name, &r);
        steps.push(r);
    }
    steps
}

fn print_idle(r: &scenarios::IdleResult) {
    eprintln!(
        "idle     {:<6} {:>6} sockets: {} open, {:.1} KiB each (RSS {} → {} KiB), {:.0} connects/s, handshake p99 {:.1} ms{}",
        r.system,
        r.connections,
        r.opened,
        r.per_connection_kib,
        r.rss_baseline_kib,
        r.rss_after_kib,
        r.connect_per_s,
        r.handshake.p99_ms,
        r.first_error.as_deref().map(|e| format!(", {} failed: {e}", r.failed)).unwrap_or_default()
    );
}
