//! Every key a Lua script touches is declared in its KEYS, and the keys of
//! one call share a slot: what Redis Cluster requires of a script. Checked
//! on a single Redis too, so the rule cannot rot: `MONITOR` shows each
//! script call with its declared keys, then the commands it ran (`[0 lua]`),
//! and `COMMAND GETKEYS` names the keys of each. A workload through a node
//! (the camera flow, signaling with kept answers past the per-user limit,
//! meetings, a resume, expiries, forgetting, a dead node swept) runs every
//! script.
//!
//! What is still built inside a script, or still spans slots, is listed in
//! `KNOWN_UNDECLARED` and `MAY_SPAN_SLOTS`. The test fails on anything not
//! listed, on a listed entry no longer seen (so the lists only shrink), and
//! on any undeclared key outside the slot of the call's declared keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::cluster::*;
use crate::support::*;

/// (script, kind of key) still reached by a name built inside the script:
/// the rooms of an index read (`read`'s `index` and `pair`), always placed in
/// the index's slot (a room is drawn beside its owner or its meeting; the
/// rooms a user watches are read from their owners' shards in a second
/// call), so one round trip reads an index and its rooms. (Kept answers
/// past the per-user limit, and a user's live meetings, were too, until
/// each moved into a hash or a dated sorted set of the user's own.)
const KNOWN_UNDECLARED: &[(&str, &str)] = &[("read", "room")];

/// Scripts whose calls may still declare keys of several slots: none, with
/// the state in shards (a step's writes for other shards go through its
/// outbox, a read is one call per shard).
const MAY_SPAN_SLOTS: &[&str] = &[];

/// `redis.shards` for the workload: more than one, so that every step that
/// crosses shards shows.
const SHARDS: u16 = 4;

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of
/// the whole key, modulo 16384.
fn slot(key: &[u8]) -> u16 {
    let tagged = match key.iter().position(|&c| c == b'{') {
        Some(s) => match key[s + 1..].iter().position(|&c| c == b'}') {
            Some(e) if e > 0 => &key[s + 1..s + 1 + e],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// One line of `MONITOR`: its source (`lua`, or a client address) and its arguments.
fn parse(line: &str) -> Option<(String, Vec<Vec<u8>>)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = line[open + 1..close].split_whitespace().nth(1)?.to_owned();
    let mut args = Vec::new();
    let b = &line.as_bytes()[close + 1..];
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
                match b[i] {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' if i + 2 < b.len() => {
                        arg.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16).ok()?);
                        i += 2;
                    }
                    c => arg.push(c),
                }
            } else {
                arg.push(b[i]);
            }
            i += 1;
        }
        i += 1;
        args.push(arg);
    }
    Some((source, args))
}

/// `redis-cli MONITOR` on the test's Redis, every line kept.
struct Monitor {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    async fn start(redis: &Redis) -> Monitor {
        let mut child = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "MONITOR"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        // MONITOR answers OK first: from then on, every command shows.
        wait_until(Duration::from_secs(5), "MONITOR to start", async || !lines.lock().unwrap().is_empty()).await;
        Monitor { child, lines }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kind of a key: its segment after the prefix (`camsig:room:<id>` is `room`).
fn kind(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    // `{P:n}:kind:...`, or `P:kind:...` with one shard.
    let rest = key.split_once("}:").map_or_else(|| key.split_once(':').map_or("", |(_, r)| r), |(_, r)| r);
    rest.split(':').next().unwrap_or("?").to_owned()
}

fn ok(r: Res) {
    assert!(r.status / 100 == 2, "{} {}", r.status, r.body);
}

/// Drives every script: the camera flow and signaling (kept answers past
/// the limit of 2), a meeting, a resume, expiries and forgetting, and a
/// dead node's lease swept.
async fn workload(redis: &Redis) {
    // Webhooks to a receiver that refuses them: held, buried, replayed.
    let rx = crate::support::receiver::Receiver::start().await;
    rx.set(crate::support::receiver::Mode::Fail);
    let url = rx.url();
    let a = node_with(redis, "keys-a", |s| {
        s.redis.shards = SHARDS;
        s.limits.max_idempotency_keys = 2;
        s.presence.forget_after = Duration::from_secs(1);
        crate::support::receiver::hooked(s, &url);
        s.webhooks.max_attempts = 2;
    })
    .await;
    let (ann, bob) = (token("ann"), token("bob"));
    let (_ann_ws, mut bob_ws, room) = a.ann_shows_bob().await;
    ok(a.post("offer", &ann, json!({"room_id": room, "offer": sdp("offer")})).await);
    bob_ws.expect("put_offer").await;
    ok(a.post("answer", &bob, json!({"room_id": room, "answer": sdp("answer")})).await);
    for i in 0..4u16 {
        let r = a.post_once("ice", &ann, &format!("keyed-{i}"), json!({"room_id": room, "candidate": candidate(i)})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    ok(a.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await);
    ok(a.get("/webrtc/users", Some(&ann)).await);
    ok(a.post("hangup", &bob, json!({"room_id": room})).await);

    // Two: the second create counts and prunes the first.
    let mut made = Vec::new();
    for title in ["keys", "more keys"] {
        let r = a.post("meetings", &ann, json!({"title": title})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        made.push(r.body["meeting"]["meeting_id"].as_str().unwrap().to_owned());
    }
    let m = made[0].clone();
    for (t, name) in [(&ann, "Ann"), (&bob, "Bob")] {
        let r = a.post(&format!("meetings/{m}/join"), t, json!({"name": name})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    ok(a.get(&format!("/webrtc/meetings/{m}"), Some(&ann)).await);
    ok(a.post(&format!("meetings/{m}/leave"), &bob, json!({})).await);

    // A resume from a position: the log read.
    let since = a.position(&ann).await;
    let resumed = a.ws_query(&ann, &format!("?presence=false&since={since}")).await;
    resumed.close().await;

    // Bob's socket closes: his grace ends, then he is forgotten.
    bob_ws.close().await;
    wait_until(Duration::from_secs(20), "bob forgotten", async || a.get("/webrtc/users/bob", Some(&ann)).await.status == 404).await;

    // A dead letter, replayed; an operator's disconnect with a ban.
    wait_until(Duration::from_secs(20), "a dead letter", async || a.admin("/webhooks/dead", None).await.body["dead"].as_array().is_some_and(|d| !d.is_empty())).await;
    let dead = a.admin("/webhooks/dead", None).await.body["dead"][0]["id"].as_str().unwrap().to_owned();
    ok(a.admin(&format!("/webhooks/dead/{dead}/replay"), Some(json!({}))).await);
    ok(a.admin("/users/eve/disconnect", Some(json!({"ban_s": 60}))).await);

    // A node dies: its lease is claimed and swept.
    let shards = SHARDS.to_string();
    let mut doomed = ProcNode::start_with(redis, "keys-doomed", &[("CAMSIG__REDIS__SHARDS", &shards)]).await;
    let cat = token("cat");
    let _cat_ws = doomed.ws(&cat).await;
    doomed.kill();
    wait_until(Duration::from_secs(20), "cat offline after its node died", async || {
        a.get("/webrtc/users/cat", Some(&ann)).await.body["online"] == false
    })
    .await;
}

#[actix_web::test]
async fn every_script_declares_its_keys_in_one_slot() {
    assert_eq!(slot(b"foo"), 12182, "CRC16 as Redis Cluster computes it");
    assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));

    let redis = Redis::start().await;
    let monitor = Monitor::start(&redis).await;
    workload(&redis).await;
    let lines = monitor.lines.lock().unwrap().clone();
    drop(monitor);

    let scripts = camsig::redis::Scripts::new();
    let names: HashMap<String, &str> = scripts.all().iter().map(|(n, s)| (s.get_hash().to_owned(), *n)).collect();
    let mut conn = redis.conn().await;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut undeclared: BTreeMap<(&str, String), (usize, String)> = BTreeMap::new();
    let mut foreign: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    let mut spans: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    // The script whose commands the following `lua` lines are, and its KEYS.
    let mut current: Option<(&str, BTreeSet<Vec<u8>>)> = None;
    for line in &lines {
        let Some((source, args)) = parse(line) else { continue };
        let Some(cmd) = args.first().map(|c| String::from_utf8_lossy(c).to_ascii_uppercase()) else { continue };
        if source != "lua" {
            current = None;
            if (cmd == "EVALSHA" || cmd == "EVAL") && args.len() >= 3 {
                let name = match cmd.as_str() {
                    "EVALSHA" => names.get(&*String::from_utf8_lossy(&args[1])).copied().unwrap_or("unknown"),
                    _ => "eval",
                };
                let n: usize = String::from_utf8_lossy(&args[2]).parse().unwrap_or(0);
                let keys: BTreeSet<Vec<u8>> = args[3..3 + n.min(args.len() - 3)].iter().cloned().collect();
                *seen.entry(name).or_default() += 1;
                let slots: BTreeSet<u16> = keys.iter().map(|k| slot(k)).collect();
                if slots.len() > 1 {
                    let e = spans.entry(name).or_insert((0, String::new()));
                    e.0 += 1;
                    if e.1.is_empty() {
                        e.1 = keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>().join(" ");
                    }
                }
                current = Some((name, keys));
            }
            continue;
        }
        let Some((name, declared)) = &current else { continue };
        if matches!(cmd.as_str(), "TIME" | "PUBLISH" | "PING") {
            continue;
        }
        let mut getkeys = redis::cmd("COMMAND");
        getkeys.arg("GETKEYS");
        for a in &args {
            getkeys.arg(a.as_slice());
        }
        let keys: Vec<Vec<u8>> = getkeys.query_async(&mut conn).await.unwrap_or_default();
        for k in keys {
            // Even a listed undeclared key must be in the call's slot: a
            // cluster node refuses a script that reaches another slot.
            if !declared.contains(&k) && !declared.iter().any(|d| slot(d) == slot(&k)) {
                let e = foreign.entry(*name).or_insert((0, String::new()));
                e.0 += 1;
                if e.1.is_empty() {
                    e.1 = format!("{cmd} {}", String::from_utf8_lossy(&k));
                }
            }
            if !declared.contains(&k) {
                let e = undeclared.entry((name, kind(&k))).or_insert((0, String::new()));
                e.0 += 1;
                if e.1.is_empty() {
                    e.1 = format!("{cmd} {}", String::from_utf8_lossy(&k));
                }
            }
        }
    }
    eprintln!("script calls seen: {seen:?}");
    eprintln!("undeclared keys (script, kind) -> (accesses, first): {undeclared:?}");
    eprintln!("calls whose keys span slots: {spans:?}");
    eprintln!("undeclared keys outside the call's slot: {foreign:?}");

    for (name, _) in scripts.all() {
        assert!(seen.contains_key(name), "the workload never ran the {name} script: {seen:?}");
    }
    let mut failures = Vec::new();
    for ((name, kind), (n, first)) in &undeclared {
        if !KNOWN_UNDECLARED.contains(&(*name, kind.as_str())) {
            failures.push(format!("{name} touched {n} undeclared {kind} key(s), first: {first}"));
        }
    }
    for (name, kind) in KNOWN_UNDECLARED {
        if !undeclared.contains_key(&(*name, kind.to_string())) {
            failures.push(format!("({name}, {kind}) is listed in KNOWN_UNDECLARED but no longer seen: take it off the list"));
        }
    }
    for (name, (n, first)) in &foreign {
        failures.push(format!("{n} call(s) of {name} reached a key outside the slot of its declared keys, first: {first}"));
    }
    for (name, (n, first)) in &spans {
        if !MAY_SPAN_SLOTS.contains(name) {
            failures.push(format!("{n} call(s) of {name} declared keys in several slots, first: {first}"));
        }
    }
    for name in MAY_SPAN_SLOTS {
        if !spans.contains_key(name) {
            failures.push(format!("{name} is listed in MAY_SPAN_SLOTS but stayed in one slot: take it off the list"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
