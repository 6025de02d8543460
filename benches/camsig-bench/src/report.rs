//! What a run leaves behind: one JSON file with every number, and an SVG plot
//! of cross-node latency against offered load, next to the Socket.IO relay
//! and the Redis control; and a table of the load steps (the one-node
//! comparison with PeerJS included) for the terminal; and the hostile
//! scenario's tables with its PASS/FAIL lines.

use anyhow::Result;
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

use crate::hostile::{HonestPhase, HostileResult};
use crate::scenarios::{ControlResult, FanoutResult, IdleResult, LoadResult, StalledResult};

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub nofile_limit: u64,
}

impl Machine {
    pub fn read(nofile_limit: u64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned()).unwrap_or_default();
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            nofile_limit,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub started_at: String,
    pub command: String,
    pub smoke: bool,
    pub machine: Machine,
    pub latency: Vec<LoadResult>,
    pub throughput: Vec<LoadResult>,
    /// The highest step of the ramp with p99 ≤ 50 ms and nothing lost.
    pub max_delivered_per_s: f64,
    /// The latency load against the reference competitor (`benches/socketio-relay`).
    pub socketio: Vec<LoadResult>,
    /// Why the socketio scenario did not run, when it was asked for and could not.
    pub socketio_skipped: Option<String>,
    /// The latency load on one node, no Redis: camsig (`camsig-1node`, the
    /// `ice` command over its socket) and the PeerJS server (`peerjs`).
    pub one_node: Vec<LoadResult>,
    /// Idle sockets on a fresh camsig node and a fresh PeerJS server.
    pub one_node_idle: Vec<IdleResult>,
    /// Why the peerjs scenario did not run, when it was asked for and could not.
    pub peerjs_skipped: Option<String>,
    pub fanout: Vec<FanoutResult>,
    pub idle: Vec<IdleResult>,
    /// RSS growth with offers to readers that read, and to readers that stopped.
    pub stalled: Vec<StalledResult>,
    pub control: Vec<ControlResult>,
    /// Honest pairs beside every attack: one node, then two nodes on one Redis.
    pub hostile: Vec<HostileResult>,
    /// The latency load on a master with one replica, `min_replicas_acked` 0 then 1.
    pub replicas: Vec<LoadResult>,
    /// Everyone-broadcast, then watch lists.
    pub presence: Vec<crate::presence::PresenceResult>,
    /// The ramp on one Redis, then on a three-master Redis Cluster.
    pub redis_cluster: Vec<LoadResult>,
    /// The chaos suite's rounds, when asked for.
    pub chaos: Option<crate::chaos::Report>,
    /// Camera toggles with webhooks on (and its cost on the calls), the same
    /// load with webhooks off, then the saturation ramp.
    pub webhooks: Vec<crate::webhooks::WebhooksResult>,
}

pub fn write(run: &Run, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let stamp = run.started_at.replace([':', '-'], "").replace('.', "");
    let json = dir.join(format!("run-{stamp}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(run)?)?;
    let svg = dir.join(format!("latency-{stamp}.svg"));
    plot(run, &svg)?;
    Ok((json, svg))
}

/// Every load step of the run (camsig's latency and ramp, then the Socket.IO
/// relay), one row each, with the same columns.
pub fn load_table(run: &Run) -> String {
    let rows: Vec<(&str, &LoadResult)> = run
        .latency
        .iter()
        .map(|r| ("latency", r))
        .chain(run.throughput.iter().map(|r| ("ramp", r)))
        .chain(run.socketio.iter().map(|r| ("latency", r)))
        .chain(run.one_node.iter().map(|r| ("one node", r)))
        .chain(run.replicas.iter().map(|r| ("latency", r)))
        .chain(run.redis_cluster.iter().map(|r| ("ramp", r)))
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out += "\n| system | scenario | offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | answered p50 / p99 ms | lost / dup / reordered | http errors | redis cmds/call | redis round trips/call |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (scenario, r) in rows {
        let trips = r.redis_round_trips_per_call.map_or("n/a".to_owned(), |t| format!("{t:.2}"));
        let l = &r.latency;
        out += &format!(
            "| {} | {scenario} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} / {} / {} | {} | {:.2} | {trips} |\n",
            r.system, r.offered_per_s, r.delivered_per_s, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, r.answer.p50_ms, r.answer.p99_ms, r.lost, r.duplicates, r.out_of_order, r.http_errors, r.redis_commands_per_call
        );
    }
    if let Some(why) = &run.socketio_skipped {
        out += &format!("socketio-relay: skipped ({why})\n");
    }
    if let Some(why) = &run.peerjs_skipped {
        out += &format!("peerjs: skipped ({why})\n");
    }
    out += "\n";
    out
}

/// The webhooks scenario, one row per step: the calls' latency, and with
/// webhooks on what the receiver got.
pub fn webhooks_table(run: &Run) -> String {
    let mut out = String::new();
    if run.webhooks.is_empty() {
        return out;
    }
    out += "\n| webhooks | users | offered/s | calls p50 / p99 / p99.9 ms | call errors | webhooks/s | delivery p50 / p99 / p99.9 ms | missing / dup / reordered | bad signatures | retried |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|\n";
    for r in &run.webhooks {
        let l = &r.call_latency;
        let calls = format!("{:.2} / {:.2} / {:.2}", l.p50_ms, l.p99_ms, l.p999_ms);
        let hooks = match &r.webhooks {
            None => "n/a | n/a | n/a | n/a | n/a".to_owned(),
            Some(d) => format!(
                "{:.0} | {:.2} / {:.2} / {:.2} | {} / {} / {} | {} of {} | {}",
                d.received_per_s,
                d.latency.p50_ms,
                d.latency.p99_ms,
                d.latency.p999_ms,
                d.missing,
                d.duplicates,
                d.out_of_order,
                d.bad_signatures,
                d.signatures_checked,
                d.retried.map_or("n/a".to_owned(), |n| format!("{n:.0}"))
            ),
        };
        out += &format!("| {} | {} | {} | {calls} | {} | {hooks} |\n", r.step, r.users, r.offered_per_s, r.call_errors);
    }
    if let Some(c) = run.webhooks.iter().find_map(|r| r.call_cost_ms.as_ref()) {
        out += &format!("\nwebhooks' cost on the calls (on − off): p50 {:+.3} ms, p99 {:+.3} ms, p99.9 {:+.3} ms\n", c.p50_ms, c.p99_ms, c.p999_ms);
    }
    out += "\n";
    out
}

/// The hostile scenario, per topology: the nodes' peaks, the honest pairs
/// quiet and under attack, what the attackers got, and the PASS/FAIL lines.
pub fn hostile_table(run: &Run) -> String {
    let mut out = String::new();
    let mib = |k: u64| k as f64 / 1024.0;
    for h in &run.hostile {
        out += &format!(
            "\n## hostile: {} — {} honest pairs, quiet {:.0} s, then {:.0} s under attack\n\n",
            match h.topology {
                "solo" => "one node, embedded broker",
                _ => "two nodes, one Redis",
            },
            h.pairs,
            h.quiet_s,
            h.attack_s
        );
        out += "| process | RSS start / quiet peak / attack peak / end (MiB) | attack RSS peak: before last minute / last minute (MiB) | descriptors start / quiet peak / attack peak / end | attack fd peak: before last minute / last minute |\n|---|---|---|---|---|\n";
        for n in &h.nodes {
            out += &format!(
                "| {} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {} / {} / {} / {} | {} / {} |\n",
                n.name,
                mib(n.rss_start_kib),
                mib(n.rss_quiet_peak_kib),
                mib(n.rss_peak_kib),
                mib(n.rss_end_kib),
                mib(n.rss_peak_early_kib),
                mib(n.rss_peak_last_minute_kib),
                n.fds_start,
                n.fds_quiet_peak,
                n.fds_peak,
                n.fds_end,
                n.fds_peak_early,
                n.fds_peak_last_minute
            );
        }
        out += "\n| honest pairs | quiet | under attack |\n|---|---|---|\n";
        let row = |name: &str, f: &dyn Fn(&HonestPhase) -> String| format!("| {name} | {} | {} |\n", f(&h.quiet), f(&h.attack));
        out += &row("cycles", &|p| p.cycles.to_string());
        out += &row("messages sent / received / lost", &|p| format!("{} / {} / {}", p.sent, p.received, p.lost));
        out += &row("refused", &|p| if p.refused.is_empty() { "0".into() } else { format!("{:?}", p.refused) });
        out += &row("accepted, no event", &|p| p.no_event.to_string());
        out += &row("ICE out of order", &|p| p.out_of_order.to_string());
        out += &row("sockets closed by the node", &|p| if p.socket_closes.is_empty() { "0".into() } else { format!("{:?}", p.socket_closes) });
        out += &row("latency p50 / p99 / p99.9 / max (ms)", &|p| {
            format!("{:.2} / {:.2} / {:.2} / {:.2}", p.latency.p50_ms, p.latency.p99_ms, p.latency.p999_ms, p.latency.max_ms)
        });
        out += &row("p99 by message (ms)", &|p| p.by_kind.iter().map(|(k, s)| format!("{k} {:.2}", s.p99_ms)).collect::<Vec<_>>().join(", "));
        out += "\n| attack | outcome | count |\n|---|---|---|\n";
        for (shape, outcomes) in &h.attacks {
            for (outcome, count) in outcomes {
                out += &format!("| {shape} | {outcome} | {count} |\n");
            }
        }
        let c = |u: &crate::hostile::CpuUse| format!("machine {:.2}, camsig {:.2}, redis {:.2}, this tool {:.2}, other processes {:.2}", u.machine, u.camsig, u.redis, u.bench, u.other);
        out += &format!("\nCPU in cores of {}: quiet: {}; under attack: {}\n", h.cores, c(&h.cpu_quiet), c(&h.cpu_attack));
        let windows: Vec<String> = h
            .p99_by_10s
            .iter()
            .map(|(t, _, p99)| format!("{}{p99:.1}", if *t <= h.quiet_s && h.quiet_s < *t + 10.0 { "| " } else { "" }))
            .collect();
        out += &format!("honest p99 per 10 s (ms; `|` before the window where the attack starts): {}\n", windows.join(" "));
        let lag: Vec<String> = h.tool_lag_p99_by_10s.iter().map(|(_, _, p)| format!("{p:.1}")).collect();
        out += &format!("this tool's own timer lag p99 per 10 s (ms; a lag here is in the latencies above too): {}\n", lag.join(" "));
        let cpu: Vec<String> = h.cpu_by_10s.iter().map(|(_, c, r, b, m)| format!("{c:.2}/{r:.2}/{b:.2}/{m:.2}")).collect();
        out += &format!("CPU per 10 s, cores (camsig/redis/this tool/machine): {}\n", cpu.join(" "));
        out += &format!(
            "flapping: each of {} observers per node saw the flapping user's update_user {}–{} times in {:.0} s (presence.flap_window_ms 1000 allows {})\n",
            h.flap.observers, h.flap.seen_min, h.flap.seen_max, h.attack_s, h.flap.allowed
        );
        out += &format!("settings: {}\n\n", h.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
        for c in &h.checks {
            out += &format!("{} [{}] {}: {}\n", if c.pass { "PASS" } else { "FAIL" }, h.topology, c.name, c.detail);
        }
    }
    if !run.hostile.is_empty() && run.smoke {
        out += "(--smoke: the checks are printed, not enforced)\n";
    }
    out
}

fn plot(run: &Run, path: &Path) -> Result<()> {
    let points: Vec<&LoadResult> = run.latency.iter().chain(run.throughput.iter()).collect();
    let mut by_rate: Vec<&LoadResult> = points;
    by_rate.sort_by_key(|r| r.offered_per_s);
    let mut socketio: Vec<&LoadResult> = run.socketio.iter().collect();
    socketio.sort_by_key(|r| r.offered_per_s);
    let max_rate = by_rate.iter().chain(socketio.iter()).map(|r| r.offered_per_s).max().unwrap_or(1) as f64 * 1.1;
    let max_ms = by_rate
        .iter()
        .chain(socketio.iter())
        .map(|r| r.latency.p999_ms)
        .chain(run.control.iter().map(|c| c.latency.p999_ms))
        .fold(1.0, f64::max)
        * 1.5;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            if socketio.is_empty() {
                "camsig: cross-node latency, REST on node A to WebSocket on node B"
            } else {
                "cross-node latency, HTTP on node A to socket on node B: camsig (solid), socketio-relay (dashed)"
            },
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_rate, (0.05f64..max_ms).log_scale())?;
    chart.configure_mesh().x_desc("offered load (calls/s, open loop)").y_desc("latency (ms, log scale)").draw()?;
    type Series = (&'static str, fn(&LoadResult) -> f64, RGBColor);
    let series: [Series; 3] = [
        ("p50", |r| r.latency.p50_ms, BLUE),
        ("p99", |r| r.latency.p99_ms, RED),
        ("p99.9", |r| r.latency.p999_ms, MAGENTA),
    ];
    for (name, f, color) in series {
        let pts: Vec<(f64, f64)> = by_rate.iter().filter(|r| r.latency.count > 0).map(|r| (r.offered_per_s as f64, f(r).max(0.05))).collect();
        let label = if socketio.is_empty() { name.to_owned() } else { format!("camsig {name}") };
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    for (name, f, color) in series {
        let pts: Vec<(f64, f64)> = socketio.iter().filter(|r| r.latency.count > 0).map(|r| (r.offered_per_s as f64, f(r).max(0.05))).collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, color.stroke_width(2)))?
            .label(format!("socketio-relay {name}"))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], color.stroke_width(2))
                    + PathElement::new(vec![(12, 0), (20, 0)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Cross::new(p, 4, color.stroke_width(2))))?;
    }
    for c in &run.control {
        let p = (c.rate_per_s as f64, c.latency.p99_ms.max(0.05));
        chart
            .draw_series(std::iter::once(TriangleMarker::new(p, 7, BLACK.filled())))?
            .label("Redis PUBLISH→SUBSCRIBE p99 (control)")
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, BLACK.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).position(SeriesLabelPosition::UpperLeft).draw()?;
    root.present()?;
    Ok(())
}
