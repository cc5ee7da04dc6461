//! A Redis primary with one replica, watched by three Sentinels, all on loopback: the smallest
//! deployment in which the sentinels can agree (quorum 2 of 3) that the primary is down and
//! promote the replica, for the tests that check Switchyard follows a failover.
//!
//! The timings are short so a failover takes a few seconds: a node is considered down after
//! [`DOWN_AFTER_MS`] without an answer, and a failover that stalls is given up after
//! [`FAILOVER_TIMEOUT_MS`] (a sentinel waits twice that before trying the same master again).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::io::AsyncWriteExt;

use super::process::{Flavor, Managed, connect, contains, read_until};
use super::{HarnessError, RedisOptions, RedisServer, binary};

/// The name the sentinels know the primary by: `redis.sentinel_master`.
const MASTER_NAME: &str = "switchyard";
/// How many sentinels watch the primary.
const SENTINELS: usize = 3;
/// How many sentinels must agree that the primary is down.
const QUORUM: usize = 2;
/// A node that has not answered for this long is considered down. At 1 s, three tests at once
/// on two loaded cores made the sentinels judge the just-promoted primary down a second after
/// the switch (its fresh link had not answered a PING yet) and fail back over to the killed node,
/// which had started again with its pre-kill data and was not yet a replica: every write between
/// the two failovers was lost. That is Sentinel working as designed on a starved machine.
const DOWN_AFTER_MS: u64 = 5000;
/// How long a failover may take before the sentinels give it up and try again.
const FAILOVER_TIMEOUT_MS: u64 = 10000;
/// How long the replica may take to sync and the sentinels to find everything.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the sentinels may take to promote the replica after the primary died.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// How often the servers are polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// A primary and a replica (`redis-server`, each on its own port and directory) and three
/// sentinels (`redis-server <conf> --sentinel`, each with its own writable config file, which
/// the sentinel rewrites with what it learns). Dropping it kills every process.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The node started as primary, then the one started as its replica. Which of them is the
    /// primary now is for the sentinels to say ([`RedisSentinel::primary_port`]).
    nodes: Vec<RedisServer>,
    sentinels: Vec<Managed<Sentinel>>,
}

impl RedisSentinel {
    /// Starts the primary, its replica and three sentinels, and returns once every sentinel
    /// reports the primary as master, knows the replica and knows the other two sentinels.
    pub async fn start() -> Result<RedisSentinel, HarnessError> {
        RedisSentinel::start_with(RedisOptions::default()).await
    }

    /// As [`RedisSentinel::start`], both nodes with `options` (an append-only file, so a node
    /// started again comes back with its data).
    pub async fn start_with(options: RedisOptions) -> Result<RedisSentinel, HarnessError> {
        let primary = RedisServer::start_with(options.clone()).await?;
        let replica = RedisServer::start_replica_of(primary.port(), options).await?;
        // Linked before the sentinels start: a sentinel finds replicas in the primary's INFO,
        // which it reads at once and then only every 10 s.
        wait_for_link(&primary, &replica).await?;
        let bin = binary::redis_server().await?;
        let flavor = || Sentinel {
            primary_port: primary.port(),
        };
        let (a, b, c) = tokio::try_join!(
            Managed::start(flavor(), bin.clone()),
            Managed::start(flavor(), bin.clone()),
            Managed::start(flavor(), bin),
        )?;
        let deployment = RedisSentinel {
            nodes: vec![primary, replica],
            sentinels: vec![a, b, c],
        };
        deployment.wait_until_watching().await?;
        Ok(deployment)
    }

    /// The name the sentinels know the primary by (`redis.sentinel_master`).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// Every sentinel's URL, comma-separated: a `redis.url` for sentinel mode.
    pub fn sentinel_urls(&self) -> String {
        let urls: Vec<String> = self.sentinels.iter().map(|s| url(s.port())).collect();
        urls.join(",")
    }

    /// The Redis nodes: the one started as primary, then the one started as its replica.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The port of the current primary, as the first sentinel that answers names it.
    pub async fn primary_port(&self) -> Result<u16, HarnessError> {
        let mut last = None;
        for sentinel in self.running_sentinels() {
            match master_port_from(sentinel.port()).await {
                Ok(port) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| sentinel_error("no sentinel is running")))
    }

    /// The URL of the current primary (see [`RedisSentinel::primary_port`]).
    pub async fn primary_url(&self) -> Result<String, HarnessError> {
        Ok(url(self.primary_port().await?))
    }

    /// SIGKILLs the current primary and returns its index in [`RedisSentinel::nodes`].
    pub async fn kill_primary(&mut self) -> Result<usize, HarnessError> {
        let port = self.primary_port().await?;
        let index = self
            .nodes
            .iter()
            .position(|node| node.port() == port)
            .ok_or_else(|| sentinel_error(format!("the sentinels name port {port}, no node")))?;
        self.nodes[index].kill();
        Ok(index)
    }

    /// Starts node `index` again on its port and directory. Started with [`RedisSentinel::start`]
    /// the nodes keep no data on disk, so a former primary comes back as an empty primary until
    /// the sentinels see it and make it a replica of the new one; started again before the sentinels promoted another node, it
    /// would hand its emptiness to the replica (why production runs AOF, docs/operations.md).
    pub async fn start_again(&mut self, index: usize) -> Result<(), HarnessError> {
        let size = self.nodes.len();
        let node = self
            .nodes
            .get_mut(index)
            .ok_or_else(|| sentinel_error(format!("no node {index} (there are {size})")))?;
        node.start_again().await
    }

    /// Waits until every running sentinel names the same primary and it is not on `old_port`;
    /// returns its port. Bounded by 30 s.
    pub async fn wait_for_new_primary(&self, old_port: u16) -> Result<u16, HarnessError> {
        let started = Instant::now();
        loop {
            let mut named = Vec::with_capacity(SENTINELS);
            for sentinel in self.running_sentinels() {
                named.push(master_port_from(sentinel.port()).await.ok());
            }
            if let Some(Some(port)) = named.first().copied()
                && port != old_port
                && named.iter().all(|p| *p == Some(port))
            {
                tracing::debug!(port, after = ?started.elapsed(), "sentinels promoted a new primary");
                return Ok(port);
            }
            if started.elapsed() >= FAILOVER_WITHIN {
                return Err(sentinel_error(format!(
                    "no new primary after {FAILOVER_WITHIN:?} (the sentinels name {named:?})"
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn running_sentinels(&self) -> impl Iterator<Item = &Managed<Sentinel>> {
        self.sentinels.iter().filter(|s| s.pid().is_some())
    }

    /// Polls `SENTINEL MASTER` on every sentinel until each sees the primary up, its replica
    /// and the other sentinels (which they learn from each other's hello messages, every 2 s).
    async fn wait_until_watching(&self) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let mut missing = Vec::new();
            for sentinel in &self.sentinels {
                if let Some(gap) = watching_gap(sentinel.port()).await {
                    missing.push(format!("sentinel :{}: {gap}", sentinel.port()));
                }
            }
            if missing.is_empty() {
                tracing::debug!(after = ?started.elapsed(), "redis sentinels ready");
                return Ok(());
            }
            if started.elapsed() >= READY_WITHIN {
                return Err(sentinel_error(format!(
                    "not ready after {READY_WITHIN:?}: {}",
                    missing.join("; ")
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// What one sentinel does not know yet, or `None` when it watches the whole deployment.
async fn watching_gap(port: u16) -> Option<String> {
    let mut conn = match connect_url(&url(port)).await {
        Ok(conn) => conn,
        Err(e) => return Some(e.to_string()),
    };
    let cmd = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(MASTER_NAME)
        .clone();
    let fields: HashMap<String, String> = match run(&mut conn, &cmd).await {
        Ok(fields) => fields,
        Err(e) => return Some(e.to_string()),
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("?");
    let ready = field("flags") == "master"
        && field("num-slaves") == "1"
        && field("num-other-sentinels") == (SENTINELS - 1).to_string();
    (!ready).then(|| {
        format!(
            "flags {}, {} replicas, {} other sentinels",
            field("flags"),
            field("num-slaves"),
            field("num-other-sentinels")
        )
    })
}

/// The primary's port as the sentinel on `port` names it.
async fn master_port_from(port: u16) -> Result<u16, HarnessError> {
    let mut conn = connect_url(&url(port)).await?;
    let cmd = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(MASTER_NAME)
        .clone();
    let (_host, master_port): (String, u16) = run(&mut conn, &cmd).await?;
    Ok(master_port)
}

/// Waits until the replica reports its link to the primary up (the first sync done).
async fn wait_for_link(primary: &RedisServer, replica: &RedisServer) -> Result<(), HarnessError> {
    let started = Instant::now();
    let mut conn = connect_url(&replica.url()).await?;
    loop {
        let info: String = run(&mut conn, redis::cmd("INFO").arg("replication")).await?;
        if info.lines().any(|l| l.trim() == "master_link_status:up") {
            return Ok(());
        }
        if started.elapsed() >= READY_WITHIN {
            return Err(sentinel_error(format!(
                "replica :{} not linked to primary :{} after {READY_WITHIN:?}",
                replica.port(),
                primary.port()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

async fn connect_url(url: &str) -> Result<MultiplexedConnection, HarnessError> {
    let client = redis::Client::open(url).map_err(sentinel_error)?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(sentinel_error)
}

async fn run<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<T, HarnessError> {
    cmd.query_async(conn).await.map_err(sentinel_error)
}

fn sentinel_error(e: impl ToString) -> HarnessError {
    HarnessError::Sentinel(e.to_string())
}

/// One sentinel: `redis-server <dir>/sentinel.conf --sentinel`, watching the primary on
/// `primary_port`.
#[derive(Debug)]
struct Sentinel {
    primary_port: u16,
}

impl Sentinel {
    fn config_path(dir: &Path) -> PathBuf {
        dir.join("sentinel.conf")
    }
}

impl Flavor for Sentinel {
    const SERVER: &'static str = "redis-sentinel";

    fn args(&self, port: u16, dir: &Path, log: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![Sentinel::config_path(dir).into(), "--sentinel".into()];
        args.extend(
            ["--bind", "127.0.0.1", "--port", &port.to_string()]
                .into_iter()
                .map(OsString::from),
        );
        args.extend([
            "--dir".into(),
            dir.as_os_str().to_owned(),
            "--logfile".into(),
            log.as_os_str().to_owned(),
        ]);
        args
    }

    /// Writes the config file on the first start only: a sentinel rewrites it with what it
    /// learns (the current primary, the replicas, the other sentinels, the epoch), and a
    /// restarted sentinel must start from that.
    fn prepare(&self, dir: &Path) -> io::Result<()> {
        let path = Sentinel::config_path(dir);
        if path.exists() {
            return Ok(());
        }
        let name = MASTER_NAME;
        let text = format!(
            "sentinel monitor {name} 127.0.0.1 {} {QUORUM}\n\
             sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n\
             sentinel parallel-syncs {name} 1\n",
            self.primary_port
        );
        std::fs::write(path, text)
    }

    /// Sends `INFO server`: ready when the reply names our own config file (which tells our
    /// sentinel from another server on the same port).
    async fn probe(&self, port: u16, log: &Path) -> io::Result<bool> {
        let dir = log.parent().unwrap_or(Path::new("."));
        let expected = format!("config_file:{}", Sentinel::config_path(dir).display());
        let mut stream = connect(port).await?;
        stream.write_all(b"INFO server\r\n").await?;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |b| {
            contains(b, expected.as_bytes()) || b.starts_with(b"-") || bulk_complete(b)
        })
        .await?;
        Ok(contains(&buf, expected.as_bytes()))
    }
}

/// Whether `buf` holds a whole RESP bulk string (`$<len>\r\n<data>\r\n`).
fn bulk_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let len = std::str::from_utf8(&buf[1..end])
        .ok()
        .and_then(|s| s.parse::<usize>().ok());
    len.is_some_and(|len| buf.len() >= end + 2 + len + 2)
}
