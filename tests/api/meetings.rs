//! Meetings: a mesh of pair Connections with server-given roles, on one node.

use crate::support::*;
use serde_json::{Value, json};

async fn create(app: &TestApp, who: &str, body: Value) -> String {
    let r = app.post("meetings", &token(who), body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["meeting"]["meeting_id"].as_str().unwrap().to_owned()
}

async fn join(app: &TestApp, who: &str, meeting: &str, name: &str) -> Res {
    app.post(&format!("meetings/{meeting}/join"), &token(who), json!({"name": name})).await
}

#[actix_web::test]
async fn three_members_get_one_pair_each_with_the_earlier_member_offering() {
    let app = spawn_app().await;
    let mut ws: Vec<Ws> = Vec::new();
    for u in ["m1", "m2", "m3"] {
        ws.push(app.ws_query(&token(u), "?presence=false").await);
    }
    let id = create(&app, "m1", json!({"title": "Standup"})).await;
    let r = app.get(&format!("/webrtc/meetings/{id}"), Some(&token("m1"))).await;
    r.assert_error(403, "forbidden");

    let r = join(&app, "m1", &id, "Ann").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["connections"], json!([]));
    let r = join(&app, "m2", &id, "Bob").await;
    let pairs = r.body["connections"].as_array().unwrap().clone();
    assert_eq!(pairs.len(), 1, "{}", r.body);
    assert_eq!((pairs[0]["owner"].as_str(), pairs[0]["abonent"].as_str(), pairs[0]["meeting_id"].as_str()), (Some("m1"), Some("m2"), Some(id.as_str())));
    let ev = ws[0].expect("member_joined").await;
    assert_eq!(ev["data"], json!({"meeting_id": id, "user_id": "m2", "name": "Bob", "room_id": pairs[0]["room_id"]}));

    let r = join(&app, "m3", &id, "Cat").await;
    let third = r.body["connections"].as_array().unwrap().clone();
    let owners: Vec<_> = third.iter().map(|c| c["owner"].as_str().unwrap()).collect();
    assert_eq!(owners, ["m1", "m2"]);
    assert!(third.iter().all(|c| c["abonent"] == "m3" && c["state"] == "requested"));
    for (i, w) in ws[..2].iter_mut().enumerate() {
        let ev = w.expect("member_joined").await;
        assert_eq!((ev["data"]["user_id"].as_str(), &ev["data"]["room_id"]), (Some("m3"), &third[i]["room_id"]));
    }
    let m = app.get(&format!("/webrtc/meetings/{id}"), Some(&token("m2"))).await.body;
    let names: Vec<_> = m["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!((names, m["title"].as_str(), m["created_by"].as_str(), m["max_members"].as_u64()), (vec!["Ann", "Bob", "Cat"], Some("Standup"), Some("m1"), Some(8)));

    // Joining again answers the same pairs and tells nobody.
    let again = join(&app, "m3", &id, "Cat").await;
    assert_eq!((again.status, &again.body["connections"]), (200, &json!(third)));

    // The pair is an ordinary Connection: the earlier member offers.
    let room = third[0]["room_id"].as_str().unwrap();
    let r = app.post("offer", &token("m1"), json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(ws[2].expect("put_offer").await["data"]["room_id"], room);
    app.post("offer", &token("m3"), json!({"room_id": room, "offer": sdp("offer")})).await.assert_error(403, "forbidden");

    // Bob leaves: his two pairs close, the others hear hangup and member_left.
    let r = app.post(&format!("meetings/{id}/leave"), &token("m2"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["meeting"]["members"].as_array().unwrap().len(), 2);
    let (first, rest) = ws.split_at_mut(1);
    for w in [&mut first[0], &mut rest[1]] {
        let h = w.expect("hangup").await;
        assert_eq!((h["data"]["user_id"].as_str(), h["data"]["reason"].as_str()), (Some("m2"), Some("left")));
        let l = w.expect("member_left").await;
        assert_eq!(l["data"], json!({"meeting_id": id, "user_id": "m2", "reason": "left"}));
    }
    app.get(&format!("/webrtc/meetings/{id}"), Some(&token("m2"))).await.assert_error(403, "forbidden");
    app.post(&format!("meetings/{id}/leave"), &token("m2"), json!({})).await.assert_error(403, "forbidden");
    let pair = app.get(&format!("/webrtc/connections/{}", pairs[0]["room_id"].as_str().unwrap()), Some(&token("m1"))).await.body;
    assert_eq!((pair["state"].as_str(), pair["reason"].as_str()), (Some("closed"), Some("left")));
}

#[actix_web::test]
async fn names_seats_ids_and_bodies_are_checked() {
    let app = spawn_app_with(|s| s.limits.max_meeting_members = 3).await;
    app.post("meetings", &token("x"), json!({"max_members": 4})).await.assert_error(400, "bad_request");
    app.post("meetings", &token("x"), json!({"max_members": 0})).await.assert_error(400, "bad_request");
    let id = create(&app, "x", json!({"max_members": 2})).await;
    assert_eq!(join(&app, "a", &id, "Ann").await.status, 200);
    join(&app, "b", &id, "Ann").await.assert_error(409, "name_taken");
    join(&app, "b", &id, "").await.assert_error(400, "bad_request");
    assert_eq!(join(&app, "b", &id, "Bob").await.status, 200);
    join(&app, "c", &id, "Cat").await.assert_error(409, "meeting_full");
    join(&app, "c", "01JD3Z5T8Q9W2E4R6T8Y0U2I4O", "Cat").await.assert_error(404, "meeting_not_found");
    join(&app, "c", "not-an-id", "Cat").await.assert_error(404, "meeting_not_found");
    app.get("/webrtc/meetings/not-an-id", Some(&token("a"))).await.assert_error(404, "meeting_not_found");
    // The default seat count is the limit.
    let r = app.post("meetings", &token("x"), json!({})).await;
    assert_eq!(r.body["meeting"]["max_members"], 3);
}

#[actix_web::test]
async fn websocket_commands_run_meetings_too() {
    let app = spawn_app().await;
    let mut a = app.ws_query(&token("wa"), "?presence=false").await;
    let mut b = app.ws_query(&token("wb"), "?presence=false").await;
    let created = a.command(json!({"cmd": "meetingCreate", "ack": 1, "title": "ws"})).await;
    assert_eq!(created["cmd"], "ack", "{created}");
    let id = created["result"]["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    let j = a.command(json!({"cmd": "meetingJoin", "ack": 2, "meeting_id": id, "name": "A"})).await;
    assert_eq!(j["result"]["connections"], json!([]), "{j}");
    let j = b.command(json!({"cmd": "meetingJoin", "ack": 3, "meeting_id": id, "name": "B"})).await;
    assert_eq!(j["result"]["connections"][0]["owner"], "wa", "{j}");
    a.expect("member_joined").await;
    let l = b.command(json!({"cmd": "meetingLeave", "ack": 4, "meeting_id": id})).await;
    assert_eq!(l["action"], "meetingLeave", "{l}");
    a.expect("hangup").await;
    a.expect("member_left").await;
    let bad = b.command(json!({"cmd": "meetingJoin", "ack": 5, "meeting_id": id})).await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
}

#[actix_web::test]
async fn a_member_who_does_not_come_back_leaves_with_gone() {
    let app = spawn_app_with(|s| s.presence.grace = std::time::Duration::from_secs(1)).await;
    let mut stay = app.ws_query(&token("stay"), "?presence=false").await;
    let away = app.ws_query(&token("away"), "?presence=false").await;
    let id = create(&app, "stay", json!({})).await;
    join(&app, "stay", &id, "Stay").await;
    let pair = join(&app, "away", &id, "Away").await.body["connections"][0]["room_id"].clone();
    stay.expect("member_joined").await;
    away.close().await;
    let h = stay.expect("hangup").await;
    assert_eq!(h["data"], json!({"room_id": pair, "user_id": "away", "reason": "gone"}));
    let l = stay.expect("member_left").await;
    assert_eq!(l["data"]["reason"], "gone");
    let m = app.get(&format!("/webrtc/meetings/{id}"), Some(&token("stay"))).await.body;
    assert_eq!(m["members"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn a_meeting_with_no_member_is_gone_after_the_idle_ttl() {
    let app = spawn_app_with(|s| s.connections.idle_ttl = std::time::Duration::from_secs(1)).await;
    let id = create(&app, "solo", json!({})).await;
    assert_eq!(join(&app, "solo", &id, "Solo").await.status, 200);
    assert_eq!(app.post(&format!("meetings/{id}/leave"), &token("solo"), json!({})).await.status, 200);
    // Empty now: it exists (a non-member may not read it) until the TTL, then it is gone.
    let path = format!("/webrtc/meetings/{id}");
    assert_eq!(app.get(&path, Some(&token("late"))).await.status, 403);
    wait_until(std::time::Duration::from_secs(5), "the empty meeting to go", async || app.get(&path, Some(&token("late"))).await.status == 404).await;
    join(&app, "late", &id, "Late").await.assert_error(404, "meeting_not_found");
}

#[actix_web::test]
async fn joining_with_no_session_starts_the_grace_period() {
    let app = spawn_app_with(|s| s.presence.grace = std::time::Duration::from_secs(1)).await;
    let mut host = app.ws_query(&token("host2"), "?presence=false").await;
    let id = create(&app, "host2", json!({})).await;
    join(&app, "host2", &id, "Host").await;
    // A REST-only member who never opens a session is gone after the grace period.
    join(&app, "ghost", &id, "Ghost").await;
    host.expect("member_joined").await;
    host.expect("hangup").await;
    assert_eq!(host.expect("member_left").await["data"]["reason"], "gone");
}
