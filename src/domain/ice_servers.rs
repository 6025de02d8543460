//! ICE servers as `RTCPeerConnection` takes them; `crate::turn` fills in
//! TURN credentials.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One STUN or TURN server, as `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    /// How long TURN credentials stay valid.
    pub ttl_s: u64,
}
