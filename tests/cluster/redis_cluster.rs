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

/// Pairs whose owner and viewer are in different shards, `n` of them.
fn pairs_apart(k: &camsig::redis::Keys, tag: &str, n: usize) -> Vec<(String, String)> {
    let owners = (0..).map(|i| format!("{tag}-own-{i}"));
    let mut out = Vec::new();
    for o in owners {
        let v = (0..).map(|i| format!("{o}-v{i}")).find(|v| k.shard_of(v) != k.shard_of(&o)).unwrap();
        out.push((o, v));
        if out.len() == n {
            return out;
        }
    }
    unreachable!()
}

/// One call, sent with one key to two nodes at the same moment, by a
/// caller whose shard is not the room's: one runs, the other answers what
/// it did (`idempotent-replayed`), for cameraShow, answer and hangup alike.
/// Found by a fault probe: the duplicate looked for the kept answer only in
/// the caller's shard, before the relay put it there (cameraShow 200 not
/// replayed, answer 409 `no_offer`, hangup 409 `room_closed`).
#[actix_web::test]
async fn a_call_sent_twice_at_once_across_shards_runs_once() {
    let cluster = RedisCluster::start(3, 0).await;
    let k = keys(&cluster);
    // A long grace: the viewers call by REST alone, with no session.
    let long = |s: &mut camsig::config::Settings| s.presence.grace = Duration::from_secs(120);
    let (a, b) = (node_with(&cluster, "dup-a", long).await, node_with(&cluster, "dup-b", long).await);
    let pairs = pairs_apart(&k, "dup", 60);
    for (o, _) in &pairs {
        assert_eq!(a.camera_on(&token(o)).await.status, 200);
    }
    let twice = |op: &'static str, who: String, key: String, body: serde_json::Value| {
        let (a, b) = (&a, &b);
        async move {
            let t = token(&who);
            let (x, y) = futures_util::join!(a.post_once(op, &t, &key, body.clone()), b.post_once(op, &t, &key, body));
            let replayed = [&x, &y].iter().filter(|r| r.header("idempotent-replayed").is_some()).count();
            assert_eq!(x.status, y.status, "{op}: {} / {}", x.body, y.body);
            assert_eq!(replayed, 1, "{op}: one ran, one replayed ({} / {})", x.body, y.body);
            x
        }
    };
    let shows = pairs.iter().map(|(o, v)| twice("cameraShow", v.clone(), format!("show-{v}"), json!({"user_id": o})));
    let rooms: Vec<String> = futures_util::future::join_all(shows).await.into_iter().map(|r| {
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["connection"]["room_id"].as_str().unwrap().to_owned()
    }).collect();
    for ((o, _), room) in pairs.iter().zip(&rooms) {
        assert_eq!(a.post("offer", &token(o), json!({"room_id": room, "offer": sdp("offer")})).await.status, 202);
    }
    let answers = pairs.iter().zip(&rooms).map(|((_, v), room)| twice("answer", v.clone(), format!("ans-{v}"), json!({"room_id": room, "answer": sdp("answer")})));
    for r in futures_util::future::join_all(answers).await {
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let hangups = pairs.iter().zip(&rooms).map(|((_, v), room)| twice("hangup", v.clone(), format!("bye-{v}"), json!({"room_id": room})));
    for r in futures_util::future::join_all(hangups).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// With `redis.min_replicas_acked = 1`, a replica that stops answering holds
/// up only its master's shards: a call in a shard on another master is
/// answered at once. Found by a fault probe: every call waited on every
/// shard's master, so one stalled replica made all of them 504.
#[actix_web::test]
async fn a_stalled_replica_holds_up_only_its_masters_shards() {
    let cluster = RedisCluster::start(3, 1).await;
    let k = keys(&cluster);
    let node = node_with(&cluster, "rep-a", |s| s.redis.min_replicas_acked = 1).await;
    let stalled = cluster.master_of(&k.tag(0)).await;
    let replica = cluster.replica_of(stalled).await;
    let mut users = Vec::new();
    for i in 0.. {
        let u = format!("rep-{i}");
        if cluster.master_of(&k.tag(k.shard_of(&u))).await != stalled {
            users.push(u);
        }
        if users.len() == 10 {
            break;
        }
    }
    assert_eq!(node.camera_on(&token(&users[0])).await.status, 200, "with every replica up");
    cluster.pause(replica);
    for u in &users {
        let r = node.camera_on(&token(u)).await;
        assert_eq!(r.status, 200, "{u}: {}", r.body);
    }
    cluster.resume(replica);
}

/// The viewers' master pauses mid-stream, so relays into their shard pile
/// up in the owners' outbox and calls answer 504: each owner retries with
/// the same key until it gets its answer, and every viewer still gets every
/// candidate once, in its owner's order (a retry relays what its shard's
/// outbox holds for a target first, all of it, in order).
#[actix_web::test]
async fn a_relay_backlog_keeps_each_senders_order() {
    const STREAMS: usize = 20;
    const EACH: u16 = 30;
    let cluster = RedisCluster::start(3, 0).await;
    let k = keys(&cluster);
    let long = |s: &mut camsig::config::Settings| s.presence.grace = Duration::from_secs(120);
    let (a, b) = (node_with(&cluster, "bl-a", long).await, node_with(&cluster, "bl-b", long).await);
    // Owners in one shard, viewers in another, on different masters.
    let owner_shard = k.shard_of("bl-own-0");
    let owner_master = cluster.master_of(&k.tag(owner_shard)).await;
    let mut viewer_shard = None;
    for n in 0..k.shards() {
        if cluster.master_of(&k.tag(n)).await != owner_master {
            viewer_shard = Some(n);
            break;
        }
    }
    let viewer_shard = viewer_shard.unwrap();
    let owners: Vec<String> = (0..).map(|i| format!("bl-own-{i}")).filter(|u| k.shard_of(u) == owner_shard).take(STREAMS).collect();
    let viewers: Vec<String> = (0..).map(|i| format!("bl-view-{i}")).filter(|u| k.shard_of(u) == viewer_shard).take(STREAMS).collect();
    let mut socks = Vec::new();
    let mut rooms = Vec::new();
    for (o, v) in owners.iter().zip(&viewers) {
        assert_eq!(a.camera_on(&token(o)).await.status, 200);
        socks.push(b.ws_query(&token(v), "?presence=false").await);
        rooms.push(b.show(&token(v), o).await);
    }
    let paused = cluster.master_of(&k.tag(viewer_shard)).await;
    let pause = async {
        // Once the streams are under way.
        wait_until(Duration::from_secs(30), "the streams to start", async || {
            let n: i64 = redis::cmd("XLEN").arg(format!("{{camsig:{viewer_shard}}}:log:{}", viewers[0])).query_async(&mut cluster.conn(paused).await).await.unwrap_or(0);
            n > 3
        })
        .await;
        let () = redis::cmd("CLIENT").arg("PAUSE").arg(2500).arg("ALL").query_async(&mut cluster.conn(paused).await).await.unwrap();
    };
    let retried = std::sync::atomic::AtomicUsize::new(0);
    let streams = owners.iter().zip(&rooms).enumerate().map(|(s, (o, room))| {
        let (a, b, retried) = (&a, &b, &retried);
        async move {
            let t = token(o);
            for i in 0..EACH {
                let key = format!("bl-{s}-{i}");
                let body = json!({"room_id": room, "candidate": candidate(i)});
                let mut tries = 0;
                loop {
                    let node = if (i as usize + tries) % 2 == 0 { a } else { b };
                    let r = node.post_once("ice", &t, &key, body.clone()).await;
                    if r.status == 202 {
                        break;
                    }
                    assert!(matches!(r.status, 503 | 504), "{}: {}", r.status, r.body);
                    tries += 1;
                    retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert!(tries < 200, "candidate {i} of stream {s} never answered: {}", r.body);
                    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    futures_util::join!(futures_util::future::join_all(streams), pause);
    let retried = retried.into_inner();
    eprintln!("relay backlog: {retried} calls answered 503/504 and retried");
    assert!(retried > 0, "the pause made no call fail: the test tests nothing");
    for (s, ws) in socks.iter_mut().enumerate() {
        for i in 0..EACH {
            let ev = ws.try_next(Duration::from_secs(20)).await.unwrap_or_else(|| panic!("stream {s}: only {i} of {EACH}"));
            assert_eq!(ev["data"]["candidate"], candidate(i), "stream {s}, in order, once: {ev}");
        }
    }
}
