//! One scenario's servers on loopback: NATS (one node, or three at 3 replicas), Redis with an
//! append-only file (one server, or a primary and a replica under three sentinels), optional TCP proxies between each optimizer and a server, and two optimizer
//! processes (real processes, so they can be SIGKILLed and SIGSTOPped).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard_client::error::{Error, ErrorKind};
use switchyard_harness::{
    HarnessError, NatsCluster, NatsServer, RedisOptions, RedisSentinel, RedisServer, TcpProxy,
};
use switchyard_server::config::Config;

use super::scenario::{NatsShape, RedisShape, Spec};

/// Optimizer processes per scenario.
pub(crate) const OPTIMIZERS: usize = 2;
/// How long an optimizer may take to answer `/readyz` with 200 after it starts.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How many times an optimizer that exits during start-up is started in all.
const START_ATTEMPTS: u32 = 3;

pub(crate) enum Nats {
    Single(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.url(),
        }
    }
}

pub(crate) enum Redis {
    Single(RedisServer),
    Sentinel(RedisSentinel),
}

impl Redis {
    async fn start(shape: RedisShape) -> Result<Redis, Error> {
        let options = RedisOptions {
            appendonly: true,
            ..RedisOptions::default()
        };
        Ok(match shape {
            RedisShape::Single => Redis::Single(
                RedisServer::start_with(options)
                    .await
                    .map_err(harness("redis-server"))?,
            ),
            RedisShape::Sentinel => Redis::Sentinel(
                RedisSentinel::start_with(options)
                    .await
                    .map_err(harness("Redis under Sentinel"))?,
            ),
        })
    }

    /// Points `config` at these servers: the server's URL, or the sentinels' and the master's
    /// name, so every connection (optimizers, checks) follows a failover.
    fn configure(&self, config: &mut switchyard_server::config::RedisConfig) {
        match self {
            Redis::Single(server) => config.url = server.url(),
            Redis::Sentinel(deployment) => {
                config.url = deployment.sentinel_urls();
                config.sentinel_master = deployment.master_name().to_string();
            }
        }
    }

    /// The single server, for the faults and proxies that act on one.
    pub(crate) fn single(&mut self) -> Result<&mut RedisServer, Error> {
        match self {
            Redis::Single(server) => Ok(server),
            Redis::Sentinel(_) => Err(Error::new(
                ErrorKind::Config,
                "this fault needs a single redis-server",
            )),
        }
    }
}

pub(crate) struct Topology {
    pub(crate) nats: Nats,
    pub(crate) redis: Redis,
    /// Per optimizer, when the scenario routes its Redis link through a proxy.
    pub(crate) redis_proxies: Vec<TcpProxy>,
    /// Per optimizer, when the scenario routes its NATS link through a proxy.
    pub(crate) nats_proxies: Vec<TcpProxy>,
    pub(crate) optimizers: Vec<OptimizerProcess>,
    /// The configuration clients and checks use (direct URLs).
    pub(crate) config: Config,
    /// Optimizer processes that exited during start-up and were started again, as a supervisor
    /// (systemd, Kubernetes) would.
    pub(crate) startup_restarts: u32,
}

fn harness(what: &str) -> impl FnOnce(HarnessError) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Harness, format!("cannot start {what}"), e)
}

impl Topology {
    /// Starts the servers `spec` asks for and [`OPTIMIZERS`] optimizer processes (`bin`), and
    /// returns once every optimizer answers `/readyz`.
    pub(crate) async fn start(spec: &Spec, base: &Config, bin: &Path) -> Result<Topology, Error> {
        let mut config = base.clone();
        // The scenario's own servers: Redis (no cluster) and NATS, without TLS.
        config.redis.cluster = false;
        config.redis.sentinel_master.clear();
        config.jetstream.replicas = 1;
        config.nats.tls_ca_file.clear();
        config.nats.tls_cert_file.clear();
        config.nats.tls_key_file.clear();
        config.redis.tls_ca_file.clear();
        config.redis.tls_cert_file.clear();
        config.redis.tls_key_file.clear();
        let nats = match spec.nats {
            NatsShape::Single => Nats::Single(Box::new(
                NatsServer::start().await.map_err(harness("nats-server"))?,
            )),
            NatsShape::Cluster3 => {
                config.jetstream.replicas = 3;
                Nats::Cluster(
                    NatsCluster::start(3)
                        .await
                        .map_err(harness("a NATS cluster"))?,
                )
            }
        };
        let redis = Redis::start(spec.redis).await?;
        config.nats.url = nats.url();
        redis.configure(&mut config.redis);
        let mut topology = Topology {
            nats,
            redis,
            redis_proxies: Vec::new(),
            nats_proxies: Vec::new(),
            optimizers: Vec::new(),
            config,
            startup_restarts: 0,
        };
        topology.start_proxies(spec).await?;
        // One after the other: two replicas creating the same replicated streams at once on a
        // cluster that has just formed is the start-up most likely to time out.
        for i in 0..OPTIMIZERS {
            let config = topology.optimizer_config(i)?;
            let mut optimizer = OptimizerProcess::spawn(bin, config, i)?;
            topology.startup_restarts += optimizer.supervise_start().await?;
            topology.optimizers.push(optimizer);
        }
        Ok(topology)
    }

    async fn start_proxies(&mut self, spec: &Spec) -> Result<(), Error> {
        for _ in 0..OPTIMIZERS {
            if spec.redis_proxy {
                let port = self.redis.single()?.port();
                let proxy = TcpProxy::start(loopback(port)).await;
                self.redis_proxies
                    .push(proxy.map_err(harness("a Redis proxy"))?);
            }
            if spec.nats_proxy {
                let Nats::Single(server) = &self.nats else {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "a NATS proxy needs a single node",
                    ));
                };
                let proxy = TcpProxy::start(loopback(server.port())).await;
                self.nats_proxies
                    .push(proxy.map_err(harness("a NATS proxy"))?);
            }
        }
        Ok(())
    }

    /// Optimizer `i`'s configuration: through its proxies where there are some, its own
    /// `/metrics` port.
    fn optimizer_config(&self, i: usize) -> Result<Config, Error> {
        let mut config = self.config.clone();
        if let Some(proxy) = self.redis_proxies.get(i) {
            config.redis.url = format!("redis://127.0.0.1:{}/", proxy.port());
        }
        if let Some(proxy) = self.nats_proxies.get(i) {
            config.nats.url = format!("nats://127.0.0.1:{}", proxy.port());
        }
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::with_source(ErrorKind::Harness, "no free port", e))?
            .port();
        config.metrics.addr = format!("127.0.0.1:{port}");
        Ok(config)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One `optimizer` process with its own config file and log.
pub(crate) struct OptimizerProcess {
    bin: PathBuf,
    child: Option<Child>,
    /// Holds the config file and the log; removed on drop.
    dir: tempfile::TempDir,
    metrics_addr: String,
}

impl OptimizerProcess {
    fn spawn(bin: &Path, config: Config, i: usize) -> Result<OptimizerProcess, Error> {
        let io = |e: std::io::Error| Error::with_source(ErrorKind::Harness, "optimizer files", e);
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-chaos-optimizer-{i}-"))
            .tempdir()
            .map_err(io)?;
        let text = toml::to_string(&config)
            .map_err(|e| Error::with_source(ErrorKind::Config, "config does not serialize", e))?;
        std::fs::write(dir.path().join("optimizer.toml"), text).map_err(io)?;
        let mut optimizer = OptimizerProcess {
            bin: bin.to_path_buf(),
            child: None,
            dir,
            metrics_addr: config.metrics.addr,
        };
        optimizer.start()?;
        Ok(optimizer)
    }

    /// Starts the process (again), appending to its log.
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        let io = |e: std::io::Error| {
            Error::with_source(ErrorKind::Harness, "cannot start the optimizer", e)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io)?;
        let mut command = Command::new(&self.bin);
        // The config file holds the whole resolved configuration (the caller's environment
        // overrides already applied, then the scenario's servers): no variable may change it.
        command.env_clear();
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command
            .arg("--config")
            .arg(self.dir.path().join("optimizer.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            // An error exit prints its message, not a backtrace, into the log.
            .env("RUST_BACKTRACE", "0");
        self.child = Some(command.spawn().map_err(io)?);
        Ok(())
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("optimizer.log")
    }

    /// SIGKILL and reap; nothing when it does not run.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the running process.
    pub(crate) fn signal(&self, signal: &str) -> Result<(), Error> {
        let Some(child) = &self.child else {
            return Err(Error::new(
                ErrorKind::Harness,
                "the optimizer is not running",
            ));
        };
        send_signal(child.id(), signal)
    }

    /// Waits until the process is ready, starting it again (at most [`START_ATTEMPTS`] times in
    /// all) when it exits during start-up. Answers how many times it was started again.
    pub(crate) async fn supervise_start(&mut self) -> Result<u32, Error> {
        let mut restarts = 0;
        loop {
            match self.wait_ready(READY_WITHIN).await {
                Ok(()) => return Ok(restarts),
                Err(e) if self.child.is_none() && restarts + 1 < START_ATTEMPTS => {
                    tracing::warn!(error = %e, "optimizer exited during start-up; starting it again");
                    restarts += 1;
                    self.start()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls `/readyz` until it answers 200 (it can reach NATS and Redis), at most `within`;
    /// fails at once, with its log, if the process exits.
    pub(crate) async fn wait_ready(&mut self, within: Duration) -> Result<(), Error> {
        let started = std::time::Instant::now();
        while !http_ok(&self.metrics_addr, "/readyz").await {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(self.failure(format!("optimizer exited ({status})")));
            }
            if started.elapsed() >= within {
                return Err(self.failure(format!("optimizer not ready after {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn failure(&self, what: String) -> Error {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::new(
            ErrorKind::Timeout,
            format!("{what}; log: {}", tail.join(" | ")),
        )
    }
}

impl Drop for OptimizerProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too: no SIGCONT needed first.
        self.kill();
    }
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
pub(crate) fn send_signal(pid: u32, signal: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| Error::with_source(ErrorKind::Harness, "cannot run kill", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Harness,
            format!("kill -{signal} {pid} failed: {status}"),
        ))
    }
}

/// Whether `GET path` on `addr` answers with status 200 (within a second).
async fn http_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Some(true))
    )
}
