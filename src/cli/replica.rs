//! The `optimizer` binary: one stateless optimizer replica with its `/metrics` and `/healthz`
//! endpoint, until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use switchyard_server::config::Config;
use switchyard_server::optimizer::{Faults, Optimizer, http};

#[derive(clap::Parser)]
#[command(
    name = "optimizer",
    about = "Switchyard optimizer replica: consumes coordination events, publishes grants",
    version = super::VERSION_LINE.as_str(),
    after_help = super::environment_help(&[], DEFAULT_LOG_FILTER),
)]
pub struct ReplicaArgs {
    /// TOML file overriding config/default.toml.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
}

/// What the optimizer logs when RUST_LOG is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";

/// Runs the replica until a shutdown signal, then lets the HTTP endpoint finish.
pub async fn run(args: ReplicaArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let metrics_addr = config.metrics.addr.clone();
    let optimizer = Optimizer::connect(config, Faults::from_env()).await?;
    let listener = tokio::net::TcpListener::bind(&metrics_addr)
        .await
        .with_context(|| format!("cannot listen on METRICS_ADDR {metrics_addr}"))?;
    let endpoints = http::Endpoints {
        metrics: optimizer.metrics(),
        readiness: optimizer.readiness(),
        dashboard: optimizer.dashboard(),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, dashboard = endpoints.dashboard.is_some(), "serving /metrics, /healthz and /readyz");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, endpoints, async {
        let _ = http_stopped.await;
    }));
    optimizer.run(shutdown_signal()).await?;
    let _ = stop_http.send(());
    let _ = server.await;
    Ok(())
}

/// SIGTERM or Ctrl-C: stop pulling, finish what is in flight, leave the rest for other replicas.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}
