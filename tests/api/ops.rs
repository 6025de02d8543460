//! Outside `/webrtc`: health, readiness, the OpenAPI document, the demo page,
//! and Prometheus metrics that move with the traffic.

use crate::support::*;
use serde_json::json;

#[actix_web::test]
async fn health_readiness_openapi_and_demo_page() {
    let app = spawn_app().await;
    let h = app.get("/healthz", None).await;
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let r = app.get("/readyz", None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));

    let api = app.get("/openapi.json", None).await;
    assert_eq!(api.status, 200);
    assert!(api.body["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "{}", api.body["openapi"]);
    for path in ["/webrtc/cameraOn", "/webrtc/cameraOff", "/webrtc/cameraShow", "/webrtc/offer", "/webrtc/answer", "/webrtc/ice", "/webrtc/hangup", "/webrtc/users", "/webrtc/users/{user_id}", "/webrtc/connections/{room_id}", "/webrtc/iceServers"] {
        assert!(api.body["paths"].get(path).is_some(), "{path} is in the spec");
    }

    let mut page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let ct = page.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    let header = |name: &str| page.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!((header("x-frame-options"), header("x-content-type-options")), ("DENY".into(), "nosniff".into()));
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self' 'sha256-") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = String::from_utf8_lossy(&page.body().await.unwrap()).into_owned();
    assert!(html.to_lowercase().contains("<html"));
    // The page knows the server's mode without asking (and being refused).
    assert!(html.contains(r#"<meta name="camsig-dev" content="false">"#), "a server with a secret says so");
    let dev = spawn_app_with(|s| s.auth.jwt_secret = None).await;
    let mut page = dev.http.get(dev.url("/")).send().await.unwrap();
    assert!(String::from_utf8_lossy(&page.body().await.unwrap()).contains(r#"<meta name="camsig-dev" content="true">"#), "dev mode says so");
}

#[actix_web::test]
async fn the_typescript_client_is_built_in() {
    let app = spawn_app().await;
    for file in ["index.js", "client.js", "call.js", "meeting.js", "openapi.js"] {
        let mut r = app.http.get(app.url(&format!("/client/{file}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{file}");
        let ct = r.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/javascript"), "{file}: {ct}");
        let body = String::from_utf8_lossy(&r.body().await.unwrap()).into_owned();
        assert!(file == "openapi.js" || body.contains("export"), "{file} is an ES module");
    }
    let index = app.http.get(app.url("/client/index.js")).send().await.unwrap().body().await.unwrap();
    assert!(String::from_utf8_lossy(&index).contains("./client.js"), "index.js imports its siblings");
    for missing in ["/client/nope.js", "/client/..%2Fclient.js", "/client/"] {
        let r = app.get(missing, None).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("not_found")), "{missing}");
    }
}

#[actix_web::test]
async fn metrics_carry_the_process_and_every_series_from_the_start() {
    let app = spawn_app().await;
    let m = app.metrics().await;
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} in\n{m}");
    }
    assert!(metric(&m, "process_resident_memory_bytes", &[]) > 1e6);
    // Before any traffic: documented routes and statuses, and every event action, at 0.
    let series = |route: &str, status: &str| {
        m.lines().find(|l| l.starts_with("camsig_http_requests_total{") && l.contains(&format!(r#"route="{route}""#)) && l.contains(&format!(r#"status="{status}""#))).map(|l| l.ends_with(" 0"))
    };
    assert_eq!(series("/webrtc/offer", "422"), Some(true), "{m}");
    assert_eq!(series("/webrtc/users/{user_id}", "404"), Some(true), "{m}");
    for action in ["put_offer", "put_answer", "put_ice", "hangup", "member_left"] {
        assert!(m.contains(&format!(r#"action="{action}""#)), "{action} in\n{m}");
    }
}

#[actix_web::test]
async fn metrics_count_requests_sessions_and_delivered_events() {
    let app = spawn_app().await;
    let (ann, bob) = (token("ann"), token("bob"));
    let on = [("route", "/webrtc/cameraOn"), ("status", "200")];
    let show = [("action", "show_cam")];
    let m0 = app.metrics().await;
    assert_eq!(metric(&m0, "camsig_ws_sessions_open", &[]), 0.0);
    assert!(m0.lines().any(|l| l.starts_with("camsig_long_polls_waiting{") && l.ends_with(" 0")), "the poll gauge exists from the start");

    let mut obs = app.ws(&token("obs")).await;
    let mut a = app.ws(&ann).await;
    app.camera_on(&ann).await;
    app.camera_on(&ann).await;
    app.camera_on(&token("")).await; // refused: 401
    app.show(&bob, "ann").await;
    a.next_event().await; // show_cam, written to the socket

    let m1 = app.metrics().await;
    assert!(m1.contains("# TYPE camsig_http_requests_total counter"), "{m1}");
    assert_eq!(metric(&m1, "camsig_http_requests_total", &on) - metric(&m0, "camsig_http_requests_total", &on), 2.0);
    assert!(metric(&m1, "camsig_http_requests_total", &[("route", "/webrtc/cameraOn"), ("status", "401")]) >= 1.0);
    assert_eq!(metric(&m1, "camsig_ws_sessions_open", &[]), 2.0);
    assert_eq!(metric(&m1, "camsig_events_delivered_total", &show) - metric(&m0, "camsig_events_delivered_total", &show), 1.0);
    let delivered = metric(&m1, "camsig_event_delivery_seconds_count", &[]);
    assert!(delivered >= 1.0, "{delivered}");

    // A session that ends leaves the gauge; the observer hears it after the fact.
    a.close().await;
    obs.wait_user("ann", |u| u["online"] == false).await;
    let m2 = app.metrics().await;
    assert_eq!(metric(&m2, "camsig_ws_sessions_open", &[]), 1.0);
    assert!(metric(&m2, "camsig_events_delivered_total", &[("action", "update_user")]) > metric(&m1, "camsig_events_delivered_total", &[("action", "update_user")]));
    assert_eq!(obs.command(json!({"cmd": "ping", "ack": 1})).await["cmd"], "ack");
}
