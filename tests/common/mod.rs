//! Shared test support: real servers from the harness, in-process optimizer replicas, and
//! helpers to read Redis directly.
#![allow(dead_code)]

use std::time::Duration;

use switchyard::client::{Agent, Coordinator};
use switchyard::config::Config;
use switchyard::harness::LocalServers;
use switchyard::optimizer::{Faults, Optimizer};
use switchyard::protocol::{AgentRegister, Subjects};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Cluster {
    pub servers: LocalServers,
    pub config: Config,
    replicas: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Metrics of each in-process replica, in start order.
    pub metrics: Vec<switchyard::metrics::Metrics>,
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
