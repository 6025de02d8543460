//! The GETs: users (filter and paging), one user, one room, ICE servers.

use crate::support::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<&str> {
    page["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect()
}

#[actix_web::test]
async fn users_are_filtered_and_paged_in_user_id_order() {
    let app = spawn_app_with(|s| s.presence.grace = std::time::Duration::from_secs(600)).await;
    let me = token("zz-me");
    for u in ["u3", "u1", "u5", "u2", "u4"] {
        app.camera_on(&token(u)).await; // camera on, offline
    }
    let mut viewer = app.ws(&me).await;
    let _online = app.ws(&token("o1")).await; // online, camera off
    let gone = app.ws(&token("o2")).await;
    gone.close().await; // known, offline, camera off: listed nowhere
    viewer.wait_user("o2", |u| u["online"] == false).await;

    let all = app.get("/webrtc/users", Some(&me)).await;
    assert_eq!(all.status, 200);
    assert_eq!(ids(&all.body), ["o1", "u1", "u2", "u3", "u4", "u5", "zz-me"]);
    assert_eq!(all.body["next_cursor"], Value::Null);
    let on = app.get("/webrtc/users?camera=on", Some(&me)).await;
    assert_eq!(ids(&on.body), ["u1", "u2", "u3", "u4", "u5"]);
    let off = app.get("/webrtc/users?camera=off", Some(&me)).await;
    assert_eq!(ids(&off.body), ["o1", "zz-me"]);

    // Pages of two, following next_cursor to the end.
    let (mut seen, mut cursor, mut pages) = (vec![], None::<String>, 0);
    loop {
        let q = match &cursor {
            Some(c) => format!("/webrtc/users?camera=on&limit=2&cursor={c}"),
            None => "/webrtc/users?camera=on&limit=2".into(),
        };
        let page = app.get(&q, Some(&me)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        seen.extend(ids(&page.body).into_iter().map(String::from));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, ["u1", "u2", "u3", "u4", "u5"].map(String::from).to_vec()));
    let exact = app.get("/webrtc/users?camera=on&limit=5", Some(&me)).await;
    assert_eq!((ids(&exact.body).len(), &exact.body["next_cursor"]), (5, &Value::Null));
}

#[actix_web::test]
async fn one_user_with_its_state() {
    let app = spawn_app().await;
    let ann = token("ann");
    let _a = app.ws(&ann).await;
    app.post("cameraOn", &ann, json!({"meta": {"name": "Ann", "age": 3}})).await;
    let r = app.get("/webrtc/users/ann", Some(&token("bob"))).await;
    assert_eq!(r.status, 200);
    let u = &r.body;
    assert_eq!(
        (u["user_id"].as_str(), u["online"].as_bool(), u["camera"].as_str(), &u["meta"]),
        (Some("ann"), Some(true), Some("on"), &json!({"name": "Ann", "age": 3}))
    );
    let v1 = u["version"].as_u64().unwrap();
    let at = u["updated_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'), "{at}");
    // A later cameraOn without meta keeps it (nothing changed, so neither
    // does the version); with new meta replaces it.
    app.camera_on(&ann).await;
    let u = app.get("/webrtc/users/ann", Some(&ann)).await.body;
    assert_eq!(u["meta"], json!({"name": "Ann", "age": 3}));
    let v2 = u["version"].as_u64().unwrap();
    app.post("cameraOn", &ann, json!({"meta": {"name": "Anna"}})).await;
    let u = app.get("/webrtc/users/ann", Some(&ann)).await.body;
    assert_eq!(u["meta"], json!({"name": "Anna"}));
    assert!(v1 == v2 && v2 < u["version"].as_u64().unwrap(), "every change raises the version, and only a change");
}

#[actix_web::test]
async fn a_room_is_readable_by_its_two_users_only_with_offer_and_answer() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    app.camera_on(&ann).await;
    let room = app.show(&bob, "ann").await;
    let path = format!("/webrtc/connections/{room}");

    let c = app.get(&path, Some(&bob)).await;
    assert_eq!(c.status, 200);
    assert_eq!(
        (c.body["room_id"].as_str(), c.body["owner"].as_str(), c.body["abonent"].as_str(), c.body["state"].as_str()),
        (Some(room.as_str()), Some("ann"), Some("bob"), Some("requested"))
    );
    assert!(c.body["created_at"].as_str().is_some());
    assert!(c.body.get("offer").is_none() && c.body.get("answer").is_none(), "{}", c.body);

    app.post("offer", &ann, json!({"room_id": room, "offer": sdp("offer")})).await;
    let c = app.get(&path, Some(&ann)).await;
    assert_eq!((c.body["state"].as_str(), &c.body["offer"]), (Some("offered"), &sdp("offer")));
    assert!(c.body.get("answer").is_none());

    app.post("answer", &bob, json!({"room_id": room, "answer": sdp("answer")})).await;
    let c = app.get(&path, Some(&bob)).await;
    assert_eq!((c.body["state"].as_str(), &c.body["offer"], &c.body["answer"]), (Some("answered"), &sdp("offer"), &sdp("answer")));

    app.get(&path, Some(&token("eve"))).await.assert_error(403, "forbidden");
}

#[actix_web::test]
async fn ice_servers_default_to_none() {
    let app = spawn_app().await;
    let r = app.get("/webrtc/iceServers", Some(&token("ann"))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"ice_servers": [], "ttl_s": 3600})));
    app.get("/webrtc/iceServers", None).await.assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn ice_servers_hand_out_turn_rest_api_credentials() {
    const TURN_SECRET: &str = "turn-shared-secret";
    let app = spawn_app_with(|s| {
        s.ice.stun_urls = vec!["stun:stun.example.org:3478".into()];
        s.ice.turn_urls = vec!["turn:turn.example.org:3478?transport=udp".into(), "turns:turn.example.org:5349".into()];
        s.ice.turn_secret = Some(TURN_SECRET.into());
        s.ice.turn_ttl = std::time::Duration::from_secs(600);
    })
    .await;
    let before = now();
    let r = app.get("/webrtc/iceServers", Some(&token("ann"))).await;
    assert_eq!((r.status, r.body["ttl_s"].as_u64()), (200, Some(600)), "{}", r.body);
    let servers = r.body["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{}", r.body);
    assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org:3478"]}));
    let turn = &servers[1];
    assert_eq!(turn["urls"], json!(["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]));

    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(user, "ann");
    assert!((before + 600..=now() + 600).contains(&expiry), "{expiry}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TURN_SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(turn["credential"], expected);

    // cameraShow hands the viewer the same kind of list, with their own credentials.
    app.camera_on(&token("bob")).await;
    let r = app.post("cameraShow", &token("ann"), json!({"user_id": "bob"})).await;
    let list = r.body["ice_servers"].as_array().unwrap();
    assert_eq!((list.len(), &list[0]), (2, &servers[0]));
    assert!(list[1]["username"].as_str().unwrap().ends_with(":ann"));
}
