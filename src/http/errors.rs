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
                codes.extend([(Unauthorized, ""), (RateLimited, "")]);
            }
            if op.request_body.is_some() && path.starts_with("/webrtc/") {
                codes.push((OutcomeUnknown, "the step was sent but Redis did not answer in time; retry with the same `Idempotency-Key`"));
            }
            codes.sort();
            codes.dedup_by_key(|(c, _)| *c);
            let mut by_status: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for (code, note) in codes {
                let told = if note.is_empty() { code.as_str() } else { format!("{}: {note}", code.as_str()) };
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
