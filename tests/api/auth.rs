//! Tokens: every kind of bad one is refused with 401 on REST and on the
//! WebSocket handshake; `?token=` works on `/ws`; dev mode hands out tokens.

use crate::support::*;
use serde_json::{Value, json};

/// Bad `Authorization` headers, with what is wrong with each.
fn bad_headers() -> Vec<(&'static str, String)> {
    let exp = now() + 3600;
    vec![
        ("malformed", "Bearer not.a.jwt".into()),
        ("garbage", "Bearer garbage".into()),
        ("empty", "Bearer ".into()),
        ("wrong signature", format!("Bearer {}", token_with(json!({"sub": "ann", "exp": exp}), "another-secret-another-secret-0123456"))),
        ("expired", format!("Bearer {}", token_with(json!({"sub": "ann", "exp": now() - 3600}), SECRET))),
        ("missing exp", format!("Bearer {}", token_with(json!({"sub": "ann"}), SECRET))),
        ("missing sub", format!("Bearer {}", token_with(json!({"exp": exp}), SECRET))),
        ("numeric sub", format!("Bearer {}", token_with(json!({"sub": 42, "exp": exp}), SECRET))),
        ("empty sub", format!("Bearer {}", token_with(json!({"sub": "", "exp": exp}), SECRET))),
        ("wrong scheme", format!("Basic {}", token("ann"))),
        ("no scheme", token("ann")),
    ]
}

#[actix_web::test]
async fn every_kind_of_bad_token_is_unauthorized_on_rest() {
    let app = spawn_app().await;
    let r = app.request_with_header("GET", "/webrtc/users", None, None).await;
    r.assert_error(401, "unauthorized");
    for (what, header) in bad_headers() {
        for (method, path, body) in [("GET", "/webrtc/users", None), ("POST", "/webrtc/cameraOn", Some(json!({})))] {
            let r = app.request_with_header(method, path, Some(&header), body).await;
            assert_eq!((r.status, r.code()), (401, "unauthorized"), "{what} on {path}: {}", r.body);
        }
    }
    // Nobody was created by a refused cameraOn.
    app.get("/webrtc/users/ann", Some(&token("bob"))).await.assert_error(404, "user_not_found");
    // `?token=` is for WebSockets only.
    let r = app.get(&format!("/webrtc/users?token={}", token("ann")), None).await;
    r.assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn good_tokens_are_accepted_with_or_without_a_name() {
    let app = spawn_app().await;
    let named = token_with(json!({"sub": "42", "exp": now() + 60, "name": "Ann"}), SECRET);
    let r = app.request_with_header("POST", "/webrtc/cameraOn", Some(&format!("bearer {named}")), Some(json!({}))).await;
    assert_eq!((r.status, r.body["user"]["user_id"].as_str()), (200, Some("42")), "{}", r.body);
    assert_eq!(app.get("/webrtc/users/42", Some(&token("7"))).await.status, 200);
}

#[actix_web::test]
async fn the_websocket_handshake_is_refused_with_401() {
    let app = spawn_app().await;
    assert_eq!(app.ws_refused("", None).await, 401);
    for (what, header) in bad_headers() {
        assert_eq!(app.ws_refused("", Some(&header)).await, 401, "{what}");
    }
    let expired = token_with(json!({"sub": "ann", "exp": now() - 3600}), SECRET);
    assert_eq!(app.ws_refused(&format!("?token={expired}"), None).await, 401);
    assert_eq!(app.ws_refused("?token=garbage", None).await, 401);
    // A refused handshake left nobody online.
    app.get("/webrtc/users/ann", Some(&token("bob"))).await.assert_error(404, "user_not_found");
}

#[actix_web::test]
async fn a_browser_websocket_passes_its_token_in_the_query() {
    let app = spawn_app().await;
    let ws = app.ws_bare(&format!("?token={}", token("ann"))).await;
    let hello = &ws.hello["data"];
    assert_eq!(hello["user_id"].as_str(), Some("ann"));
    assert!(hello["last_id"].as_str().is_some_and(|l| l != "0-0"), "{hello}");
    assert!(hello["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(hello["node_id"], app.node.id.as_ref());
    let u = app.get("/webrtc/users/ann", Some(&token("bob"))).await;
    assert_eq!(u.body["online"], true);
}

#[actix_web::test]
async fn dev_mode_hands_out_tokens_that_work() {
    let app = spawn_app_with(|s| s.auth.jwt_secret = None).await;
    let r = app.request_with_header("POST", "/dev/token", None, Some(json!({"user_id": "dev1"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.body["token"].as_str().expect("a token").to_owned();

    let ws = app.ws(&t).await;
    assert_eq!(ws.hello["data"]["user_id"], "dev1");
    let r = app.camera_on(&t).await;
    assert_eq!((r.status, r.body["user"]["user_id"].as_str()), (200, Some("dev1")));
    // A token signed with any other secret is refused: the per-process secret is random.
    app.camera_on(&token("dev1")).await.assert_error(401, "unauthorized");
    let r = app.request_with_header("POST", "/dev/token", None, Some(json!({}))).await;
    r.assert_error(400, "bad_request");
}

#[actix_web::test]
async fn with_a_secret_the_dev_token_route_does_not_exist() {
    let app = spawn_app().await;
    let r = app.request_with_header("POST", "/dev/token", None, Some(json!({"user_id": "dev1"}))).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    assert_eq!(r.body["token"], Value::Null);
    // Whatever the body: the route is not there.
    for body in [json!({}), json!([1])] {
        let r = app.request_with_header("POST", "/dev/token", None, Some(body)).await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
}
