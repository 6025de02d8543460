//! The harness itself works: a node starts, answers, and says hello.

use crate::support::*;

#[actix_web::test]
async fn a_node_starts_and_says_hello() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let ws = app.ws(&token("7")).await;
    assert_eq!(ws.hello["data"]["user_id"], "7");
    // A real position in the (new, empty) log, never the bare start value.
    let last = ws.hello["data"]["last_id"].as_str().unwrap();
    assert!(last != "0-0" && last.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()), "{last}");
}
