//! Configuration: defaults, then the TOML file named by `CAMSIG_CONFIG`, then
//! `CAMSIG__SECTION__KEY` environment variables. Parsed once at start into
//! the types the code uses (addresses, networks, durations, non-zero rates);
//! a bad value stops the server with one line naming the key. Secrets never
//! print.

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// A refused configuration: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {why}"))
}

/// The shortest HS256 secret accepted; shorter ones are guessable.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Different byte values a secret must have: 32 spaces or one letter
/// repeated are as good as no secret.
const MIN_SECRET_DISTINCT: usize = 10;

/// At least `MIN_JWT_SECRET_BYTES` bytes that are not whitespace, of at least
/// `MIN_SECRET_DISTINCT` values.
fn strong_secret(s: &[u8]) -> bool {
    let solid: Vec<u8> = s.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let distinct = solid.iter().collect::<std::collections::HashSet<_>>().len();
    solid.len() >= MIN_JWT_SECRET_BYTES && distinct >= MIN_SECRET_DISTINCT
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub node: NodeSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub presence: PresenceSettings,
    pub ice: IceSettings,
    pub limits: LimitSettings,
    pub events: EventSettings,
    pub connections: ConnectionSettings,
    pub ws: WsSettings,
    pub log: LogSettings,
    pub compat: CompatSettings,
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// `IP:port`. Unset: `0.0.0.0:8080`, or `127.0.0.1:8080` in dev mode.
    #[serde(deserialize_with = "de::socket_addr")]
    pub bind: Option<SocketAddr>,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How long a drain (SIGTERM) may take before the process exits.
    #[serde(rename = "drain_s", deserialize_with = "de::secs")]
    pub drain: Duration,
    /// A request body not complete within this is answered 408 (slow senders
    /// must not hold connections).
    #[serde(rename = "body_timeout_s", deserialize_with = "de::secs")]
    pub body_timeout: Duration,
    /// A connection whose request head has not arrived within this is closed
    /// (408 where an answer is possible), authenticated or not.
    #[serde(rename = "header_timeout_s", deserialize_with = "de::secs")]
    pub header_timeout: Duration,
    /// Open connections one client address may hold (a trusted proxy: no cap,
    /// the proxy carries many clients). Past it, a new connection is closed at once.
    pub max_conns_per_ip: usize,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For`/`Forwarded` is believed
    /// for the client address in logs; from anyone else those headers are ignored.
    #[serde(deserialize_with = "de::nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Origins (`scheme://host[:port]`) a browser may open `/ws` from; empty:
    /// any (tokens are sent explicitly, never as cookies).
    pub allowed_origins: Vec<String>,
    /// Where dev mode keeps its secret (see `crate::dev`).
    pub data_dir: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { bind: None, workers: 0, drain: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(5),
            max_conns_per_ip: 256,
            trusted_proxies: vec![], allowed_origins: vec![], data_dir: None }
    }
}

/// Most HTTP worker threads accepted; each is an OS thread with its own runtime.
pub const MAX_WORKERS: usize = 256;

/// Values read into their types, with the plain words the error line carries.
mod de {
    use super::*;
    use serde::Deserializer;
    use serde::de::Error;

    /// Whole seconds.
    pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    /// `IP:port`; a host name is not accepted.
    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{s:?} is not IP:port (e.g. 127.0.0.1:8080 or [::]:8080; a host name is not accepted)")))
    }

    /// IP networks, or single addresses as a /32 or /128.
    pub fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| D::Error::custom(format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)")))
            })
            .collect()
    }

    /// Whole milliseconds.
    pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// A count of 1 or more, as a size.
    pub fn at_least_one_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        at_least_one(d).map(|n| n.get() as usize)
    }

    /// A count of 1 or more.
    pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU32, D::Error> {
        NonZeroU32::new(u32::deserialize(d)?).ok_or_else(|| D::Error::custom("must be at least 1"))
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Unset: host name plus a random suffix.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Unset: the embedded single-node broker. A secret, since it may hold a password.
    pub url: Option<SecretString>,
    /// A Redis Cluster instead of `url`: some of its nodes, to find the rest.
    /// Secrets, since they may hold a password.
    pub cluster_urls: Vec<SecretString>,
    /// Put before every key and channel, so deployments (and tests) can share one Redis.
    pub prefix: String,
    /// Shards the state is spread over (a power of two up to 1024), each in
    /// its own hash tag, so a Redis Cluster spreads them over its masters.
    pub shards: u16,
    /// How often the pub/sub connection is pinged; a silent one is replaced.
    #[serde(rename = "probe_s", deserialize_with = "de::secs")]
    pub probe: Duration,
    /// Replicas each step must reach (`WAIT`) before its call is answered.
    pub min_replicas_acked: u32,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: None, cluster_urls: vec![], prefix: "camsig".into(), shards: 1, probe: Duration::from_secs(2), min_replicas_acked: 0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Unset: dev mode (random per-process secret and `POST /dev/token`).
    pub jwt_secret: Option<SecretString>,
    /// A session is warned (`token_expiring`) this long before its token's `exp`.
    #[serde(rename = "refresh_before_s", deserialize_with = "de::secs")]
    pub refresh_before: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { jwt_secret: None, refresh_before: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    #[serde(rename = "ttl_s", deserialize_with = "de::secs")]
    pub ttl: Duration,
    #[serde(rename = "grace_s", deserialize_with = "de::secs")]
    pub grace: Duration,
    /// A user offline with the camera off and no open room is forgotten after this.
    #[serde(rename = "forget_after_s", deserialize_with = "de::secs")]
    pub forget_after: Duration,
    /// A user's `online` changes at most once per this, however often their
    /// sessions open and close (see `service::presence`).
    #[serde(rename = "flap_window_ms", deserialize_with = "de::millis")]
    pub flap_window: Duration,
    /// `watched`: everyone-broadcast off, `presence=all` sessions act as `watched`.
    pub broadcast: Broadcast,
}

/// Who hears `update_user` by default (`presence.broadcast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Broadcast {
    /// Every `presence=all` session hears every user.
    All,
    /// Sessions hear only the users they watch.
    Watched,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            forget_after: Duration::from_secs(86_400),
            flap_window: Duration::from_millis(1000),
            broadcast: Broadcast::All,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceSettings {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<SecretString>,
    #[serde(rename = "turn_ttl_s", deserialize_with = "de::secs")]
    pub turn_ttl: Duration,
}

impl Default for IceSettings {
    fn default() -> Self {
        Self { stun_urls: vec![], turn_urls: vec![], turn_secret: None, turn_ttl: Duration::from_secs(3600) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    pub max_body_bytes: usize,
    /// Calls per second per user, with a burst of the same size.
    #[serde(deserialize_with = "de::at_least_one")]
    pub rate_per_s: NonZeroU32,
    pub max_viewers: usize,
    /// Members of one meeting: a mesh beyond 8 overloads a phone's uplink.
    pub max_meeting_members: usize,
    /// Open sessions (sockets and long polls) one user may hold.
    pub max_sessions_per_user: usize,
    /// Idempotent answers kept per user in the keep window; the oldest go first.
    pub max_idempotency_keys: usize,
    /// cameraOn/cameraOff per user per minute (each one is broadcast to everyone).
    #[serde(deserialize_with = "de::at_least_one")]
    pub presence_per_min: NonZeroU32,
    /// Most event bytes one long-poll answer carries; the rest waits behind its `last_id`.
    pub poll_max_bytes: usize,
    /// Long polls of one user waiting at once on a node; a new one answers the oldest (empty).
    #[serde(deserialize_with = "de::at_least_one_usize")]
    pub max_polls_per_user: usize,
    /// Meetings one user created that are not gone yet.
    pub max_meetings_per_user: usize,
    /// Users one session may watch.
    pub max_watch: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            rate_per_s: NonZeroU32::new(20).expect("not zero"),
            max_viewers: 50,
            max_meeting_members: 8,
            max_sessions_per_user: 10,
            max_idempotency_keys: 1000,
            presence_per_min: NonZeroU32::new(30).expect("not zero"),
            poll_max_bytes: 1024 * 1024,
            max_polls_per_user: 2,
            max_meetings_per_user: 20,
            max_watch: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    #[serde(rename = "keep_s", deserialize_with = "de::secs")]
    pub keep: Duration,
    pub keep_max: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self { keep: Duration::from_secs(120), keep_max: 256 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// A room still negotiating (`requested`/`offered`) with no signaling for this long is closed.
    #[serde(rename = "idle_ttl_s", deserialize_with = "de::secs")]
    pub idle_ttl: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self { idle_ttl: Duration::from_secs(120) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    #[serde(rename = "heartbeat_s", deserialize_with = "de::secs")]
    pub heartbeat: Duration,
    /// Frames that may wait for one session before it is closed with 4008.
    pub max_queued: usize,
    /// Bytes that may wait for one session before it is closed with 4008.
    pub max_queued_bytes: usize,
    /// The kernel send buffer of a WebSocket (SO_SNDBUF); 0 keeps the system's.
    /// Bounds kernel memory per slow client, and makes backpressure come sooner.
    pub send_buffer_bytes: usize,
}

impl WsSettings {
    /// Heartbeats a session may miss before it counts as gone.
    pub const MISSED_HEARTBEATS: u32 = 3;

    /// How long a session may stay silent (and a long poll's presence outlive
    /// its last poll) before it counts as gone.
    pub fn silent_after(&self) -> Duration {
        self.heartbeat * Self::MISSED_HEARTBEATS
    }
}

impl Default for WsSettings {
    fn default() -> Self {
        Self { heartbeat: Duration::from_secs(10), max_queued: 1024, max_queued_bytes: 4 * 1024 * 1024, send_buffer_bytes: 0 }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CompatSettings {
    pub peerconnection: PeerConnectionSettings,
}

/// libwebrtc's sample `peerconnection_server` protocol (`crate::compat`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConnectionSettings {
    /// Off unless set: the protocol has no authentication.
    pub enabled: bool,
    #[serde(deserialize_with = "de::socket_addr")]
    pub bind: Option<SocketAddr>,
    /// Peers signed in at once, over all nodes (a guard of the sign-in step).
    pub max_peers: usize,
    /// The largest message body; a larger one is refused, its connection closed.
    pub max_message_bytes: usize,
    /// Requests a second from one IP address (a burst of as many).
    pub rate_per_s: NonZeroU32,
    /// Connections open at once from one IP address.
    pub max_conns_per_ip: usize,
    /// Connections open at once in all, on this node.
    pub max_conns: usize,
}

impl Default for PeerConnectionSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 8888))),
            max_peers: 256,
            max_message_bytes: 64 * 1024,
            rate_per_s: NonZeroU32::new(50).expect("non-zero"),
            max_conns_per_ip: 32,
            max_conns: 1024,
        }
    }
}

/// Webhooks (`crate::webhooks`): where each change is POSTed, signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Receivers; each gets every webhook. Empty: none are recorded.
    pub urls: Vec<String>,
    /// The HMAC-SHA256 key of `Camsig-Signature`.
    pub secret: Option<SecretString>,
    /// Tries of one webhook to one receiver before it goes to the dead letters.
    pub max_attempts: u32,
    /// An answer later than this is a failed try.
    #[serde(rename = "timeout_s", deserialize_with = "de::secs")]
    pub timeout: Duration,
    /// Deliveries in flight at once, per node and receiver.
    pub max_in_flight: usize,
    /// Webhooks a node holds in memory per receiver while it delivers; the
    /// rest wait in the store.
    pub max_buffered: usize,
    /// Webhooks kept per shard and receiver not yet delivered; past it the
    /// oldest are dropped (and counted in `/metrics`).
    pub max_backlog: usize,
    /// The first retry's delay; each next one doubles it, with jitter, up to `max_backoff`.
    #[serde(rename = "backoff_ms", deserialize_with = "de::millis")]
    pub backoff: Duration,
    #[serde(rename = "max_backoff_s", deserialize_with = "de::secs")]
    pub max_backoff: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            urls: vec![],
            secret: None,
            max_attempts: 8,
            timeout: Duration::from_secs(5),
            max_in_flight: 64,
            max_buffered: 10_000,
            max_backlog: 1_000_000,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// A `config` crate error as one line: the key first, then what it expects,
/// in words rather than Rust type names.
fn explain(e: &config::ConfigError) -> String {
    use config::ConfigError as E;
    match e {
        E::Type { unexpected, expected, key, .. } => {
            let key = key.as_deref().unwrap_or("a key");
            let expected = match *expected {
                "an integer" | "an unsigned 64 bit or less integer" | "an unsigned 32 bit or less integer" => "a whole number of 0 or more",
                "a boolean" => "true or false",
                other => other,
            };
            format!("{key}: expected {expected}, got {unexpected}")
        }
        E::At { error, key: Some(key), .. } => match error.as_ref() {
            E::Message(m) if m.starts_with("unknown field `") => {
                let field = m.trim_start_matches("unknown field `").split('`').next().unwrap_or_default();
                unknown_key(&format!("{key}.{field}"))
            }
            E::Message(m) => format!("{key}: {}", plain_message(key, m)),
            inner => format!("{key}: {}", explain(inner)),
        },
        E::Message(m) => plain_message("", m),
        other => other.to_string().replace('\n', " "),
    }
}

/// serde's words for an enum or an unknown field, without type names.
fn plain_message(key: &str, m: &str) -> String {
    if m.contains("does not have variant constructor") {
        let allowed = match key {
            "log.format" => "text or json",
            _ => "one of the documented values",
        };
        return format!("must be {allowed}");
    }
    if let Some(rest) = m.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return unknown_key(&if key.is_empty() { field.to_owned() } else { format!("{key}.{field}") });
    }
    m.replace('\n', " ")
}

/// Names other servers give, per section, to what camsig calls otherwise.
const ALIASES: [(&str, &[&str], &str); 4] = [
    ("auth", &["secret"], "auth.jwt_secret"),
    ("server", &["port", "host", "listen", "address", "addr"], "server.bind"),
    ("server", &["threads"], "server.workers"),
    ("redis", &["host", "port", "password", "address", "addr"], "redis.url"),
];

/// How alike a typo and a known name must be (Jaro-Winkler) to be suggested;
/// `presence.ttl` → `ttl_s` passes, `limits.nope` finds nothing.
const NEAR: f64 = 0.8;

/// "unknown key `a.b`", with the known key it most likely meant.
fn unknown_key(key: &str) -> String {
    match suggestion(key) {
        Some(known) => format!("unknown key `{key}` (did you mean `{known}`?)"),
        None => format!("unknown key `{key}`"),
    }
}

/// The known key nearest to `key` (`section.field`, or a bare top-level name):
/// a name other servers use, the same name under another section, else the
/// closest field of its section (or the closest section, for a bare name).
fn suggestion(key: &str) -> Option<String> {
    let (section, field) = key.rsplit_once('.').unwrap_or(("", key));
    if let Some((.., known)) =
        ALIASES.iter().find(|(s, names, _)| (section.is_empty() || section == *s) && names.contains(&field))
    {
        return Some((*known).to_owned());
    }
    let keys = Settings::keys();
    if let Some(known) = keys.iter().find(|k| k.rsplit_once('.').is_some_and(|(_, f)| f == field)) {
        return Some(known.clone());
    }
    let candidates: Vec<String> = if section.is_empty() {
        fields_of::<Settings>().iter().map(|s| (*s).to_owned()).collect()
    } else {
        keys.into_iter().filter(|k| k.rsplit_once('.').is_some_and(|(s, _)| s == section)).collect()
    };
    candidates
        .into_iter()
        .filter_map(|known| {
            let name = known.rsplit('.').next().unwrap_or_default();
            let score = strsim::jaro_winkler(field, name);
            // Close in spelling, or one word of it (`timeout` in `body_timeout_s`).
            (score >= NEAR || name.split('_').any(|w| w == field)).then_some((score, known))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| known)
}

/// The field names of the struct `T`, as its derived `Deserialize` hands
/// them to `deserialize_struct`: the keys can never drift from the structs.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the fields were wanted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

const LIST_KEYS: [&str; 6] = ["ice.stun_urls", "ice.turn_urls", "server.trusted_proxies", "server.allowed_origins", "redis.cluster_urls", "webhooks.urls"];

impl Settings {
    /// Every key, `section.field`, in the structs' order.
    fn keys() -> Vec<String> {
        let sections: [(&str, &[&str]); 11] = [
            ("server", fields_of::<ServerSettings>()),
            ("node", fields_of::<NodeSettings>()),
            ("redis", fields_of::<RedisSettings>()),
            ("auth", fields_of::<AuthSettings>()),
            ("presence", fields_of::<PresenceSettings>()),
            ("ice", fields_of::<IceSettings>()),
            ("limits", fields_of::<LimitSettings>()),
            ("events", fields_of::<EventSettings>()),
            ("connections", fields_of::<ConnectionSettings>()),
            ("ws", fields_of::<WsSettings>()),
            ("log", fields_of::<LogSettings>()),
        ];
        let mut keys: Vec<String> = sections.iter().flat_map(|(section, fields)| fields.iter().map(move |f| format!("{section}.{f}"))).collect();
        keys.extend(fields_of::<PeerConnectionSettings>().iter().map(|f| format!("compat.peerconnection.{f}")));
        keys.extend(fields_of::<WebhookSettings>().iter().map(|f| format!("webhooks.{f}")));
        keys
    }

    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::var("CAMSIG_CONFIG").ok(), std::env::vars())
    }

    /// Loads from an optional file and the given environment (tests pass their own).
    pub fn load_from(
        file: Option<String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env.into_iter().collect();
        let mut env_source = config::Environment::with_prefix("CAMSIG")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(env));
        for key in LIST_KEYS {
            env_source = env_source.with_list_parse_key(key);
        }
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::new(&path, config::FileFormat::Toml));
        }
        let settings: Settings = builder
            .add_source(env_source)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(explain(&e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Whether no `auth.jwt_secret` is set (see `crate::dev`).
    pub fn is_dev(&self) -> bool {
        self.auth.jwt_secret.is_none()
    }

    /// The address to listen on: `server.bind`, else all interfaces, or only
    /// loopback in dev mode (where anyone who reaches it can mint tokens).
    pub fn bind(&self) -> SocketAddr {
        let default = if self.is_dev() { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
        self.server.bind.unwrap_or(SocketAddr::from((default, 8080)))
    }

    /// Checks what serde cannot: ranges, formats, and keys that need each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.workers > MAX_WORKERS {
            return Err(bad("server.workers", format!("must be 0 (one per core) to {MAX_WORKERS}")));
        }
        for o in &self.server.allowed_origins {
            let (scheme, host) = o.split_once("://").unwrap_or(("", ""));
            if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
                return Err(bad("server.allowed_origins", format!("{o:?} is not an origin like https://app.example.com")));
            }
        }
        if self.server.data_dir.as_deref() == Some("") {
            return Err(bad("server.data_dir", "must be a directory path"));
        }
        if let Some(id) = &self.node.id
            && (id.is_empty() || id.chars().any(char::is_whitespace))
        {
            return Err(bad("node.id", "must be a non-empty word"));
        }
        let p = &self.redis.prefix;
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(bad("redis.prefix", "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'"));
        }
        if let Some(url) = &self.redis.url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://")) {
                return Err(bad("redis.url", "must be a redis:// URL"));
            }
        }
        for url in &self.redis.cluster_urls {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad("redis.cluster_urls", "each must be a redis:// URL"));
            }
        }
        if self.redis.url.is_some() && !self.redis.cluster_urls.is_empty() {
            return Err(bad("redis.cluster_urls", "give redis.url (one Redis) or redis.cluster_urls (a Redis Cluster), not both"));
        }
        if !self.redis.shards.is_power_of_two() || self.redis.shards > crate::domain::ids::PLACEMENTS {
            return Err(bad("redis.shards", format!("must be a power of two from 1 to {}", crate::domain::ids::PLACEMENTS)));
        }
        if self.redis.min_replicas_acked > 16 {
            return Err(bad("redis.min_replicas_acked", "must be 0 to 16"));
        }
        if self.redis.min_replicas_acked > 0 && self.redis.url.is_none() && self.redis.cluster_urls.is_empty() {
            return Err(bad("redis.min_replicas_acked", "needs redis.url or redis.cluster_urls: the embedded broker has no replicas"));
        }
        if let Some(s) = &self.auth.jwt_secret
            && !strong_secret(s.expose_secret().as_bytes())
        {
            return Err(bad(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes that are not whitespace, of at least {MIN_SECRET_DISTINCT} different values (e.g. openssl rand -base64 48)"),
            ));
        }
        for (key, v) in [
            ("presence.ttl_s", self.presence.ttl.as_secs()),
            ("server.drain_s", self.server.drain.as_secs()),
            ("redis.probe_s", self.redis.probe.as_secs()),
            ("ws.max_queued", self.ws.max_queued as u64),
            ("ws.max_queued_bytes", self.ws.max_queued_bytes as u64),
            ("limits.max_sessions_per_user", self.limits.max_sessions_per_user as u64),
            ("limits.max_idempotency_keys", self.limits.max_idempotency_keys as u64),
            ("server.body_timeout_s", self.server.body_timeout.as_secs()),
            ("server.header_timeout_s", self.server.header_timeout.as_secs()),
            ("server.max_conns_per_ip", self.server.max_conns_per_ip as u64),
            ("limits.max_meetings_per_user", self.limits.max_meetings_per_user as u64),
            ("limits.max_watch", self.limits.max_watch as u64),
            ("ice.turn_ttl_s", self.ice.turn_ttl.as_secs()),
            ("limits.max_viewers", self.limits.max_viewers as u64),
            ("connections.idle_ttl_s", self.connections.idle_ttl.as_secs()),
            ("ws.heartbeat_s", self.ws.heartbeat.as_secs()),
            ("compat.peerconnection.max_peers", self.compat.peerconnection.max_peers as u64),
            ("compat.peerconnection.max_message_bytes", self.compat.peerconnection.max_message_bytes as u64),
            ("compat.peerconnection.max_conns_per_ip", self.compat.peerconnection.max_conns_per_ip as u64),
            ("compat.peerconnection.max_conns", self.compat.peerconnection.max_conns as u64),
            ("webhooks.max_attempts", self.webhooks.max_attempts as u64),
            ("webhooks.timeout_s", self.webhooks.timeout.as_secs()),
            ("webhooks.max_in_flight", self.webhooks.max_in_flight as u64),
            ("webhooks.max_buffered", self.webhooks.max_buffered as u64),
            ("webhooks.max_backlog", self.webhooks.max_backlog as u64),
            ("webhooks.max_backoff_s", self.webhooks.max_backoff.as_secs()),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        for u in &self.webhooks.urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 2048 {
                return Err(bad("webhooks.urls", format!("{u:?} is not an http:// or https:// URL")));
            }
        }
        if !self.webhooks.urls.is_empty() && self.webhooks.secret.as_ref().is_none_or(|s| s.expose_secret().len() < 16) {
            return Err(bad("webhooks.secret", "must be set, at least 16 bytes, when webhooks.urls is set"));
        }
        for u in &self.ice.stun_urls {
            if !u.starts_with("stun:") && !u.starts_with("stuns:") {
                return Err(bad("ice.stun_urls", format!("{u:?} is not a stun: URL")));
            }
        }
        for u in &self.ice.turn_urls {
            if !u.starts_with("turn:") && !u.starts_with("turns:") {
                return Err(bad("ice.turn_urls", format!("{u:?} is not a turn: URL")));
            }
        }
        if !self.ice.turn_urls.is_empty() && self.ice.turn_secret.is_none() {
            return Err(bad("ice.turn_secret", "is required when ice.turn_urls is set"));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(bad("limits.max_body_bytes", "must be at least 1024"));
        }
        if self.limits.poll_max_bytes < self.limits.max_body_bytes {
            // One event may carry a whole body; a poll must be able to answer it.
            return Err(bad("limits.poll_max_bytes", "must be at least limits.max_body_bytes"));
        }
        if !(2..=64).contains(&self.limits.max_meeting_members) {
            return Err(bad("limits.max_meeting_members", "must be 2 to 64"));
        }
        if self.events.keep.is_zero() || self.events.keep_max == 0 {
            return Err(bad("events.keep_s", "events.keep_s and events.keep_max must be at least 1"));
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(bad("log.level", "is not a tracing filter"));
        }
        Ok(())
    }

    pub fn node_id(&self) -> String {
        self.node.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "camsig".into());
            let suffix: u32 = rand::random();
            format!("{host}-{:06x}", suffix & 0xff_ffff)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_contracts() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.redis.url.is_none() && s.auth.jwt_secret.is_none());
        assert_eq!(s.bind().to_string(), "127.0.0.1:8080", "dev mode listens on loopback only");
        let s = Settings::load_from(None, env(&[("CAMSIG__AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef")])).unwrap();
        assert_eq!(s.bind().to_string(), "0.0.0.0:8080");
        assert_eq!((s.presence.ttl.as_secs(), s.presence.grace.as_secs()), (30, 10));
        assert_eq!((s.limits.max_body_bytes, s.limits.rate_per_s.get(), s.limits.max_viewers), (65536, 20, 50));
        assert_eq!(s.ice.turn_ttl.as_secs(), 3600);
    }

    #[test]
    fn environment_overrides_with_lists_and_numbers() {
        let s = Settings::load_from(None, env(&[
            ("CAMSIG__PRESENCE__GRACE_S", "3"),
            ("CAMSIG__ICE__STUN_URLS", "stun:a:3478,stun:b:3478"),
            ("CAMSIG__REDIS__URL", "redis://127.0.0.1:1/"),
        ])).unwrap();
        assert_eq!(s.presence.grace, Duration::from_secs(3));
        assert_eq!(s.ice.stun_urls, vec!["stun:a:3478", "stun:b:3478"]);
        assert!(s.redis.url.is_some());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("CAMSIG__PRESENCE__TTL_S", "soon", "ttl_s"),
            ("CAMSIG__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
            ("CAMSIG__AUTH__JWT_SECRET", "                                        ", "auth.jwt_secret"),
            ("CAMSIG__AUTH__JWT_SECRET", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth.jwt_secret"),
            ("CAMSIG__AUTH__JWT_SECRET", "0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9", "auth.jwt_secret"),
            ("CAMSIG__SERVER__BIND", "nowhere", "server.bind"),
            ("CAMSIG__LIMITS__NOPE", "1", "nope"),
            ("CAMSIG__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,proxy.local", "server.trusted_proxies"),
            ("CAMSIG__LIMITS__PRESENCE_PER_MIN", "0", "limits.presence_per_min"),
        ];
        for (k, v, key) in cases {
            let e = Settings::load_from(None, env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_known_one() {
        let cases = [
            ("CAMSIG__SERVER__PORT", Some("server.port"), Some("server.bind")),
            ("CAMSIG__SERVER__BNID", Some("server.bnid"), Some("server.bind")),
            ("CAMSIG__PRESENCE__TTL", Some("presence.ttl"), Some("presence.ttl_s")),
            ("CAMSIG__ICE__STUN_URL", Some("ice.stun_url"), Some("ice.stun_urls")),
            ("CAMSIG__LIMITS__HEARTBEAT_S", Some("limits.heartbeat_s"), Some("ws.heartbeat_s")),
            ("CAMSIG__BIND", Some("bind"), Some("server.bind")),
            ("CAMSIG__SEVER__BIND", Some("sever"), Some("server")),
            ("CAMSIG__LIMITS__NOPE", Some("limits.nope"), None),
            ("CAMSIG__REDIS__HOST", Some("redis.host"), Some("redis.url")),
            ("CAMSIG__AUTH__SECRET", Some("auth.secret"), Some("auth.jwt_secret")),
            ("CAMSIG__SERVER__TIMEOUT", Some("server.timeout"), Some("server.body_timeout_s")),
            ("CAMSIG__LOGS__LEVEL", None, Some("log")),
            ("CAMSIG__WS__COMPRESSION", Some("ws.compression"), None),
        ];
        for (var, key, hint) in cases {
            let e = Settings::load_from(None, env(&[(var, "1")])).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            if let Some(key) = key {
                assert!(e.starts_with(&format!("invalid configuration: unknown key `{key}`")), "{var}: {e}");
            }
            match hint {
                Some(h) => assert!(e.ends_with(&format!(" (did you mean `{h}`?)")), "{var}: {e}"),
                None => assert!(!e.contains("did you mean"), "{var}: {e}"),
            }
        }
        let e = Settings::load_from(None, env(&[("CAMSIG__SERVER__PORT", "9000")])).unwrap_err().to_string();
        assert_eq!(e, "invalid configuration: unknown key `server.port` (did you mean `server.bind`?)");
        // The same from a file.
        let file = std::env::temp_dir().join(format!("camsig-unknown-{}.toml", std::process::id()));
        std::fs::write(&file, "[server]\nport = 9000\n").unwrap();
        let e = Settings::load_from(Some(file.display().to_string()), env(&[])).unwrap_err().to_string();
        let _ = std::fs::remove_file(&file);
        assert!(e.contains("unknown key `server.port` (did you mean `server.bind`?)"), "{e}");
    }

    #[test]
    fn the_keys_are_the_structs_fields() {
        let keys = Settings::keys();
        let mut sections: Vec<&str> = keys.iter().map(|k| k.split('.').next().unwrap()).collect();
        sections.dedup();
        assert_eq!(sections, fields_of::<Settings>(), "a section missing from Settings::keys");
        assert!(keys.contains(&"server.bind".to_owned()) && keys.contains(&"log.level".to_owned()));
    }

    /// The default in a row of the contract's table as a literal (`camsig`,
    /// `10`, `empty` as `[]`), or None where it is unset or told in words.
    fn literal(cell: &str) -> Option<String> {
        let first = cell.split(" (").next().unwrap_or(cell);
        match first {
            "empty" => Some("[]".into()),
            _ if first.len() > 2 && first.starts_with('`') && first.ends_with('`') && first.matches('`').count() == 2 => {
                Some(first.trim_matches('`').into())
            }
            _ if first.parse::<f64>().is_ok() => Some(first.into()),
            _ => None,
        }
    }

    #[test]
    fn the_example_file_has_every_key_with_the_contracts_default() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let contract = std::fs::read_to_string(root.join("docs/contract.md")).unwrap();
        let section = contract.split("\n## Configuration\n").nth(1).unwrap().split("\n## ").next().unwrap();
        let mut table = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let key = cells[0].trim_matches('`');
            assert!(!key.contains('`'), "one key per row: {row}");
            table.push((key.to_owned(), cells[1].to_owned()));
        }

        let path = root.join("examples/camsig.toml");
        let example = std::fs::read_to_string(&path).unwrap();
        let mut entries = Vec::new(); // (key, value, commented out)
        let mut current = String::new();
        for line in example.lines() {
            if let Some(s) = line.strip_prefix('[') {
                current = s.trim_end_matches(']').to_owned();
                continue;
            }
            let (commented, rest) = match line.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((k, v)) = rest.split_once(" = ") else { continue };
            if k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                entries.push((format!("{current}.{k}"), v.trim_matches('"').to_owned(), commented));
            }
        }

        let keys = Settings::keys();
        let table_keys: Vec<&String> = table.iter().map(|(k, _)| k).collect();
        let example_keys: Vec<&String> = entries.iter().map(|(k, ..)| k).collect();
        assert_eq!(table_keys, keys.iter().collect::<Vec<_>>(), "docs/contract.md's table: every key, in the structs' order");
        assert_eq!(example_keys, keys.iter().collect::<Vec<_>>(), "examples/camsig.toml: every key once, in the structs' order");
        for ((key, default), (_, value, commented)) in table.iter().zip(&entries) {
            if *commented {
                // Only a key with no fixed default is left out: unset, or told in words.
                assert!(literal(default).is_none() || default.contains(" ("), "{key}: set it to {default} in the example");
            } else {
                assert_eq!(literal(default).as_deref(), Some(value.as_str()), "{key}: the example and the contract's default differ");
            }
        }

        // It loads, and changes nothing: its values are the code's defaults.
        let loaded = Settings::load_from(Some(path.display().to_string()), env(&[])).unwrap();
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(format!("{loaded:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(None, env(&[("CAMSIG__AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret")])).unwrap();
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
