//! `/admin` handlers, for operators: an admin token (the `admin` claim) is
//! needed (`Admin`: 401 without a valid token, 403 for any other); the
//! service's `admin` operations do the work.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post, web};
use futures_util::future::{Ready, ready};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Body;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::service::admin::{Disconnected, MAX_BAN_S, Nodes, Stats, UserView};
use crate::store::DeadHook;

/// An operator: the caller of an admin token. Bans do not apply.
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = Error;
    type Future = Ready<std::result::Result<Admin, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let node = req.app_data::<web::Data<Node>>().expect("the node is in app data").get_ref().clone();
        ready(node.auth.authenticate(req, false).and_then(|caller| {
            crate::http::connections::authenticated(req);
            if !caller.admin {
                return Err(Error::Forbidden("an admin token is needed (its claims hold \"admin\": true; see `camsig token --admin`)".into()));
            }
            node.rates.check_call(&caller.user)?;
            Ok(Admin(caller))
        }))
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// Sent to the user in `kicked` (default `kicked`); their rooms and meetings close and are left with reason `kicked` whatever it is.
    #[schema(example = "spam", min_length = 1, max_length = 64)]
    pub reason: Option<String>,
    /// Refuse the user's REST calls, polls and WebSocket handshakes (403) for this long, 1 to 31536000.
    #[schema(example = 3600, minimum = 1, maximum = 31536000)]
    pub ban_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRoomBody {
    /// The `hangup` reason both sides get (default `closed`).
    #[schema(example = "abuse", min_length = 1, max_length = 64)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeadParams {
    /// At most this many, newest first (1 to 1000, default 100).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadHooks {
    pub dead: Vec<DeadHook>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Back in its queue, for its receiver only.
    pub replayed: bool,
}

/// Counts of what the service holds now, over every node.
///
/// `users_online`, `cameras_on`, `rooms_open` and `meetings_open` are kept
/// by the steps that change them; `nodes` and `sessions` come from the
/// nodes' leases.
#[utoipa::path(
    operation_id = "adminStats", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "The counts", body = Stats))
)]
#[get("/stats")]
pub async fn stats(node: web::Data<Node>, _admin: Admin) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.admin_stats(node.registry.session_count()).await?))
}

/// The nodes holding a lease, with their sessions.
#[utoipa::path(
    operation_id = "adminNodes", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "The nodes", body = Nodes))
)]
#[get("/nodes")]
pub async fn nodes(node: web::Data<Node>, _admin: Admin) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.admin_nodes(node.registry.session_count()).await?))
}

/// A user: their state, sessions (on which node, how connected, since
/// when), open rooms and meetings.
#[utoipa::path(
    operation_id = "adminUser", tag = "admin", security(("admin" = [])),
    params(("user_id" = String, Path, description = "The user")),
    responses((status = 200, description = "The user", body = UserView))
)]
#[get("/users/{user_id}")]
pub async fn user(node: web::Data<Node>, _admin: Admin, id: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.admin_user(&id).await?))
}

/// Disconnect a user everywhere, and optionally ban them.
///
/// Every session of the user, on every node, gets `kicked` and closes with
/// code 4003; the camera goes off, rooms close and meetings are left at
/// once (reason `kicked`, or the one given). With `ban_s`, the user's REST
/// calls, polls and handshakes get 403 `forbidden` for that long, on every
/// node (within one sweep, 250 ms, of the ban on the others), across
/// restarts. A user never seen is 404 unless `ban_s` is given.
#[utoipa::path(
    operation_id = "adminDisconnect", tag = "admin", security(("admin" = [])),
    params(("user_id" = String, Path, description = "The user")),
    request_body(content = Option<DisconnectBody>, description = "Optional `reason` and `ban_s`"),
    responses((status = 200, description = "Disconnected", body = Disconnected))
)]
#[post("/users/{user_id}/disconnect")]
pub async fn disconnect(node: web::Data<Node>, _admin: Admin, id: web::Path<String>, body: Body<DisconnectBody>) -> Result<HttpResponse> {
    let ban = match body.0.ban_s {
        None => None,
        Some(s) if (1..=MAX_BAN_S).contains(&s) => Some(std::time::Duration::from_secs(s)),
        Some(_) => return Err(Error::BadRequest(format!("ban_s is 1 to {MAX_BAN_S}"))),
    };
    Ok(HttpResponse::Ok().json(node.service.admin_disconnect(&id, body.0.reason, ban).await?))
}

/// Close a room: both sides get `hangup` (with the operator's user id).
///
/// A room closed already is answered as it is. The Connection comes without its SDPs.
#[utoipa::path(
    operation_id = "adminCloseRoom", tag = "admin", security(("admin" = [])),
    params(("room_id" = String, Path, description = "The room")),
    request_body(content = Option<CloseRoomBody>, description = "Optional `reason`"),
    responses((status = 200, description = "The room, closed", body = crate::domain::Connection))
)]
#[post("/rooms/{room_id}/close")]
pub async fn close_room(node: web::Data<Node>, admin: Admin, id: web::Path<String>, body: Body<CloseRoomBody>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.admin_close_room(&admin.0.user, &id, body.0.reason).await?))
}

/// Webhooks a receiver never took within `webhooks.max_attempts`, newest first.
#[utoipa::path(
    operation_id = "adminDeadWebhooks", tag = "admin", security(("admin" = [])),
    params(DeadParams),
    responses((status = 200, description = "The dead letters", body = DeadHooks))
)]
#[get("/webhooks/dead")]
pub async fn dead_webhooks(node: web::Data<Node>, _admin: Admin, q: web::Query<DeadParams>) -> Result<HttpResponse> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::BadRequest("limit is 1 to 1000".into()));
    }
    Ok(HttpResponse::Ok().json(DeadHooks { dead: node.service.store().dead_hooks(limit).await? }))
}

/// Send a dead letter again, to its receiver only (with the same webhook `id`).
#[utoipa::path(
    operation_id = "adminReplayWebhook", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, description = "A dead letter's `id`")),
    responses((status = 200, description = "Queued again", body = Replayed))
)]
#[post("/webhooks/dead/{id}/replay")]
pub async fn replay_webhook(node: web::Data<Node>, _admin: Admin, id: web::Path<String>) -> Result<HttpResponse> {
    if !node.service.store().replay_dead_hook(&id).await? {
        return Err(Error::NotFound);
    }
    Ok(HttpResponse::Ok().json(Replayed { replayed: true }))
}
