//! Webhooks: each change (`service::changes`) is recorded as a webhook in
//! the same atomic step as the change, in its shard's queue (a Redis stream,
//! or the embedded store's `store::hook_queue`), and POSTed, signed, to each
//! of `webhooks.urls` by `delivery`.
//!
//! At least once, in order per user: one node at a time holds a shard's
//! delivery (a short lease in the store); each receiver is a consumer group,
//! so what a node took and never acked is taken over (`XAUTOCLAIM`) by the
//! node that holds the shard next. A webhook a receiver does not take within
//! `webhooks.max_attempts` goes to the dead letters, which `/admin` lists and
//! replays.

pub mod delivery;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The consumer group of a receiver: a digest of its URL, so that nodes
/// agree on it and a changed URL is a new receiver.
pub fn group_of(url: &str) -> String {
    let d = Sha256::digest(url.as_bytes());
    format!("r:{}", hex(&d[..8]))
}

/// The `Camsig-Signature` header of `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex(&mac.finalize().into_bytes()))
}

/// A receiver as `/metrics` names it: its URL without credentials or query.
pub fn label_of(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
        }
        None => url.to_owned(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let s = signature(b"0123456789abcdef", 1_700_000_000, "{}");
        assert_eq!(s, "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e");
        assert_ne!(s, signature(b"0123456789abcdef", 1_700_000_000, "{ }"));
    }

    #[test]
    fn metrics_name_a_receiver_without_its_secrets() {
        assert_eq!(label_of("https://u:p@hooks.example.com/in?token=x"), "https://hooks.example.com/in");
        assert_eq!(label_of("http://127.0.0.1:9/in"), "http://127.0.0.1:9/in");
    }

    #[test]
    fn a_receiver_group_is_stable_per_url() {
        assert_eq!(group_of("http://a/x"), group_of("http://a/x"));
        assert_ne!(group_of("http://a/x"), group_of("http://a/y"));
    }
}
