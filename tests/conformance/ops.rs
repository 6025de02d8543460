//! The contract's operations under concurrency, on one memory node and on
//! three Redis nodes: the same scenarios, the same outcomes.

use futures_util::future::join_all;
use serde_json::{Value, json};
use std::time::Duration;

use crate::Kind;
use crate::support::cluster::{Redis, node_with};
use crate::support::*;

on_both!(
    a_hundred_concurrent_shows_on_one_owner_give_exactly_max_viewers_rooms,
    offers_and_answers_racing_through_two_nodes_leave_a_legal_state,
    version_strictly_increases_across_nodes,
    ten_users_joining_at_once_through_three_nodes_get_every_pair_exactly_once,
);

/// The nodes a scenario spreads its calls over: one memory node (three
/// times), or three nodes on one Redis.
struct Nodes {
    name: &'static str,
    nodes: Vec<TestApp>,
    _redis: Option<Redis>,
}

/// The nodes of `kind`, each with settings changed by `f`.
async fn nodes(kind: Kind, f: impl Fn(&mut camsig::config::Settings) + Clone) -> Nodes {
    match kind {
        Kind::Memory => {
            let one = spawn_app_with(f).await;
            Nodes { name: "memory", nodes: vec![one.clone(), one.clone(), one], _redis: None }
        }
        Kind::Redis | Kind::Sharded => {
            let redis = Redis::start().await;
            let shards = if matches!(kind, Kind::Sharded) { 4 } else { 1 };
            let mut nodes = Vec::new();
            for n in ["c1", "c2", "c3"] {
                let f = f.clone();
                nodes.push(
                    node_with(&redis, n, move |s| {
                        s.redis.shards = shards;
                        f(s);
                    })
                    .await,
                );
            }
            Nodes { name: if shards == 1 { "redis" } else { "sharded" }, nodes, _redis: Some(redis) }
        }
    }
}

async fn a_hundred_concurrent_shows_on_one_owner_give_exactly_max_viewers_rooms(kind: Kind) {
    let b = nodes(kind, |s| s.limits.max_viewers = 50).await;
    let owner = token("star");
    let mut ows = b.nodes[0].ws_query(&owner, "?presence=false").await;
    b.nodes[1].camera_on(&owner).await;
    let calls = (0..100).map(|i| {
        let node = b.nodes[i % 3].clone();
        async move { node.post("cameraShow", &token(&format!("fan{i}")), json!({"user_id": "star"})).await }
    });
    let results = join_all(calls).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let full = results.iter().filter(|r| r.status == 409 && r.code() == "too_many_viewers").count();
    let other: Vec<_> = results.iter().filter(|r| r.status != 201 && r.status != 409).map(|r| (r.status, r.body.clone())).collect();
    assert!(other.is_empty(), "{}: {other:?}", b.name);
    assert_eq!((created, full), (50, 50), "{}", b.name);
    let mut rooms = std::collections::HashSet::new();
    for _ in 0..50 {
        rooms.insert(ows.expect("show_cam").await["data"]["room_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(rooms.len(), 50, "{}", b.name);
    assert!(ows.try_next(Duration::from_millis(300)).await.is_none(), "{}: more than 50 show_cam", b.name);
}

async fn offers_and_answers_racing_through_two_nodes_leave_a_legal_state(kind: Kind) {
    let b = nodes(kind, |_| {}).await;
    let (ann, bob) = (token("racer"), token("rival"));
    let mut a = b.nodes[0].ws_query(&ann, "?presence=false").await;
    let mut v = b.nodes[1].ws_query(&bob, "?presence=false").await;
    b.nodes[0].camera_on(&ann).await;
    let room = b.nodes[1].show(&bob, "racer").await;
    a.expect("show_cam").await;
    b.nodes[0].post("offer", &ann, json!({"room_id": room, "offer": sdp_version("offer", 1)})).await;
    v.expect("put_offer").await;

    let offers = (2..12u32).map(|n| {
        let (node, ann, room) = (b.nodes[n as usize % 2].clone(), ann.clone(), room.clone());
        async move { node.post("offer", &ann, json!({"room_id": room, "offer": sdp_version("offer", n)})).await }
    });
    let answers = (0..5u32).map(|n| {
        let (node, bob, room) = (b.nodes[(n as usize + 1) % 2].clone(), bob.clone(), room.clone());
        async move { node.post("answer", &bob, json!({"room_id": room, "answer": sdp_version("answer", n)})).await }
    });
    let (offers, answers) = futures_util::join!(join_all(offers), join_all(answers));
    assert!(offers.iter().all(|r| r.status == 202), "{}: {:?}", b.name, offers.iter().map(|r| &r.body).collect::<Vec<_>>());
    for r in &answers {
        assert!(r.status == 202 || (r.status == 409 && r.code() == "no_offer"), "{}: {} {}", b.name, r.status, r.body);
    }
    let answered = answers.iter().filter(|r| r.status == 202).count();

    // Every accepted call was delivered once; the room holds the last of each.
    let mut last_offer = Value::Null;
    for _ in 0..offers.len() {
        last_offer = v.expect("put_offer").await["data"]["offer"].clone();
    }
    let mut last_answer = Value::Null;
    for _ in 0..answered {
        last_answer = a.expect("put_answer").await["data"]["answer"].clone();
    }
    assert!(v.try_next(Duration::from_millis(300)).await.is_none() && a.try_next(Duration::from_millis(300)).await.is_none());
    let c = b.nodes[2].get(&format!("/webrtc/connections/{room}"), Some(&ann)).await.body;
    assert_eq!(c["offer"], last_offer, "{}: the room's offer is the last one delivered", b.name);
    match c["state"].as_str() {
        Some("answered") => assert_eq!(c["answer"], last_answer, "{}", b.name),
        Some("offered") => assert!(c.get("answer").is_none(), "{}: {c}", b.name),
        s => panic!("{}: illegal state {s:?}", b.name),
    }
}

async fn version_strictly_increases_across_nodes(kind: Kind) {
    let b = nodes(kind, |_| {}).await;
    let ann = token("versioned");
    let mut obs = b.nodes[2].ws(&token("observer")).await;
    obs.expect_user("observer", true, "off").await;
    let _a = b.nodes[0].ws_query(&ann, "?presence=false").await;
    obs.expect_user("versioned", true, "off").await;
    let mut last = 0;
    for i in 0..12 {
        let op = if i % 2 == 0 { "cameraOn" } else { "cameraOff" };
        let r = b.nodes[i % 3].post(op, &ann, json!({})).await;
        let v = r.body["user"]["version"].as_u64().unwrap();
        assert!(v > last, "{}: {op} gave version {v} after {last}", b.name);
        last = v;
        obs.expect_user("versioned", true, if i % 2 == 0 { "on" } else { "off" }).await;
    }
    // Concurrent changes through all nodes: each heard once, in version order.
    let calls = (0..9).map(|i| {
        let (node, ann) = (b.nodes[i % 3].clone(), ann.clone());
        async move { node.post("cameraOn", &ann, json!({"meta": {"n": i}})).await }
    });
    let rs = join_all(calls).await;
    let mut versions: Vec<u64> = rs.iter().map(|r| r.body["user"]["version"].as_u64().unwrap()).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), 9, "{}: two calls got one version", b.name);
    let mut heard = vec![];
    for _ in 0..9 {
        heard.push(obs.expect_user("versioned", true, "on").await["version"].as_u64().unwrap());
    }
    assert_eq!(heard, versions, "{}: heard out of order", b.name);
}

async fn ten_users_joining_at_once_through_three_nodes_get_every_pair_exactly_once(kind: Kind) {
    // REST-only joiners start a grace period: long enough to outlast the test.
    let b = nodes(kind, |s| {
        s.limits.max_meeting_members = 10;
        s.presence.grace = std::time::Duration::from_secs(60);
    })
    .await;
    let r = b.nodes[0].post("meetings", &token("host"), json!({})).await;
    let id = r.body["meeting"]["meeting_id"].as_str().unwrap().to_owned();
    // Twelve try for ten seats; two of them want a name already asked for.
    let joins = (0..12).map(|i| {
        let (node, id) = (b.nodes[i % 3].clone(), id.clone());
        async move { (i, node.post(&format!("meetings/{id}/join"), &token(&format!("j{i}")), json!({"name": format!("N{}", i % 10)})).await) }
    });
    let results = join_all(joins).await;
    let ok: Vec<_> = results.iter().filter(|(_, r)| r.status == 200).collect();
    for (_, r) in &results {
        assert!(r.status == 200 || (r.status == 409 && ["name_taken", "meeting_full"].contains(&r.code())), "{}: {} {}", b.name, r.status, r.body);
    }
    assert_eq!(ok.len(), 10, "{}: {} joined", b.name, ok.len());
    let m = b.nodes[1].get(&format!("/webrtc/meetings/{id}"), Some(&token(&format!("j{}", ok[0].0)))).await.body;
    let members: Vec<String> = m["members"].as_array().unwrap().iter().map(|x| x["user_id"].as_str().unwrap().to_owned()).collect();
    let names: std::collections::HashSet<_> = m["members"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!((members.len(), names.len()), (10, 10), "{}: a name twice", b.name);
    let order = |u: &str| members.iter().position(|x| x == u).unwrap();
    // Every member's pairs are with exactly the members before it, who own them.
    let mut pairs = std::collections::HashSet::new();
    for (i, r) in &ok {
        let me = format!("j{i}");
        let conns = r.body["connections"].as_array().unwrap();
        assert_eq!(conns.len(), order(&me), "{}: {me} has {} pairs: {}", b.name, conns.len(), r.body);
        for c in conns {
            let owner = c["owner"].as_str().unwrap();
            assert_eq!(c["abonent"], me.as_str());
            assert!(order(owner) < order(&me), "{}: {owner} owns a pair with earlier {me}", b.name);
            assert!(pairs.insert((owner.to_owned(), me.clone())), "{}: pair twice", b.name);
        }
    }
    assert_eq!(pairs.len(), 45, "{}", b.name);
}
