//! A JetStream cluster of `nats-server` nodes on loopback, for tests of replicated streams and
//! of clients failing over between servers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::nats::Route;
use super::process::free_port;
use super::{HarnessError, NatsServer, monitor};

/// How long a cluster may take to elect a meta leader with every running node caught up.
const FORMED_WITHIN: Duration = Duration::from_secs(30);
/// How often the nodes' `/jsz` is polled while waiting for that.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How many times the whole cluster is started on new ports when a node exits during start-up
/// (a route port picked up front was taken by someone else in the meantime).
const START_ATTEMPTS: u32 = 3;

/// `size` `nats-server` nodes with JetStream, each with its own client, route and monitoring
/// port and store directory, routed to each other under a cluster name unique to this cluster.
/// Dropping it kills every node.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the nodes and returns once the cluster has formed: every node follows the same
    /// JetStream meta leader, and that leader counts every other node as current.
    pub async fn start(size: usize) -> Result<NatsCluster, HarnessError> {
        if size == 0 {
            return Err(HarnessError::InvalidClusterSize { size });
        }
        let mut attempt = 1;
        loop {
            match NatsCluster::start_once(size).await {
                Err(e @ HarnessError::Exited { .. }) if attempt < START_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "retrying the cluster on new ports");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(size: usize) -> Result<NatsCluster, HarnessError> {
        let cluster_name = unique_cluster_name();
        let route_ports = distinct_free_ports(size)?;
        let mut nodes = Vec::with_capacity(size);
        for &port in &route_ports {
            let route = Route {
                cluster_name: cluster_name.clone(),
                port,
                peers: route_ports.iter().copied().filter(|&p| p != port).collect(),
            };
            // Nodes already started are killed (dropped) if this one fails.
            nodes.push(NatsServer::start_node(route).await?);
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// The client URLs of all nodes, `nats://127.0.0.1:PORT`, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// All client URLs joined by commas, the form `nats.url` / `NATS_URL` take.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// How many nodes the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (ports, pid, log, server name).
    pub fn node(&self, i: usize) -> Option<&NatsServer> {
        self.nodes.get(i)
    }

    /// The index of the node with this server name (as stream info reports leaders).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.server_name() == server_name)
    }

    /// SIGKILLs node `i`. Returns at once: the others notice and elect new leaders by themselves.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        self.node_mut(i)?.kill();
        Ok(())
    }

    /// Starts node `i` again on the same ports with the same store, and waits until the cluster
    /// has formed again with it.
    pub async fn start_again(&mut self, i: usize) -> Result<(), HarnessError> {
        self.node_mut(i)?.start_again().await?;
        self.wait_formed().await
    }

    /// [`NatsCluster::kill`] and [`NatsCluster::start_again`] of node `i`.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i)?;
        self.start_again(i).await
    }

    /// Waits until every running node follows the same meta leader and the leader counts every
    /// other running node as current; fails after [`FORMED_WITHIN`] saying what was missing.
    pub async fn wait_formed(&self) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let missing = match self.meta_views().await {
                Ok(views) => check_formed(&views, self.nodes.len()),
                Err(e) => Err(e),
            };
            let Err(missing) = missing else {
                tracing::debug!(after = ?started.elapsed(), "nats cluster formed");
                return Ok(());
            };
            if started.elapsed() >= FORMED_WITHIN {
                return Err(HarnessError::ClusterNotFormed {
                    after: started.elapsed(),
                    missing,
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Each running node's view of the JetStream meta group, from its `/jsz`.
    async fn meta_views(&self) -> Result<Vec<(&str, MetaCluster)>, String> {
        let mut views = Vec::with_capacity(self.nodes.len());
        for node in self.nodes.iter().filter(|node| node.pid().is_some()) {
            let name = node.server_name();
            let jsz: Jsz = monitor::get_json(node.monitor_port(), "/jsz")
                .await
                .map_err(|e| format!("{name} /jsz: {e}"))?;
            let meta = jsz
                .meta_cluster
                .ok_or_else(|| format!("{name} is not in a JetStream cluster yet"))?;
            views.push((name, meta));
        }
        Ok(views)
    }

    fn node_mut(&mut self, i: usize) -> Result<&mut NatsServer, HarnessError> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(i)
            .ok_or(HarnessError::NoSuchNode { index: i, size })
    }
}

/// The part of `/jsz` the readiness check reads.
#[derive(Debug, Deserialize)]
struct Jsz {
    meta_cluster: Option<MetaCluster>,
}

#[derive(Debug, Default, Deserialize)]
struct MetaCluster {
    #[serde(default)]
    leader: String,
    #[serde(default)]
    cluster_size: usize,
    /// Only the leader's list is authoritative: followers do not track each other.
    #[serde(default)]
    replicas: Vec<MetaPeer>,
}

#[derive(Debug, Deserialize)]
struct MetaPeer {
    name: String,
    #[serde(default)]
    current: bool,
}

/// `Ok` when the running nodes' views (name, view) show a formed cluster of `size` nodes;
/// otherwise the first thing missing, for the timeout message.
fn check_formed(views: &[(&str, MetaCluster)], size: usize) -> Result<(), String> {
    let Some((first, first_view)) = views.first() else {
        return Err("no node is running".into());
    };
    let leader = first_view.leader.as_str();
    if leader.is_empty() {
        return Err(format!("{first} has no JetStream meta leader yet"));
    }
    for (name, view) in views {
        if view.leader != leader {
            return Err(format!(
                "{name} follows meta leader {:?}, {first} follows {leader:?}",
                view.leader
            ));
        }
        if view.cluster_size != size {
            return Err(format!("{name} sees {} of {size} nodes", view.cluster_size));
        }
    }
    let Some((_, leader_view)) = views.iter().find(|(name, _)| *name == leader) else {
        return Err(format!("meta leader {leader} is not a running node"));
    };
    let behind = views.iter().map(|(name, _)| *name).find(|name| {
        *name != leader
            && !leader_view
                .replicas
                .iter()
                .any(|peer| peer.name == *name && peer.current)
    });
    match behind {
        Some(name) => Err(format!(
            "meta leader {leader} does not count {name} as current"
        )),
        None => Ok(()),
    }
}

/// Unique per cluster across test processes, so parallel tests' clusters never merge.
fn unique_cluster_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("switchyard-test-cluster-{}-{n}", std::process::id())
}

/// `count` different ports that were free a moment ago.
fn distinct_free_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port()?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader: &str, size: usize, current: &[&str]) -> MetaCluster {
        MetaCluster {
            leader: leader.into(),
            cluster_size: size,
            replicas: current
                .iter()
                .map(|name| MetaPeer {
                    name: (*name).into(),
                    current: true,
                })
                .collect(),
        }
    }

    #[test]
    fn formed_when_all_follow_one_leader_that_counts_them_current() {
        let views = [
            ("a", view("b", 3, &[])),
            ("b", view("b", 3, &["a", "c"])),
            ("c", view("b", 3, &[])),
        ];
        assert_eq!(check_formed(&views, 3), Ok(()));
    }

    #[test]
    fn not_formed_without_leader_agreement_or_caught_up_peers() {
        let no_leader = [("a", view("", 3, &[]))];
        assert!(check_formed(&no_leader, 3).is_err());
        let split = [("a", view("a", 3, &["b"])), ("b", view("b", 3, &["a"]))];
        assert!(check_formed(&split, 3).is_err());
        let behind = [("a", view("a", 3, &[])), ("b", view("a", 3, &[]))];
        let missing = check_formed(&behind, 3).expect_err("b not current");
        assert!(missing.contains("does not count b"), "{missing}");
        let small = [("a", view("a", 2, &[]))];
        assert!(check_formed(&small, 3).is_err());
        assert!(check_formed(&[], 3).is_err());
    }

    #[test]
    fn one_killed_node_does_not_block_the_others() {
        // The leader lists the dead node as not current; only running nodes are checked.
        let views = [("a", view("a", 3, &["b"])), ("b", view("a", 3, &[]))];
        assert_eq!(check_formed(&views, 3), Ok(()));
    }
}
