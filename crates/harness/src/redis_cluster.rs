//! A Redis Cluster of three masters (no replicas) on loopback, for the tests that check
//! Switchyard on a cluster.
//!
//! Joined by hand rather than by `redis-cli --cluster create`, which would be one more binary to
//! find: each node gets its own config epoch and a third of the slots (CLUSTER ADDSLOTSRANGE),
//! then the first node meets the others. The cluster is ready when every node reports
//! `cluster_state:ok`, i.e. sees every slot served: only then does each node agree with the slot
//! map a client reads from any of them.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{HarnessError, RedisServer, ServerTls};

/// How many masters the cluster has.
const MASTERS: u16 = 3;
/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// How long the nodes may take to agree on the cluster.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How often `CLUSTER INFO` is polled.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Three `redis-server` cluster nodes, each on its own port and directory, serving a third of
/// the slots each. Dropping it kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them and returns once every node reports `cluster_state:ok`.
    pub async fn start() -> Result<RedisCluster, HarnessError> {
        RedisCluster::start_with(None).await
    }

    /// [`RedisCluster::start`] with nodes that serve TLS only (clients and cluster bus alike)
    /// with `tls`'s certificate; [`RedisCluster::seed_urls`] are then `rediss://` URLs.
    pub async fn start_tls(tls: ServerTls) -> Result<RedisCluster, HarnessError> {
        RedisCluster::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> Result<RedisCluster, HarnessError> {
        let (a, b, c) = tokio::try_join!(
            RedisServer::start_cluster_node(tls.clone()),
            RedisServer::start_cluster_node(tls.clone()),
            RedisServer::start_cluster_node(tls),
        )?;
        let cluster = RedisCluster {
            nodes: vec![a, b, c],
        };
        cluster.join().await?;
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// The nodes, in the order of their slot ranges.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node's URL, comma-separated: a `redis.url` for `redis.cluster = true`.
    pub fn seed_urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    /// Gives each node its epoch and slot range, then introduces the others to the first.
    async fn join(&self) -> Result<(), HarnessError> {
        let share = SLOTS / MASTERS;
        for (i, node) in (0u16..).zip(&self.nodes) {
            let mut conn = connect(node).await?;
            let first = i * share;
            let last = if i + 1 == MASTERS {
                SLOTS - 1
            } else {
                first + share - 1
            };
            // Distinct epochs up front, as redis-cli does, so no epoch collision has to be
            // resolved while the nodes first gossip.
            let epoch = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .clone();
            run::<()>(&mut conn, &epoch).await?;
            let slots = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .clone();
            run::<()>(&mut conn, &slots).await?;
        }
        let mut first = connect(&self.nodes[0]).await?;
        for node in &self.nodes[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(node.port());
            if let Some(bus) = node.cluster_bus_port() {
                meet.arg(bus);
            }
            run::<()>(&mut first, &meet).await?;
        }
        Ok(())
    }

    /// Polls `CLUSTER INFO` on every node until each says `cluster_state:ok`, or the deadline.
    async fn wait_until_ok(&self) -> Result<(), HarnessError> {
        let started = Instant::now();
        let mut conns = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            conns.push(connect(node).await?);
        }
        loop {
            let mut all_ok = true;
            for conn in &mut conns {
                let info: String = run(conn, redis::cmd("CLUSTER").arg("INFO")).await?;
                all_ok &= info.lines().any(|l| l.trim() == "cluster_state:ok");
            }
            if all_ok {
                tracing::debug!(after = ?started.elapsed(), "redis cluster ready");
                return Ok(());
            }
            if started.elapsed() >= READY_WITHIN {
                return Err(HarnessError::Cluster(format!(
                    "the nodes did not all report cluster_state:ok within {READY_WITHIN:?}"
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

async fn connect(node: &RedisServer) -> Result<MultiplexedConnection, HarnessError> {
    let client = node
        .client()
        .map_err(|e| HarnessError::Cluster(e.to_string()))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(cluster_error)
}

async fn run<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<T, HarnessError> {
    cmd.query_async(conn).await.map_err(cluster_error)
}

fn cluster_error(e: redis::RedisError) -> HarnessError {
    HarnessError::Cluster(e.to_string())
}
