//! Everything outside `/webrtc`: health, readiness, metrics, the OpenAPI
//! document, the demo page, dev tokens, and the WebSocket upgrade.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::extract::Body;
use crate::actors::session::{self, Options, PresenceMode};
use crate::config::Broadcast;
use crate::domain::{EventId, SessionId, UserId};
use crate::error::{Error, Result};
use crate::node::Node;

/// How long a dev token lives.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
    pub node_id: String,
}

/// The process is alive.
#[utoipa::path(operation_id = "healthz", tag = "ops", security(()), responses((status = 200, description = "Alive", body = Status)))]
#[get("/healthz")]
pub async fn healthz(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok", node_id: node.id.to_string() })
}

/// The node can serve: it is not draining, its store answers, and (on Redis)
/// its pub/sub link is up.
#[utoipa::path(
    operation_id = "readyz", tag = "ops", security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
    )
)]
#[get("/readyz")]
pub async fn readyz(node: web::Data<Node>) -> Result<HttpResponse> {
    node.ready().await?;
    Ok(HttpResponse::Ok().json(Status { status: "ready", node_id: node.id.to_string() }))
}

/// Prometheus metrics of this node.
#[utoipa::path(
    operation_id = "metrics", tag = "ops", security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
pub async fn metrics(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(node.metrics.render())
}

/// This OpenAPI document.
#[utoipa::path(
    operation_id = "openapi", tag = "ops", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
#[get("/openapi.json")]
pub async fn openapi_json(req: HttpRequest, api: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    let mut api = api.get_ref().clone();
    if let Some((scheme, host)) = origin(&req) {
        api.servers = Some(vec![utoipa::openapi::Server::new(format!("{scheme}://{host}"))]);
    }
    HttpResponse::Ok().insert_header(VARY_ORIGIN).json(api)
}

/// The served documents depend on these (see `origin`).
const VARY_ORIGIN: (&str, &str) = ("Vary", "Host, X-Forwarded-Host, X-Forwarded-Proto, Forwarded");

/// The scheme and host the client reached this node by, as a proxy in
/// `server.trusted_proxies` tells it, so the served documents point at it.
/// From anyone else the committed address stands: a client must not make
/// the document name a host of its choosing. A Host that is not a plain
/// `host[:port]` is ignored.
fn origin(req: &HttpRequest) -> Option<(String, String)> {
    let trusted = req.app_data::<web::Data<super::request_log::TrustedProxies>>().is_some_and(|p| req.peer_addr().is_some_and(|a| p.trusts(a.ip())));
    if !trusted {
        return None;
    }
    let info = req.connection_info();
    let host = info.host();
    let plain = !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then(|| (info.scheme().to_owned(), host.to_owned()))
}

/// The AsyncAPI 3 document of the WebSocket `/ws`: every event and command.
#[utoipa::path(
    operation_id = "asyncapi", tag = "ops", security(()),
    responses((status = 200, description = "The AsyncAPI 3 document", body = Object))
)]
#[get("/asyncapi.json")]
pub async fn asyncapi_json(req: HttpRequest, api: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    let mut doc = super::wsdoc::asyncapi(api.get_ref());
    if let Some((scheme, host)) = origin(&req) {
        let server = &mut doc["servers"]["local"];
        server["host"] = host.into();
        server["protocol"] = if scheme == "https" { "wss" } else { "ws" }.into();
        server["description"] = "The node that served this document.".into();
    }
    HttpResponse::Ok().insert_header(VARY_ORIGIN).json(doc)
}

/// The page as built in, with the server's mode filled in (so the page knows
/// whether to sign in by name without a request that may be refused).
const DEMO_PAGE: &str = include_str!("static/index.html");
const DEV_MARKER: &str = r#"<meta name="camsig-dev" content="">"#;

/// The demo page: sign in, turn a camera on, watch someone's.
#[utoipa::path(
    operation_id = "demoPage", tag = "ops", security(()),
    responses((status = 200, description = "HTML", body = String, content_type = "text/html"))
)]
#[get("/")]
pub async fn demo(node: web::Data<Node>) -> HttpResponse {
    let mode = format!(r#"<meta name="camsig-dev" content="{}">"#, node.auth.is_dev());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", DEMO_CSP.as_str()))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(DEMO_PAGE.replacen(DEV_MARKER, &mode, 1))
}

/// camsig's TypeScript client (`clients/typescript`) as `tsc` compiles it,
/// built in so that the demo page needs no build step; `scripts/e2e
/// client_typescript` fails when it differs from what `tsc` makes of the source.
const CLIENT_FILES: &[(&str, &str)] = &[
    ("index.js", include_str!("static/client/index.js")),
    ("client.js", include_str!("static/client/client.js")),
    ("call.js", include_str!("static/client/call.js")),
    ("meeting.js", include_str!("static/client/meeting.js")),
    ("openapi.js", include_str!("static/client/openapi.js")),
];

/// camsig's TypeScript client, compiled to ES modules: `import { CamsigClient } from "/client/index.js"`.
#[utoipa::path(
    operation_id = "clientScript", tag = "ops", security(()),
    params(("file" = String, Path, description = "`index.js` (which imports the others), `client.js`, `call.js`, `meeting.js` or `openapi.js`")),
    responses((status = 200, description = "JavaScript (an ES module)", body = String, content_type = "text/javascript"))
)]
#[get("/client/{file}")]
pub async fn client_script(file: web::Path<String>) -> Result<HttpResponse> {
    let (_, body) = CLIENT_FILES.iter().find(|(name, _)| *name == file.as_str()).ok_or(Error::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(*body))
}

/// The demo page's policy: its one inline script (a module, which imports
/// camsig's TypeScript client from `/client/`: `'self'`) and one inline
/// style, by hash; requests to this server only; no framing.
static DEMO_CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    use sha2::Digest;
    let hash = |open: &str, close: &str| {
        let body = DEMO_PAGE.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map_or("", |(b, _)| b);
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()))
    };
    format!(
        "default-src 'none'; script-src 'self' 'sha256-{}'; style-src 'sha256-{}'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script type=\"module\">", "</script>"),
        hash("<style>", "</style>"),
    )
});

#[derive(Deserialize, ToSchema)]
pub struct DevTokenBody {
    /// Who the token is for.
    #[schema(example = "ann", min_length = 1, max_length = 128)]
    pub user_id: String,
    /// Shown to others as the token's `name` claim.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DevToken {
    /// A JWT valid for 12 hours.
    pub token: String,
}

/// A token for any user, for trying things out (dev mode only).
///
/// Exists only when the server runs without `auth.jwt_secret`; otherwise 404.
#[utoipa::path(
    operation_id = "devToken", tag = "ops", security(()),
    request_body = DevTokenBody,
    responses(
        (status = 200, description = "A token", body = DevToken),
    )
)]
#[post("/dev/token")]
pub async fn dev_token(node: web::Data<Node>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse> {
    // Not in dev mode the route does not exist: 404 before the body is even read.
    if !node.auth.is_dev() {
        return Err(Error::NotFound);
    }
    let body = <Body<DevTokenBody> as actix_web::FromRequest>::from_request(&req, &mut payload.into_inner()).await?;
    let user = UserId::parse(&body.0.user_id)?;
    let token = node.auth.issue(&user, body.0.name, false, DEV_TOKEN_TTL);
    Ok(HttpResponse::Ok().json(DevToken { token }))
}

/// The `/ws` query. Read in the handler, after the token (401 comes before 400).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsParams {
    /// The JWT, for clients (browsers) that cannot set `Authorization`.
    #[serde(rename = "token")]
    _token: Option<String>,
    /// Replay my events after this id first (from `hello.last_id` or an event's `id`).
    #[param(pattern = r"^[0-9]{1,19}(-[0-9]{1,19})?$")]
    since: Option<String>,
    /// Which `update_user` events this session hears: `all` (everyone's; the
    /// default, `true` and `1` too), `watched` (only the users it `watch`es)
    /// or `none` (`false` and `0` too). With `presence.broadcast = "watched"`,
    /// `all` acts as `watched`.
    #[serde(default, deserialize_with = "presence_mode")]
    #[param(value_type = Option<String>, pattern = "^(all|watched|none|true|false|1|0)$")]
    presence: Option<PresenceMode>,
}

fn presence_mode<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<PresenceMode>, D::Error> {
    match <Option<String>>::deserialize(d)?.as_deref() {
        None => Ok(None),
        Some("all" | "true" | "1") => Ok(Some(PresenceMode::All)),
        Some("watched") => Ok(Some(PresenceMode::Watched)),
        Some("none" | "false" | "0") => Ok(Some(PresenceMode::None)),
        Some(other) => Err(serde::de::Error::custom(format!("presence {other:?} is not all, watched or none"))),
    }
}

/// Open my WebSocket: events in, commands out (see the AsyncAPI document).
///
/// Refused with 401 before the upgrade when the token is bad, and with 400
/// when `since` or `presence` is malformed, or when the request is not a
/// WebSocket handshake (no `Upgrade: websocket`), however valid its
/// parameters.
#[utoipa::path(
    operation_id = "openWebSocket", tag = "events", security(("bearer" = [])),
    params(WsParams),
    responses(
        (status = 101, description = "Switching protocols: the session is open"),
    )
)]
#[get("/ws")]
pub async fn websocket(req: HttpRequest, stream: web::Payload, node: web::Data<Node>) -> actix_web::Result<HttpResponse> {
    let caller = node.auth.authenticate(&req, true)?;
    crate::http::connections::authenticated(&req);
    node.service.bans().check(&caller.user)?;
    // A handshake is a call: opening and closing again and again is bounded
    // by the user's rate, like every command.
    node.rates.check_call(&caller.user)?;
    let allowed = &node.settings.server.allowed_origins;
    if !allowed.is_empty()
        && let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN)
        && !allowed.iter().any(|a| origin.as_bytes().eq_ignore_ascii_case(a.trim_end_matches('/').as_bytes()))
    {
        return Err(Error::Forbidden("this Origin may not open a session (server.allowed_origins)".into()).into());
    }
    let q: WsParams = serde_urlencoded::from_str(req.query_string()).map_err(|e| Error::BadRequest(e.to_string()))?;
    let since = q.since.as_deref().map(EventId::parse_since).transpose()?;
    if node.service.is_draining() {
        return Err(Error::Draining.into());
    }
    session::check_handshake(&req)?;
    // Registered (and counted against the cap) before the 101 goes out; the
    // session records its end however it stops.
    let id = SessionId::new();
    // Redis away: the contract's answer is the WebSocket's own (an error
    // frame, close 1013), not an HTTP one; the session's end is recorded
    // like any other's, in case the register step ran after all (504).
    let refused = match node.service.register_new(&caller.user, &id).await {
        Ok(()) => None,
        Err(e @ (Error::Unavailable(_) | Error::OutcomeUnknown(_))) => Some(e),
        Err(e) => return Err(e.into()),
    };
    let presence = match (q.presence.unwrap_or(PresenceMode::All), node.settings.presence.broadcast) {
        (PresenceMode::All, Broadcast::Watched) => PresenceMode::Watched,
        (mode, _) => mode,
    };
    let opts = Options { session: id.clone(), since, presence, refused };
    crate::http::connections::upgraded(&req);
    session::start(&req, stream, node.actors.clone(), caller.clone(), opts).inspect_err(|_| {
        let (service, user) = (node.service.clone(), caller.user.clone());
        actix_web::rt::spawn(async move {
            if let Err(e) = service.close_session(&user, &id).await {
                tracing::warn!(error = %e, "a refused handshake's session could not be ended");
            }
        });
    })
}
