//! `redis.min_replicas_acked`: a call is answered only once a replica holds
//! its step (`WAIT` in the step's own round trip); one that reached no
//! replica in time answers 504 `outcome_unknown`, and its retry tells what it
//! did.

use serde_json::json;
use std::time::{Duration, Instant};

use crate::support::cluster::*;
use crate::support::*;

/// With `WAIT` taken out of `Redis::run_step`, the calls made while the
/// replica is stopped answer 202 and this test fails there.
#[actix_web::test]
async fn a_step_is_answered_only_once_a_replica_has_it() {
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let n = node_with(&master, "acked", |s| s.redis.min_replicas_acked = 1).await;
    let (_a, mut b, room) = n.ann_shows_bob().await;
    let ann = token("ann");
    let mut rc = replica.conn().await;
    for i in 0..20u16 {
        let key = format!("acked-{i}");
        let r = n.post_once("ice", &ann, &key, json!({"room_id": room, "candidate": candidate(i)})).await;
        assert_eq!(r.status, 202, "{}", r.body);
        // Acknowledged, so already on the replica: its kept answer is there.
        let kept: bool = redis::cmd("HEXISTS").arg("camsig:idem:ann").arg(&key).query_async(&mut rc).await.unwrap();
        assert!(kept, "candidate {i} was acknowledged before the replica had it");
    }
    for i in 0..20u16 {
        let ev = b.next_event().await;
        assert_eq!(ev["data"]["candidate"], candidate(i), "{ev}");
    }

    // A replica that does not answer: the step runs on the master, but is
    // not answered as done.
    replica.pause();
    let sent = Instant::now();
    let r = n.post_once("ice", &ann, "frozen", json!({"room_id": room, "candidate": candidate(100)})).await;
    r.assert_error(504, "outcome_unknown");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(sent.elapsed() < Duration::from_secs(3), "answered after {:?}", sent.elapsed());
    replica.resume();
    let retry = n.post_once("ice", &ann, "frozen", json!({"room_id": room, "candidate": candidate(100)})).await;
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (202, Some("true")), "the retry tells it ran: {}", retry.body);
    // It ran once: one candidate, not two.
    let ev = b.next_event().await;
    assert_eq!(ev["data"]["candidate"], candidate(100), "{ev}");
    let r = n.post_once("ice", &ann, "after", json!({"room_id": room, "candidate": candidate(101)})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let ev = b.next_event().await;
    assert_eq!(ev["data"]["candidate"], candidate(101), "the frozen call's candidate came twice: {ev}");
}
