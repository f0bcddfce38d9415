//! One handle for commands, whether Redis is a single server (or a Sentinel/managed endpoint
//! that presents one) or a Redis Cluster. Both reconnect by themselves and time out, so a call
//! during an outage fails within about a second instead of hanging.
//!
//! In a cluster, a multi-key command, a pipeline or a script must stay within one slot: the key
//! layout ([`super::keys`]) hash-tags what is used together, and the engine never pipelines
//! across tags.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `url`. A single server connects lazily (a node starts while Redis is away);
    /// a cluster needs its topology, so it is discovered now from `url` (any one node).
    ///
    /// # Errors
    /// When the URL is unusable, or (cluster) no node answers.
    pub async fn open(url: &str, cluster: bool, timeout: Duration) -> RedisResult<Self> {
        if cluster {
            let client = ClusterClientBuilder::new(vec![url])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_secs(2));
            Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                redis::Client::open(url)?,
                config,
            )?))
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
