//! The `Store` trait on memory and on Redis: the same steps, the same outcomes.

use chrono::Utc;
use std::sync::{Arc, Mutex};

use camsig::broker::memory::MemoryBroker;
use camsig::broker::redis::RedisBroker;
use camsig::broker::{Broker, LogBounds, Replay, Sink};
use camsig::domain::event::ShowCamData;
use camsig::domain::{Connection, Event, Frame, IdempotencyKey, RoomId, SessionId, UserId, UserState};
use camsig::store::memory::MemoryStore;
use camsig::store::redis::RedisStore;
use camsig::store::{Commit, Guard, Kept, Read, SessionWrite, Step, Store};

use crate::Kind;
use crate::support::cluster::Redis;

on_both!(
    a_guard_that_fails_writes_nothing_and_sends_nothing,
    rooms_are_indexed_counted_and_guarded_by_state,
    an_answer_is_kept_with_its_step_and_a_retry_finds_it,
    a_user_keeps_at_most_per_user_max_answers_and_the_oldest_go_first,
    events_of_one_step_are_logged_in_order_and_a_new_log_never_passes_for_complete,
    sessions_are_counted_and_guarded,
    a_replay_with_a_byte_budget_pages_through_the_log_in_order,
);

/// Frames a broker handed to this node, by user.
#[derive(Default)]
struct Collect(Mutex<Vec<(UserId, Frame)>>);

impl Sink for Collect {
    fn to_user(&self, user: &UserId, frame: Frame) {
        self.0.lock().unwrap().push((user.clone(), frame));
    }
    fn to_presence(&self, _user: &UserId, _frame: Frame) {}
}

const BOUNDS: LogBounds = LogBounds { keep: std::time::Duration::from_secs(60), keep_max: 100 };

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    _redis: Option<Redis>,
}

/// A fresh store and broker of `kind`; on Redis, on a `redis-server` of its own.
async fn backend(kind: Kind) -> Backend {
    match kind {
        Kind::Memory => {
            let mem = Arc::new(MemoryBroker::new(Arc::new(Collect::default()), BOUNDS));
            Backend { name: "memory", store: Arc::new(MemoryStore::new(mem.clone(), camsig::store::claim_hold(std::time::Duration::from_secs(10)), 1000)), broker: mem, _redis: None }
        }
        Kind::Redis | Kind::Sharded => {
            let redis = Redis::start().await;
            let client = redis::Client::open(redis.url()).unwrap();
            let counter = prometheus::IntCounter::new("rt", "round trips").unwrap();
            let shards = if matches!(kind, Kind::Sharded) { 4 } else { 1 };
            let r = Arc::new(camsig::redis::Redis::new(camsig::redis::Backend::Single(client), "conf", shards, counter));
            let rb = Arc::new(RedisBroker::start(r.clone(), Arc::new(Collect::default()), BOUNDS, std::time::Duration::from_secs(2)));
            Backend { name: if shards == 1 { "redis" } else { "sharded" }, store: Arc::new(RedisStore::new(r, BOUNDS, camsig::store::claim_hold(std::time::Duration::from_secs(10)), 1000)), broker: rb, _redis: Some(redis) }
        }
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn user(id: &str, version_from: u64) -> UserState {
    let mut u = UserState::new(uid(id), Utc::now());
    u.version = version_from;
    u.camera_on(None, Utc::now());
    u
}

fn show_cam(room: &Connection) -> Event {
    Event::ShowCam(ShowCamData { room_id: room.room_id.clone(), user_id: room.abonent.clone() })
}

async fn log_after(b: &Backend, u: &UserId, since: camsig::domain::EventId) -> Vec<Frame> {
    match b.broker.replay(u, since, 0).await.unwrap() {
        Replay::Events(f) => f,
        Replay::Gone { .. } => panic!("{}: the log lost events", b.name),
    }
}

async fn a_guard_that_fails_writes_nothing_and_sends_nothing(kind: Kind) {
    let b = backend(kind).await;
    let ann = uid("ann");
    let start = b.broker.last_id(&ann).await.unwrap();
    let u1 = user("ann", 0);
    let mut step = Step::new(0).guard(Guard::User(ann.clone(), 0));
    step.users.push(u1.clone());
    assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done, "{}", b.name);

    // The same guard again: someone changed the user since version 0.
    let mut stale = Step::new(0).guard(Guard::User(ann.clone(), 0));
    stale.users.push(user("ann", 0));
    stale.events.push((ann.clone(), Event::user(u1.clone())));
    assert_eq!(b.store.commit(&stale).await.unwrap(), Commit::Conflict, "{}", b.name);
    let s = b.store.read(&Read { users: vec![ann.clone()], ..Read::default() }).await.unwrap();
    // As clients see it (timestamps travel with milliseconds).
    assert_eq!(serde_json::to_value(&s.users[&ann]).unwrap(), serde_json::to_value(&u1).unwrap(), "{}: the refused step wrote", b.name);
    assert!(log_after(&b, &ann, start).await.is_empty(), "{}: the refused step sent", b.name);
}

async fn rooms_are_indexed_counted_and_guarded_by_state(kind: Kind) {
    let b = backend(kind).await;
    let (o, a, c) = (uid("own"), uid("ab"), uid("cc"));
    let room = Connection::new(o.clone(), a.clone(), Utc::now());
    let mut step = Step::new(0).guard(Guard::CanShow { owner: o.clone(), abonent: a.clone(), max: 1 });
    step.rooms.push((room.clone(), true));
    step.events.push((o.clone(), show_cam(&room)));
    assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done, "{}", b.name);
    // The pair exists, and the owner is full: both refuse another room.
    for ab in [&a, &c] {
        let again = Step::new(0).guard(Guard::CanShow { owner: o.clone(), abonent: ab.clone(), max: 1 });
        assert_eq!(b.store.commit(&again).await.unwrap(), Commit::Conflict, "{} {ab}", b.name);
    }
    let s = b
        .store
        .read(&Read { pair: Some((o.clone(), a.clone())), owned_by: Some(o.clone()), watched_by: Some(a.clone()), rooms: vec![room.room_id.clone()], ..Read::default() })
        .await
        .unwrap();
    assert_eq!((s.viewers, s.owned.len(), s.watched.len()), (1, 1, 1), "{}", b.name);
    let json = |c: &Connection| serde_json::to_value(c).unwrap();
    assert_eq!(s.pair_room.as_ref().map(|r| json(&r.room)), Some(json(&room)), "{}", b.name);
    let rev = s.rooms[&room.room_id].rev;

    // Open: passes while open, and a revision guard catches a stale write.
    assert_eq!(b.store.commit(&Step::new(0).guard(Guard::Open(room.room_id.clone()))).await.unwrap(), Commit::Done);
    let mut closed = room.clone();
    closed.close("hangup", Utc::now());
    let mut close = Step::new(0).guard(Guard::Room(room.room_id.clone(), rev)).guard(Guard::Owned(o.clone(), 1));
    close.rooms.push((closed.clone(), false));
    assert_eq!(b.store.commit(&close).await.unwrap(), Commit::Done, "{}", b.name);
    assert_eq!(b.store.commit(&close).await.unwrap(), Commit::Conflict, "{}: a second close on the old revision", b.name);
    assert_eq!(b.store.commit(&Step::new(0).guard(Guard::Open(room.room_id.clone()))).await.unwrap(), Commit::Closed, "{}", b.name);
    assert_eq!(b.store.commit(&Step::new(0).guard(Guard::Open(RoomId::new()))).await.unwrap(), Commit::Missing, "{}", b.name);
    let s = b.store.read(&Read { pair: Some((o.clone(), a.clone())), owned_by: Some(o.clone()), watched_by: Some(a.clone()), ..Read::default() }).await.unwrap();
    assert_eq!((s.viewers, s.owned.len(), s.watched.len(), s.pair_room.is_none()), (0, 0, 0, true), "{}: a closed room leaves the indexes", b.name);
}

async fn an_answer_is_kept_with_its_step_and_a_retry_finds_it(kind: Kind) {
    let b = backend(kind).await;
    let (u, k) = (uid("idem"), IdempotencyKey::parse("k-1").unwrap());
    let start = b.broker.last_id(&u).await.unwrap();
    let mut step = Step::new(0).guard(Guard::Fresh(u.clone(), k.clone()));
    step.record = Some(Kept { user: u.clone(), key: k.clone(), record: "the answer".into(), per_user_max: 10 });
    step.events.push((u.clone(), Event::user(user("idem", 0))));
    assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done, "{}", b.name);
    assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Recorded("the answer".into()), "{}", b.name);
    let s = b.store.read(&Read { record: Some((u.clone(), k.clone())), ..Read::default() }).await.unwrap();
    assert_eq!(s.record.as_deref(), Some("the answer"));
    assert_eq!(log_after(&b, &u, start).await.len(), 1, "{}: the retry sent its event again", b.name);
    // Keys belong to their user.
    let other = Step::new(0).guard(Guard::Fresh(uid("someone"), k.clone()));
    assert_eq!(b.store.commit(&other).await.unwrap(), Commit::Done, "{}", b.name);
}

async fn a_user_keeps_at_most_per_user_max_answers_and_the_oldest_go_first(kind: Kind) {
    let b = backend(kind).await;
    let u = uid("keeper");
    let key = |i: usize| IdempotencyKey::parse(&format!("k-{i}")).unwrap();
    for i in 0..5 {
        let mut step = Step::new(1_000_000 * (i as i64 + 1)).guard(Guard::Fresh(u.clone(), key(i)));
        step.record = Some(Kept { user: u.clone(), key: key(i), record: format!("answer {i}"), per_user_max: 3 });
        assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done, "{}", b.name);
    }
    for i in 0..5 {
        let s = b.store.read(&Read { record: Some((u.clone(), key(i))), ..Read::default() }).await.unwrap();
        let want = (i >= 2).then(|| format!("answer {i}"));
        assert_eq!(s.record, want, "{}: key {i}", b.name);
    }
    // Another user's keys are not counted against this one.
    let other = uid("other-keeper");
    let mut step = Step::new(0).guard(Guard::Fresh(other.clone(), key(9)));
    step.record = Some(Kept { user: other.clone(), key: key(9), record: "x".into(), per_user_max: 3 });
    b.store.commit(&step).await.unwrap();
    let s = b.store.read(&Read { record: Some((u.clone(), key(4))), ..Read::default() }).await.unwrap();
    assert!(s.record.is_some(), "{}", b.name);
}

async fn events_of_one_step_are_logged_in_order_and_a_new_log_never_passes_for_complete(kind: Kind) {
    let b = backend(kind).await;
    let u = uid("logged");
    assert!(matches!(b.broker.replay(&u, camsig::domain::EventId::START, 0).await.unwrap(), Replay::Gone { .. }), "{}: 0-0 before any log", b.name);
    let start = b.broker.last_id(&u).await.unwrap();
    assert_ne!(start, camsig::domain::EventId::START, "{}", b.name);
    let rooms: Vec<Connection> = (0..3).map(|_| Connection::new(uid("x"), uid("y"), Utc::now())).collect();
    let mut step = Step::new(0);
    for r in &rooms {
        step.events.push((u.clone(), show_cam(r)));
    }
    assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done);
    let got = log_after(&b, &u, start).await;
    let ids: Vec<_> = got.iter().map(|f| f.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{}: {ids:?}", b.name);
    for (f, r) in got.iter().zip(&rooms) {
        assert!(f.json.contains(r.room_id.as_str()), "{}: out of order", b.name);
    }
    assert_eq!(b.broker.last_id(&u).await.unwrap(), *ids.last().unwrap());
}

async fn sessions_are_counted_and_guarded(kind: Kind) {
    let b = backend(kind).await;
    let u = uid("sess");
    let (s1, s2) = (SessionId::new(), SessionId::new());
    for s in [&s1, &s2] {
        let mut step = Step::new(0);
        step.sessions.push(SessionWrite { user: u.clone(), session: s.clone(), node: "n1".into(), open: true, info: None });
        assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done);
    }
    let read = Read { sessions_of: Some(u.clone()), ..Read::default() };
    assert_eq!(b.store.read(&read).await.unwrap().sessions.len(), 2, "{}", b.name);
    let mut close = Step::new(0).guard(Guard::HasSession(u.clone(), s1.clone())).guard(Guard::Sessions(u.clone(), 2));
    close.sessions.push(SessionWrite { user: u.clone(), session: s1.clone(), node: "n1".into(), open: false, info: None });
    assert_eq!(b.store.commit(&close).await.unwrap(), Commit::Done, "{}", b.name);
    assert_eq!(b.store.commit(&close).await.unwrap(), Commit::Conflict, "{}: closed twice", b.name);
    assert_eq!(b.store.read(&read).await.unwrap().sessions.len(), 1, "{}", b.name);
}

/// A long poll's answer is bounded where the log is read: at most the budget
/// of event JSON, at least one event, the rest left for the next page.
async fn a_replay_with_a_byte_budget_pages_through_the_log_in_order(kind: Kind) {
    let b = backend(kind).await;
    let u = uid("paged");
    let start = b.broker.last_id(&u).await.unwrap();
    let rooms: Vec<Connection> = (0..10).map(|_| Connection::new(uid("x"), uid("y"), Utc::now())).collect();
    for r in &rooms {
        let mut step = Step::new(0);
        step.events.push((u.clone(), show_cam(r)));
        assert_eq!(b.store.commit(&step).await.unwrap(), Commit::Done);
    }
    let all = log_after(&b, &u, start).await;
    assert_eq!(all.len(), 10, "{}: budget 0 is the whole log", b.name);
    let one = all[0].json.len();
    let (b, u) = (&b, &u);
    let page = move |since, budget| {
        async move {
            match b.broker.replay(u, since, budget).await.unwrap() {
                Replay::Events(f) => f,
                Replay::Gone { .. } => panic!("{}: the log lost events", b.name),
            }
        }
    };
    // Smaller than one event: still one, so a poll always moves on.
    assert_eq!(page(start, 1).await.len(), 1, "{}", b.name);
    let budget = one * 3 + one / 2;
    let (mut since, mut got, mut pages) = (start, Vec::new(), 0);
    while got.len() < all.len() {
        let p = page(since, budget).await;
        assert!(!p.is_empty() && p.len() <= 3, "{}: a page of {} events for about 3.5 of them", b.name, p.len());
        since = p.last().unwrap().id.unwrap();
        got.extend(p);
        pages += 1;
    }
    assert!(pages >= 4, "{}: 10 events in {pages} pages of 3 at most", b.name);
    let ids = |v: &[Frame]| v.iter().map(|f| f.id.unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&all), "{}: every event once, in order", b.name);
}
