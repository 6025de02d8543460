//! Everything outside `/webrtc`: health, readiness, metrics, the OpenAPI
//! document, the demo page, dev tokens, and the WebSocket upgrade.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::extract::Body;
use crate::actors::session::{self, Options};
use crate::auth::query_param;
use crate::domain::{EventId, UserId};
use crate::error::{Error, ErrorResponse, Result};
use crate::node::Node;

/// How long a dev token lives.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
    pub node_id: String,
}

/// The process is alive.
#[utoipa::path(operation_id = "healthz", tag = "ops", responses((status = 200, description = "Alive", body = Status)))]
#[get("/healthz")]
pub async fn healthz(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok", node_id: node.id.to_string() })
}

/// The node can serve: its store answers.
#[utoipa::path(
    operation_id = "readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "unavailable", body = ErrorResponse),
    )
)]
#[get("/readyz")]
pub async fn readyz(node: web::Data<Node>) -> Result<HttpResponse> {
    node.service.store().ping().await?;
    Ok(HttpResponse::Ok().json(Status { status: "ready", node_id: node.id.to_string() }))
}

#[get("/metrics")]
pub async fn metrics(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(node.metrics.render())
}

#[get("/openapi.json")]
pub async fn openapi_json(api: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(api.get_ref())
}

#[get("/")]
pub async fn demo() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("static/index.html"))
}

#[derive(Deserialize)]
pub struct DevTokenBody {
    pub user_id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Dev mode only (no `auth.jwt_secret`): a token for any user, for the demo page.
#[post("/dev/token")]
pub async fn dev_token(node: web::Data<Node>, body: Body<DevTokenBody>) -> Result<HttpResponse> {
    let user = UserId::parse(&body.0.user_id)?;
    let token = node.auth.issue(&user, body.0.name, DEV_TOKEN_TTL);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "token": token })))
}

/// `GET /ws`: the handshake is refused with 401 before any upgrade.
pub async fn websocket(req: HttpRequest, stream: web::Payload, node: web::Data<Node>) -> actix_web::Result<HttpResponse> {
    let caller = node.auth.authenticate(&req, true)?;
    let q = req.query_string();
    let since = query_param(q, "since")
        .map(|s| s.parse::<EventId>().map_err(|_| Error::BadRequest(format!("since {s:?} is not an event id"))))
        .transpose()?;
    let presence = match query_param(q, "presence").as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => return Err(Error::BadRequest(format!("presence {other:?} is not true or false")).into()),
    };
    session::start(&req, stream, node.get_ref().clone(), caller, Options { since, presence })
}
