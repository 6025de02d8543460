//! Fragmented WebSocket messages (RFC 6455 §5.4), put back together within
//! `limits.max_body_bytes`.

use actix_http::ws::Item;
use actix_web::web::BytesMut;

/// Why a fragment ends the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Broken {
    /// A protocol error (1002), with its reason.
    Protocol(&'static str),
    /// Over the size limit (1009).
    TooBig,
}

/// A whole message put back together.
pub enum Whole {
    Text(BytesMut),
    Binary,
}

/// A fragmented message being put back together: (is text, bytes so far).
#[derive(Default)]
pub struct Fragments(Option<(bool, BytesMut)>);

impl Fragments {
    /// Adds one fragment; answers the whole message after its last one.
    pub fn push(&mut self, item: Item, max: usize) -> Result<Option<Whole>, Broken> {
        let (text, first, data, last) = match item {
            Item::FirstText(b) => (true, true, b, false),
            Item::FirstBinary(b) => (false, true, b, false),
            Item::Continue(b) => (false, false, b, false),
            Item::Last(b) => (false, false, b, true),
        };
        if first == self.0.is_some() {
            return Err(Broken::Protocol(if first { "a new message began inside a fragmented one" } else { "a continuation with no message to continue" }));
        }
        let (_, buf) = self.0.get_or_insert_with(|| (text, BytesMut::new()));
        if buf.len() + data.len() > max {
            self.0 = None;
            return Err(Broken::TooBig);
        }
        buf.extend_from_slice(&data);
        if !last {
            return Ok(None);
        }
        let Some((is_text, buf)) = self.0.take() else { return Ok(None) };
        Ok(Some(if is_text { Whole::Text(buf) } else { Whole::Binary }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::web::Bytes;

    #[test]
    fn text_comes_back_whole_and_bounds_hold() {
        let mut f = Fragments::default();
        assert!(f.push(Item::FirstText(Bytes::from_static(b"ab")), 10).unwrap().is_none());
        assert!(f.push(Item::Continue(Bytes::from_static(b"cd")), 10).unwrap().is_none());
        let Some(Whole::Text(t)) = f.push(Item::Last(Bytes::from_static(b"e")), 10).unwrap() else { panic!("text") };
        assert_eq!(&t[..], b"abcde");
        assert!(matches!(f.push(Item::Continue(Bytes::new()), 10), Err(Broken::Protocol(_))));
        f.push(Item::FirstBinary(Bytes::from_static(b"12345")), 8).unwrap();
        assert!(matches!(f.push(Item::Last(Bytes::from_static(b"6789")), 8), Err(Broken::TooBig)));
    }
}
