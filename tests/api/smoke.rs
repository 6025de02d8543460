//! The harness itself works: a node starts, answers, and says hello.

use crate::helpers::*;

#[actix_web::test]
async fn a_node_starts_and_says_hello() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let ws = app.ws(&token("7")).await;
    assert_eq!(ws.hello["data"]["user_id"], "7");
    assert_eq!(ws.hello["data"]["last_id"], "0-0");
}
