//! A whole Switchyard in one process for the demo and benchmark: servers (the given ones, or
//! local child processes) and in-process optimizer replicas, stopped together.

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use switchyard_client::error::{Error, ErrorKind};
use switchyard_client::transport;
use switchyard_harness::LocalServers;
use switchyard_protocol::Subjects;
use switchyard_server::config::Config;
use switchyard_server::metrics::Metrics;
use switchyard_server::optimizer::http::Endpoints;
use switchyard_server::optimizer::{Faults, Optimizer, http};

/// An in-process optimizer replica and the switch that stops it.
struct Replica {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

pub struct Deployment {
    config: Config,
    /// Kept alive for the deployment's life; dropping kills the servers.
    servers: Option<LocalServers>,
    replicas: Vec<Replica>,
    metrics: Vec<Metrics>,
    /// What the first replica would serve on its metrics listener (the dashboard included).
    endpoints: Option<Endpoints>,
    /// The listener serving them, once [`Deployment::serve_dashboard`] started it.
    http: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Deployment {
    /// Starts `replicas` optimizers against `config`'s servers, or against fresh local servers
    /// when `start_servers` is true.
    pub async fn start(
        config: &Config,
        replicas: usize,
        start_servers: bool,
    ) -> Result<Deployment, Error> {
        let mut config = config.clone();
        let servers = if start_servers {
            let servers = LocalServers::start().await.map_err(|e| {
                Error::with_source(ErrorKind::Harness, "cannot start local servers", e)
            })?;
            config.nats.url = servers.nats.url();
            config.redis.url = servers.redis.url();
            Some(servers)
        } else {
            None
        };
        let mut deployment = Deployment {
            config,
            servers,
            replicas: Vec::new(),
            metrics: Vec::new(),
            endpoints: None,
            http: None,
        };
        for _ in 0..replicas {
            let optimizer =
                Optimizer::connect(deployment.config.clone(), Faults::default()).await?;
            deployment.metrics.push(optimizer.metrics());
            if deployment.endpoints.is_none() {
                deployment.endpoints = Some(Endpoints {
                    metrics: optimizer.metrics(),
                    readiness: optimizer.readiness(),
                    dashboard: optimizer.dashboard(),
                });
            }
            let (tx, rx) = oneshot::channel::<()>();
            let handle = tokio::spawn(optimizer.run(async {
                let _ = rx.await;
            }));
            deployment.replicas.push(Replica {
                stop: tx,
                task: handle,
            });
        }
        Ok(deployment)
    }

    /// Serves the first replica's `/metrics` and dashboard on `addr` until [`Deployment::stop`];
    /// returns the address bound. `None` when there is no replica or the dashboard is off.
    pub async fn serve_dashboard(
        &mut self,
        addr: &str,
    ) -> Result<Option<std::net::SocketAddr>, Error> {
        let Some(endpoints) = self.endpoints.clone().filter(|e| e.dashboard.is_some()) else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::with_source(ErrorKind::Config, format!("cannot listen on {addr}"), e)
        })?;
        let bound = listener.local_addr().map_err(|e| {
            Error::with_source(ErrorKind::Config, "listener has no address".to_string(), e)
        })?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, endpoints, async {
            let _ = rx.await;
        }));
        self.http = Some((tx, task));
        Ok(Some(bound))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local servers this deployment started, if it started them.
    pub fn local_servers(&self) -> Option<&LocalServers> {
        self.servers.as_ref()
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.config.nats.subject_prefix.clone())
    }

    pub fn metrics(&self) -> &[Metrics] {
        &self.metrics
    }

    pub async fn nats_client(&self, name: &str) -> Result<async_nats::Client, Error> {
        let nats = &self.config.nats;
        transport::connect_secured(&nats.url, name, &nats.security()).await
    }

    /// Stops the replicas (each finishes its batches in flight), then the servers.
    pub async fn stop(self) {
        if let Some((stop, task)) = self.http {
            let _ = stop.send(());
            let _ = task.await;
        }
        for replica in self.replicas {
            let _ = replica.stop.send(());
            if let Ok(Err(e)) = replica.task.await {
                tracing::warn!(error = %e, "optimizer replica ended with an error");
            }
        }
    }
}
