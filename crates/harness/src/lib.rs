//! Real `nats-server` and `redis-server` child processes for tests and the demo.
//!
//! # Why
//!
//! Switchyard's correctness lives in the interplay of JetStream (dedupe, redelivery, durable
//! consumers) and Redis (atomic Lua transitions). Mocks of either would test the mock, so the tests
//! and the demo run against the real servers.
//!
//! `cargo test` runs every integration-test binary as its own process and the tests inside one
//! binary on parallel threads, so there is no single shared server to lean on. Instead every test
//! starts its own servers: each on a free loopback port picked at start-up, each with its own
//! temporary directory (JetStream store, Redis dir, log file) that disappears with the server.
//! Nothing is shared between tests, so they cannot see each other's streams or keys.
//!
//! Fault-tolerance tests need to take a server away and bring it back: [`NatsServer::kill`] /
//! [`NatsServer::start_again`] (and [`NatsServer::restart`], both in one) SIGKILL the process and
//! start it again on the *same* port with the *same* store directory, so clients can reconnect and
//! JetStream data survives. [`RedisServer`] offers the same.
//!
//! Replication and client fail-over need more than one server: [`NatsCluster::start`] starts a
//! JetStream cluster of several `nats-server` nodes on loopback (each with its own client, route
//! and monitoring port and store, routed to each other under a cluster name no other test uses)
//! and returns once it has formed. Its nodes can be killed and started again one at a time.
//!
//! # How
//!
//! * Binaries are looked up once per process (cached in a [`std::sync::OnceLock`]): an environment
//!   variable (`NATS_SERVER_BIN`, `REDIS_SERVER_BIN`), then every match on `PATH` in order, then a
//!   distribution default. `nats-server` must be at least 2.12 (older ones, such as Debian's 2.9,
//!   are skipped). `scripts/install-servers.sh` installs both.
//! * Readiness is checked by connecting and speaking the protocol (NATS `INFO` / `PING`-`PONG`,
//!   Redis `PING`), polling every 20 ms for up to 10 s — never by sleeping a fixed time. The probe
//!   also checks that it reached *our* server and not one another test process started on the same
//!   port in the meantime; if our server exits early (port taken), start-up retries on a new port.
//! * A cluster is ready when every running node reports (on its `/jsz` monitoring endpoint) the
//!   same JetStream meta leader and that leader counts every other running node as current,
//!   polled every 50 ms for up to 30 s.
//! * [`RedisCluster`] starts three cluster-enabled `redis-server` nodes and joins them into one
//!   Redis Cluster, ready once every node reports `cluster_state:ok` (polled, with a deadline).
//! * [`RedisSentinel`] starts a primary, one replica (`--replicaof`) and three sentinels (each
//!   with its own writable config file), ready once every sentinel reports the primary, its
//!   replica and the other two sentinels (polled, with a deadline). The primary can be killed and
//!   the promotion of the replica awaited, for failover tests.
//! * A [`RedisServer`] started with [`RedisOptions::acl_file`] loads that ACL file plus an admin
//!   user of the harness's own ([`HARNESS_ADMIN`]), as which its probe logs in: with the default
//!   user off, an anonymous probe could not tell our server from another.
//! * Child processes are killed with SIGKILL and reaped when the handle is dropped, so neither
//!   zombies nor leftover servers outlive a test.

mod binary;
mod monitor;
mod nats;
mod nats_cluster;
mod pki;
mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod redis_sentinel;

use std::time::Duration;

pub use nats::{NatsAuth, NatsServer};
pub use nats_cluster::NatsCluster;
pub use pki::{ServerTls, TestPki};
pub use process::free_port;
pub use proxy::TcpProxy;
pub use redis::{HARNESS_ADMIN, RedisOptions, RedisServer};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No binary for the server was found anywhere.
    #[error("{server} binary not found; {hint}")]
    BinaryNotFound {
        /// `nats-server` or `redis-server`.
        server: &'static str,
        /// How to install it.
        hint: String,
    },
    /// Binaries were found, but all of them are older than required.
    #[error("{server} too old (need >= {required}; found {found}); {hint}")]
    TooOld {
        /// `nats-server` or `redis-server`.
        server: &'static str,
        /// Every candidate looked at, with its version.
        found: String,
        /// The minimum version.
        required: &'static str,
        /// How to install a recent one.
        hint: String,
    },
    /// The child process could not be spawned.
    #[error("failed to spawn {server}: {source}")]
    Spawn {
        /// `nats-server` or `redis-server`.
        server: &'static str,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The server kept exiting right after start (e.g. its port was taken), even after retries.
    #[error("{server} exited during start-up ({status}); log tail:\n{log_tail}")]
    Exited {
        /// `nats-server` or `redis-server`.
        server: &'static str,
        /// The exit status.
        status: String,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// The server was running but did not answer its protocol in time.
    #[error("{server} not ready after {after:?}; log tail:\n{log_tail}")]
    NotReady {
        /// `nats-server` or `redis-server`.
        server: &'static str,
        /// How long we waited.
        after: Duration,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// A cluster needs at least one node.
    #[error("a NATS cluster needs at least one node (asked for {size})")]
    InvalidClusterSize {
        /// The size asked for.
        size: usize,
    },
    /// A cluster node index out of range.
    #[error("no NATS cluster node {index} (the cluster has {size})")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes the cluster has.
        size: usize,
    },
    /// The cluster's nodes were running but did not form a JetStream cluster in time.
    #[error("NATS cluster not formed after {after:?}: {missing}")]
    ClusterNotFormed {
        /// How long we waited.
        after: Duration,
        /// What was still missing at the last look.
        missing: String,
    },
    /// The nodes of a [`RedisCluster`] refused to be joined or did not agree in time.
    #[error("redis cluster: {0}")]
    Cluster(String),
    /// A [`RedisSentinel`] deployment did not come together or fail over in time.
    #[error("redis sentinel: {0}")]
    Sentinel(String),
    /// Any other I/O error (temp dir, free port, log file).
    #[error("harness I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A NATS server and a Redis server, started together.
#[derive(Debug)]
pub struct LocalServers {
    /// The NATS server (JetStream enabled).
    pub nats: NatsServer,
    /// The Redis server.
    pub redis: RedisServer,
}

impl LocalServers {
    /// Starts both servers concurrently. If one fails, the other is stopped again.
    pub async fn start() -> Result<LocalServers, HarnessError> {
        let (nats, redis) = tokio::try_join!(NatsServer::start(), RedisServer::start())?;
        Ok(LocalServers { nats, redis })
    }
}
