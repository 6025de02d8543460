//! Who is calling: HS256 JWTs, issued and checked with the configured secret.
//!
//! With no secret configured the node runs in dev mode: a random per-process
//! secret, a loud warning, and `POST /dev/token` for the demo page.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::config::AuthSettings;
use crate::domain::UserId;
use crate::error::Error;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, always a string.
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The authenticated user of one request or session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub name: Option<String>,
    /// The token's `exp` (seconds since the epoch): a session lives until then.
    pub exp: u64,
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    dev: bool,
}

impl Auth {
    pub fn new(settings: &AuthSettings) -> Self {
        let (secret, dev) = match &settings.jwt_secret {
            Some(s) => (s.expose_secret().as_bytes().to_vec(), false),
            None => {
                tracing::warn!(
                    "DEV MODE: auth.jwt_secret is not set. Tokens are signed with a random \
                     per-process secret and POST /dev/token hands them to anyone. \
                     Never run like this in production."
                );
                (rand::random::<[u8; 32]>().to_vec(), true)
            }
        };
        Self::from_secret(&secret, dev)
    }

    pub fn from_secret(secret: &[u8], dev: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            dev,
        }
    }

    pub fn is_dev(&self) -> bool {
        self.dev
    }

    pub fn issue(&self, user: &UserId, name: Option<String>, ttl: Duration) -> String {
        let exp = (chrono::Utc::now().timestamp() as u64) + ttl.as_secs();
        let claims = Claims { sub: user.to_string(), exp, name };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthorized(format!("invalid token: {e}")))?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("invalid token: sub is not a user id".into()))?;
        Ok(Caller { user, name: data.claims.name, exp: data.claims.exp })
    }

    /// Reads `Authorization: Bearer <jwt>`, or `?token=` where `allow_query` (WebSocket).
    pub fn authenticate(&self, req: &actix_web::HttpRequest, allow_query: bool) -> Result<Caller, Error> {
        if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
            let h = h.to_str().map_err(|_| Error::Unauthorized("malformed Authorization header".into()))?;
            let token = h
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
                .ok_or_else(|| Error::Unauthorized("expected Authorization: Bearer <token>".into()))?;
            return self.verify(token);
        }
        if allow_query
            && let Some(t) = query_param(req.query_string(), "token")
        {
            return self.verify(&t);
        }
        Err(Error::Unauthorized("missing bearer token".into()))
    }
}

/// One query parameter, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let a = Auth::from_secret(&[7u8; 32], false);
        let b = Auth::from_secret(&[8u8; 32], false);
        let u = UserId::parse("42").unwrap();
        let t = a.issue(&u, None, Duration::from_secs(60));
        assert_eq!(a.verify(&t).unwrap().user, u);
        assert!(b.verify(&t).is_err());
        assert!(a.verify("garbage").is_err());
    }
}
