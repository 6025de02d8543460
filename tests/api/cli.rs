//! The binary: `camsig token` prints a token the server accepts; a bad
//! configuration stops the server at start with one line naming the key.

use crate::helpers::*;
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

    // With no secret configured there is nothing to sign with.
    let out = camsig(&["token", "42"], &[]);
    assert!(!out.status.success());
}

#[test]
fn a_bad_configuration_stops_the_server_with_one_line_naming_the_key() {
    for (key, value, name) in [
        ("CAMSIG__PRESENCE__TTL_S", "soon", "ttl_s"),
        ("CAMSIG__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
        ("CAMSIG__ICE__TURN_URLS", "turn:turn.example.org", "ice.turn_secret"),
        ("CAMSIG__SERVER__BIND", "nowhere", "server.bind"),
    ] {
        let out = camsig(&[], &[(key, value)]);
        assert!(!out.status.success(), "{key}={value} must stop the server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(name), "{err} names {name}");
    }
}
