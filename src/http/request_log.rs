//! Request spans and what a request may write to the log.
//!
//! Everything here is read from a client that may be hostile, so: the `token`
//! query parameter never reaches a log line, client strings are logged with
//! `?` (quoted, control characters escaped), the client address comes from
//! `X-Forwarded-For`/`Forwarded` only when the peer is a trusted proxy, and a
//! 4xx is a debug line, so no unauthenticated client can flood the log.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error as ActixError, web};
use ipnet::IpNet;
use std::net::IpAddr;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

/// `server.trusted_proxies`, parsed once.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy;
    /// then the nearest address in the forwarding chain that is not one.
    /// Anything that does not parse as an address is ignored.
    pub fn client_ip(&self, peer: Option<IpAddr>, xff: Option<&str>, forwarded: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let chain: Vec<IpAddr> = match (forwarded, xff) {
            (Some(f), _) => f
                .split(',')
                .filter_map(|el| el.split(';').find_map(|kv| kv.trim().strip_prefix("for=").or_else(|| kv.trim().strip_prefix("FOR="))))
                .filter_map(forwarded_ip)
                .collect(),
            (None, Some(x)) => x.split(',').filter_map(|a| a.trim().parse().ok()).collect(),
            (None, None) => vec![],
        };
        Some(chain.into_iter().rev().find(|ip| !self.trusts(*ip)).unwrap_or(peer))
    }
}

/// `for=` of RFC 7239: `192.0.2.1`, `"192.0.2.1:80"`, `"[2001:db8::1]:80"`.
fn forwarded_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse().ok().or_else(|| v.rsplit_once(':')?.0.parse().ok())
}

/// The request target with every `token` parameter's value masked. The name
/// is compared as the query parser reads it, percent-decoded (`tok%65n` is
/// `token` to `auth`, so it is here too).
pub fn redacted_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let is_token = |k: &str| form_urlencoded::parse(k.as_bytes()).next().is_some_and(|(name, _)| name.eq_ignore_ascii_case("token"));
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_token(k) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", masked.join("&"))
}

/// Request spans with `user_id` and `room_id`, filled in once known.
pub struct Spans;

impl RootSpanBuilder for Spans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let proxies = request.app_data::<web::Data<TrustedProxies>>().map(|p| p.get_ref().clone()).unwrap_or_default();
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let client = proxies.client_ip(request.peer_addr().map(|a| a.ip()), header("x-forwarded-for"), header("forwarded"));
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %request.match_pattern().unwrap_or_else(|| "unmatched".into()),
            http.target = ?redacted_target(request.path(), request.query_string()),
            http.client_ip = %client.map(|ip| ip.to_string()).unwrap_or_default(),
            http.status_code = tracing::field::Empty,
            user_id = tracing::field::Empty,
            room_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, ActixError>) {
        let (status, error) = match outcome {
            Ok(res) => (res.status(), res.response().error().map(|e| e.to_string())),
            Err(e) => (e.as_response_error().status_code(), Some(e.to_string())),
        };
        span.record("http.status_code", status.as_u16());
        // 5xx are logged where they arise (`Error::error_response`), with their cause.
        if status.is_client_error() {
            tracing::debug!(parent: &span, status = status.as_u16(), error = ?error.unwrap_or_default(), "client error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tokens_are_masked_wherever_they_are() {
        assert_eq!(redacted_target("/ws", "token=abc&since=x"), "/ws?token=***&since=x");
        assert_eq!(redacted_target("/ws", "since=x&TOKEN=abc&token"), "/ws?since=x&TOKEN=***&token");
        assert_eq!(redacted_target("/ws", ""), "/ws");
        assert_eq!(redacted_target("/ws", "tok%65n=abc&%74oken=def&to%6Ben=g"), "/ws?tok%65n=***&%74oken=***&to%6Ben=***");
        assert_eq!(redacted_target("/ws", "tokens=abc"), "/ws?tokens=abc");
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), None), Some(ip("203.0.113.9")));
        let lb = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(lb.client_ip(Some(ip("10.0.0.2")), Some("6.6.6.6, 1.2.3.4, 10.0.0.3"), None), Some(ip("1.2.3.4")));
        assert_eq!(lb.client_ip(Some(ip("10.0.0.2")), Some("x\r\nforged=1"), None), Some(ip("10.0.0.2")));
        assert_eq!(lb.client_ip(Some(ip("10.0.0.2")), None, Some(r#"for="[2001:db8::1]:80";proto=https"#)), Some(ip("2001:db8::1")));
        assert_eq!(lb.client_ip(Some(ip("10.0.0.2")), None, Some("for=192.0.2.7:443, for=10.1.1.1")), Some(ip("192.0.2.7")));
    }
}
