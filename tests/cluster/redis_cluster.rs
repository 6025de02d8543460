//! camsig on a Redis Cluster (`redis.cluster_urls`): the contract across
//! nodes, sharded pub/sub, a lost link caught up, and a master failover that
//! loses nothing acknowledged (`redis.min_replicas_acked`).

use serde_json::json;
use std::time::Duration;

use crate::support::cluster::*;
use crate::support::*;

/// The nodes' key table on `cluster`, to name a user's keys and channels.
fn keys(cluster: &RedisCluster) -> camsig::redis::Keys {
    camsig::redis::Keys::new("camsig", cluster.shards, true)
}

fn uid(u: &str) -> camsig::domain::UserId {
    camsig::domain::UserId::parse(u).unwrap()
}

/// Subscribers of a sharded channel, as the master of its slot counts them.
async fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> i64 {
    let i = cluster.master_of(channel).await;
    let flat: Vec<redis::Value> = redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(&mut cluster.conn(i).await).await.unwrap();
    redis::from_redis_value(flat[1].clone()).unwrap()
}

/// Signaling across two nodes on a three-master cluster, REST on one and
/// events on the other; every key under a shard's tag, the state spread over
/// the masters, every channel sharded.
#[actix_web::test]
async fn a_call_across_nodes_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let (a, b) = (node_with(&cluster, "rc-a", |_| {}).await, node_with(&cluster, "rc-b", |_| {}).await);
    let (owner, viewer) = (token("owner"), token("viewer"));
    let mut ows = a.ws(&owner).await;
    let mut vws = b.ws(&viewer).await;
    let k = keys(&cluster);
    assert_eq!(shard_subscribers(&cluster, &k.channel(&uid("viewer"))).await, 1, "b holds viewer's sharded channel");

    assert_eq!(a.camera_on(&owner).await.status, 200);
    vws.wait_user("owner", |u| u["camera"] == "on").await;
    let room = b.show(&viewer, "owner").await;
    let ev = ows.next_event().await;
    assert_eq!(ev["action"], "server-action:show_cam", "{ev}");

    let r = b.post("offer", &owner, json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(vws.next_event().await["data"]["offer"], sdp("offer"));
    let r = a.post("answer", &viewer, json!({"room_id": room, "answer": sdp("answer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(ows.next_event().await["action"], "server-action:put_answer");
    for i in 0..20u16 {
        let r = if i % 2 == 0 { a.post("ice", &owner, json!({"room_id": room, "candidate": candidate(i)})).await } else { b.post("ice", &owner, json!({"room_id": room, "candidate": candidate(i)})).await };
        assert_eq!(r.status, 202, "{}", r.body);
    }
    for i in 0..20u16 {
        let ev = vws.next_event().await;
        assert_eq!(ev["data"]["candidate"], candidate(i), "in order: {ev}");
    }
    let r = a.post("hangup", &viewer, json!({"room_id": room})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ows.next_event().await["action"], "server-action:hangup");

    // Every key is under a shard's tag, and the masters share them.
    let mut all = Vec::new();
    let mut holding = 0;
    for i in 0..cluster.ports.len() {
        let found: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut cluster.conn(i).await).await.unwrap();
        holding += usize::from(!found.is_empty());
        all.extend(found);
    }
    assert!(all.contains(&k.user(&uid("owner"))), "{all:?}");
    assert!(all.iter().all(|key| key.starts_with("{camsig:")), "{all:?}");
    assert!(holding >= 1);
    // The shards' tags land on every master: the state is spread over them.
    let mut masters = std::collections::HashSet::new();
    for n in 0..k.shards() {
        masters.insert(cluster.master_of(&k.tag(n)).await);
    }
    assert_eq!(masters.len(), 3, "16 shards over 3 masters");
    // Idempotent retries hold on the cluster too.
    let first = a.post_once("ice", &owner, "k1", json!({"room_id": room, "candidate": candidate(99)})).await;
    let again = b.post_once("ice", &owner, "k1", json!({"room_id": room, "candidate": candidate(99)})).await;
    assert_eq!((first.status, again.header("idempotent-replayed")), (409, None), "the room is closed: {}", first.body);
}

/// The pub/sub link's connections killed on the channels' master: the node
/// makes a new link, and the event published meanwhile arrives from the log.
#[actix_web::test]
async fn a_lost_sharded_link_is_replaced_and_caught_up() {
    let cluster = RedisCluster::start(3, 0).await;
    let a = node_with(&cluster, "rc-la", |s| s.redis.probe = Duration::from_secs(1)).await;
    let b = node_with(&cluster, "rc-lb", |_| {}).await;
    let (_ows, mut vws, room) = {
        let mut o = b.ws_query(&token("ann"), "?presence=false").await;
        let v = a.ws_query(&token("bob"), "?presence=false").await;
        b.camera_on(&token("ann")).await;
        let room = b.show(&token("bob"), "ann").await;
        o.expect("show_cam").await;
        (o, v, room)
    };
    let m = cluster.master_of(&keys(&cluster).channel(&uid("bob"))).await;
    // Every connection a holds to the master goes, the link's among them.
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut cluster.conn(m).await).await.unwrap();
    assert!(killed >= 1, "a's link was a pub/sub client");
    let r = b.post("offer", &token("ann"), json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ev = vws.next_event().await;
    assert_eq!(ev["action"], "server-action:put_offer", "{ev}");
    wait_until(Duration::from_secs(10), "bob's channel subscribed again", async || shard_subscribers(&cluster, &keys(&cluster).channel(&uid("bob"))).await == 1).await;
}

/// The master of the steps' slot SIGKILLed mid-stream, with
/// `redis.min_replicas_acked = 1` and two replicas per master (with one, the
/// promoted replica has none left, and every step answers 504 until another
/// joins, as the contract says): a replica takes over, and every
/// candidate a call acknowledged reaches the viewer, in order. A call
/// answered 503 or 504 is retried with its key until it is acknowledged;
/// only a call that answered 504 may show twice (it ran on the old master,
/// was heard live, and was lost with it before a replica had it).
#[actix_web::test]
async fn a_master_failover_loses_nothing_acknowledged() {
    let mut cluster = RedisCluster::start(3, 2).await;
    let acked = |s: &mut camsig::config::Settings| {
        s.redis.min_replicas_acked = 1;
        s.redis.probe = Duration::from_secs(1);
    };
    let (a, b) = (node_with(&cluster, "fo-a", acked).await, node_with(&cluster, "fo-b", acked).await);
    let (ann, bob) = (token("ann"), token("bob"));
    let mut o = a.ws_query(&ann, "?presence=false").await;
    let mut v = b.ws_query(&bob, "?presence=false").await;
    assert_eq!(a.camera_on(&ann).await.status, 200);
    let room = b.show(&bob, "ann").await;
    o.expect("show_cam").await;
    // The master of ann's shard, where her room's steps run.
    let ann_user = keys(&cluster).user(&uid("ann"));
    let master = cluster.master_of(&ann_user).await;

    let mut unknown = std::collections::HashSet::new();
    let started = std::time::Instant::now();
    for i in 0..40u16 {
        if i == 15 {
            cluster.kill(master);
        }
        let node = if i % 2 == 0 { &a } else { &b };
        loop {
            let r = node.post_once("ice", &ann, &format!("fo-{i}"), json!({"room_id": room, "candidate": candidate(i)})).await;
            match r.status {
                202 => break,
                503 | 504 => {
                    if r.status == 504 {
                        unknown.insert(i);
                    }
                    assert!(started.elapsed() < Duration::from_secs(60), "no failover in 60 s: {}", r.body);
                    // The contract's Retry-After.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                s => panic!("candidate {i}: {s} {}", r.body),
            }
        }
    }
    assert_ne!(cluster.master_of(&ann_user).await, master, "a replica took the slot over");
    eprintln!("failover: 40 candidates acknowledged in {:?}; calls that answered 504: {unknown:?}", started.elapsed());
    let mut next = 0u16;
    while next < 40 {
        let ev = v.next_event().await;
        if ev["action"] == "server-action:resync" {
            panic!("resync after the failover: {ev}");
        }
        assert_eq!(ev["action"], "server-action:put_ice", "{ev}");
        let got = (0..40u16).find(|i| ev["data"]["candidate"] == candidate(*i)).expect("a known candidate");
        if got == next {
            next += 1;
        } else {
            assert!(got < next && unknown.contains(&got), "candidate {got} while expecting {next} (504s: {unknown:?})");
        }
    }
}

/// The steps' slot moved to another master mid-stream (keys migrated, as a
/// reshard does): calls follow MOVED/ASK, the link follows its channels
/// (Redis takes them away; the node makes a new link and catches up), and
/// every acknowledged candidate arrives, in order.
#[actix_web::test]
async fn a_slot_moved_to_another_master_is_followed() {
    let cluster = RedisCluster::start(3, 0).await;
    let quick = |s: &mut camsig::config::Settings| s.redis.probe = Duration::from_secs(1);
    let (a, b) = (node_with(&cluster, "mv-a", quick).await, node_with(&cluster, "mv-b", quick).await);
    let (ann, bob) = (token("ann"), token("bob"));
    let mut o = a.ws_query(&ann, "?presence=false").await;
    let mut v = b.ws_query(&bob, "?presence=false").await;
    assert_eq!(a.camera_on(&ann).await.status, 200);
    let room = b.show(&bob, "ann").await;
    o.expect("show_cam").await;
    let ann_user = keys(&cluster).user(&uid("ann"));
    let before = cluster.master_of(&ann_user).await;
    let started = std::time::Instant::now();
    let mut moved = None;
    for i in 0..40u16 {
        if i == 15 {
            moved = Some(cluster.move_slot(&ann_user).await);
        }
        let node = if i % 2 == 0 { &a } else { &b };
        loop {
            let r = node.post_once("ice", &ann, &format!("mv-{i}"), json!({"room_id": room, "candidate": candidate(i)})).await;
            match r.status {
                202 => break,
                503 | 504 => {
                    assert!(started.elapsed() < Duration::from_secs(30), "calls still fail 30 s on: {}", r.body);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                s => panic!("candidate {i}: {s} {}", r.body),
            }
        }
    }
    let after = cluster.master_of(&ann_user).await;
    assert_eq!(Some(after), moved);
    assert_ne!(after, before);
    for i in 0..40u16 {
        let ev = v.next_event().await;
        assert_eq!(ev["data"]["candidate"], candidate(i), "in order, once: {ev}");
    }
    wait_until(Duration::from_secs(10), "bob's channel subscribed on the new master", async || shard_subscribers(&cluster, &keys(&cluster).channel(&uid("bob"))).await == 1).await;
}

/// Two users in different shards, so that one's step writes into the other's.
fn apart(k: &camsig::redis::Keys) -> (String, String) {
    let owner = "rel-owner".to_owned();
    let viewer = (0..).map(|i| format!("rel-viewer-{i}")).find(|v| k.shard_of(v) != k.shard_of(&owner)).unwrap();
    (owner, viewer)
}

/// The node that committed a step dies before it relays what the step
/// wrote into another shard (`commit.relay`): another node's sweeper relays
/// it, the viewer gets the candidate once, and the retry with the same key
/// on a live node answers the kept 202 without a second candidate.
/// Without the sweeper's relay, the candidate never arrives.
#[actix_web::test]
async fn a_relay_cut_short_by_a_dead_node_is_finished_by_another_once() {
    let cluster = RedisCluster::start(3, 0).await;
    let k = keys(&cluster);
    let (owner, viewer) = apart(&k);
    let live = node_with(&cluster, "rel-live", |_| {}).await;
    let doomed = ProcNode::start_with(&cluster, "rel-doomed", &[("CAMSIG_FAILPOINT", "commit.relay")]).await;
    let (ot, vt) = (token(&owner), token(&viewer));
    let mut o = live.ws_query(&ot, "?presence=false").await;
    let mut v = live.ws_query(&vt, "?presence=false").await;
    assert_eq!(live.camera_on(&ot).await.status, 200);
    let room = live.show(&vt, &owner).await;
    o.expect("show_cam").await;
    // The owner's candidate, in the owner's shard, for the viewer's log.
    let died = doomed.post_once("ice", &ot, "cut", json!({"room_id": room, "candidate": candidate(1)})).await;
    assert!(died.is_err(), "the node died before answering: {died:?}");
    let ev = v.next_event().await;
    assert_eq!(ev["data"]["candidate"], candidate(1), "{ev}");
    let retry = live.post_once("ice", &ot, "cut", json!({"room_id": room, "candidate": candidate(1)})).await;
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (202, Some("true")), "{}", retry.body);
    let r = live.post("ice", &ot, json!({"room_id": room, "candidate": candidate(2)})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ev = v.next_event().await;
    assert_eq!(ev["data"]["candidate"], candidate(2), "the cut candidate came once: {ev}");
}
