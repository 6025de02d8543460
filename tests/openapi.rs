//! The committed specs are exactly what the code declares: `openapi/openapi.yaml`
//! (REST) and `openapi/asyncapi.yaml` (the WebSocket), and the node serves the same.
//! Regenerate both with `UPDATE_OPENAPI=1 cargo test --test openapi`.

#[path = "support/mod.rs"]
pub mod support;

fn check(file: &str, generated: &str) {
    let path = format!("{}/openapi/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/{file} is stale: run `UPDATE_OPENAPI=1 cargo test --test openapi` and commit it"
    );
}

#[test]
fn committed_openapi_matches_the_code() {
    check("openapi.yaml", &camsig::http::openapi().to_yaml().expect("the spec serializes"));
}

#[test]
fn committed_asyncapi_matches_the_code() {
    let doc = camsig::http::wsdoc::asyncapi(&camsig::http::openapi());
    check("asyncapi.yaml", &serde_norway::to_string(&doc).expect("the document serializes"));
}

#[actix_web::test]
async fn the_node_serves_the_same_documents_pointing_at_itself() {
    // The test client stands for a trusted proxy: only a proxy's Host is believed.
    let app = support::spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let here = format!("127.0.0.1:{}", app.port);
    let mut served = app.get("/openapi.json", None).await.body;
    assert_eq!(served["servers"], serde_json::json!([{"url": format!("http://{here}")}]));
    let mut code = serde_json::to_value(camsig::http::openapi()).unwrap();
    served["servers"] = serde_json::Value::Null;
    code["servers"] = serde_json::Value::Null;
    assert_eq!(served, code);
    let mut served = app.get("/asyncapi.json", None).await.body;
    assert_eq!((served["servers"]["local"]["host"].as_str(), served["servers"]["local"]["protocol"].as_str()), (Some(here.as_str()), Some("ws")));
    let mut code = camsig::http::wsdoc::asyncapi(&camsig::http::openapi());
    served["servers"] = serde_json::Value::Null;
    code["servers"] = serde_json::Value::Null;
    assert_eq!(served, code);
    assert_eq!(served["asyncapi"], "3.0.0");
}

/// Issue #23, item 12: from a peer that is not a trusted proxy, neither Host
/// nor X-Forwarded-Host names the servers; the answer says it varies on them.
#[actix_web::test]
async fn an_untrusted_peer_cannot_choose_the_documents_host() {
    let app = support::spawn_app().await;
    let mut res = app.http.get(app.url("/openapi.json")).insert_header(("X-Forwarded-Host", "evil.example")).send().await.unwrap();
    let vary = res.headers().get("vary").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(vary.contains("X-Forwarded-Host") && vary.contains("Host"), "{vary}");
    let body: serde_json::Value = res.json().limit(1 << 22).await.unwrap();
    let code = serde_json::to_value(camsig::http::openapi()).unwrap();
    assert_eq!(body["servers"], code["servers"], "the committed address stands");
}
