//! Every error row of the contract reachable on one node, the order the checks
//! run in, and that a refused call changes nothing; and the methods a path
//! answers (another gets 405 with `Allow`, HEAD works wherever GET does).

use crate::support::*;
use serde_json::{Value, json};

/// Ann's camera on and a room Bob opened on it.
async fn room(app: &TestApp) -> String {
    app.camera_on(&token("ann")).await;
    app.show(&token("bob"), "ann").await
}

fn offer(room: &str, desc: Value) -> Value {
    json!({"room_id": room, "offer": desc})
}

fn answer(room: &str, desc: Value) -> Value {
    json!({"room_id": room, "answer": desc})
}

const UNKNOWN_ROOM: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

#[actix_web::test]
async fn bad_request_for_malformed_missing_or_mistyped_bodies() {
    let app = spawn_app().await;
    let (ann, room) = (token("ann"), room(&app).await);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cameraShow", b"{not json".to_vec()),
        ("cameraShow", b"[1, 2]".to_vec()),
        ("cameraShow", json!({}).to_string().into_bytes()),
        ("cameraShow", json!({"user_id": 42}).to_string().into_bytes()),
        ("cameraShow", json!({"user_id": "two words"}).to_string().into_bytes()),
        ("cameraOn", json!({"meta": "not an object"}).to_string().into_bytes()),
        ("offer", json!({"room_id": room}).to_string().into_bytes()),
        ("offer", json!({"room_id": room, "offer": {"type": "offer"}}).to_string().into_bytes()),
        ("answer", json!({"room_id": 7, "answer": sdp("answer")}).to_string().into_bytes()),
        ("ice", json!({"room_id": room, "candidate": {"sdpMid": "0"}}).to_string().into_bytes()),
        ("ice", json!({"room_id": room, "candidate": candidate(1), "dest": "nobody"}).to_string().into_bytes()),
        ("hangup", json!({}).to_string().into_bytes()),
        ("hangup", json!({"room_id": room, "reason": ""}).to_string().into_bytes()),
        ("hangup", json!({"room_id": room, "reason": "x".repeat(65)}).to_string().into_bytes()),
    ];
    for (op, body) in cases {
        let r = app.post_raw(op, Some(&ann), body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{op} {}: {}", String::from_utf8_lossy(&body), r.body);
    }
    for q in ["?limit=0", "?limit=201", "?limit=many", "?camera=maybe"] {
        app.get(&format!("/webrtc/users{q}"), Some(&ann)).await.assert_error(400, "bad_request");
    }
    // Nothing was applied: the room is untouched and still open.
    let c = app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await;
    assert_eq!(c.body["state"], "requested");
}

#[actix_web::test]
async fn cannot_show_self() {
    let app = spawn_app().await;
    let ann = token("ann");
    app.camera_on(&ann).await;
    app.post("cameraShow", &ann, json!({"user_id": "ann"})).await.assert_error(400, "cannot_show_self");
    // 400 before 404: a caller unknown to the service is told the same.
    let zed = token("zed");
    app.post("cameraShow", &zed, json!({"user_id": "zed"})).await.assert_error(400, "cannot_show_self");
}

#[actix_web::test]
async fn forbidden_for_outsiders_wrong_roles_and_bad_dest() {
    let app = spawn_app().await;
    let (ann, bob, eve) = (token("ann"), token("bob"), token("eve"));
    let room = room(&app).await;
    let cases = [
        (&eve, "offer", offer(&room, sdp("offer"))),
        (&eve, "answer", answer(&room, sdp("answer"))),
        (&eve, "ice", json!({"room_id": room, "candidate": candidate(1)})),
        (&eve, "hangup", json!({"room_id": room})),
        (&bob, "offer", offer(&room, sdp("offer"))),   // the abonent cannot offer
        (&ann, "answer", answer(&room, sdp("answer"))), // the owner cannot answer
        (&ann, "ice", json!({"room_id": room, "candidate": candidate(1), "dest": "owner"})),
        (&bob, "ice", json!({"room_id": room, "candidate": candidate(1), "dest": "abonent"})),
    ];
    for (who, op, body) in cases {
        let r = app.post(op, who, body.clone()).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{op} {body}: {}", r.body);
    }
    app.get(&format!("/webrtc/connections/{room}"), Some(&eve)).await.assert_error(403, "forbidden");
    // The right dest is fine.
    assert_eq!(app.post("ice", &ann, json!({"room_id": room, "candidate": candidate(1), "dest": "abonent"})).await.status, 202);
    assert_eq!(app.post("ice", &bob, json!({"room_id": room, "candidate": candidate(1), "dest": "owner"})).await.status, 202);
    let c = app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await;
    assert_eq!(c.body["state"], "requested");
}

#[actix_web::test]
async fn not_found_users_rooms_and_routes() {
    let app = spawn_app().await;
    let ann = token("ann");
    app.post("cameraShow", &ann, json!({"user_id": "nobody"})).await.assert_error(404, "user_not_found");
    app.get("/webrtc/users/nobody", Some(&ann)).await.assert_error(404, "user_not_found");
    for room in ["not-a-ulid", UNKNOWN_ROOM] {
        app.post("offer", &ann, offer(room, sdp("offer"))).await.assert_error(404, "room_not_found");
        app.post("answer", &ann, answer(room, sdp("answer"))).await.assert_error(404, "room_not_found");
        app.post("ice", &ann, json!({"room_id": room, "candidate": candidate(1)})).await.assert_error(404, "room_not_found");
        app.post("hangup", &ann, json!({"room_id": room})).await.assert_error(404, "room_not_found");
        app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await.assert_error(404, "room_not_found");
    }
    let r = app.get("/no/such/route", None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}

#[actix_web::test]
async fn a_known_path_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    let r = app.get("/webrtc/offer", None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert_eq!(r.header("allow"), Some("POST"));
    let r = app.request_with_header("POST", "/webrtc/users/ann", None, None).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}

#[actix_web::test]
async fn head_works_wherever_get_does() {
    let app = spawn_app().await;
    for path in ["/healthz", "/", "/readyz", "/openapi.json"] {
        let r = app.http.head(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "HEAD {path}");
    }
    let mut r = app.http.head(app.url("/webrtc/users")).insert_header(("Authorization", format!("Bearer {}", token("ann")))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.body().await.unwrap().is_empty(), "HEAD has no body");
}

#[actix_web::test]
async fn a_null_body_reads_as_empty_and_a_plain_get_on_ws_is_400() {
    let app = spawn_app().await;
    let ann = token("ann");
    assert_eq!(app.post_raw("cameraOn", Some(&ann), b"null".to_vec()).await.status, 200);
    assert_eq!(app.post_raw("cameraOff", Some(&ann), b" null ".to_vec()).await.status, 200);
    app.post_raw("cameraShow", Some(&ann), b"null".to_vec()).await.assert_error(400, "bad_request");
    // Authenticated, but not an upgrade: a JSON 400, not an empty one.
    app.get("/ws", Some(&ann)).await.assert_error(400, "bad_request");
}

#[actix_web::test]
async fn camera_off_for_a_known_user_whose_camera_is_off() {
    let app = spawn_app().await;
    let _ann = app.ws(&token("ann")).await; // known, online, camera off
    let r = app.post("cameraShow", &token("bob"), json!({"user_id": "ann"})).await;
    r.assert_error(409, "camera_off");
    app.post("cameraOn", &token("cat"), json!({})).await;
    app.post("cameraOff", &token("cat"), json!({})).await;
    app.post("cameraShow", &token("bob"), json!({"user_id": "cat"})).await.assert_error(409, "camera_off");
}

#[actix_web::test]
async fn room_closed_for_every_call_after_hangup() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let room = room(&app).await;
    assert_eq!(app.post("hangup", &ann, json!({"room_id": room})).await.status, 200);
    app.post("offer", &ann, offer(&room, sdp("offer"))).await.assert_error(409, "room_closed");
    app.post("answer", &bob, answer(&room, sdp("answer"))).await.assert_error(409, "room_closed");
    app.post("ice", &bob, json!({"room_id": room, "candidate": candidate(1)})).await.assert_error(409, "room_closed");
    app.post("hangup", &bob, json!({"room_id": room})).await.assert_error(409, "room_closed");
    app.post("hangup", &ann, json!({"room_id": room})).await.assert_error(409, "room_closed");
}

#[actix_web::test]
async fn no_offer_when_answering_a_room_that_was_not_offered() {
    let app = spawn_app().await;
    let room = room(&app).await;
    app.post("answer", &token("bob"), answer(&room, sdp("answer"))).await.assert_error(409, "no_offer");
}

#[actix_web::test]
async fn too_many_viewers_until_a_slot_frees() {
    let app = spawn_app_with(|s| s.limits.max_viewers = 2).await;
    app.camera_on(&token("ann")).await;
    let first = app.show(&token("v1"), "ann").await;
    app.show(&token("v2"), "ann").await;
    app.post("cameraShow", &token("v3"), json!({"user_id": "ann"})).await.assert_error(409, "too_many_viewers");
    // A viewer already in is not a new one.
    assert_eq!(app.post("cameraShow", &token("v1"), json!({"user_id": "ann"})).await.status, 200);
    app.post("hangup", &token("v1"), json!({"room_id": first})).await;
    app.show(&token("v3"), "ann").await;
}

#[actix_web::test]
async fn payload_too_large_for_bodies_and_meta() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 4096).await;
    let ann = token("ann");
    let big = json!({"meta": {"pad": "x".repeat(5000)}}).to_string().into_bytes();
    app.post_raw("cameraOn", Some(&ann), big).await.assert_error(413, "payload_too_large");
    let meta = json!({"meta": {"pad": "x".repeat(1100)}});
    app.post("cameraOn", &ann, meta).await.assert_error(413, "payload_too_large");
    // Nothing was applied: Ann is still unknown.
    app.get("/webrtc/users/ann", Some(&ann)).await.assert_error(404, "user_not_found");
    // 1 KiB of meta is fine.
    let fits = json!({"meta": {"pad": "x".repeat(1000)}});
    assert_eq!(app.post("cameraOn", &ann, fits).await.status, 200);
}

#[actix_web::test]
async fn invalid_sdp_for_garbage_and_the_wrong_type() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let room = room(&app).await;
    let mut b = app.ws_query(&bob, "?presence=false").await;
    for desc in [sdp("answer"), json!({"type": "offer", "sdp": "hello"}), json!({"type": "offer", "sdp": "v=0\r\n"})] {
        app.post("offer", &ann, offer(&room, desc)).await.assert_error(422, "invalid_sdp");
    }
    let c = app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await;
    assert_eq!(c.body["state"], "requested");
    assert!(c.body.get("offer").is_none());

    assert_eq!(app.post("offer", &ann, offer(&room, sdp("offer"))).await.status, 202);
    for desc in [sdp("offer"), json!({"type": "answer", "sdp": "garbage"})] {
        app.post("answer", &bob, answer(&room, desc)).await.assert_error(422, "invalid_sdp");
    }
    // The refused offers sent nothing: Bob's first event is the good one.
    assert_eq!(b.expect("put_offer").await["data"]["offer"], sdp("offer"));
}

#[actix_web::test]
async fn invalid_candidate() {
    let app = spawn_app().await;
    let ann = token("ann");
    let room = room(&app).await;
    let cases = [
        json!({"candidate": "nonsense", "sdpMid": "0"}),
        json!({"candidate": "candidate:garbage", "sdpMid": "0"}),
        json!({"candidate": "candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host"}), // no sdpMid nor index
    ];
    for c in cases {
        let r = app.post("ice", &ann, json!({"room_id": room, "candidate": c})).await;
        assert_eq!((r.status, r.code()), (422, "invalid_candidate"), "{c}: {}", r.body);
    }
}

#[actix_web::test]
async fn rate_limited_with_retry_after_per_user() {
    let app = spawn_app_with(|s| s.limits.rate_per_s = std::num::NonZeroU32::new(1).unwrap()).await;
    let ann = token("ann");
    assert_eq!(app.get("/webrtc/users", Some(&ann)).await.status, 200);
    let r = app.get("/webrtc/users", Some(&ann)).await;
    r.assert_error(429, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    // 429 comes before the body's shape is looked at, on every route.
    app.post_raw("cameraShow", Some(&ann), b"{oops".to_vec()).await.assert_error(429, "rate_limited");
    // The limit is per user.
    assert_eq!(app.get("/webrtc/users", Some(&token("bob"))).await.status, 200);
}

#[actix_web::test]
async fn checks_run_in_the_contracts_order() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 2048).await;
    let (ann, bob, eve) = (token("ann"), token("bob"), token("eve"));
    let room = room(&app).await;
    // 401 before 400 and 413.
    app.post_raw("cameraShow", None, b"{oops".to_vec()).await.assert_error(401, "unauthorized");
    app.post_raw("cameraOn", None, vec![b' '; 4096]).await.assert_error(401, "unauthorized");
    // 400/413 before 404.
    app.post("offer", &ann, json!({"room_id": UNKNOWN_ROOM})).await.assert_error(400, "bad_request");
    let big = json!({"room_id": UNKNOWN_ROOM, "offer": {"type": "offer", "sdp": "x".repeat(4096)}});
    app.post("offer", &ann, big).await.assert_error(413, "payload_too_large");
    // 404 before 409: an unknown owner has no camera on either, and is not found.
    app.post("cameraShow", &bob, json!({"user_id": "ghost"})).await.assert_error(404, "user_not_found");
    // 403 before 409 and 422: an outsider on a closed room with a broken SDP.
    app.post("hangup", &bob, json!({"room_id": room})).await;
    app.post("offer", &eve, offer(&room, sdp("answer"))).await.assert_error(403, "forbidden");
    app.post("offer", &bob, offer(&room, json!({"type": "offer", "sdp": "junk"}))).await.assert_error(403, "forbidden");
    // 409 before 422.
    app.post("offer", &ann, offer(&room, json!({"type": "offer", "sdp": "junk"}))).await.assert_error(409, "room_closed");
    app.post("ice", &ann, json!({"room_id": room, "candidate": {"candidate": "junk", "sdpMid": "0"}})).await.assert_error(409, "room_closed");
    let open = app.show(&bob, "ann").await;
    app.post("answer", &bob, answer(&open, json!({"type": "answer", "sdp": "junk"}))).await.assert_error(409, "no_offer");
}
