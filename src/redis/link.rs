//! The pub/sub link, on either backend: one plain connection on one Redis;
//! on a Redis Cluster, a RESP3 cluster connection with sharded pub/sub
//! (`SSUBSCRIBE`), which the scripts reach with `SPUBLISH` in their own slot.
//! `broker::redis` owns what is subscribed and what a lost link costs.

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use std::collections::BTreeMap;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::backend::Backend;

/// What the link hears.
pub enum Heard {
    Message(String, Vec<u8>),
    /// Redis took a channel away (its slot moved to another master): the
    /// link no longer hears it, whatever the client library does next.
    Dropped(String),
}

/// The command half: subscribe, unsubscribe, ping.
#[derive(Clone)]
pub enum LinkSink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

pub enum LinkStream {
    Single(PubSubStream),
    Cluster(UnboundedReceiver<PushInfo>),
}

/// Opens a link.
pub async fn open(backend: &Backend) -> redis::RedisResult<(LinkSink, LinkStream)> {
    match backend {
        Backend::Single(client) => {
            let (sink, stream) = client.get_async_pubsub().await?.split();
            Ok((LinkSink::Single(sink), LinkStream::Single(stream)))
        }
        Backend::Cluster(nodes) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let client = Backend::cluster_builder(nodes).use_protocol(redis::ProtocolVersion::RESP3).push_sender(tx).build()?;
            let conn = client.get_async_connection().await?;
            Ok((LinkSink::Cluster(conn), LinkStream::Cluster(rx)))
        }
    }
}

/// Channels grouped by hash tag: one `SSUBSCRIBE` may name channels of one
/// slot only, and channels with one tag share a slot.
fn by_slot(channels: &[String]) -> BTreeMap<&str, Vec<&String>> {
    let mut by: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for c in channels {
        let tag = c.split_once('{').and_then(|(_, r)| r.split_once('}')).map_or(c.as_str(), |(t, _)| t);
        by.entry(tag).or_default().push(c);
    }
    by
}

impl LinkSink {
    pub async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Single(s) => s.subscribe(channels).await,
            Self::Cluster(c) => {
                for group in by_slot(channels).into_values() {
                    c.ssubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Single(s) => s.unsubscribe(channels).await,
            Self::Cluster(c) => {
                for group in by_slot(channels).into_values() {
                    c.sunsubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    /// A PING on the link itself (on a cluster, to every master).
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Single(s) => s.ping::<Value>().await.map(|_| ()),
            Self::Cluster(c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                c.route_command(redis::cmd("PING"), all).await.map(|_| ())
            }
        }
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

impl LinkStream {
    /// The next thing heard; None when the link is lost (on a cluster: any
    /// of its connections dropped, so something may have been missed).
    pub async fn next(&mut self) -> Option<Heard> {
        match self {
            Self::Single(s) => s.next().await.map(|m| Heard::Message(m.get_channel_name().to_owned(), m.get_payload_bytes().to_vec())),
            Self::Cluster(rx) => loop {
                let push = rx.recv().await?;
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let (Some(ch), Some(payload)) = (push.data.first().and_then(bytes), push.data.get(1).and_then(bytes)) {
                            return Some(Heard::Message(String::from_utf8_lossy(&ch).into_owned(), payload));
                        }
                    }
                    PushKind::SUnsubscribe => {
                        if let Some(ch) = push.data.first().and_then(bytes) {
                            return Some(Heard::Dropped(String::from_utf8_lossy(&ch).into_owned()));
                        }
                    }
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}
