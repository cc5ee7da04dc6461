//! Shared test support: real servers from the harness, in-process optimizer replicas, and
//! helpers to read Redis directly.
#![allow(dead_code)]

pub mod python;
pub mod scripts;
pub mod secured;
pub mod webdriver;

use std::time::Duration;

use switchyard_client::{Agent, Coordinator};
use switchyard_harness::{LocalServers, NatsCluster, RedisServer};
use switchyard_protocol::{AgentRegister, Subjects};
use switchyard_server::config::Config;
use switchyard_server::optimizer::{Faults, Optimizer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Cluster {
    pub servers: LocalServers,
    pub config: Config,
    replicas: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Metrics of each in-process replica, in start order.
    pub metrics: Vec<switchyard_server::metrics::Metrics>,
    /// Readiness of each in-process replica, in start order.
    pub readiness: Vec<switchyard_server::optimizer::Readiness>,
}

/// A config pointing at the harness's servers, with test-friendly timings.
pub fn config_for(servers: &LocalServers) -> Config {
    config_at(servers.nats.url(), servers.redis.url())
}

/// A config for a 3-node NATS cluster (every stream and consumer with 3 copies) and a Redis.
pub fn cluster_config(nats: &NatsCluster, redis: &RedisServer) -> Config {
    let mut config = config_at(nats.url(), redis.url());
    config.jetstream.replicas = 3;
    config
}

/// A config pointing at these servers, with test-friendly timings.
fn config_at(nats_url: String, redis_url: String) -> Config {
    let mut config = Config::default();
    config.nats.url = nats_url;
    config.redis.url = redis_url;
    config.metrics.addr = "127.0.0.1:0".into();
    config.coordination.optimization_interval_s = 0.5;
    config.jetstream.ack_wait_ms = 2_000;
    config
}

impl Cluster {
    /// Servers plus `replicas` in-process optimizers.
    pub async fn start(replicas: usize) -> Cluster {
        init_tracing();
        let servers = LocalServers::start().await.expect("servers start");
        let config = config_for(&servers);
        Cluster::start_on(servers, config, replicas).await
    }

    /// `replicas` in-process optimizers with `config` on servers started by the caller (TLS).
    pub async fn start_on(servers: LocalServers, config: Config, replicas: usize) -> Cluster {
        init_tracing();
        let mut cluster = Cluster {
            servers,
            config,
            replicas: Vec::new(),
            metrics: Vec::new(),
            readiness: Vec::new(),
        };
        for _ in 0..replicas {
            cluster.add_replica().await;
        }
        cluster
    }

    pub async fn add_replica(&mut self) {
        let optimizer = Optimizer::connect(self.config.clone(), Faults::default())
            .await
            .expect("optimizer connects");
        self.metrics.push(optimizer.metrics());
        self.readiness.push(optimizer.readiness());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            optimizer
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("optimizer runs");
        });
        self.replicas.push((tx, handle));
    }

    /// Asks every in-process replica to stop and waits (at most 30 s each) until it has.
    pub async fn stop_replicas(&mut self) {
        for (tx, handle) in self.replicas.drain(..) {
            let _ = tx.send(());
            let _ = within(30, "an optimizer replica to stop", handle).await;
        }
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.config.nats.subject_prefix.clone())
    }

    /// A NATS client with the configuration's TLS files (none on a plain server).
    pub async fn nats(&self) -> async_nats::Client {
        let tls = self.config.nats.security();
        switchyard_client::transport::connect_secured(&self.servers.nats.url(), "test", &tls)
            .await
            .expect("nats connects")
    }

    pub async fn coordinator(&self, id: &str) -> Coordinator {
        Coordinator::with_client(self.nats().await, id, self.subjects())
            .await
            .expect("coordinator")
    }

    pub async fn agent(&self, id: &str, agent_type: &str, cpu: f64, memory: f64) -> Agent {
        let registration = AgentRegister::new(id, agent_type)
            .capacity("cpu", cpu)
            .capacity("memory", memory);
        Agent::register(self.nats().await, self.subjects(), registration)
            .await
            .expect("agent registers")
    }

    /// A Redis connection as the optimizers make it (TLS files included).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        switchyard_server::state::redis_client(&self.config.redis)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }
}

/// A loopback port that was free a moment ago, for a listener a test starts itself.
pub fn free_port() -> u16 {
    switchyard_harness::free_port().expect("a free port")
}

/// Waits for `future` or fails the test after `secs` seconds (a hang is a failure, not a pass).
pub async fn within<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// A Redis connection to the harness's redis-server.
pub async fn redis_at(servers: &LocalServers) -> redis::aio::MultiplexedConnection {
    redis_at_url(&servers.redis.url()).await
}

/// A Redis connection to `url`.
pub async fn redis_at_url(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects")
}

/// Registers an agent through the Rust client; the registration waits for an optimizer's
/// reply, so a replica is up once this returns (at most 30 s).
pub async fn register_within(nats: &async_nats::Client, registration: AgentRegister) -> Agent {
    let what = format!("{} to be registered", registration.agent_id);
    within(
        30,
        &what,
        Agent::register(nats.clone(), Subjects::default(), registration),
    )
    .await
    .expect("agent registers")
}

/// Waits (at most `secs`) until task `task` (key prefix `switchyard`) is in `state`.
pub async fn wait_for_state(
    redis: &mut redis::aio::MultiplexedConnection,
    secs: u64,
    task: &str,
    state: &str,
) {
    let key = switchyard_server::state::Keys::new("switchyard").task(task);
    within(secs, &format!("{task} to be {state}"), async {
        while hget(redis, &key, "state").await.as_deref() != Some(state) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Waits (at most `secs`) until the coordinator counter `stat` (key prefix `switchyard`)
/// reaches `want`.
pub async fn wait_for_stat(
    redis: &mut redis::aio::MultiplexedConnection,
    secs: u64,
    stat: &str,
    want: i64,
) {
    let key = switchyard_server::state::Keys::new("switchyard").stats();
    within(
        secs,
        &format!("the {stat} counter to reach {want}"),
        async {
            while hget_i64(redis, &key, stat).await < want {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
}

/// The next grant on an agent's grant stream, waited for at most `secs` seconds.
pub async fn next_grant(
    secs: u64,
    what: &str,
    grants: &mut switchyard_client::GrantStream,
) -> switchyard_protocol::Envelope<switchyard_protocol::TaskGrant> {
    within(secs, what, grants.next())
        .await
        .unwrap_or_else(|| panic!("the grant stream closed while waiting for {what}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Reads one field of a hash as an integer (0 when absent).
pub async fn hget_i64(conn: &mut redis::aio::MultiplexedConnection, key: &str, field: &str) -> i64 {
    let v: Option<i64> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .expect("HGET");
    v.unwrap_or(0)
}

pub async fn hget(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    field: &str,
) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .expect("HGET")
}

/// Logs to the test's captured output; `RUST_LOG=switchyard=debug` shows the optimizer's work.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// An optimizer as a real OS process (the `optimizer` binary), for tests that kill it.
pub struct OptimizerProcess {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl OptimizerProcess {
    /// Starts `optimizer --config <file>` with `config` and extra environment variables.
    pub fn spawn(config: &Config, env: &[(&str, &str)]) -> OptimizerProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("optimizer.toml");
        std::fs::write(&path, toml::to_string(config).expect("config serializes"))
            .expect("config written");
        let log = std::fs::File::create(dir.path().join("optimizer.log")).expect("log file");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_optimizer"));
        cmd.arg("--config")
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for var in ["NATS_URL", "REDIS_URL", "METRICS_ADDR"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("optimizer binary starts");
        OptimizerProcess { child, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no cleanup, no acks, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (at most 30 s) for the graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.exit_within(30, "the optimizer to exit after SIGTERM")
    }

    /// Waits for the process to exit; after `secs` seconds kills it and fails with `what` and
    /// the process's log.
    fn exit_within(&mut self, secs: u64, what: &str) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the optimizer") {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                self.kill();
                panic!(
                    "timed out after {secs}s waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("optimizer.log")).unwrap_or_default()
    }
}

impl Drop for OptimizerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (at most 30 s per lane) until both optimizer lanes (submits, control) have nothing
/// pending or unacknowledged.
pub async fn events_drained(nats: &async_nats::Client) {
    let js = async_nats::jetstream::new(nats.clone());
    for lane in ["optimizer", "optimizer_control"] {
        let what = format!("the {lane} consumer to have nothing pending or unacknowledged");
        within(30, &what, lane_drained(&js, lane)).await;
    }
}

async fn lane_drained(js: &async_nats::jetstream::Context, lane: &str) {
    loop {
        let consumer = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                lane,
                "COORD_EVENTS",
            )
            .await;
        if let Ok(mut consumer) = consumer {
            if let Ok(info) = consumer.info().await {
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Listens to one agent's grant subject (core NATS) the way an operator's `nats sub` would, to
/// see every copy of every grant sent to it.
pub struct GrantTap {
    subscription: async_nats::Subscriber,
}

impl GrantTap {
    pub async fn start(nats: &async_nats::Client, agent_id: &str) -> GrantTap {
        let subscription = nats
            .subscribe(format!("coord.task_request.{agent_id}"))
            .await
            .expect("subscribe to grants");
        nats.flush().await.expect("flush");
        GrantTap { subscription }
    }

    /// (task_id, grant_seq) of every grant copy that arrives within `quiet` of the previous one
    /// (and within 60 s in all: copies that never stop coming fail the test).
    pub async fn seen(&mut self, quiet: Duration) -> Vec<(String, u64)> {
        let mut seen = Vec::new();
        within(60, "grant copies to stop arriving", async {
            while let Ok(Some(message)) =
                tokio::time::timeout(quiet, futures::StreamExt::next(&mut self.subscription)).await
            {
                let grant: switchyard_protocol::Envelope<switchyard_protocol::TaskGrant> =
                    serde_json::from_slice(&message.payload).expect("a grant");
                seen.push((grant.payload.task_id, grant.payload.grant_seq));
            }
        })
        .await;
        seen
    }
}

/// Waits until some optimizer has created the streams and the shared consumer (a replica
/// started as a process is ready to take events once its consumer exists).
pub async fn optimizer_ready(nats: &async_nats::Client) {
    let js = async_nats::jetstream::new(nats.clone());
    within(30, "an optimizer to create its consumer", async {
        while js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                "optimizer",
                "COORD_EVENTS",
            )
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Fails (never skips) when the Python side of the interoperability tests is not installed.
pub fn require_python_nats() {
    let hint = "run scripts/install-servers.sh (it installs nats-py for python3)";
    match std::process::Command::new("python3")
        .args(["-c", "import nats"])
        .output()
    {
        Err(e) => panic!("python3 is not available ({e}); {hint}"),
        Ok(out) if !out.status.success() => panic!(
            "python3 cannot import the `nats` module (nats-py): {}; {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
}

/// Runs a command to completion, capturing its output like `Command::output`, but fails after
/// `secs` seconds (killing it) with what was awaited, instead of hanging the test.
pub trait OutputWithin {
    fn output_within(&mut self, secs: u64, what: &str) -> std::process::Output;
}

impl OutputWithin for std::process::Command {
    fn output_within(&mut self, secs: u64, what: &str) -> std::process::Output {
        use std::process::Stdio;
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(output) => output.unwrap_or_else(|e| panic!("{what}: {e}")),
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                panic!("timed out after {secs}s waiting for {what}");
            }
        }
    }
}

/// The first reply to the submit of `task_id` with a status other than those in `skip`.
pub async fn submit_reply(
    events: &mut tokio::sync::broadcast::Receiver<switchyard_client::ClientEvent>,
    task_id: &str,
    skip: &[switchyard_protocol::ReplyStatus],
) -> switchyard_protocol::CoordinatorReply {
    within(15, &format!("the submitter's reply for {task_id}"), async {
        loop {
            if let Ok(switchyard_client::ClientEvent::Reply(r)) = events.recv().await
                && r.payload.op == "task_submit"
                && r.payload.task_id.as_deref() == Some(task_id)
                && !skip.contains(&r.payload.status)
            {
                return r.payload;
            }
        }
    })
    .await
}
