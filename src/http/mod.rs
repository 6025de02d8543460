//! The HTTP surface: thin handlers over `Service`, extractors that run the
//! contract's checks in order (401, 429, 413/400), request metrics and spans,
//! and the OpenAPI document derived from the handlers.

pub mod admin;
pub mod connections;
pub mod errors;
pub mod extract;
pub mod ops;
pub mod request_log;
pub mod webrtc;
pub mod wsdoc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{App, Error as ActixError, HttpResponse, web};
use actix_web::http::Method;
use futures_util::FutureExt;
use tracing_actix_web::TracingLogger;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::{AppExt, UtoipaApp, scope};

use crate::error::Error;
use crate::node::Node;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "camsig",
        description = "Camera presence and WebRTC signaling. Act through these endpoints; hear events on the WebSocket `/ws`.",
    ),
    components(schemas(
        crate::error::ErrorResponse,
        crate::error::ErrorCode,
        crate::domain::event::Hello,
        crate::domain::event::UserEventData,
        crate::domain::event::ShowCamData,
        crate::domain::event::PutOfferData,
        crate::domain::event::PutAnswerData,
        crate::domain::event::PutIceData,
        crate::domain::event::HangupData,
        crate::domain::event::ResyncData,
        crate::domain::event::ReconnectData,
        crate::domain::event::TokenExpiringData,
        crate::protocol::bodies::RefreshBody,
        crate::protocol::bodies::RefreshReply,
        crate::protocol::bodies::WatchBody,
        crate::protocol::bodies::WatchReply,
        crate::domain::event::MemberJoinedData,
        crate::domain::event::MemberLeftData,
        crate::domain::event::PeerData,
        crate::domain::event::PeerMessageData,
        crate::domain::event::KickedData,
        crate::protocol::bodies::MeetingJoinFields,
        crate::protocol::bodies::MeetingRef,
        crate::protocol::bodies::CameraOnBody,
    )),
    servers((url = "http://127.0.0.1:8080", description = "A node started with `cargo run`")),
    modifiers(&BearerAuth),
    tags(
        (name = "camera", description = "Turning a camera on and off, and asking to see one"),
        (name = "signaling", description = "SDP offer/answer and ICE candidates between the two sides of a room"),
        (name = "meetings", description = "Group calls: a mesh with one room per pair of members, roles given by the server"),
        (name = "directory", description = "Who is online, who has a camera on, rooms and ICE servers"),
        (name = "events", description = "My events by long poll, for clients that cannot hold the WebSocket `/ws`"),
        (name = "ops", description = "Health, readiness, metrics"),
        (name = "admin", description = "For operators, with an admin token (its claims hold `\"admin\": true`; `camsig token <id> --admin`): what the service holds, disconnecting and banning users, closing rooms, dead webhooks"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.bearer_format = Some("JWT".into());
        admin.description = Some("A JWT whose claims hold `\"admin\": true` (`camsig token <id> --admin`); any other token gets 403 `forbidden`".into());
        components.add_security_scheme("admin", SecurityScheme::Http(admin));
    }
}

/// Adds every route that goes into the spec.
fn routes<T>(app: UtoipaApp<T>) -> UtoipaApp<T>
where
    T: actix_web::dev::ServiceFactory<ServiceRequest, Config = (), Error = ActixError, InitError = ()>,
{
    app.openapi(ApiDoc::openapi())
        .service(
            scope::scope("/webrtc")
                .service(webrtc::camera_on)
                .service(webrtc::camera_off)
                .service(webrtc::camera_show)
                .service(webrtc::offer)
                .service(webrtc::answer)
                .service(webrtc::ice)
                .service(webrtc::hangup)
                .service(webrtc::meeting_create)
                .service(webrtc::meeting_join)
                .service(webrtc::meeting_leave)
                .service(webrtc::meeting)
                .service(webrtc::users)
                .service(webrtc::user)
                .service(webrtc::connection)
                .service(webrtc::ice_servers)
                .service(webrtc::events),
        )
        .service(
            scope::scope("/admin")
                .service(admin::stats)
                .service(admin::nodes)
                .service(admin::user)
                .service(admin::disconnect)
                .service(admin::close_room)
                .service(admin::dead_webhooks)
                .service(admin::replay_webhook),
        )
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi_json)
        .service(ops::asyncapi_json)
        .service(ops::demo)
        .service(ops::client_script)
        .service(ops::dev_token)
        .service(ops::websocket)
}

/// The OpenAPI document, as the code declares it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(routes(App::new().into_utoipa_app()).split_for_parts().1)
}

/// Last touches once every route has added its schemas: the WebSocket
/// protocol's, every operation's errors, and the patterns of free text.
fn finish(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    wsdoc::WsSchemas.modify(&mut api);
    errors::add(&mut api);
    // Free text others read: the characters `domain::text` refuses, as patterns
    // (an attribute takes only a literal; these come from the one table).
    use crate::domain::text::{id_pattern, name_pattern, reason_pattern, title_pattern};
    let (id, reason, title, name) = (id_pattern(), reason_pattern(), title_pattern(), name_pattern());
    for (schema, field, pattern) in [
        ("ShowBody", "user_id", &id),
        ("DevTokenBody", "user_id", &id),
        ("HangupBody", "reason", &reason),
        ("MeetingCreateBody", "title", &title),
        ("MeetingJoinBody", "name", &name),
        ("MeetingJoinFields", "name", &name),
    ] {
        use utoipa::openapi::{RefOr, schema::Schema};
        let components = api.components.as_mut().expect("the document has components");
        let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema) else { panic!("no schema {schema}") };
        let Some(RefOr::T(Schema::Object(p))) = o.properties.get_mut(field) else { panic!("no field {schema}.{field}") };
        p.pattern = Some(pattern.clone());
    }
    let users = api.paths.paths.get_mut("/webrtc/users").and_then(|i| i.get.as_mut()).expect("GET /webrtc/users");
    let cursor = users.parameters.iter_mut().flatten().find(|p| p.name == "cursor").expect("the cursor parameter");
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o))) = cursor.schema.as_mut() {
        o.pattern = Some(id);
    }
    api
}

/// The whole application of one node.
pub fn app(
    node: Node,
) -> App<impl actix_web::dev::ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<impl MessageBody>, Error = ActixError, InitError = ()>> {
    let (app, api) = routes(App::new().into_utoipa_app()).split_for_parts();
    let api = finish(api);
    // Every documented (route, status) series exists from the start, at 0.
    for (path, item) in &api.paths.paths {
        for op in [&item.get, &item.post, &item.put, &item.delete, &item.patch].into_iter().flatten() {
            for status in op.responses.responses.keys() {
                node.metrics.http_requests.with_label_values(&[path, status]).reset();
            }
        }
    }
    let api = web::Data::new(api);
    let metrics_node = node.clone();
    let proxies = web::Data::new(request_log::TrustedProxies(node.settings.server.trusted_proxies.clone()));
    app.app_data(web::Data::new(node))
        .app_data(proxies)
        .app_data(api)
        .app_data(web::QueryConfig::default().error_handler(|e, _| Error::BadRequest(format!("invalid query string: {}", inner(&e))).into()))
        .app_data(web::PathConfig::default().error_handler(|e, _| Error::BadRequest(format!("invalid path: {}", inner(&e))).into()))
        .default_service(web::to(unmatched))
        .wrap_fn(move |req, srv| {
            let node = metrics_node.clone();
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
            actix_web::dev::Service::call(srv, req).map(move |res| {
                let status = match &res {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => e.as_response_error().status_code().as_u16(),
                };
                node.metrics.http_requests.with_label_values(&[&route, &status.to_string()]).inc();
                res
            })
        })
        .wrap(TracingLogger::<request_log::Spans>::new())
        .wrap_fn(|mut req, srv| {
            // HEAD is GET without the body: the HTTP/1 codec already knows the
            // request was HEAD and sends no body.
            if req.method() == Method::HEAD {
                req.head_mut().method = Method::GET;
            }
            actix_web::dev::Service::call(srv, req)
        })
        .wrap(actix_web::middleware::from_fn(connections::close_unread))
}

/// The innermost cause of an extractor error: serde's words.
fn inner(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// No route took the request: 405 when the path is known (the spec lists its methods), else 404.
async fn unmatched(req: actix_web::HttpRequest, api: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    let path = req.path();
    let fits = |template: &str| {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    };
    let Some((_, item)) = api.paths.paths.iter().find(|(t, _)| fits(t)) else {
        return HttpResponse::from_error(Error::NotFound);
    };
    let ops = [
        ("DELETE", &item.delete),
        ("GET", &item.get),
        ("HEAD", &item.head),
        ("OPTIONS", &item.options),
        ("PATCH", &item.patch),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("TRACE", &item.trace),
    ];
    let mut allow: Vec<&str> = ops.iter().filter(|(_, op)| op.is_some()).map(|(m, _)| *m).collect();
    if item.get.is_some() && item.head.is_none() {
        allow.push("HEAD");
        allow.sort_unstable();
    }
    HttpResponse::from_error(Error::MethodNotAllowed { allow: allow.join(", ") })
}
