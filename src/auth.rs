//! Who is calling: HS256 JWTs, issued and checked with the configured secret.
//!
//! With no secret configured the node runs in dev mode (`crate::dev`): a
//! kept dev secret, a loud warning, and `POST /dev/token` for the demo page.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use crate::config::Settings;
use crate::domain::UserId;
use crate::error::Error;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, always a string.
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An operator's token (`camsig token --admin`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// The authenticated user of one request or session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub name: Option<String>,
    /// The token's `exp` (seconds since the epoch): a session lives until then.
    pub exp: u64,
    /// The token carries `"admin": true`: it may use `/admin`.
    pub admin: bool,
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    dev: bool,
}

impl Auth {
    pub fn new(settings: &Settings) -> Self {
        match &settings.auth.jwt_secret {
            Some(s) => Self::from_secret(s.expose_secret().as_bytes(), false),
            None => Self::from_secret(&crate::dev::secret_or_random(settings), true),
        }
    }

    pub fn from_secret(secret: &[u8], dev: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
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

    pub fn issue(&self, user: &UserId, name: Option<String>, admin: bool, ttl: Duration) -> String {
        let exp = (chrono::Utc::now().timestamp() as u64) + ttl.as_secs();
        let claims = Claims { sub: user.to_string(), exp, name, admin };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }

    /// Every refusal is a 401 in plain words: callers see what to fix, never
    /// the crate's variant names or the algorithms it knows.
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        if token.is_empty() {
            return Err(unauthorized("missing bearer token"));
        }
        // A loose map, not `Claims`: a serde error would name Rust types.
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
            .map_err(|e| unauthorized(refusal(e.kind(), token)))?
            .claims;
        // jsonwebtoken has checked `exp` (required, a number, not past) and `nbf`.
        let exp = claims.get("exp").and_then(numeric_date).ok_or_else(|| unauthorized("token's exp is not a time in seconds"))?;
        match claims.get("iat") {
            None | Some(Value::Null) => {}
            Some(v) => match numeric_date(v) {
                Some(iat) if iat > jsonwebtoken::get_current_timestamp() + LEEWAY_S => {
                    return Err(unauthorized("token issued in the future"));
                }
                Some(_) => {}
                None => return Err(unauthorized("token's iat is not a time in seconds")),
            },
        }
        let sub = claims.get("sub").and_then(Value::as_str).ok_or_else(|| unauthorized("token's sub must be a string"))?;
        let user = UserId::parse(sub).map_err(|e| Error::Unauthorized(format!("token's sub is not a valid user id: {e}")))?;
        let name = match claims.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(unauthorized("token's name must be a string")),
        };
        let admin = claims.get("admin") == Some(&Value::Bool(true));
        Ok(Caller { user, name, exp, admin })
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

fn unauthorized(why: &str) -> Error {
    Error::Unauthorized(why.into())
}

/// Why jsonwebtoken refused a token, for a person.
fn refusal(kind: &ErrorKind, token: &str) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet",
        ErrorKind::InvalidSignature => "token signed with another secret",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => "token must be signed with HS256",
        // A claim that does not parse counts as missing.
        ErrorKind::MissingRequiredClaim(c) if c == "sub" => "token's sub is missing or not a string",
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => "token's exp is missing or not a time in seconds",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        ErrorKind::InvalidClaimFormat(c) if c == "nbf" => "token's nbf is not a time in seconds",
        ErrorKind::InvalidClaimFormat(c) if c == "exp" => "token's exp is not a time in seconds",
        ErrorKind::InvalidClaimFormat(_) => "token has a claim of the wrong type",
        ErrorKind::InvalidAudience => "token is meant for another audience",
        ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => "token is meant for another service",
        // An unknown `alg` ("none") fails as a JSON error while reading the header.
        ErrorKind::Json(_) if names_another_alg(token) => "token must be signed with HS256",
        _ => "malformed token",
    }
}

/// Whether the token's header parses and names an `alg` other than HS256.
fn names_another_alg(token: &str) -> bool {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(|alg| alg != "HS256"))
        .unwrap_or(false)
}

/// A JWT NumericDate as jsonwebtoken reads one: seconds, a float rounded.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f.round() as u64))
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
        let t = a.issue(&u, None, false, Duration::from_secs(60));
        assert_eq!(a.verify(&t).unwrap().user, u);
        assert!(b.verify(&t).is_err());
        assert!(a.verify("garbage").is_err());
    }

    fn signed(claims: Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(&[7u8; 32])).unwrap()
    }

    fn refused(token: &str) -> String {
        match Auth::from_secret(&[7u8; 32], false).verify(token) {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn refusals_say_what_is_wrong_in_plain_words() {
        use serde_json::json;
        let now = jsonwebtoken::get_current_timestamp();
        let hs = |c: Value| signed(c, Algorithm::HS256);
        let cases = [
            (hs(json!({"sub": "a", "exp": now - 60})), "token expired"),
            (hs(json!({"sub": "a", "exp": now + 60, "nbf": now + 60})), "token not valid yet"),
            (hs(json!({"sub": "a", "exp": now + 60, "iat": now + 60})), "token issued in the future"),
            (hs(json!({"sub": "a", "exp": now + 60, "iat": "yesterday"})), "token's iat is not a time in seconds"),
            (hs(json!({"sub": "a", "exp": now + 60, "nbf": "soon"})), "token's nbf is not a time in seconds"),
            (hs(json!({"sub": 42, "exp": now + 60})), "token's sub is missing or not a string"),
            (hs(json!({"sub": "a"})), "token's exp is missing or not a time in seconds"),
            (hs(json!({"sub": "a", "exp": now + 60, "name": 5})), "token's name must be a string"),
            (hs(json!({"sub": "a\u{202e}b", "exp": now + 60})), "token's sub is not a valid user id"),
            (signed(json!({"sub": "a", "exp": now + 60}), Algorithm::HS512), "token must be signed with HS256"),
            ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.".into(), "token must be signed with HS256"),
            ("garbage".into(), "malformed token"),
            ("a.b.c".into(), "malformed token"),
            (String::new(), "missing bearer token"),
        ];
        for (token, want) in cases {
            let got = refused(&token);
            assert!(got.starts_with(want), "{token}: {got}");
        }
        let other = Auth::from_secret(&[8u8; 32], false).issue(&UserId::parse("a").unwrap(), None, false, Duration::from_secs(60));
        assert_eq!(refused(&other), "token signed with another secret");
    }

    #[test]
    fn nbf_and_iat_within_the_leeway_are_accepted() {
        use serde_json::json;
        let a = Auth::from_secret(&[7u8; 32], false);
        let now = jsonwebtoken::get_current_timestamp();
        let t = signed(json!({"sub": "a", "exp": now + 60, "nbf": now + 3, "iat": now + 3, "name": "Ann"}), Algorithm::HS256);
        let c = a.verify(&t).unwrap();
        assert_eq!((c.user.as_str(), c.name.as_deref(), c.exp), ("a", Some("Ann"), now + 60));
        let t = signed(json!({"sub": "a", "exp": (now + 60) as f64 + 0.4, "iat": now as f64 - 0.5}), Algorithm::HS256);
        assert_eq!(a.verify(&t).unwrap().exp, now + 60);
    }
}
