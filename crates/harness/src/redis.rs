//! `redis-server` as a child process.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::process::{Flavor, Managed, connect, free_port, read_until};
use super::{HarnessError, binary};

/// How the Redis server is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Keep an append-only file in the server's directory, so data survives a kill/restart.
    /// Off by default (`--appendonly no`); RDB snapshots are always off (`--save ""`).
    pub appendonly: bool,
}

/// A `redis-server` on `127.0.0.1`, a free port and its own temporary directory.
/// Dropping it kills the server.
#[derive(Debug)]
pub struct RedisServer {
    inner: Managed<Redis>,
}

impl RedisServer {
    /// Starts `redis-server` with the default [`RedisOptions`] and returns once it answers `PING`.
    pub async fn start() -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(RedisOptions::default()).await
    }

    /// Starts `redis-server` with `options` and returns once it answers `PING`.
    pub async fn start_with(options: RedisOptions) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            options,
            cluster_bus_port: None,
            replica_of: None,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// Starts an empty Redis Cluster node (`cluster-enabled yes`, no slots, known to no other
    /// node yet), with its cluster bus on a free port of its own: the default, port + 10000, may
    /// be taken or beyond 65535. [`crate::RedisCluster`] joins such nodes.
    pub(crate) async fn start_cluster_node() -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            options: RedisOptions::default(),
            cluster_bus_port: Some(free_port()?),
            replica_of: None,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// Starts a replica of the server on loopback port `primary` (`--replicaof`). It answers
    /// `PING` before its first sync has finished; [`crate::RedisSentinel`] waits for the link.
    pub(crate) async fn start_replica_of(primary: u16) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            options: RedisOptions::default(),
            cluster_bus_port: None,
            replica_of: Some(primary),
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// The cluster bus port of a cluster node, `None` for a plain server.
    pub fn cluster_bus_port(&self) -> Option<u16> {
        self.inner.flavor().cluster_bus_port
    }

    /// The client URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// The port (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// The process id of the running server, `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// The server's working directory (survives restarts, removed on drop).
    pub fn dir(&self) -> &Path {
        self.inner.dir()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.inner.log_path()
    }

    /// Kills the server and starts it again on the same port and directory. Data survives only
    /// with [`RedisOptions::appendonly`].
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.start_again().await
    }

    /// SIGKILLs the server and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Starts the server again after [`RedisServer::kill`], on the same port and directory.
    /// (Kills it first if it is still running.)
    pub async fn start_again(&mut self) -> Result<(), HarnessError> {
        self.inner.start_again().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.inner.kill();
    }
}

/// Redis specifics: arguments and the readiness probe.
#[derive(Debug)]
struct Redis {
    options: RedisOptions,
    /// Set for a Redis Cluster node: its cluster bus port.
    cluster_bus_port: Option<u16>,
    /// Set for a replica: the loopback port of its primary.
    replica_of: Option<u16>,
}

impl Flavor for Redis {
    const SERVER: &'static str = "redis-server";

    fn args(&self, port: u16, dir: &Path, log: &Path) -> Vec<OsString> {
        let appendonly = if self.options.appendonly { "yes" } else { "no" };
        let mut args: Vec<OsString> = ["--bind", "127.0.0.1", "--port", &port.to_string()]
            .into_iter()
            .chain(["--save", "", "--appendonly", appendonly])
            .map(OsString::from)
            .collect();
        args.extend([
            "--dir".into(),
            dir.as_os_str().to_owned(),
            "--logfile".into(),
            log.as_os_str().to_owned(),
        ]);
        if let Some(primary) = self.replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string().into(),
            ]);
        }
        if let Some(bus_port) = self.cluster_bus_port {
            // nodes.conf lands in `dir`, so every node keeps its own cluster state.
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus_port.to_string(),
                ]
                .into_iter()
                .chain(["--cluster-node-timeout", "2000"])
                .map(OsString::from),
            );
        }
        args
    }

    /// Sends `PING` and `CONFIG GET logfile`: ready when the answer is `+PONG` and our own log
    /// file (which tells our server from another one on the same port). While Redis is still
    /// loading its append-only file it answers `-LOADING`, which counts as not ready.
    async fn probe(&self, port: u16, log: &Path) -> io::Result<bool> {
        let log = log.to_string_lossy();
        let expected = format!(
            "+PONG\r\n*2\r\n$7\r\nlogfile\r\n${}\r\n{log}\r\n",
            log.len()
        );
        let mut stream = connect(port).await?;
        stream.write_all(b"PING\r\nCONFIG GET logfile\r\n").await?;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |b| {
            b.len() >= expected.len() || b.starts_with(b"-")
        })
        .await?;
        Ok(buf.starts_with(expected.as_bytes()))
    }
}
