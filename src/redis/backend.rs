//! Where Redis is and how camsig connects to it: one server or a Redis
//! Cluster (`Backend`), a command connection on either (`Conn`), and the
//! socket settings every connection shares.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Longest any Redis call may take before it counts as unreachable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A client whose every socket (commands and pub/sub) sends small writes at
/// once and has TCP keepalive: a peer that vanished without a FIN (a
/// partition, a NAT that forgot the flow) is found by the kernel, not only by
/// our probes; unacknowledged writes older than `TCP_USER_TIMEOUT` end it.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    redis::Client::open(url.into_connection_info()?.set_tcp_settings(tcp_settings()))
}

fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    redis::io::tcp::TcpSettings::default().set_nodelay(true).set_keepalive(keepalive).set_user_timeout(Duration::from_secs(10))
}

/// Where Redis is: one server, or a Redis Cluster.
#[derive(Clone)]
pub enum Backend {
    /// `redis.url`.
    Single(redis::Client),
    /// `redis.cluster_urls`: some of the cluster's nodes, to find the rest.
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Backend {
    pub fn cluster(urls: &[&str]) -> redis::RedisResult<Self> {
        use redis::IntoConnectionInfo;
        Ok(Self::Cluster(urls.iter().map(|u| u.into_connection_info()).collect::<redis::RedisResult<_>>()?))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A cluster client's settings: the same timeouts and sockets as one Redis's.
    pub fn cluster_builder(nodes: &[redis::ConnectionInfo]) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(OP_TIMEOUT)
            .response_timeout(OP_TIMEOUT)
            .retries(2)
            .tcp_settings(tcp_settings())
    }

    /// `host:port` of the server or the first cluster node (never a password), for the log.
    pub fn addr(&self) -> String {
        match self {
            Self::Single(c) => c.get_connection_info().addr().to_string(),
            Self::Cluster(nodes) => nodes.first().map(|n| n.addr().to_string()).unwrap_or_default(),
        }
    }

    /// A command connection: a `ConnectionManager` on one Redis, a cluster
    /// connection (which follows slots and failovers itself) on a cluster.
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        match self {
            Self::Single(client) => {
                let cfg = ConnectionManagerConfig::new().set_connection_timeout(Some(OP_TIMEOUT)).set_response_timeout(Some(OP_TIMEOUT)).set_number_of_retries(1);
                Ok(Conn::Single(ConnectionManager::new_with_config(client.clone(), cfg).await?))
            }
            Self::Cluster(nodes) => Ok(Conn::Cluster(Self::cluster_builder(nodes).build()?.get_async_connection().await?)),
        }
    }
}

/// A command connection on either backend.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, p: &'a redis::Pipeline, offset: usize, count: usize) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(p, offset, count),
            Self::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

