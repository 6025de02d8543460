//! The binary: `--help` (which tells where configuration comes from) and
//! `--version`, `camsig token` prints a token the server accepts (in dev mode
//! too, across restarts), and a bad configuration stops the server at start
//! with one line naming the key (an unknown one with the key it meant).

use crate::support::*;
use std::process::{Command, Output};

fn camsig(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camsig"));
    cmd.args(args).env_remove("CAMSIG_CONFIG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CAMSIG__")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().expect("camsig runs")
}

#[actix_web::test]
async fn camsig_token_prints_a_token_the_server_accepts() {
    let app = spawn_app().await;
    let out = camsig(&["token", "42", "--ttl", "120"], &[("CAMSIG__AUTH__JWT_SECRET", SECRET)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let ws = app.ws(&t).await;
    assert_eq!(ws.hello["data"]["user_id"], "42");

    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&t, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &v).unwrap().claims;
    assert_eq!(claims["sub"], "42");
    let exp = claims["exp"].as_u64().unwrap();
    assert!((now() + 110..=now() + 121).contains(&exp), "{exp}");

    let out = camsig(&["token", "ann", "--name", "Ann", "--admin"], &[("CAMSIG__AUTH__JWT_SECRET", SECRET)]);
    let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = jsonwebtoken::decode::<serde_json::Value>(&t, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &v).unwrap().claims;
    assert_eq!((claims["sub"].as_str(), claims["name"].as_str(), claims["admin"].as_bool()), (Some("ann"), Some("Ann"), Some(true)));
    for bad in [&["token"][..], &["token", "ann", "--ttl", "0"], &["token", "a b"], &["token", "ann", "--nope"]] {
        let out = camsig(bad, &[("CAMSIG__AUTH__JWT_SECRET", SECRET)]);
        assert!(!out.status.success() && out.stdout.is_empty(), "{bad:?}");
    }
}

fn temp_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("camsig-{name}-{}-{}", std::process::id(), now()));
    d.display().to_string()
}

#[actix_web::test]
async fn dev_mode_keeps_its_secret_so_tokens_outlive_a_restart_and_the_cli_signs_for_it() {
    let dir = temp_dir("dev");
    let dev = |dir: String| move |s: &mut camsig::config::Settings| {
        s.auth.jwt_secret = None;
        s.server.data_dir = Some(dir);
    };
    let first = spawn_app_with(dev(dir.clone())).await;
    let r = first.request_with_header("POST", "/dev/token", None, Some(serde_json::json!({"user_id": "ann"}))).await;
    let page_token = r.body["token"].as_str().unwrap().to_owned();
    first.handle.stop(false).await;
    let out = camsig(&["token", "bob"], &[("CAMSIG__SERVER__DATA_DIR", &dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let again = spawn_app_with(dev(dir.clone())).await;
    assert_eq!(again.ws(&page_token).await.hello["data"]["user_id"], "ann", "an open page stays signed in");
    assert_eq!(again.ws(&cli_token).await.hello["data"]["user_id"], "bob");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_and_version_go_to_stdout_and_succeed() {
    for args in [&["--help"][..], &["-h"], &["help"], &["token", "--help"], &["serve", "--help"]] {
        let out = camsig(args, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Usage: camsig"), "{args:?}: {text}");
    }
    // Every --help says where configuration comes from, and how the port is set.
    for args in [&["--help"][..], &["serve", "--help"], &["token", "--help"]] {
        let text = String::from_utf8_lossy(&camsig(args, &[]).stdout).into_owned();
        for needle in ["CAMSIG_CONFIG", "CAMSIG__SECTION__KEY", "CAMSIG__SERVER__BIND=", "server.bind", "examples/camsig.toml"] {
            assert!(text.contains(needle), "{args:?} should name {needle}: {text}");
        }
    }
    let out = camsig(&["--version"], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("camsig {}", env!("CARGO_PKG_VERSION")));
    let out = camsig(&["nope"], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Usage: camsig"));
}

#[test]
fn dev_mode_says_where_the_demo_page_is() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("demo");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_camsig"))
        .env_remove("CAMSIG__AUTH__JWT_SECRET")
        .env("CAMSIG__SERVER__BIND", "127.0.0.1:0")
        .env("CAMSIG__SERVER__DATA_DIR", &dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.map_while(Result::ok) {
        seen.push(line.clone());
        if line.contains("demo page: http://127.0.0.1:") || seen.len() > 50 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let log = seen.join("\n");
    assert!(log.contains("demo page: http://127.0.0.1:"), "{log}");
    assert!(log.contains(&dir), "the warning names where the dev secret is kept: {log}");
}

#[test]
fn every_key_with_a_bad_value_stops_the_server_with_one_line_naming_it() {
    let cases = [
        ("server.bind", "localhost:8080"),
        ("server.workers", "99999"),
        ("server.drain_s", "0"),
        ("server.body_timeout_s", "soon"),
        ("server.header_timeout_s", "0"),
        ("server.max_conns_per_ip", "0"),
        ("server.trusted_proxies", "proxy.local"),
        ("server.allowed_origins", "app.example.com"),
        ("server.data_dir", ""),
        ("node.id", "two words"),
        ("redis.url", "http://127.0.0.1:6379"),
        ("redis.prefix", "a b"),
        ("redis.probe_s", "0"),
        ("redis.min_replicas_acked", "17"),
        ("auth.jwt_secret", "short"),
        ("auth.refresh_before_s", "-1"),
        ("presence.ttl_s", "0"),
        ("presence.grace_s", "soon"),
        ("presence.forget_after_s", "-5"),
        ("presence.flap_window_ms", "soon"),
        ("ice.stun_urls", "http://stun.example.org"),
        ("ice.turn_urls", "turn:turn.example.org"),
        ("ice.turn_ttl_s", "0"),
        ("limits.max_body_bytes", "100"),
        ("limits.rate_per_s", "0"),
        ("limits.max_viewers", "0"),
        ("limits.max_meeting_members", "1"),
        ("limits.max_sessions_per_user", "0"),
        ("limits.max_idempotency_keys", "0"),
        ("limits.presence_per_min", "many"),
        ("limits.poll_max_bytes", "1000"),
        ("limits.max_polls_per_user", "0"),
        ("limits.max_meetings_per_user", "0"),
        ("limits.max_watch", "0"),
        ("presence.broadcast", "some"),
        ("events.keep_s", "0"),
        ("events.keep_max", "x"),
        ("connections.idle_ttl_s", "0"),
        ("ws.heartbeat_s", "0"),
        ("ws.max_queued", "0"),
        ("ws.max_queued_bytes", "0"),
        ("ws.send_buffer_bytes", "big"),
        ("log.format", "xml"),
        ("log.level", "[[["),
        ("limits.nope", "1"),
    ];
    for (key, value) in cases {
        let var = format!("CAMSIG__{}", key.replace('.', "__").to_uppercase());
        let out = camsig(&["token", "x"], &[(&var, value)]);
        assert!(!out.status.success(), "{key}={value} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{key}: one line: {err}");
        let named = if key == "ice.turn_urls" { "ice.turn_secret" } else { key };
        assert!(err.contains(named), "{key}: {err}");
        for word in ["panicked", "struct", "enum ", "LogFormat", "Settings"] {
            assert!(!err.contains(word), "{key}: {err}");
        }
    }
    // The server itself stops the same way.
    let out = camsig(&[], &[("CAMSIG__SERVER__WORKERS", "99999")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("server.workers"));
}

#[test]
fn an_unknown_key_names_the_one_meant_and_the_example_file_loads() {
    let out = camsig(&["token", "x"], &[("CAMSIG__SERVER__PORT", "9000")]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "camsig: invalid configuration: unknown key `server.port` (did you mean `server.bind`?)"
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/camsig.toml");
    let out = camsig(&["token", "ann"], &[("CAMSIG_CONFIG", example), ("CAMSIG__AUTH__JWT_SECRET", SECRET)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
