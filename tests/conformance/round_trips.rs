//! Redis round trips per call, as the node counts them
//! (`camsig_redis_round_trips_total`): `ice` takes one, every other call at
//! most two (a read, then the one step). Nodes are built without their
//! sweeper, so only the calls themselves count.

use camsig::domain::{IceCandidate, RoomId, SessionDescription, UserId};
use camsig::node::Node;
use camsig::service::command::Command;
use camsig::service::reply::Reply;
use secrecy::SecretString;

use crate::support::cluster::Redis;
use crate::support::*;

async fn bare_node(redis: &Redis, id: &str) -> Node {
    let mut s = test_settings();
    s.redis.url = Some(SecretString::from(redis.url()));
    s.node.id = Some(id.into());
    let node = Node::build(s).await.unwrap();
    // The pub/sub link's own start-up reads are not a call's.
    wait_until(std::time::Duration::from_secs(10), "the node to be ready", async || node.ready().await.is_ok()).await;
    node
}

/// Runs `cmd` as `user` on `node`; returns the reply and the round trips it took.
async fn counted(node: &Node, user: &str, cmd: Command) -> (Reply, u64) {
    let before = node.metrics.redis_round_trips.get();
    let done = node.actors.execute(&UserId::parse(user).unwrap(), cmd, None).await.unwrap();
    (done.reply, node.metrics.redis_round_trips.get() - before)
}

fn desc(kind: &str) -> SessionDescription {
    serde_json::from_value(sdp(kind)).unwrap()
}

fn ice(room: &RoomId, n: u16) -> Command {
    let candidate: IceCandidate = serde_json::from_value(candidate(n)).unwrap();
    Command::Ice { room: room.clone(), candidate, dest: None }
}

#[actix_web::test]
async fn ice_takes_one_round_trip_and_every_other_call_at_most_two() {
    let redis = Redis::start().await;
    let (a, b) = (bare_node(&redis, "rt-a").await, bare_node(&redis, "rt-b").await);
    let (on, n) = counted(&a, "ann", Command::CameraOn { meta: None }).await;
    assert!(matches!(on, Reply::User(_)));
    assert_eq!(n, 2, "cameraOn");
    let (show, n) = counted(&a, "bob", Command::CameraShow { owner: UserId::parse("ann").unwrap() }).await;
    assert_eq!(n, 2, "cameraShow");
    let Reply::Show { reply, .. } = show else { panic!("{show:?}") };
    let room = reply.connection.room_id;
    let (_, n) = counted(&a, "ann", Command::Offer { room: room.clone(), offer: desc("offer") }).await;
    assert_eq!(n, 2, "offer");
    let (_, n) = counted(&a, "bob", Command::Answer { room: room.clone(), answer: desc("answer") }).await;
    assert_eq!(n, 2, "answer");
    for i in 0..5 {
        let (_, n) = counted(&a, "bob", ice(&room, i)).await;
        assert_eq!(n, 1, "ice on a node that knows the room");
    }
    // A node that never saw the room reads its members once, then knows them.
    let (_, n) = counted(&b, "ann", ice(&room, 7)).await;
    assert_eq!(n, 2, "the first ice on a new node");
    let (_, n) = counted(&b, "ann", ice(&room, 8)).await;
    assert_eq!(n, 1, "ice");
    let (_, n) = counted(&b, "bob", Command::Hangup { room: room.clone(), reason: camsig::domain::Reason::parse(None).unwrap() }).await;
    assert_eq!(n, 2, "hangup");
    let (_, n) = counted(&a, "ann", Command::CameraOff).await;
    assert_eq!(n, 2, "cameraOff");
}

#[actix_web::test]
async fn scripts_survive_a_flushed_script_cache() {
    let redis = Redis::start().await;
    let a = bare_node(&redis, "noscript").await;
    counted(&a, "ann", Command::CameraOn { meta: None }).await;
    // As after a Redis restart: the scripts are gone, EVALSHA answers NOSCRIPT.
    redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut redis.conn().await).await.unwrap();
    let (reply, _) = counted(&a, "ann", Command::CameraOff).await;
    let Reply::User(u) = reply else { panic!("{reply:?}") };
    assert_eq!(u.user.camera, camsig::domain::Camera::Off);
}
