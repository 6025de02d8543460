//! The errors each operation documents, declared once: what follows from the
//! kind of operation (a body, an `Idempotency-Key`, a `/webrtc` call) is
//! added by rule, and the rest is one table by operation id. Statuses come
//! from `ErrorCode::status`, the same mapping the answers use.

use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use crate::error::ErrorCode::{self, *};

/// An error an operation can answer, with a note for the reader when the
/// code alone does not say when.
type Documented = (ErrorCode, &'static str);

const BANNED: &str = "the user is banned (`admin/users/{id}/disconnect` with `ban_s`)";

/// Beyond the rules in `add`: each operation's own errors.
const BY_OPERATION: &[(&str, &[Documented])] = &[
    ("healthz", &[]),
    ("readyz", &[(Unavailable, "")]),
    ("metrics", &[]),
    ("openapi", &[]),
    ("asyncapi", &[]),
    ("demoPage", &[]),
    ("clientScript", &[(NotFound, "no such file")]),
    ("devToken", &[(NotFound, "not in dev mode")]),
    ("openWebSocket", &[(BadRequest, ""), (Unauthorized, ""), (Forbidden, "an `Origin` not in `server.allowed_origins`"), (TooManySessions, ""), (RateLimited, "handshakes count against `limits.rate_per_s`"), (Unavailable, "the node is draining (Retry-After: 1)")]),
    ("cameraOn", &[(Unavailable, "")]),
    ("cameraOff", &[(Unavailable, "")]),
    ("cameraShow", &[(CannotShowSelf, ""), (UserNotFound, ""), (CameraOff, ""), (TooManyViewers, ""), (Unavailable, "")]),
    ("offer", &[(Forbidden, ""), (RoomNotFound, ""), (RoomClosed, ""), (InvalidSdp, ""), (Unavailable, "")]),
    ("answer", &[(Forbidden, ""), (RoomNotFound, ""), (RoomClosed, ""), (NoOffer, ""), (InvalidSdp, ""), (Unavailable, "")]),
    ("ice", &[(Forbidden, ""), (RoomNotFound, ""), (RoomClosed, ""), (InvalidCandidate, ""), (Unavailable, "")]),
    ("hangup", &[(Forbidden, ""), (RoomNotFound, ""), (RoomClosed, ""), (Unavailable, "")]),
    ("listUsers", &[(BadRequest, ""), (Unavailable, "")]),
    ("getUser", &[(UserNotFound, ""), (Unavailable, "")]),
    ("getConnection", &[(Forbidden, ""), (RoomNotFound, ""), (Unavailable, "")]),
    ("pollEvents", &[(BadRequest, ""), (TooManySessions, ""), (Unavailable, "")]),
    ("getIceServers", &[]),
    ("meetingCreate", &[(TooManyMeetings, ""), (Unavailable, "")]),
    ("meetingJoin", &[(MeetingNotFound, ""), (NameTaken, ""), (MeetingFull, ""), (Unavailable, "")]),
    ("meetingLeave", &[(Forbidden, "not a member"), (MeetingNotFound, ""), (Unavailable, "")]),
    ("getMeeting", &[(Forbidden, "not a member"), (MeetingNotFound, ""), (Unavailable, "")]),
    ("adminStats", &[(Unavailable, "")]),
    ("adminNodes", &[(Unavailable, "")]),
    ("adminUser", &[(UserNotFound, ""), (Unavailable, "")]),
    ("adminDisconnect", &[(UserNotFound, "never seen, and no `ban_s`"), (Unavailable, ""), (OutcomeUnknown, "a step was sent but Redis did not answer in time; disconnecting again is safe")]),
    ("adminCloseRoom", &[(RoomNotFound, ""), (Unavailable, ""), (OutcomeUnknown, "the step was sent but Redis did not answer in time; closing again is safe")]),
    ("adminDeadWebhooks", &[(BadRequest, ""), (Unavailable, "")]),
    ("adminReplayWebhook", &[(NotFound, "no such dead letter"), (Unavailable, "")]),
];

/// Adds every operation's error responses to `api`, grouped by status.
pub fn add(api: &mut OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for op in ops.into_iter().flatten() {
            let id = op.operation_id.clone().unwrap_or_default();
            let own = BY_OPERATION.iter().find(|(o, _)| *o == id).unwrap_or_else(|| panic!("{id} is not in http::errors::BY_OPERATION")).1;
            let mut codes: Vec<Documented> = own.to_vec();
            if op.request_body.is_some() {
                codes.extend([(BadRequest, ""), (PayloadTooLarge, ""), (RequestTimeout, "the body did not arrive within `server.body_timeout_s`")]);
            }
            if op.parameters.iter().flatten().any(|p| p.name == "Idempotency-Key") {
                codes.extend([(RequestInProgress, ""), (IdempotencyKeyReused, "")]);
            }
            if path.starts_with("/webrtc/") {
                codes.extend([(Unauthorized, ""), (RateLimited, ""), (Forbidden, BANNED)]);
            }
            if id == "openWebSocket" {
                codes.push((Forbidden, BANNED));
            }
            if path.starts_with("/admin/") {
                codes.extend([(Unauthorized, ""), (Forbidden, "not an admin token"), (RateLimited, "")]);
            }
            if op.request_body.is_some() && path.starts_with("/webrtc/") {
                codes.push((OutcomeUnknown, "the step was sent but Redis did not answer in time; retry with the same `Idempotency-Key`"));
            }
            // One line per code, with every note it has.
            let mut notes: BTreeMap<ErrorCode, Vec<&str>> = BTreeMap::new();
            for (code, note) in codes {
                let n = notes.entry(code).or_default();
                if !note.is_empty() && !n.contains(&note) {
                    n.push(note);
                }
            }
            let mut by_status: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for (code, n) in notes {
                let told = if n.is_empty() { code.as_str() } else { format!("{}: {}", code.as_str(), n.join("; ")) };
                by_status.entry(code.status().as_u16()).or_default().push(told);
            }
            for (status, told) in by_status {
                let response = ResponseBuilder::new()
                    .description(told.join(", "))
                    .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build())
                    .build();
                op.responses.responses.insert(status.to_string(), response.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No operation is listed twice, and none the spec lacks.
    #[test]
    fn the_table_names_the_specs_operations() {
        let api = crate::http::openapi();
        let ids: Vec<String> =
            api.paths.paths.values().flat_map(|i| [&i.get, &i.post].into_iter().flatten().filter_map(|o| o.operation_id.clone())).collect();
        for (id, _) in BY_OPERATION {
            assert_eq!(BY_OPERATION.iter().filter(|(o, _)| o == id).count(), 1, "{id} listed twice");
            assert!(ids.iter().any(|i| i == id), "{id} is not an operation");
        }
    }
}
