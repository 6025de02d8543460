//! Webhooks across nodes on one real Redis (and a Redis Cluster), against a
//! real HTTP receiver the test starts: every type arrives signed, failed
//! tries are retried, a node dying between the change and the delivery
//! loses nothing, a receiver down for a minute under load gets everything
//! afterwards in order per user while the nodes' memory stays bounded, and
//! what never gets through lands in the dead letters, which replay.

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

use crate::support::cluster::*;
use crate::support::receiver::*;
use crate::support::*;

/// The same, for a node in its own process.
fn hooked_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CAMSIG__WEBHOOKS__URLS", url.to_owned()),
        ("CAMSIG__WEBHOOKS__SECRET", HOOK_SECRET.to_owned()),
        ("CAMSIG__WEBHOOKS__BACKOFF_MS", "50".to_owned()),
        ("CAMSIG__WEBHOOKS__MAX_BACKOFF_S", "1".to_owned()),
    ]
}

fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[actix_web::test]
async fn every_type_arrives_signed_across_two_nodes() {
    let redis = Redis::start().await;
    let rx = Receiver::start().await;
    let url = rx.url();
    let nodes = vec![node_with(&redis, "n1", |s| hooked(s, &url)).await, node_with(&redis, "n2", |s| hooked(s, &url)).await];
    every_type_arrives_signed_through(&nodes, &rx).await;
}

#[actix_web::test]
async fn every_type_arrives_signed_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let rx = Receiver::start().await;
    let url = rx.url();
    let nodes = vec![node_with(&cluster, "n1", |s| hooked(s, &url)).await, node_with(&cluster, "n2", |s| hooked(s, &url)).await];
    every_type_arrives_signed_through(&nodes, &rx).await;
}

#[actix_web::test]
async fn a_receiver_answering_500_twice_gets_the_webhook_on_the_third_try() {
    let redis = Redis::start().await;
    let rx = Receiver::start().await;
    rx.set(Mode::FailFirst(2));
    let url = rx.url();
    let n1 = node_with(&redis, "n1", |s| hooked(s, &url)).await;
    assert_eq!(n1.camera_on(&token("carl")).await.status, 200);
    wait_for(&rx, "carl's camera.on, taken", WAIT, |l| has(l, "camera.on", "carl")).await;
    let id = rx.of_type("camera.on")[0]["id"].as_str().unwrap().to_owned();
    let tries: Vec<u16> = rx.all().iter().filter(|r| r.body["id"] == id.as_str()).map(|r| r.status).collect();
    assert_eq!(tries, [500, 500, 200], "two failures, then the third try");
    let m = n1.metrics().await;
    assert!(metric(&m, "camsig_webhooks_retried_total", &[]) >= 2.0, "{m}");
    assert!(metric(&m, "camsig_webhooks_delivered_total", &[]) >= 1.0);
    assert!(metric(&m, "camsig_webhook_delivery_seconds_count", &[]) >= 1.0);
}

/// The node that made the change dies right after its step, before it
/// answered: the webhook was recorded in that step, and another node sends it.
#[actix_web::test]
async fn a_node_killed_right_after_camera_on_still_has_its_webhook_delivered_by_another() {
    let redis = Redis::start().await;
    let rx = Receiver::start().await;
    let url = rx.url();
    let mut env = hooked_env(&url);
    env.push(("CAMSIG_FAILPOINT", "after_commit".into()));
    let mut doomed = ProcNode::start_with(&redis, "doomed", &env_refs(&env)).await;
    let _other = node_with(&redis, "other", |s| hooked(s, &url)).await;
    let answered = doomed.post_once("cameraOn", &token("dina"), "k1", json!({})).await;
    assert!(answered.is_err(), "the node died before answering: {answered:?}");
    wait_until(WAIT, "the node to be gone", async || doomed.exited()).await;
    wait_for(&rx, "dina's camera.on from the other node", Duration::from_secs(15), |l| has(l, "camera.on", "dina")).await;
}

/// The node delivering a shard takes a webhook, the receiver fails it, and
/// the node dies holding it (pending in its consumer group): the node that
/// holds the shard next claims it and delivers it.
#[actix_web::test]
async fn a_webhook_claimed_by_a_node_that_dies_is_delivered_by_another() {
    let redis = Redis::start().await;
    let rx = Receiver::start().await;
    rx.set(Mode::Fail);
    let url = rx.url();
    let env = hooked_env(&url);
    let mut first = ProcNode::start_with(&redis, "first", &env_refs(&env)).await;
    let mut r = redis.conn().await;
    wait_until(WAIT, "the first node to hold the webhooks' shard", async || {
        let holder: Option<String> = redis::cmd("GET").arg("camsig:hooks:holder").query_async(&mut r).await.unwrap();
        holder.is_some_and(|h| h.starts_with("first#"))
    })
    .await;
    let second = node_with(&redis, "second", |s| hooked(s, &url)).await;
    assert_eq!(second.camera_on(&token("eve")).await.status, 200);
    wait_until(WAIT, "the first node to have tried eve's camera.on", async || rx.all().iter().any(|r| r.body["type"] == "camera.on" && r.status == 500)).await;
    first.kill();
    rx.set(Mode::Ok);
    wait_for(&rx, "eve's camera.on, from the second node", Duration::from_secs(15), |l| has(l, "camera.on", "eve")).await;
    let taken = rx.of_type("camera.on");
    assert_eq!(taken.len(), 1, "{taken:?}");
    wait_until(WAIT, "nothing left pending", async || {
        let p: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING").arg("camsig:hooks").arg(camsig::webhooks::group_of(&url)).query_async(&mut r).await.unwrap();
        p.0 == 0
    })
    .await;
}

async fn get_metrics(node: &ProcNode) -> String {
    let mut res = awc::Client::default().get(node.url("/metrics")).send().await.unwrap();
    String::from_utf8(res.body().limit(1 << 22).await.unwrap().to_vec()).unwrap()
}

/// A receiver down for a minute while two nodes take 40 changes a second:
/// each node holds at most `webhooks.max_buffered` in memory (the rest wait
/// in Redis) and its RSS stays flat; once the receiver is back it gets every
/// webhook, each user's in the order of their changes.
#[actix_web::test]
async fn a_receiver_down_for_a_minute_under_load_gets_everything_afterwards_in_order() {
    const USERS: usize = 40;
    const DOWN: Duration = Duration::from_secs(60);
    let redis = Redis::start().await;
    let mut rx = Receiver::start().await;
    let url = rx.url();
    let mut env = hooked_env(&url);
    env.extend([("CAMSIG__WEBHOOKS__MAX_BUFFERED", "200".to_owned()), ("CAMSIG__WEBHOOKS__MAX_ATTEMPTS", "1000".to_owned()), ("CAMSIG__WEBHOOKS__MAX_BACKOFF_S", "2".to_owned())]);
    let nodes = [ProcNode::start_with(&redis, "n1", &env_refs(&env)).await, ProcNode::start_with(&redis, "n2", &env_refs(&env)).await];
    let mut sockets = Vec::new();
    for u in 0..USERS {
        sockets.push(nodes[u % 2].ws_query(&token(&format!("u{u}")), "?presence=false").await);
    }
    wait_for(&rx, "every user online", WAIT, |l| l.iter().filter(|v| v["type"] == "user.online").count() == USERS).await;
    let rss_before: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    rx.down().await;
    let started = std::time::Instant::now();
    let mut changes = 0usize;
    let mut peak_buffered = 0f64;
    let mut tick = actix_web::rt::time::interval(Duration::from_millis(25));
    while started.elapsed() < DOWN {
        tick.tick().await;
        let u = changes % USERS;
        let op = if (changes / USERS).is_multiple_of(2) { "cameraOn" } else { "cameraOff" };
        let (status, body) = nodes[changes % 2].post_json(op, &token(&format!("u{u}")), json!({})).await;
        assert_eq!(status, 200, "{body}");
        changes += 1;
        if changes.is_multiple_of(400) {
            for n in &nodes {
                let m = get_metrics(n).await;
                peak_buffered = peak_buffered.max(metric(&m, "camsig_webhooks_buffered", &[]));
            }
        }
    }
    let rss_after: Vec<u64> = nodes.iter().map(|n| n.rss_kib()).collect();
    eprintln!("{changes} changes in {:?} with the receiver down; RSS {rss_before:?} -> {rss_after:?} KiB; peak buffered {peak_buffered}", started.elapsed());
    assert!(peak_buffered <= 200.0, "at most max_buffered in memory: {peak_buffered}");
    for (b, a) in rss_before.iter().zip(&rss_after) {
        assert!(a.saturating_sub(*b) < 30 * 1024, "RSS stays flat: {b} -> {a} KiB");
    }
    rx.up().await;
    let back = std::time::Instant::now();
    wait_for(&rx, "every webhook after the receiver came back", Duration::from_secs(60), |l| l.iter().filter(|v| v["type"].as_str().is_some_and(|t| t.starts_with("camera."))).count() >= changes).await;
    eprintln!("caught up in {:?}", back.elapsed());
    let mut per_user: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for v in rx.taken().iter().filter(|v| v["type"].as_str().is_some_and(|t| t.starts_with("camera."))) {
        per_user.entry(v["data"]["user_id"].as_str().unwrap().to_owned()).or_default().push((v["data"]["version"].as_u64().unwrap(), v["type"].as_str().unwrap().to_owned()));
    }
    assert_eq!(per_user.len(), USERS);
    for (u, seq) in &per_user {
        assert!(seq.windows(2).all(|w| w[0].0 < w[1].0), "{u}'s webhooks in the order of their changes: {seq:?}");
        assert!(seq.windows(2).all(|w| w[0].1 != w[1].1), "{u}: on and off alternate: {seq:?}");
    }
    drop(sockets);
}

/// A receiver that never takes a webhook: after `webhooks.max_attempts`
/// it is in the dead letters, which an operator lists and replays (to that
/// receiver only, with the same id).
#[actix_web::test]
async fn what_never_gets_through_is_a_dead_letter_that_replays() {
    let redis = Redis::start().await;
    let (rx, other) = (Receiver::start().await, Receiver::start().await);
    rx.set(Mode::Fail);
    let (url, other_url) = (rx.url(), other.url());
    let n1 = node_with(&redis, "n1", |s| {
        hooked(s, &url);
        s.webhooks.urls.push(other_url.clone());
        s.webhooks.max_attempts = 3;
    })
    .await;
    assert_eq!(n1.camera_on(&token("fay")).await.status, 200);
    wait_for(&other, "the other receiver takes it", WAIT, |l| has(l, "camera.on", "fay")).await;
    wait_until(WAIT, "a dead letter", async || n1.admin("/webhooks/dead", None).await.body["dead"].as_array().is_some_and(|d| !d.is_empty())).await;
    let dead = n1.admin("/webhooks/dead", None).await.body["dead"][0].clone();
    assert_eq!((dead["url"].as_str(), dead["attempts"].as_u64(), dead["error"].as_str()), (Some(url.as_str()), Some(3), Some("HTTP 500")), "{dead}");
    assert_eq!(dead["webhook"]["type"], "camera.on");
    assert_eq!(rx.all().iter().filter(|r| r.body["type"] == "camera.on").count(), 3, "three tries");
    assert!(metric(&n1.metrics().await, "camsig_webhooks_failed_total", &[]) >= 1.0);
    rx.set(Mode::Ok);
    let replayed = n1.admin(&format!("/webhooks/dead/{}/replay", dead["id"].as_str().unwrap()), Some(json!({}))).await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    wait_for(&rx, "the replayed webhook", WAIT, |l| has(l, "camera.on", "fay")).await;
    assert_eq!(rx.of_type("camera.on")[0]["id"], dead["webhook"]["id"], "the same id: receivers drop duplicates by it");
    assert!(n1.admin("/webhooks/dead", None).await.body["dead"].as_array().unwrap().is_empty());
    n1.admin(&format!("/webhooks/dead/{}/replay", dead["id"].as_str().unwrap()), Some(json!({}))).await.assert_error(404, "not_found");
    n1.admin("/webhooks/dead/nonsense/replay", Some(json!({}))).await.assert_error(404, "not_found");
    // The other receiver had it already and does not get it again.
    stays(Duration::from_millis(500), "the other receiver gets it once", async || other.of_type("camera.on").len() == 1).await;
}
