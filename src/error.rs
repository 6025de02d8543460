//! The one error type of the service and its mapping to the contract's JSON.
//!
//! Every failure a caller can see is a variant here; `ResponseError` turns it
//! into `{"error": {"code", "message"}}` with the contract's status, in one place.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("you cannot show your own camera")]
    CannotShowSelf,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such user")]
    UserNotFound,
    #[error("no such room")]
    RoomNotFound,
    #[error("no such meeting")]
    MeetingNotFound,
    #[error("this name is taken in the meeting")]
    NameTaken,
    #[error("the meeting is full")]
    MeetingFull,
    #[error("the camera is off")]
    CameraOff,
    #[error("the room is closed")]
    RoomClosed,
    #[error("there is no offer to answer")]
    NoOffer,
    #[error("this camera already has the most viewers it allows")]
    TooManyViewers,
    #[error("this user already has the most open sessions allowed (limits.max_sessions_per_user)")]
    TooManySessions,
    #[error("you already have the most meetings allowed (limits.max_meetings_per_user)")]
    TooManyMeetings,
    #[error("this session already watches the most users allowed (limits.max_watch)")]
    TooManyWatched,
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body did not arrive within `server.body_timeout_s`.
    #[error("the body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("{0}")]
    InvalidSdp(String),
    #[error("{0}")]
    InvalidCandidate(String),
    #[error("too many requests; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("the shared store is unreachable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    /// The step was sent to the shared store, whose answer did not come in
    /// time: it may have taken effect. A retry with the same key tells.
    #[error("the shared store did not answer in time; the call may have taken effect (retry with the same Idempotency-Key to know)")]
    OutcomeUnknown(#[source] anyhow::Error),
    /// The node is shutting down: new sessions and polls go to another node.
    #[error("this node is draining; connect again (to another node)")]
    Draining,
    /// The first request with the same `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    InProgress,
    /// The same `Idempotency-Key` came with a different request.
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("not found")]
    NotFound,
    /// A known path with a method it does not take; `allow` lists those it does.
    #[error("this path takes {allow}")]
    MethodNotAllowed { allow: String },
    /// A bug or an invariant broken; the cause goes to the log, never to the client.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

/// The message and its causes, never a backtrace: request logs format errors
/// with `{:?}`, and resolving a captured backtrace (RUST_BACKTRACE=1) per 503
/// cost ~190 MB of symbol tables and milliseconds per answer.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unavailable(e) | Error::OutcomeUnknown(e) | Error::Unexpected(e) => write!(f, "{self}: {e:#}"),
            _ => write!(f, "{self}"),
        }
    }
}

/// The stable machine-readable codes of the contract's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    CannotShowSelf,
    Unauthorized,
    Forbidden,
    UserNotFound,
    RoomNotFound,
    MeetingNotFound,
    CameraOff,
    RoomClosed,
    NoOffer,
    TooManyViewers,
    TooManySessions,
    TooManyMeetings,
    TooManyWatched,
    MeetingFull,
    NameTaken,
    PayloadTooLarge,
    RequestTimeout,
    InvalidSdp,
    InvalidCandidate,
    IdempotencyKeyReused,
    RequestInProgress,
    RateLimited,
    Unavailable,
    OutcomeUnknown,
    NotFound,
    MethodNotAllowed,
    Internal,
}

/// `{"code", "message"}`: the inside of every error answer, REST or WebSocket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// `{"error": {...}}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// Seconds a client should wait after `unavailable`.
const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

impl Error {
    pub fn code(&self) -> ErrorCode {
        use Error::*;
        match self {
            BadRequest(_) => ErrorCode::BadRequest,
            CannotShowSelf => ErrorCode::CannotShowSelf,
            Unauthorized(_) => ErrorCode::Unauthorized,
            Forbidden(_) => ErrorCode::Forbidden,
            UserNotFound => ErrorCode::UserNotFound,
            RoomNotFound => ErrorCode::RoomNotFound,
            MeetingNotFound => ErrorCode::MeetingNotFound,
            NameTaken => ErrorCode::NameTaken,
            MeetingFull => ErrorCode::MeetingFull,
            CameraOff => ErrorCode::CameraOff,
            RoomClosed => ErrorCode::RoomClosed,
            NoOffer => ErrorCode::NoOffer,
            TooManyViewers => ErrorCode::TooManyViewers,
            TooManySessions => ErrorCode::TooManySessions,
            TooManyMeetings => ErrorCode::TooManyMeetings,
            TooManyWatched => ErrorCode::TooManyWatched,
            PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            RequestTimeout(_) => ErrorCode::RequestTimeout,
            InvalidSdp(_) => ErrorCode::InvalidSdp,
            InvalidCandidate(_) => ErrorCode::InvalidCandidate,
            RateLimited { .. } => ErrorCode::RateLimited,
            Unavailable(_) | Draining => ErrorCode::Unavailable,
            OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
            InProgress => ErrorCode::RequestInProgress,
            IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            NotFound => ErrorCode::NotFound,
            MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Unexpected(_) => ErrorCode::Internal,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code(), message: self.to_string() }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_s } => Some(*retry_after_s),
            Error::Unavailable(_) | Error::OutcomeUnknown(_) | Error::Draining | Error::InProgress => Some(UNAVAILABLE_RETRY_AFTER_S),
            _ => None,
        }
    }

    /// Shorthand for a store that could not be reached.
    pub fn unavailable(e: impl Into<anyhow::Error>) -> Self {
        Error::Unavailable(e.into())
    }
}

impl ErrorCode {
    /// The contract's HTTP status of each code.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BadRequest | CannotShowSelf => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            UserNotFound | RoomNotFound | MeetingNotFound | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            CameraOff | RoomClosed | NoOffer | TooManyViewers | TooManySessions | TooManyMeetings | TooManyWatched | MeetingFull | NameTaken | RequestInProgress => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            InvalidSdp | InvalidCandidate | IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as the JSON carries it.
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::Unexpected(e) => tracing::error!(error = ?format!("{e:#}"), "unexpected error"),
            // Told once when Redis goes and once when it is back (`redis::Redis::bounded`).
            Error::Unavailable(e) | Error::OutcomeUnknown(e) => tracing::debug!(error = %e, "store unavailable"),
            _ => {}
        }
        let mut res = HttpResponse::build(self.status_code());
        if let Some(s) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Error::MethodNotAllowed { allow } = self {
            res.insert_header((header::ALLOW, allow.as_str()));
        }
        if matches!(self, Error::Unauthorized(_)) {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.json(ErrorResponse { error: self.body() })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
