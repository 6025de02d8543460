//! The frame-size limit, held at each frame's header.
//!
//! actix-http's WebSocket codec checks `max_size` only once a whole frame has
//! arrived, so a client that declares a huge frame and streams it would be
//! read to the end. This wrapper reads the incoming byte stream's frame
//! headers as they pass and ends the stream at the first one declaring more
//! than the limit; the session then closes with 1009.

use actix_web::web::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Set when a frame over the limit was refused.
#[derive(Default)]
pub struct Oversize(AtomicBool);

impl Oversize {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    /// The header being read, and how long it is (known after its 2nd byte).
    head: [u8; 14],
    head_len: usize,
    head_need: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    oversize: Arc<Oversize>,
}

impl<S> FrameLimit<S> {
    pub fn new(inner: S, max: usize, oversize: Arc<Oversize>) -> Self {
        Self { inner, max: max as u64, head: [0; 14], head_len: 0, head_need: 2, skip: 0, oversize }
    }

    /// Follows frame boundaries through `chunk`; false at a header over the limit.
    fn scan(&mut self, chunk: &[u8]) -> bool {
        let mut i = 0;
        while i < chunk.len() {
            if self.skip > 0 {
                let n = self.skip.min((chunk.len() - i) as u64);
                self.skip -= n;
                i += n as usize;
                continue;
            }
            self.head[self.head_len] = chunk[i];
            self.head_len += 1;
            i += 1;
            if self.head_len == 2 {
                let ext = match self.head[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
                self.head_need = 2 + ext + mask;
            }
            if self.head_len >= 2 && self.head_len == self.head_need {
                let len = match self.head[1] & 0x7f {
                    126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                    127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
                    n => u64::from(n),
                };
                if len > self.max {
                    return false;
                }
                (self.skip, self.head_len, self.head_need) = (len, 0, 2);
            }
        }
        true
    }
}

impl<S, E> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.oversize.happened() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if this.scan(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    this.oversize.0.store(true, Ordering::Relaxed);
                    Poll::Ready(None)
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_followed_across_chunks_and_a_big_one_is_caught() {
        let mut f = FrameLimit::new(futures_util::stream::empty::<Result<Bytes, ()>>(), 100, Arc::default());
        // A masked 5-byte text frame, split everywhere.
        let small = [0x81u8, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        for b in small {
            assert!(f.scan(&[b]));
        }
        // 126-length frame of 100 bytes: allowed.
        let mut ok = vec![0x81u8, 0x80 | 126, 0, 100, 1, 2, 3, 4];
        ok.extend([0u8; 100]);
        assert!(f.scan(&ok));
        // 127-length header declaring 1 GiB: refused before any payload.
        let mut big = vec![0x81u8, 0x80 | 127];
        big.extend((1u64 << 30).to_be_bytes());
        big.extend([1, 2, 3, 4]);
        assert!(f.scan(&big[..5]));
        assert!(!f.scan(&big[5..]));
    }
}
