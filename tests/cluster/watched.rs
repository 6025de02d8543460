//! Presence at scale across nodes: a node receives a user's `update_user`
//! only while one of its sessions watches that user (their own channel), or
//! one hears everyone (everyone's channel); a pub/sub gap is caught up for
//! watched users as for everyone.

use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;

use crate::proxy::Proxy;
use crate::support::cluster::*;
use crate::support::*;

/// Subscribers of each channel, as Redis counts them.
async fn numsub(redis: &Redis, channels: &[&str]) -> Vec<i64> {
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("NUMSUB");
    for c in channels {
        cmd.arg(*c);
    }
    let flat: Vec<redis::Value> = cmd.query_async(&mut redis.conn().await).await.unwrap();
    flat.chunks(2).map(|p| redis::from_redis_value::<i64>(p[1].clone()).unwrap()).collect()
}

/// With everyone's subscription taken out of the session open (or every
/// session subscribed to everyone's channel), the counts below fail.
#[actix_web::test]
async fn a_node_receives_only_the_presence_its_sessions_want() {
    let redis = Redis::start().await;
    let (a, b) = (node(&redis, "w-a").await, node(&redis, "w-b").await);
    let mut w = b.ws_query(&token("watcher"), "?presence=watched").await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["ann"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    assert_eq!(numsub(&redis, &["camsig:presence", "camsig:pu:ann", "camsig:pu:cat"]).await, [0, 1, 0], "only ann's own channel, on b");

    // Across nodes: ann's change on a reaches the watcher on b; cat's does not.
    a.camera_on(&token("cat")).await;
    a.camera_on(&token("ann")).await;
    assert_eq!(w.next_update_is("ann").await["camera"], "on");

    // A session that hears everyone subscribes its node to everyone's channel, while it lasts.
    let all = a.ws_query(&token("loud"), "?presence=all").await;
    assert_eq!(numsub(&redis, &["camsig:presence"]).await, [1], "subscribed before hello");
    all.close().await;
    wait_until(Duration::from_secs(10), "everyone's channel dropped with its last session", async || numsub(&redis, &["camsig:presence"]).await == [0]).await;

    let ack = w.command(json!({"cmd": "unwatch", "ack": 2, "user_ids": ["ann"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    wait_until(Duration::from_secs(10), "ann's channel dropped with her last watcher", async || numsub(&redis, &["camsig:pu:ann"]).await == [0]).await;
    // A watcher that goes away unwatches too.
    let ack = w.command(json!({"cmd": "watch", "ack": 3, "user_ids": ["cat"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    assert_eq!(numsub(&redis, &["camsig:pu:cat"]).await, [1]);
    w.close().await;
    wait_until(Duration::from_secs(10), "cat's channel dropped with the closed session", async || numsub(&redis, &["camsig:pu:cat"]).await == [0]).await;
}

#[actix_web::test]
async fn a_watched_change_made_during_a_pubsub_gap_is_caught_up() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let proxied = node_with(&redis, "w-proxied", |s| {
        s.redis.url = Some(SecretString::from(proxy.url()));
        s.redis.probe = Duration::from_secs(1);
    })
    .await;
    let direct = node(&redis, "w-direct").await;
    let mut w = proxied.ws_query(&token("watcher"), "?presence=watched").await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["ann"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");

    proxy.refuse(true);
    assert!(proxy.cut_pubsub() >= 1);
    wait_until(Duration::from_secs(5), "readyz 503 while the link is down", async || proxied.get("/readyz", None).await.status == 503).await;
    // Made while the watcher's node hears nothing.
    direct.camera_on(&token("ann")).await;
    proxy.refuse(false);
    assert_eq!(w.next_update_is("ann").await["camera"], "on");
    assert_eq!(numsub(&redis, &["camsig:pu:ann"]).await, [1], "resubscribed to ann's channel");
}

/// `limits.max_watch` users in one `watch`: one SUBSCRIBE for all of them,
/// and every channel is there when the ack comes.
#[actix_web::test]
async fn a_watch_of_max_watch_users_subscribes_them_all_before_the_ack() {
    let redis = Redis::start().await;
    let n = node(&redis, "w-many").await;
    let mut w = n.ws_query(&token("watcher"), "?presence=watched").await;
    let ids: Vec<String> = (0..1000).map(|i| format!("many-{i}")).collect();
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ids})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").arg("camsig:pu:*").query_async(&mut redis.conn().await).await.unwrap();
    assert_eq!(channels.len(), 1000);
    let err = w.command(json!({"cmd": "watch", "ack": 2, "user_ids": ["one-more"]})).await;
    assert_eq!(err["error"]["code"], "too_many_watched", "{err}");
}

/// Found by an attack: a `watch` that answered `unavailable` (Redis
/// stopped) had still been applied: the node subscribed once Redis came
/// back, the user's changes came, and they counted against
/// `limits.max_watch`. An error changes nothing now.
#[actix_web::test]
async fn a_watch_that_fails_leaves_nothing_watched() {
    let redis = Redis::start().await;
    let n = node(&redis, "w-fails").await;
    let mut w = n.ws_query(&token("watcher"), "?presence=watched").await;
    redis.pause();
    let err = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["tgt"]})).await;
    redis.resume();
    assert_eq!(err["error"]["code"], "unavailable", "{err}");
    wait_until(Duration::from_secs(10), "no subscription to tgt left", async || numsub(&redis, &["camsig:pu:tgt"]).await == [0]).await;
    // Not counted: a thousand others fit.
    let ids: Vec<String> = (0..1000).map(|i| format!("other-{i}")).collect();
    let ack = w.command(json!({"cmd": "watch", "ack": 2, "user_ids": ids})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    // And tgt's change does not come: the next update is a watched user's.
    n.camera_on(&token("tgt")).await;
    n.camera_on(&token("other-7")).await;
    assert_eq!(w.next_update_is("other-7").await["camera"], "on");
}

/// How many times Redis ran `command` (`INFO commandstats`).
async fn calls(redis: &Redis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut redis.conn().await).await.unwrap();
    let line = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|l| l.strip_prefix(&line)).and_then(|l| l.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Found by an attack: a node whose sessions only watch some users heard
/// none of the others' changes, so its presence mark stayed where it was
/// until the log was trimmed past it, and the next pub/sub gap told every
/// session there to resync. Each probe now moves the mark to what its PONG
/// proves was heard. Without that, the first frame after the gap is a resync.
#[actix_web::test]
async fn a_watching_node_is_not_told_to_resync_after_a_gap_when_only_others_changed() {
    let redis = Redis::start().await;
    let n = node_with(&redis, "w-mark", |s| s.redis.probe = Duration::from_secs(1)).await;
    let mut w = n.ws_query(&token("watcher"), "?presence=watched").await;
    let ack = w.command(json!({"cmd": "watch", "ack": 1, "user_ids": ["ann"]})).await;
    assert_eq!(ack["cmd"], "ack", "{ack}");
    // Other nodes' changes of users nobody here watches, past the log's cap.
    let mut pipe = redis::pipe();
    for i in 0..10_500 {
        let e = json!({"action": "server-action:update_user", "data": {"user": {"user_id": format!("far-{i}")}}}).to_string();
        pipe.cmd("XADD").arg("camsig:presence:log").arg("MAXLEN").arg("~").arg(10_000).arg("*").arg("t").arg(0).arg("e").arg(e).ignore();
    }
    let () = pipe.query_async(&mut redis.conn().await).await.unwrap();
    // Two probes after them: the first one's PONG came back.
    let from = calls(&redis, "xrevrange").await;
    wait_until(Duration::from_secs(10), "two probes after the changes", async || calls(&redis, "xrevrange").await >= from + 2).await;
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut redis.conn().await).await.unwrap();
    assert!(killed >= 1);
    wait_until(Duration::from_secs(10), "resubscribed to ann's channel", async || numsub(&redis, &["camsig:pu:ann"]).await == [1]).await;
    n.camera_on(&token("ann")).await;
    let v = w.next().await;
    assert_eq!(v["action"], "server-action:update_user", "the first frame after the gap: {v}");
    assert_eq!(v["data"]["user"]["user_id"], "ann", "{v}");
}
