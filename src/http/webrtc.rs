//! `/webrtc` handlers. The extractors check the caller, the rate and the body
//! (`extract`), the bodies become typed commands (`protocol::bodies`), and the
//! service does the rest; a handler only picks the REST status of the reply.
//! The reads check their own query strings (`limit`, `cursor`, `timeout_s`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, Idempotency};
use crate::auth::Caller;
use crate::domain::{Camera, Connection, Event, EventId, UserId, UserState};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::protocol::bodies::{AnswerBody, CameraOffBody, CameraOnBody, HangupBody, IceBody, MeetingCreateBody, MeetingJoinBody, MeetingLeaveBody, OfferBody, ShowBody};
use crate::domain::Meeting;
use crate::service::command::Command;
use crate::service::reply::{ConnectionReply, Executed, IceReply, JoinReply, MeetingReply, Reply, ShowReply, UserReply};
use crate::domain::ice_servers::IceServers;
use crate::store::UserQuery;

/// Most users one page of `GET users` returns.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;

/// The REST status of each reply.
pub fn status(reply: &Reply) -> StatusCode {
    match reply {
        Reply::User(_) | Reply::Hangup(_) => StatusCode::OK,
        Reply::Show { created: true, .. } => StatusCode::CREATED,
        Reply::Show { created: false, .. } => StatusCode::OK,
        Reply::Offer(_) | Reply::Answer(_) | Reply::Ice(_) => StatusCode::ACCEPTED,
        Reply::MeetingCreated(_) => StatusCode::CREATED,
        Reply::MeetingJoined(_) | Reply::MeetingLeft(_) => StatusCode::OK,
    }
}

fn respond(done: Executed) -> HttpResponse {
    let mut res = HttpResponse::build(status(&done.reply));
    if done.replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    res.json(done.reply.body())
}

async fn run(node: &Node, caller: &Caller, cmd: Result<Command>, idem: Idempotency) -> Result<HttpResponse> {
    Ok(respond(node.actors.execute(&caller.user, cmd?, idem.key).await?))
}

/// Turn my camera on.
///
/// Everyone hears `update_user` (not when nothing changed). With no WebSocket
/// open, the presence grace period starts: open one within `presence.grace_s`
/// or the camera goes off again. A `meta` over 1 KiB once serialized is 413
/// `payload_too_large`, which no schema can state; a `meta.name` is held to
/// a member name's rules (a string with a letter or digit, nothing hidden),
/// else 400.
#[utoipa::path(
    operation_id = "cameraOn", tag = "camera", security(("bearer" = [])), params(Idempotency),
    request_body(content = Option<CameraOnBody>, description = "Optional `meta`, a JSON object of at most 1 KiB"),
    responses(
        (status = 200, description = "The camera is on", body = UserReply),
    )
)]
#[post("/cameraOn")]
pub async fn camera_on(node: web::Data<Node>, caller: Caller, body: Body<CameraOnBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// Turn my camera off.
///
/// Everyone hears `update_user`; every open room I own closes and its viewer hears `hangup` (reason `camera_off`).
#[utoipa::path(
    operation_id = "cameraOff", tag = "camera", security(("bearer" = [])), params(Idempotency),
    request_body(content = Option<CameraOffBody>, description = "Empty"),
    responses(
        (status = 200, description = "The camera is off", body = UserReply),
    )
)]
#[post("/cameraOff")]
pub async fn camera_off(node: web::Data<Node>, caller: Caller, _body: Body<CameraOffBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, Ok(Command::CameraOff), idem).await
}

/// Ask to see a user's camera.
///
/// Opens a room (201) and the owner hears `show_cam`; the owner then sends an
/// offer. If a room between the two is already open it is returned (200) and
/// nothing is sent again. Your own `user_id` is 400 `cannot_show_self`.
#[utoipa::path(
    operation_id = "cameraShow", tag = "camera", security(("bearer" = [])), params(Idempotency),
    request_body = ShowBody,
    responses(
        (status = 201, description = "A new room", body = ShowReply),
        (status = 200, description = "The room already open between the two", body = ShowReply),
    )
)]
#[post("/cameraShow")]
pub async fn camera_show(node: web::Data<Node>, caller: Caller, body: Body<ShowBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// Send an SDP offer to the viewer (owner of the room only).
///
/// Allowed in any open state; in `answered` it renegotiates. The abonent hears `put_offer`.
#[utoipa::path(
    operation_id = "offer", tag = "signaling", security(("bearer" = [])), params(Idempotency),
    request_body = OfferBody,
    responses(
        (status = 202, description = "Accepted; the abonent hears put_offer", body = ConnectionReply),
    )
)]
#[post("/offer")]
pub async fn offer(node: web::Data<Node>, caller: Caller, body: Body<OfferBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// Answer the pending offer (abonent of the room only). The owner hears `put_answer`.
#[utoipa::path(
    operation_id = "answer", tag = "signaling", security(("bearer" = [])), params(Idempotency),
    request_body = AnswerBody,
    responses(
        (status = 202, description = "Accepted; the owner hears put_answer", body = ConnectionReply),
    )
)]
#[post("/answer")]
pub async fn answer(node: web::Data<Node>, caller: Caller, body: Body<AnswerBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// Send an ICE candidate to the other side; an empty `candidate` means end of candidates.
#[utoipa::path(
    operation_id = "ice", tag = "signaling", security(("bearer" = [])), params(Idempotency),
    request_body = IceBody,
    responses(
        (status = 202, description = "Accepted; the other side hears put_ice", body = IceReply),
    )
)]
#[post("/ice")]
pub async fn ice(node: web::Data<Node>, caller: Caller, body: Body<IceBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// End a room (either side). The other side hears `hangup`.
#[utoipa::path(
    operation_id = "hangup", tag = "signaling", security(("bearer" = [])), params(Idempotency),
    request_body = HangupBody,
    responses(
        (status = 200, description = "The room is closed", body = ConnectionReply),
    )
)]
#[post("/hangup")]
pub async fn hangup(node: web::Data<Node>, caller: Caller, body: Body<HangupBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersParams {
    /// `on`: cameras on. `off`: online with the camera off. Absent: online or camera on.
    pub camera: Option<Camera>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (a user id).
    #[param(min_length = 1, max_length = 128)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserState>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List who is online or has a camera on, ordered by user id.
#[utoipa::path(
    operation_id = "listUsers", tag = "directory", security(("bearer" = [])),
    params(UsersParams),
    responses(
        (status = 200, description = "One page of users", body = UsersPage),
    )
)]
#[get("/users")]
pub async fn users(node: web::Data<Node>, _caller: Caller, q: web::Query<UsersParams>) -> Result<HttpResponse> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::BadRequest(format!("limit is 1 to {MAX_PAGE}")));
    }
    let after = q.cursor.map(|c| UserId::parse(&c).map_err(|_| Error::BadRequest("invalid cursor".into()))).transpose()?;
    let page = node.service.users(&UserQuery { camera: q.camera, limit, after }).await?;
    Ok(HttpResponse::Ok().json(UsersPage { users: page.users, next_cursor: page.next_cursor }))
}

/// One user's state.
#[utoipa::path(
    operation_id = "getUser", tag = "directory", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserState),
    )
)]
#[get("/users/{user_id}")]
pub async fn user(node: web::Data<Node>, _caller: Caller, path: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.user(&path).await?))
}

/// One room, with its offer and answer once set (its two users only).
#[utoipa::path(
    operation_id = "getConnection", tag = "directory", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "The room's id")),
    responses(
        (status = 200, description = "The room", body = Connection),
    )
)]
#[get("/connections/{room_id}")]
pub async fn connection(node: web::Data<Node>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.room(&caller.user, &path).await?))
}

/// Longest `timeout_s` a long poll may ask for; below common proxy timeouts.
pub const MAX_POLL_S: u64 = 60;
const DEFAULT_POLL_S: u64 = 25;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// The `id` of the last event the client has, or `last_id` of the previous
    /// answer. Absent: only events from now on.
    #[param(pattern = r"^[0-9]{1,19}(-[0-9]{1,19})?$", example = "1732212000123-0")]
    pub since: Option<String>,
    /// How long to wait for an event: 0 to 60 seconds (default 25); 0 answers at once.
    #[param(minimum = 0, maximum = 60)]
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// Events after `since`, oldest first, as the WebSocket carries them; or a
    /// single `server-action:resync` when some are gone. Empty on timeout.
    #[schema(value_type = Vec<Event>)]
    pub events: Vec<Box<RawValue>>,
    /// Pass as `since` on the next poll.
    pub last_id: String,
}

/// Long poll for my events, for clients that cannot hold a WebSocket.
///
/// Answers as soon as there is an event after `since`, or empty after
/// `timeout_s`. The same log as `/ws?since=` (everything but `update_user`).
/// While polls keep coming (no gap over 3 × `heartbeat_s`), I count as online.
#[utoipa::path(
    operation_id = "pollEvents", tag = "events", security(("bearer" = [])),
    params(EventsParams),
    responses(
        (status = 200, description = "Events after `since`, possibly none", body = EventsPage),
    )
)]
#[get("/events")]
pub async fn events(node: web::Data<Node>, caller: Caller, q: web::Query<EventsParams>) -> Result<HttpResponse> {
    if node.service.is_draining() {
        return Err(Error::Draining);
    }
    let since = q.since.as_deref().map(EventId::parse_since).transpose()?;
    let wait = q.timeout_s.unwrap_or(DEFAULT_POLL_S);
    if wait > MAX_POLL_S {
        return Err(Error::BadRequest(format!("timeout_s is 0 to {MAX_POLL_S}")));
    }
    let polled = crate::actors::poll::poll(&node.actors, &caller.user, since, std::time::Duration::from_secs(wait)).await?;
    let events = polled.events.iter().map(|f| RawValue::from_string(f.json.to_string()).expect("frames are JSON")).collect();
    Ok(HttpResponse::Ok().json(EventsPage { events, last_id: polled.last_id.to_string() }))
}

/// STUN and TURN servers for `RTCPeerConnection`, with TURN REST API credentials.
#[utoipa::path(
    operation_id = "getIceServers", tag = "directory", security(("bearer" = [])),
    responses(
        (status = 200, description = "ICE servers", body = IceServers),
    )
)]
#[get("/iceServers")]
pub async fn ice_servers(node: web::Data<Node>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(node.service.ice_servers(&caller.user))
}

/// Create a meeting (a group call). The creator is not yet a member: join it too.
#[utoipa::path(
    operation_id = "meetingCreate", tag = "meetings", security(("bearer" = [])), params(Idempotency),
    request_body(content = Option<MeetingCreateBody>, description = "Optional title and seat count"),
    responses(
        (status = 201, description = "The new meeting, with no member yet", body = MeetingReply),
    )
)]
#[post("/meetings")]
pub async fn meeting_create(node: web::Data<Node>, caller: Caller, body: Body<MeetingCreateBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(), idem).await
}

/// Join a meeting under a name.
///
/// Answers your pair Connection with each earlier member (you are its
/// `abonent`: they send the offers); each of them hears `member_joined` with
/// the pair's `room_id`. Joining again answers the same pairs. A name needs a
/// letter or digit (400 otherwise, which no portable pattern states), and
/// names that read alike (`Ann`, `Аnn` with a Cyrillic А, `Ann` with a
/// combining accent) are one name: 409 `name_taken`.
#[utoipa::path(
    operation_id = "meetingJoin", tag = "meetings", security(("bearer" = [])),
    params(("meeting_id" = String, Path, description = "The meeting's id"), Idempotency),
    request_body = MeetingJoinBody,
    responses(
        (status = 200, description = "You are a member", body = JoinReply),
    )
)]
#[post("/meetings/{meeting_id}/join")]
pub async fn meeting_join(node: web::Data<Node>, caller: Caller, path: web::Path<String>, body: Body<MeetingJoinBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, body.0.command(&path), idem).await
}

/// Leave a meeting. Your pairs close (reason `left`); the others hear `hangup` and `member_left`.
#[utoipa::path(
    operation_id = "meetingLeave", tag = "meetings", security(("bearer" = [])),
    params(("meeting_id" = String, Path, description = "The meeting's id"), Idempotency),
    request_body(content = Option<MeetingLeaveBody>, description = "Empty"),
    responses(
        (status = 200, description = "You left", body = MeetingReply),
    )
)]
#[post("/meetings/{meeting_id}/leave")]
pub async fn meeting_leave(node: web::Data<Node>, caller: Caller, path: web::Path<String>, _body: Body<MeetingLeaveBody>, idem: Idempotency) -> Result<HttpResponse> {
    run(&node, &caller, crate::protocol::bodies::meeting_leave(&path), idem).await
}

/// A meeting and its members (members only).
#[utoipa::path(
    operation_id = "getMeeting", tag = "meetings", security(("bearer" = [])),
    params(("meeting_id" = String, Path, description = "The meeting's id")),
    responses(
        (status = 200, description = "The meeting", body = Meeting),
    )
)]
#[get("/meetings/{meeting_id}")]
pub async fn meeting(node: web::Data<Node>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(node.service.meeting(&caller.user, &path).await?))
}
