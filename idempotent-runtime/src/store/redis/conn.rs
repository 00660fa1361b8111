//! Connections of the Redis store: to one Redis (reconnecting by itself)
//! or to a cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use crate::store::StoreError;

/// Where the store connects.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) client: redis::Client,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) timeout: Duration,
}

impl Target {
    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        let connect = async {
            match &self.cluster {
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_response_timeout(Some(self.timeout))
                        .set_connection_timeout(Some(self.timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_millis(200));
                    ConnectionManager::new_with_config(self.client.clone(), config)
                        .await
                        .map(Conn::Single)
                }
                Some(nodes) => {
                    let cluster =
                        redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                            .connection_timeout(self.timeout)
                            .response_timeout(self.timeout)
                            .retries(1)
                            .build()?;
                    cluster.get_async_connection().await.map(Conn::Cluster)
                }
            }
        };
        tokio::time::timeout(self.timeout * 4, connect)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)
    }
}

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

/// A connection to one Redis (reconnecting by itself) or to a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
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
