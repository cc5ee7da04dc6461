//! Shared test support: real servers from the harness, in-process optimizer replicas, and
//! helpers to read Redis directly.
#![allow(dead_code)]

pub mod scripts;

use std::time::Duration;

use switchyard_client::{Agent, Coordinator};
use switchyard_harness::LocalServers;
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
}

/// A config pointing at the harness's servers, with test-friendly timings.
pub fn config_for(servers: &LocalServers) -> Config {
    let mut config = Config::default();
    config.nats.url = servers.nats.url();
    config.redis.url = servers.redis.url();
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
        let mut cluster = Cluster {
            servers,
            config,
            replicas: Vec::new(),
            metrics: Vec::new(),
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

    pub async fn stop_replicas(&mut self) {
        for (tx, handle) in self.replicas.drain(..) {
            let _ = tx.send(());
            let _ = handle.await;
        }
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.config.nats.subject_prefix.clone())
    }

    pub async fn nats(&self) -> async_nats::Client {
        async_nats::connect(self.servers.nats.url())
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

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.servers.redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }
}

/// Waits for `future` or fails the test after `secs` seconds (a hang is a failure, not a pass).
pub async fn within<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
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

    /// SIGTERM and wait for the graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.child.wait().expect("optimizer exits")
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

/// Waits until both optimizer lanes (submits, control) have nothing pending or unacknowledged.
pub async fn events_drained(nats: &async_nats::Client) {
    let js = async_nats::jetstream::new(nats.clone());
    for lane in ["optimizer", "optimizer_control"] {
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
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// (task_id, grant_seq) of every grant copy that arrives within `quiet` of the previous one.
    pub async fn seen(&mut self, quiet: Duration) -> Vec<(String, u64)> {
        let mut seen = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(quiet, futures::StreamExt::next(&mut self.subscription)).await
        {
            let grant: switchyard_protocol::Envelope<switchyard_protocol::TaskGrant> =
                serde_json::from_slice(&message.payload).expect("a grant");
            seen.push((grant.payload.task_id, grant.payload.grant_seq));
        }
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
