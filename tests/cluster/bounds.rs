//! Limits that hold across nodes because each is a guard of the step it
//! limits, and a step whose answer is lost on the way back from Redis.

use serde_json::json;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::support::cluster::*;
use crate::support::*;

/// Issue #23: no per-user cap on meetings (219 created in 10 s). With
/// `limits.max_meetings_per_user` at 20 and 19 made, 200 creates of one user
/// at once over two nodes make exactly one more; the rest are 409
/// `too_many_meetings`.
/// Mutation (the `Created` guard left out of the step): 2 made, one per node.
#[actix_web::test]
async fn two_hundred_concurrent_meeting_creates_over_two_nodes_make_exactly_the_cap() {
    let redis = Redis::start().await;
    let nodes = [node(&redis, "m1").await, node(&redis, "m2").await];
    let t = token("host");
    // 19 first: every racer then reads one place left.
    for i in 0..19 {
        assert_eq!(nodes[i % 2].post("meetings", &t, json!({"title": format!("early {i}")})).await.status, 201);
    }
    // Each on a connection of its own, all sent before any is answered.
    let tries = (0..200).map(|i| {
        let url = nodes[i % 2].url("/webrtc/meetings");
        let t = t.clone();
        async move {
            let mut r = awc::Client::default()
                .post(url)
                .insert_header(("Authorization", format!("Bearer {t}")))
                .send_json(&json!({"title": format!("m{i}")}))
                .await
                .expect("answered");
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (r.status().as_u16(), body)
        }
    });
    let results = futures_util::future::join_all(tries).await;
    let mut created = 0;
    for (status, body) in &results {
        match status {
            201 => created += 1,
            _ => assert_eq!((*status, body["error"]["code"].as_str()), (409, Some("too_many_meetings")), "{body}"),
        }
    }
    assert_eq!(created, 1, "the last place went once, across nodes");
    // And still holds afterwards, on either node.
    nodes[1].post("meetings", &t, json!({"title": "one more"})).await.assert_error(409, "too_many_meetings");
}

/// Issue #23, item 4: a step sent to Redis whose answer never comes is 504
/// `outcome_unknown` (it may have run), within the Redis timeout, never a
/// hang; the retry with the same Idempotency-Key, once the node has a
/// working link again, gets the step's first answer: it ran, once.
#[actix_web::test]
async fn a_step_whose_answer_is_lost_is_504_and_the_retry_gets_its_answer() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let proxied = node_with(&redis, "lost-answer", |s| s.redis.url = Some(secrecy::SecretString::from(proxy.url()))).await;
    let direct = node(&redis, "direct").await;
    let t = token("lost");
    let mut obs = direct.ws(&token("lost-obs")).await;
    // Online throughout, so no grace period ends the camera during the test.
    let _online = direct.ws(&t).await;
    obs.wait_user("lost", |u| u["online"] == true).await;
    // Only the step that keeps an answer carries its record (JSON): not the read before it.
    proxy.lose_answers_after(b"{\"fp\":");
    let asked = Instant::now();
    let r = proxied.post_once("cameraOn", &t, "lost-1", json!({})).await;
    r.assert_error(504, "outcome_unknown");
    assert!(r.header("retry-after").is_some(), "504 says when to retry");
    assert!(asked.elapsed() < Duration::from_secs(4), "answered after {:?}", asked.elapsed());
    // It ran: everyone hears the camera go on, once.
    obs.wait_user("lost", |u| u["camera"] == "on").await;
    let start = Instant::now();
    let replayed = loop {
        let r = proxied.post_once("cameraOn", &t, "lost-1", json!({})).await;
        if r.status == 200 {
            break r;
        }
        assert!([503, 504].contains(&r.status), "{} {}", r.status, r.body);
        assert!(start.elapsed() < Duration::from_secs(20), "no answer after {:?}", start.elapsed());
    };
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"), "the retry got the first answer: {}", replayed.body);
    assert_eq!(replayed.body["user"]["camera"], "on");
    // Nothing more was broadcast for the retry.
    let end = Instant::now() + Duration::from_millis(500);
    while let Some(v) = obs.try_next(end.saturating_duration_since(Instant::now())).await {
        assert!(!(v["action"] == "server-action:update_user" && v["data"]["user"]["user_id"] == "lost"), "a second update: {v}");
    }
}

/// A user's created meetings were a plain set before they were dated (a
/// sorted set): a node of this version meeting one, mid rolling upgrade,
/// counts it as empty and replaces it, instead of failing on WRONGTYPE.
#[actix_web::test]
async fn an_undated_set_of_created_meetings_from_an_older_node_is_replaced() {
    let redis = Redis::start().await;
    let mut c = redis.conn().await;
    redis::cmd("SADD").arg("camsig:created:older").arg("01JD3Z5T8Q9W2E4R6T8Y0U2I4O").query_async::<()>(&mut c).await.unwrap();
    let n = node(&redis, "upgraded").await;
    let t = token("older");
    for _ in 0..2 {
        let r = n.post("meetings", &t, json!({})).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let kind: String = redis::cmd("TYPE").arg("camsig:created:older").query_async(&mut c).await.unwrap();
    assert_eq!(kind, "zset");
    let count: u64 = redis::cmd("ZCARD").arg("camsig:created:older").query_async(&mut c).await.unwrap();
    assert_eq!(count, 2, "the two new meetings, dated");
}
