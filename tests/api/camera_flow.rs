//! The whole life of a camera between two users, every event on both sides in order;
//! renegotiation; repeated cameraShow; one event reaching every session of a user.

use crate::support::*;
use serde_json::{Value, json};

fn ice(room: &str, candidate: Value) -> Value {
    json!({"room_id": room, "candidate": candidate})
}

#[actix_web::test]
async fn full_camera_flow_between_two_users() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));

    // Ann (owner) and Bob (viewer) connect; each hears who comes online.
    let mut a = app.ws(&ann).await;
    assert_eq!(a.hello["data"]["user_id"], "ann");
    a.expect_user("ann", true, "off").await;
    let mut b = app.ws(&bob).await;
    a.expect_user("bob", true, "off").await;
    b.expect_user("bob", true, "off").await;

    // Camera on, with meta.
    let r = app.post("cameraOn", &ann, json!({"meta": {"name": "Ann"}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["camera"], "on");
    let on_version = r.body["user"]["version"].as_u64().unwrap();
    for ws in [&mut a, &mut b] {
        let u = ws.expect_user("ann", true, "on").await;
        assert_eq!((&u["meta"], u["version"].as_u64()), (&json!({"name": "Ann"}), Some(on_version)));
    }

    // Bob asks to see it: a room, and Ann hears show_cam.
    let r = app.post("cameraShow", &bob, json!({"user_id": "ann"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let conn = &r.body["connection"];
    let room = conn["room_id"].as_str().unwrap().to_owned();
    assert_eq!(room.len(), 26, "a ULID: {room}");
    assert_eq!((conn["owner"].as_str(), conn["abonent"].as_str(), conn["state"].as_str()), (Some("ann"), Some("bob"), Some("requested")));
    assert!(conn["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.body["ice_servers"], json!([]));
    let show = a.expect("show_cam").await;
    assert_eq!(show["data"], json!({"room_id": room, "user_id": "bob"}));

    // Offer and answer.
    let r = app.post("offer", &ann, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!((r.status, r.body["connection"]["state"].as_str()), (202, Some("offered")), "{}", r.body);
    let offer = b.expect("put_offer").await;
    assert_eq!(offer["data"], json!({"room_id": room, "user_id": "ann", "offer": sdp("offer")}));

    let r = app.post("answer", &bob, json!({"room_id": room, "answer": sdp("answer")})).await;
    assert_eq!((r.status, r.body["connection"]["state"].as_str()), (202, Some("answered")), "{}", r.body);
    let answer = a.expect("put_answer").await;
    assert_eq!(answer["data"], json!({"room_id": room, "user_id": "bob", "answer": sdp("answer")}));

    // ICE both ways, interleaved; each side hears the other's in the order sent.
    let end = json!({"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0});
    let sent = [(&ann, candidate(1001)), (&bob, candidate(2001)), (&ann, candidate(1002)), (&bob, candidate(2002)), (&ann, end.clone())];
    for (who, c) in &sent {
        let r = app.post("ice", who, ice(&room, c.clone())).await;
        assert_eq!((r.status, &r.body), (202, &json!({"room_id": room})));
    }
    for (ws, from, cands) in [
        (&mut b, "ann", vec![candidate(1001), candidate(1002), end.clone()]),
        (&mut a, "bob", vec![candidate(2001), candidate(2002)]),
    ] {
        for c in cands {
            let ev = ws.expect("put_ice").await;
            assert_eq!(ev["data"], json!({"room_id": room, "user_id": from, "candidate": c}));
        }
    }

    // Bob hangs up; Ann hears it with Bob's reason.
    let r = app.post("hangup", &bob, json!({"room_id": room, "reason": "bye"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["connection"]["state"].as_str(), r.body["connection"]["room_id"].as_str()), (Some("closed"), Some(room.as_str())));
    let hangup = a.expect("hangup").await;
    assert_eq!(hangup["data"], json!({"room_id": room, "user_id": "bob", "reason": "bye"}));

    // Camera off: everyone hears it; no hangup, the room is already closed.
    let r = app.post("cameraOff", &ann, json!({})).await;
    assert_eq!((r.status, r.body["user"]["camera"].as_str()), (200, Some("off")));
    assert!(r.body["user"]["version"].as_u64().unwrap() > on_version);
    a.expect_user("ann", true, "off").await;
    b.expect_user("ann", true, "off").await;

    // A marker both hear next: nothing else was sent to either side in between.
    let _carl = app.ws(&token("carl")).await;
    a.expect_user("carl", true, "off").await;
    b.expect_user("carl", true, "off").await;

    // Each user's logged events carry strictly increasing ids, the newest in the next hello.
    let ann_ids = [&show, &answer, &hangup].map(event_id);
    assert!(ann_ids.windows(2).all(|w| w[0] < w[1]), "{ann_ids:?}");
    let again = app.ws(&ann).await;
    assert_eq!(again.hello["data"]["last_id"], hangup["id"]);
}

#[actix_web::test]
async fn renegotiation_goes_back_to_offered_and_ice_flows_in_every_open_state() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut b = app.ws_query(&bob, "?presence=false").await;
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;

    // ICE is accepted while requested, offered and answered.
    assert_eq!(app.post("ice", &ann, ice(&room, candidate(1))).await.status, 202);
    app.post("offer", &ann, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(app.post("ice", &ann, ice(&room, candidate(2))).await.status, 202);
    app.post("answer", &bob, json!({"room_id": room, "answer": sdp("answer")})).await;
    assert_eq!(app.post("ice", &ann, ice(&room, candidate(3))).await.status, 202);

    // A second answer to the same offer is refused.
    let r = app.post("answer", &bob, json!({"room_id": room, "answer": sdp("answer")})).await;
    r.assert_error(409, "no_offer");

    // The owner renegotiates (an ICE restart): back to offered, the old answer cleared.
    let r = app.post("offer", &ann, json!({"room_id": room, "offer": sdp_version("offer", 3)})).await;
    assert_eq!((r.status, r.body["connection"]["state"].as_str()), (202, Some("offered")), "{}", r.body);
    let c = app.get(&format!("/webrtc/connections/{room}"), Some(&bob)).await;
    assert_eq!((c.body["state"].as_str(), &c.body["offer"]), (Some("offered"), &sdp_version("offer", 3)));
    assert!(c.body.get("answer").is_none(), "{}", c.body);

    let r = app.post("answer", &bob, json!({"room_id": room, "answer": sdp_version("answer", 3)})).await;
    assert_eq!((r.status, r.body["connection"]["state"].as_str()), (202, Some("answered")));

    // Bob heard exactly this, in this order.
    let expected = [
        ("put_ice", json!({"room_id": room, "user_id": "ann", "candidate": candidate(1)})),
        ("put_offer", json!({"room_id": room, "user_id": "ann", "offer": sdp("offer")})),
        ("put_ice", json!({"room_id": room, "user_id": "ann", "candidate": candidate(2)})),
        ("put_ice", json!({"room_id": room, "user_id": "ann", "candidate": candidate(3)})),
        ("put_offer", json!({"room_id": room, "user_id": "ann", "offer": sdp_version("offer", 3)})),
    ];
    for (action, data) in expected {
        assert_eq!(b.expect(action).await["data"], data);
    }
}

#[actix_web::test]
async fn a_repeated_show_returns_the_open_room_and_tells_the_owner_once() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut a = app.ws_query(&ann, "?presence=false").await;
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;

    let r = app.post("cameraShow", &bob, json!({"user_id": "ann"})).await;
    assert_eq!((r.status, r.body["connection"]["room_id"].as_str()), (200, Some(room.as_str())), "{}", r.body);

    // The owner hears one show_cam, then the marker: Bob's candidate.
    app.post("ice", &bob, ice(&room, candidate(7))).await;
    assert_eq!(a.expect("show_cam").await["data"]["room_id"], room);
    assert_eq!(a.expect("put_ice").await["data"]["candidate"], candidate(7));

    // Once closed, a new show opens a new room.
    app.post("hangup", &bob, json!({"room_id": room})).await;
    assert_eq!(a.expect("hangup").await["data"], json!({"room_id": room, "user_id": "bob", "reason": "hangup"}));
    let again = app.show(&bob, "ann").await;
    assert_ne!(again, room);
    let ev = a.expect("show_cam").await;
    assert_eq!(ev["data"], json!({"room_id": again, "user_id": "bob"}));
}

#[actix_web::test]
async fn camera_off_closes_owned_rooms_only_and_tells_each_viewer() {
    let app = spawn_app().await;
    let (ann, bob, cat, dan) = (token("ann"), token("bob"), token("cat"), token("dan"));
    let mut b = app.ws_query(&bob, "?presence=false").await;
    let mut c = app.ws_query(&cat, "?presence=false").await;
    let mut d = app.ws_query(&dan, "?presence=false").await;
    app.camera_on(&ann).await;
    app.camera_on(&dan).await;
    let room_b = app.show(&bob, "ann").await;
    let room_c = app.show(&cat, "ann").await;
    let watching = app.show(&ann, "dan").await; // Ann is the viewer here.
    assert_eq!(d.expect("show_cam").await["data"]["room_id"], watching);

    let r = app.post("cameraOff", &ann, json!({})).await;
    assert_eq!((r.status, r.body["user"]["camera"].as_str()), (200, Some("off")));

    for (ws, room) in [(&mut b, &room_b), (&mut c, &room_c)] {
        let ev = ws.expect("hangup").await;
        assert_eq!(ev["data"], json!({"room_id": room, "user_id": "ann", "reason": "camera_off"}));
        let conn = app.get(&format!("/webrtc/connections/{room}"), Some(&ann)).await;
        assert_eq!((conn.body["state"].as_str(), conn.body["reason"].as_str()), (Some("closed"), Some("camera_off")));
    }
    app.post("offer", &ann, json!({"room_id": room_b, "offer": sdp("offer")})).await.assert_error(409, "room_closed");

    // The room Ann watches is still open: her candidate reaches Dan next.
    assert_eq!(app.post("ice", &ann, ice(&watching, candidate(9))).await.status, 202);
    assert_eq!(d.expect("put_ice").await["data"]["user_id"], "ann");

    // cameraOff again changes nothing: same version, no event.
    let again = app.post("cameraOff", &ann, json!({})).await;
    assert_eq!((again.status, &again.body["user"]["version"]), (200, &r.body["user"]["version"]));
}

#[actix_web::test]
async fn an_event_reaches_every_session_of_the_user() {
    let app = spawn_app().await;
    let ann = token("ann");
    let mut one = app.ws_query(&ann, "?presence=false").await;
    let mut two = app.ws_query(&ann, "?presence=false").await;
    app.camera_on(&ann).await;
    let room = app.show(&token("bob"), "ann").await;
    let (e1, e2) = (one.expect("show_cam").await, two.expect("show_cam").await);
    assert_eq!(e1, e2);
    assert_eq!(e1["data"]["room_id"], room);
}

#[actix_web::test]
async fn a_room_idle_while_negotiating_is_closed_for_both_sides() {
    let app = spawn_app_with(|s| s.connections.idle_ttl = std::time::Duration::from_secs(1)).await;
    let (ann, bob) = (token("ann"), token("bob"));
    let mut a = app.ws_query(&ann, "?presence=false").await;
    let mut b = app.ws_query(&bob, "?presence=false").await;
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    a.expect("show_cam").await;

    let to_ann = a.expect("hangup").await;
    assert_eq!(to_ann["data"], json!({"room_id": room, "user_id": "bob", "reason": "timeout"}));
    let to_bob = b.expect("hangup").await;
    assert_eq!(to_bob["data"], json!({"room_id": room, "user_id": "ann", "reason": "timeout"}));
    app.post("offer", &ann, json!({"room_id": room, "offer": sdp("offer")})).await.assert_error(409, "room_closed");
}
