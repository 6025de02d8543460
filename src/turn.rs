//! TURN credentials: the TURN REST API scheme (`<expiry>:<user>` signed with
//! HMAC-SHA1 under `ice.turn_secret`), which coturn checks with `use-auth-secret`.

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;

use crate::config::IceSettings;
use crate::domain::UserId;
use crate::domain::ice_servers::{IceServer, IceServers};

/// STUN as configured, and TURN with credentials for `user` valid for `ice.turn_ttl_s`.
pub fn ice_servers(ice: &IceSettings, user: &UserId) -> IceServers {
    let mut servers = Vec::new();
    if !ice.stun_urls.is_empty() {
        servers.push(IceServer { urls: ice.stun_urls.clone(), username: None, credential: None });
    }
    if let (false, Some(secret)) = (ice.turn_urls.is_empty(), &ice.turn_secret) {
        let expiry = Utc::now().timestamp() as u64 + ice.turn_ttl.as_secs();
        let username = format!("{expiry}:{user}");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key");
        mac.update(username.as_bytes());
        let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        servers.push(IceServer { urls: ice.turn_urls.clone(), username: Some(username), credential: Some(credential) });
    }
    IceServers { ice_servers: servers, ttl_s: ice.turn_ttl.as_secs() }
}
