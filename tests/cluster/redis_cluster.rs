//! camsig on a Redis Cluster (`redis.cluster_urls`): the contract across
//! nodes, sharded pub/sub, a lost link caught up, and a master failover that
//! loses nothing acknowledged (`redis.min_replicas_acked`).

use serde_json::json;
use std::time::Duration;

use crate::support::cluster::*;
use crate::support::*;

/// Subscribers of a sharded channel, as the master of its slot counts them.
async fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> i64 {
    let i = cluster.master_of(channel).await;
    let flat: Vec<redis::Value> = redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(&mut cluster.conn(i).await).await.unwrap();
    redis::from_redis_value(flat[1].clone()).unwrap()
}

/// Signaling across two nodes on a three-master cluster, REST on one and
/// events on the other; every key in the prefix's slot, every channel sharded.
#[actix_web::test]
async fn a_call_across_nodes_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let (a, b) = (cluster_node(&cluster, "rc-a", |_| {}).await, cluster_node(&cluster, "rc-b", |_| {}).await);
    let (owner, viewer) = (token("owner"), token("viewer"));
    let mut ows = a.ws(&owner).await;
    let mut vws = b.ws(&viewer).await;
    assert_eq!(shard_subscribers(&cluster, "{camsig}:u:viewer").await, 1, "b holds viewer's sharded channel");

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

    // Every key is in the prefix's slot, on its one master.
    let m = cluster.master_of("{camsig}").await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut cluster.conn(m).await).await.unwrap();
    assert!(keys.iter().any(|k| k == "{camsig}:user:owner"), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("{camsig}:")), "{keys:?}");
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
    let a = cluster_node(&cluster, "rc-la", |s| s.redis.probe = Duration::from_secs(1)).await;
    let b = cluster_node(&cluster, "rc-lb", |_| {}).await;
    let (_ows, mut vws, room) = {
        let mut o = b.ws_query(&token("ann"), "?presence=false").await;
        let v = a.ws_query(&token("bob"), "?presence=false").await;
        b.camera_on(&token("ann")).await;
        let room = b.show(&token("bob"), "ann").await;
        o.expect("show_cam").await;
        (o, v, room)
    };
    let m = cluster.master_of("{camsig}").await;
    // Every connection a holds to the master goes, the link's among them.
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut cluster.conn(m).await).await.unwrap();
    assert!(killed >= 1, "a's link was a pub/sub client");
    let r = b.post("offer", &token("ann"), json!({"room_id": room, "offer": sdp("offer")})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ev = vws.next_event().await;
    assert_eq!(ev["action"], "server-action:put_offer", "{ev}");
    wait_until(Duration::from_secs(10), "bob's channel subscribed again", async || shard_subscribers(&cluster, "{camsig}:u:bob").await == 1).await;
}
