//! Input consistency: crafted token claims, invisible characters, repeated
//! JSON keys and oversized candidate fields are refused with the contract's
//! codes and plain messages, the same over REST and the WebSocket.

use crate::support::*;
use serde_json::{Value, json};

/// Words of Rust types and crate internals that no error message may carry.
const INTERNAL_WORDS: [&str; 12] = [
    "InvalidSignature", "ExpiredSignature", "ImmatureSignature", "InvalidToken", "Algorithm", "HS384", "HS512",
    "struct", "enum ", "Body", "SessionDescription", "IceCandidate",
];

#[track_caller]
fn assert_plain(r: &Res) {
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{}", r.body);
    for word in INTERNAL_WORDS {
        assert!(!message.contains(word), "{word:?} in {message:?}");
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET /webrtc/users with `token`: its 401 answer, checked on the handshake too.
async fn refused(app: &TestApp, token: &str) -> Res {
    let r = app.get("/webrtc/users", Some(token)).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(app.ws_refused("", Some(&bearer(token))).await, 401);
    r
}

#[actix_web::test]
async fn a_token_not_valid_yet_is_refused() {
    let app = spawn_app().await;
    let r = refused(&app, &token_with(json!({"sub": "ann", "exp": now() + 3600, "nbf": now() + 600}), SECRET)).await;
    assert_eq!(r.body["error"]["message"], "token not valid yet");
    // Within the 5 s of clock skew it is fine.
    let soon = token_with(json!({"sub": "ann", "exp": now() + 3600, "nbf": now() + 2}), SECRET);
    assert_eq!(app.get("/webrtc/users", Some(&soon)).await.status, 200);
}

#[actix_web::test]
async fn a_token_issued_in_the_future_is_refused() {
    let app = spawn_app().await;
    let r = refused(&app, &token_with(json!({"sub": "ann", "exp": now() + 3600, "iat": now() + 600}), SECRET)).await;
    assert_eq!(r.body["error"]["message"], "token issued in the future");
    let skewed = token_with(json!({"sub": "ann", "exp": now() + 3600, "iat": now() + 2}), SECRET);
    assert_eq!(app.get("/webrtc/users", Some(&skewed)).await.status, 200);
}

#[actix_web::test]
async fn unauthorized_messages_are_plain_words() {
    let app = spawn_app().await;
    let claims = json!({"sub": "ann", "exp": now() + 3600});
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        (token_with(claims.clone(), "another-secret-another-secret-0123456"), "token signed with another secret"),
        (token_with(json!({"sub": "ann", "exp": now() - 3600}), SECRET), "token expired"),
        (hs512, "token must be signed with HS256"),
        ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4ifQ.".into(), "token must be signed with HS256"),
        ("not.a.jwt".into(), "malformed token"),
        (token_with(json!({"sub": 42, "exp": now() + 3600}), SECRET), "token's sub is missing or not a string"),
    ];
    for (token, want) in cases {
        let r = refused(&app, &token).await;
        assert_plain(&r);
        assert_eq!(r.body["error"]["message"], want, "{token}");
    }
    let r = app.get("/webrtc/users", None).await;
    assert_eq!((r.status, r.body["error"]["message"].as_str()), (401, Some("missing bearer token")));
}

#[actix_web::test]
async fn body_errors_name_json_kinds_not_rust_types() {
    let app = spawn_app().await;
    let ann = token("ann");
    let r = app.post_raw("cameraOn", Some(&ann), b"\"x\"".to_vec()).await;
    r.assert_error(400, "bad_request");
    assert_plain(&r);
    assert_eq!(r.body["error"]["message"], "the body must be a JSON object");

    app.camera_on(&ann).await;
    let room = app.show(&token("bob"), "ann").await;
    let cases = [
        ("cameraShow", json!({"user_id": 42}), "expected a string"),
        ("offer", json!({"room_id": room, "offer": "v=0"}), "expected a JSON object"),
        ("ice", json!({"room_id": room, "candidate": {"candidate": "", "sdpMLineIndex": 70000}}), "expected an integer from 0 to 65535"),
        ("ice", json!({"room_id": room, "candidate": candidate(1), "dest": 3}), "expected one of the allowed strings"),
        ("offer", json!({"room_id": room}), "missing field `offer`"),
    ];
    let mut ws = app.ws_query(&ann, "?presence=false").await;
    for (op, body, want) in cases {
        let r = app.post(op, &ann, body.clone()).await;
        r.assert_error(400, "bad_request");
        assert_plain(&r);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{op} {body}: {message}");
        // The same fields as a WebSocket command get the same words.
        let mut cmd = body.clone();
        cmd["cmd"] = json!(op);
        let reply = ws.command(cmd).await;
        assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
        let ws_message = reply["error"]["message"].as_str().unwrap();
        assert!(ws_message.contains(want) && !ws_message.contains("struct"), "{op}: {ws_message}");
    }
    // Query strings too: no framework prefix, no type names.
    for query in ["limit=many", "camera=maybe", "limit=-1"] {
        let r = app.get(&format!("/webrtc/users?{query}"), Some(&ann)).await;
        r.assert_error(400, "bad_request");
        assert_plain(&r);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid query string: ") && !message.contains("Query deserialize"), "{query}: {message}");
    }
}

#[actix_web::test]
async fn a_sub_with_invisible_characters_is_unauthorized() {
    let app = spawn_app().await;
    for sub in ["ann\u{202E}", "\u{200B}ann", "ann\u{FEFF}"] {
        let t = token_with(json!({"sub": sub, "exp": now() + 3600}), SECRET);
        let r = refused(&app, &t).await;
        assert_plain(&r);
    }
    // Nobody was created under a look-alike of ann.
    let r = app.get("/webrtc/users", Some(&token("bob"))).await;
    assert_eq!(r.body["users"], json!([]), "{}", r.body);
}

#[actix_web::test]
async fn a_hangup_reason_with_invisible_characters_or_a_newline_is_bad_request() {
    let app = spawn_app().await;
    let (_a, _b, room) = app.ann_shows_bob().await;
    let bob = token("bob");
    for reason in ["bye\u{202E}olleh", "bye\nFAKE LOG LINE", "\u{200B}"] {
        let r = app.post("hangup", &bob, json!({"room_id": room, "reason": reason})).await;
        r.assert_error(400, "bad_request");
        assert_plain(&r);
    }
    let c = app.get(&format!("/webrtc/connections/{room}"), Some(&bob)).await;
    assert_eq!(c.body["state"], "requested", "{}", c.body);
}

#[actix_web::test]
async fn a_meeting_name_with_invisible_characters_is_bad_request() {
    let app = spawn_app().await;
    let ann = token("ann");
    let r = app.post("meetings", &ann, json!({"title": "Standup"})).await;
    let id = r.body["meeting"]["meeting_id"].as_str().expect("a meeting").to_owned();
    for name in ["Bob\u{200B}", "\u{202E}boB", "Bob\u{2066}"] {
        let r = app.post(&format!("meetings/{id}/join"), &ann, json!({"name": name})).await;
        r.assert_error(400, "bad_request");
    }
    let r = app.post("meetings", &ann, json!({"title": "Stand\u{202E}up"})).await;
    r.assert_error(400, "bad_request");
}

#[actix_web::test]
async fn a_websocket_command_with_a_repeated_key_is_refused_and_not_run() {
    let app = spawn_app().await;
    let mut a = app.ws_query(&token("ann"), "?presence=false").await;
    a.send_text(r#"{"cmd":"ping","cmd":"cameraOn"}"#).await;
    let r = a.next().await;
    assert_eq!((r["cmd"].as_str(), r["error"]["code"].as_str()), (Some("error"), Some("bad_request")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("duplicate key `cmd`"), "{r}");
    a.send_text(r#"{"cmd":"cameraOn","ack":1,"meta":{"name":"Ann","name":"Admin"}}"#).await;
    let r = a.next().await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    // Neither ran: the camera is still off, and the session still works.
    let u = app.get("/webrtc/users/ann", Some(&token("bob"))).await;
    assert_eq!(u.body["camera"], "off", "{}", u.body);
    assert_eq!(a.command(json!({"cmd": "ping", "ack": 2})).await["cmd"], "ack");
}

#[actix_web::test]
async fn a_rest_body_with_a_repeated_key_is_refused() {
    let app = spawn_app().await;
    let ann = token("ann");
    for body in [r#"{"meta":{"name":"Ann","name":"Admin"}}"#, r#"{"meta":{"a":{"b":1,"b":2}}}"#, r#"{"meta":{},"meta":{}}"#] {
        let r = app.post_raw("cameraOn", Some(&ann), body.as_bytes().to_vec()).await;
        r.assert_error(400, "bad_request");
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with("duplicate key"), "{}", r.body);
    }
    app.get("/webrtc/users/ann", Some(&token("bob"))).await.assert_error(404, "user_not_found");
}

#[actix_web::test]
async fn oversized_candidate_fields_are_invalid_candidate() {
    let app = spawn_app().await;
    let (_a, _b, room) = app.ann_shows_bob().await;
    let bob = token("bob");
    let line = |len: usize| {
        let base = "candidate:1 1 udp 2113937151 192.0.2.1 54400 typ host generation 0 ufrag ";
        format!("{base}{}", "u".repeat(len - base.len()))
    };
    let with = |candidate: String, mid: String, ufrag: String| -> Value {
        json!({"room_id": room, "candidate": {"candidate": candidate, "sdpMid": mid, "usernameFragment": ufrag}})
    };
    let cases = [
        (with(line(100), "0".into(), "u".repeat(257)), "usernameFragment"),
        (with(line(100), "m".repeat(33), "abcd".into()), "sdpMid"),
        (with(line(1025), "0".into(), "abcd".into()), "candidate"),
    ];
    for (body, field) in cases {
        let r = app.post("ice", &bob, body).await;
        r.assert_error(422, "invalid_candidate");
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with(field), "{}", r.body);
    }
    // At the bounds they are accepted.
    let r = app.post("ice", &bob, with(line(1024), "m".repeat(32), "u".repeat(256))).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

/// Issue #23, item 11: names that read alike, blanks that pass for letters,
/// and a `meta.name` with hidden characters, each against a node process.
#[actix_web::test]
async fn lookalike_names_and_blank_names_are_refused() {
    let node = crate::node::ProcNode::start(&[]).await;
    let (status, m) = node.post("meetings", &token("host"), None, &json!({"title": "t"})).await;
    assert_eq!(status, 201, "{m}");
    let join = format!("meetings/{}/join", m["meeting"]["meeting_id"].as_str().unwrap());
    assert_eq!(node.post(&join, &token("ann"), None, &json!({"name": "Ann"})).await.0, 200);
    for (i, name) in ["\u{410}nn", "A\u{200D}nn", "Ann\u{301}", "ANN"].iter().enumerate() {
        let (status, body) = node.post(&join, &token(&format!("look{i}")), None, &json!({"name": name})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("name_taken")), "{name:?}: {body}");
    }
    for (i, name) in ["\u{3164}", "\u{2800}", "Ann\u{3164}", "!!"].iter().enumerate() {
        let (status, body) = node.post(&join, &token(&format!("blank{i}")), None, &json!({"name": name})).await;
        assert_eq!(status, 400, "{name:?}: {body}");
    }
    for meta_name in [json!("Ann\u{202E}"), json!("Ann\u{200B}"), json!("A\nB"), json!("A\u{0}"), json!("\u{3164}"), json!(7)] {
        let (status, body) = node.post("cameraOn", &token("meta"), None, &json!({"meta": {"name": meta_name}})).await;
        assert_eq!(status, 400, "{meta_name}: {body}");
    }
    assert_eq!(node.post("cameraOn", &token("meta"), None, &json!({"meta": {"name": "Zoë 👩\u{200D}👩\u{200D}👧"}})).await.0, 200);
}
