//! The HTTP of libwebrtc's sample `peerconnection_server`, by hand: its
//! client finds `\r\nContent-Length: ` and `\r\nPragma: ` by exact,
//! case-sensitive match, which an HTTP library's own header spelling does
//! not promise. One request per connection, answered, then closed.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head taken (the sample client's are under 100 bytes).
const MAX_HEAD: usize = 8 * 1024;

/// The headers the sample server adds to every answer, so that a browser page
/// on another origin can use it (its `server_test.html`).
const CORS: &str = "Access-Control-Allow-Origin: *\r\n\
    Access-Control-Allow-Credentials: true\r\n\
    Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n\
    Access-Control-Allow-Headers: Content-Type, Content-Length, Connection, Cache-Control\r\n\
    Access-Control-Expose-Headers: Content-Length\r\n";

/// One request, as read.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without its query.
    pub path: String,
    /// What follows `?`, undecoded.
    pub args: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The integer after `name=` in the query, as the sample reads it (`atoi`).
    pub fn int_arg(&self, name: &str) -> Option<u64> {
        self.args.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).and_then(|v| {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    }
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the connection closed or timed out")]
    Gone,
    #[error("not an HTTP request")]
    Malformed,
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
}

/// Reads one request: the head within `head_timeout`, then a body of its
/// `Content-Length` (at most `max_body`) within `body_timeout`.
pub async fn read_request(stream: &mut TcpStream, head_timeout: Duration, body_timeout: Duration, max_body: usize) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(512);
    let head_end = tokio::time::timeout(head_timeout, async {
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if buf.len() > MAX_HEAD {
                return Err(ReadError::Malformed);
            }
            let n = stream.read(&mut chunk).await.map_err(|_| ReadError::Gone)?;
            if n == 0 {
                return Err(ReadError::Gone);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| ReadError::Gone)??;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ReadError::Malformed),
    }
    let method = req.method.ok_or(ReadError::Malformed)?.to_owned();
    let target = req.path.ok_or(ReadError::Malformed)?;
    let (path, args) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).trim().to_owned());
    // One plain length, or none; no chunked bodies (the sample reads neither).
    let lengths = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Content-Length")).count();
    if lengths > 1 || header("Transfer-Encoding").is_some() {
        return Err(ReadError::Malformed);
    }
    let length: usize = match header("Content-Length") {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().map_err(|_| ReadError::Malformed)?,
        Some(_) => return Err(ReadError::Malformed),
        None => 0,
    };
    if length > max_body {
        return Err(ReadError::TooLarge(max_body));
    }
    let content_type = header("Content-Type").unwrap_or_default();
    let (path, args) = (path.to_owned(), args.to_owned());
    let mut body = buf[head_end..].to_vec();
    body.truncate(length);
    tokio::time::timeout(body_timeout, async {
        let mut chunk = vec![0u8; 16 * 1024];
        while body.len() < length {
            let n = stream.read(&mut chunk).await.map_err(|_| ReadError::Gone)?;
            if n == 0 {
                return Err(ReadError::Gone);
            }
            let take = n.min(length - body.len());
            body.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    })
    .await
    .map_err(|_| ReadError::Gone)??;
    Ok(Request { method, path, args, content_type, body })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One answer, laid out as the sample server's `DataSocket::Send`: status
/// line, fixed headers, `Content-Type` (if any), `Content-Length: `,
/// `Pragma: ` (if any), the CORS headers, then the body.
pub fn response(status: &str, content_type: &str, pragma: Option<u64>, body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nServer: camsig\r\nCache-Control: no-cache\r\nConnection: close\r\n");
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if let Some(id) = pragma {
        head.push_str(&format!("Pragma: {id}\r\n"));
    }
    head.push_str(CORS);
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Writes an answer and closes. What the client still sends (a refused
/// body) is read and dropped meanwhile, so that closing does not reset the
/// connection before the answer is read. Answers whether the client closed
/// its end within `linger` (the sample client closes once it has read the
/// whole answer): only then is the answer known to be taken.
pub async fn send(stream: &mut TcpStream, bytes: &[u8], linger: Duration) -> bool {
    if stream.write_all(bytes).await.is_err() || stream.flush().await.is_err() || stream.shutdown().await.is_err() {
        return false;
    }
    tokio::time::timeout(linger, async {
        let mut sink = [0u8; 16 * 1024];
        let mut dropped = 0usize;
        while dropped < 1 << 20 {
            match stream.read(&mut sink).await {
                Ok(0) => return true,
                Err(_) => return false,
                Ok(n) => dropped += n,
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_spells_its_headers_as_the_sample_client_searches_them() {
        let r = String::from_utf8(response("200 OK", "text/plain", Some(7), b"ann,3,1\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("\r\nContent-Length: 8\r\n"));
        assert!(r.contains("\r\nPragma: 7\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
        assert!(r.ends_with("\r\n\r\nann,3,1\n"));
        let none = String::from_utf8(response("500 Sorry", "", None, b"")).unwrap();
        assert!(!none.contains("Pragma") && !none.contains("\r\nContent-Type:") && none.contains("\r\nContent-Length: 0\r\n"));
    }

    #[test]
    fn query_integers_are_read_as_atoi_would() {
        let r = Request { method: "GET".into(), path: "/message".into(), args: "peer_id=12&to=7x".into(), content_type: String::new(), body: vec![] };
        assert_eq!((r.int_arg("peer_id"), r.int_arg("to"), r.int_arg("from")), (Some(12), Some(7), None));
    }
}
