//! The Docker deployment, read rather than run (there is no Docker engine in
//! the test suite; `scripts/image-check` builds the image's binary):
//! `docker-compose.yml` keeps Redis healthy, persistent and restarted before
//! the nodes start, puts every node behind nginx, and gives each node a
//! configuration camsig accepts; the README's compose commands name real
//! services and real `camsig` commands.

use clap::Parser;
use serde_norway::{Mapping, Value};
use std::path::Path;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

fn compose() -> Value {
    let mut c: Value = serde_norway::from_str(&read("docker-compose.yml")).unwrap();
    c.apply_merge().unwrap();
    c
}

fn services(c: &Value) -> &Mapping {
    c["services"].as_mapping().expect("services")
}

/// The camsig nodes: the services built from the Dockerfile.
fn nodes(c: &Value) -> Vec<(String, &Value)> {
    let nodes: Vec<_> = services(c)
        .iter()
        .filter(|(_, s)| s["build"].as_str() == Some("."))
        .map(|(name, s)| (name.as_str().unwrap().to_owned(), s))
        .collect();
    assert!(nodes.len() >= 2, "a cluster has nodes");
    nodes
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence().map(|s| s.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn restarts(name: &str, s: &Value) {
    let policy = s["restart"].as_str().unwrap_or("no");
    assert!(["always", "unless-stopped", "on-failure"].contains(&policy), "{name}: restart: {policy}");
}

#[test]
fn redis_is_healthchecked_persistent_and_restarted() {
    let c = compose();
    let redis = &services(&c)["redis"];
    let check = strings(&redis["healthcheck"]["test"]).join(" ");
    assert!(check.contains("redis-cli") && check.contains("ping"), "redis healthcheck: {check}");
    let command = strings(&redis["command"]);
    let aof = command.iter().position(|a| *a == "--appendonly").map(|i| command.get(i + 1));
    assert_eq!(aof, Some(Some(&"yes")), "redis runs with AOF: {command:?}");
    let volume = strings(&redis["volumes"]).into_iter().find(|v| v.ends_with(":/data")).expect("a volume at /data");
    let name = volume.split(':').next().unwrap();
    assert!(c["volumes"].as_mapping().is_some_and(|v| v.contains_key(name)), "volume {name} is declared");
    restarts("redis", redis);
}

#[test]
fn nodes_wait_for_redis_restart_and_take_their_configuration() {
    let c = compose();
    let drain_s = camsig::config::Settings::load_from(None, Vec::new()).unwrap().server.drain.as_secs();
    let mut ids = Vec::new();
    for (name, node) in nodes(&c) {
        assert_eq!(node["depends_on"]["redis"]["condition"].as_str(), Some("service_healthy"), "{name} waits for redis");
        restarts(&name, node);
        let grace = node["stop_grace_period"].as_str().and_then(|g| g.strip_suffix('s')).and_then(|g| g.parse::<u64>().ok());
        assert!(grace.is_some_and(|g| g > drain_s), "{name}: stop_grace_period must outlast the drain ({drain_s} s)");

        // Compose fills in the secret from the shell; camsig must accept the rest.
        let env: Vec<(String, String)> = node["environment"]
            .as_mapping()
            .expect("environment as a mapping")
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map(str::to_owned).unwrap_or_else(|| serde_norway::to_string(v).unwrap().trim().to_owned());
                let v = if v.starts_with("${CAMSIG_JWT_SECRET") { "0123456789abcdef".repeat(4) } else { v };
                (k.as_str().unwrap().to_owned(), v)
            })
            .collect();
        let settings = camsig::config::Settings::load_from(None, env.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!settings.is_dev(), "{name} has a JWT secret");
        let url = env.iter().find(|(k, _)| k == "CAMSIG__REDIS__URL").map(|(_, v)| v.as_str()).unwrap_or_default();
        assert!(url.starts_with("redis://redis:"), "{name} uses the redis service: {url}");
        ids.push(settings.node.id.unwrap_or_else(|| panic!("{name}: a fixed node.id, so a restart takes over its sessions")));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "node ids are distinct: {ids:?}");
}

#[test]
fn nginx_balances_every_node_once_they_are_healthy_and_restarts() {
    let c = compose();
    let (lb_name, lb) = services(&c)
        .iter()
        .find(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("nginx")))
        .expect("an nginx service");
    let lb_name = lb_name.as_str().unwrap();
    restarts(lb_name, lb);
    let config = lb["configs"][0]["source"].as_str().expect("nginx's config");
    let content = c["configs"][config]["content"].as_str().unwrap();
    let upstream = content.split("upstream ").nth(1).and_then(|u| u.split('}').next()).expect("an upstream block");
    let upstreams: Vec<&str> = upstream.lines().filter_map(|l| l.trim().strip_prefix("server ")).collect();
    let nodes = nodes(&c);
    assert_eq!(upstreams.len(), nodes.len(), "one upstream per node: {upstreams:?}");
    for (name, _) in &nodes {
        assert!(upstreams.iter().any(|u| u.starts_with(&format!("{name}:8080"))), "{name} is behind nginx");
        assert_eq!(lb["depends_on"][name.as_str()]["condition"].as_str(), Some("service_healthy"), "nginx waits for {name}");
    }
    // service_healthy needs a healthcheck: the nodes take the image's.
    let dockerfile = read("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.lines().any(|l| l.starts_with("HEALTHCHECK ") && l.contains("/healthz")), "the image has a HEALTHCHECK");
    let user = last_stage.lines().rev().find_map(|l| l.strip_prefix("USER "));
    assert!(user.is_some_and(|u| !["root", "0"].contains(&u.trim())), "the image runs as a user, not root");
}

#[test]
fn the_readmes_compose_commands_name_real_services_and_commands() {
    let c = compose();
    let readme = read("README.md");
    assert!(readme.contains("docker compose up --build"), "README runs the compose flow");
    let mut seen = 0;
    for line in readme.lines() {
        let Some(rest) = line.split("docker compose exec ").nth(1) else { continue };
        let words: Vec<&str> = rest.split('#').next().unwrap().split_whitespace().filter(|w| *w != "-T").collect();
        let words: Vec<&str> = words.iter().map(|w| w.trim_end_matches(')')).collect();
        let service = words[0];
        assert!(services(&c).contains_key(service), "README: no service {service} in docker-compose.yml: {line}");
        assert_eq!(words[1], "camsig", "{line}");
        camsig::cli::Cli::try_parse_from(&words[1..]).unwrap_or_else(|e| panic!("README: {line}: {e}"));
        seen += 1;
    }
    assert!(seen > 0 && readme.contains("docker compose exec node1 camsig token ann"), "README mints a token in compose");
}
