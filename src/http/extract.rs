//! Extractors that run the contract's checks in order: the caller's token (401)
//! and rate (429) first, then the body's size (413) and shape (400).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::StreamExt;
use futures_util::future::{LocalBoxFuture, Ready, ready};
use serde::de::DeserializeOwned;
use tracing_actix_web::RootSpan;

use crate::auth::Caller;
use crate::domain::IdempotencyKey;
use crate::error::Error;
use crate::node::Node;

fn node(req: &HttpRequest) -> Node {
    req.app_data::<web::Data<Node>>().expect("the node is in app data").get_ref().clone()
}

impl FromRequest for Caller {
    type Error = Error;
    type Future = Ready<Result<Caller, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let node = node(req);
        ready(node.auth.authenticate(req, false).and_then(|caller| {
            if let Some(span) = req.extensions().get::<RootSpan>() {
                span.record("user_id", caller.user.as_str());
            }
            crate::http::connections::authenticated(req);
            node.service.bans().check(&caller.user)?;
            node.rates.check_call(&caller.user)?;
            Ok(caller)
        }))
    }
}

/// The optional `Idempotency-Key` header of a POST (400 when malformed).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Idempotency {
    /// Any unique string (a UUID, say), 1 to 255 visible ASCII characters. A
    /// repeat with the same key within 10 minutes gets the first answer again
    /// and causes nothing; the same key with a different request is 422
    /// `idempotency_key_reused`, and one while the first still runs is 409
    /// `request_in_progress`.
    #[param(rename = "Idempotency-Key", value_type = Option<String>, pattern = "^[!-~]{1,255}$")]
    pub key: Option<IdempotencyKey>,
}

impl FromRequest for Idempotency {
    type Error = Error;
    type Future = Ready<Result<Idempotency, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = match req.headers().get("idempotency-key") {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map_err(|_| Error::BadRequest("Idempotency-Key is not visible ASCII".into()))
                .and_then(IdempotencyKey::parse)
                .map(Some),
        };
        ready(key.map(|key| Idempotency { key }))
    }
}

/// A JSON body of at most `limits.max_body_bytes`; an empty body (or `null`) reads as `{}`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Body<T>, Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let settings = &node(req).settings;
        let (limit, timeout) = (settings.limits.max_body_bytes, settings.server.body_timeout);
        let too_large = move || Error::PayloadTooLarge(format!("the body is over {limit} bytes"));
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let mut buf = web::BytesMut::new();
            let read = async {
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|e| Error::BadRequest(format!("could not read the body: {e}")))?;
                    if buf.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(())
            };
            // A body trickled in slowly must not hold the connection.
            tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| Error::RequestTimeout(timeout.as_secs()))??;
            let blank = buf.iter().all(u8::is_ascii_whitespace) || buf.trim_ascii() == b"null";
            let bytes: &[u8] = if blank { b"{}" } else { &buf };
            crate::protocol::json::body(bytes).map(Body)
        })
    }
}
