//! `switchyard dashboard`: the web dashboard of a running deployment (NATS_URL, REDIS_URL),
//! served without an optimizer in the process.

use std::io::Write;

use anyhow::Context;
use switchyard_server::dashboard::Dashboard;
use switchyard_server::metrics::Metrics;
use switchyard_server::optimizer::{Readiness, http};

use super::RunContext;

#[derive(clap::Args)]
pub(crate) struct DashboardArgs {
    /// Where to serve it (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9465")]
    listen: String,
    /// Let the page replay dead letters (as `[dashboard] allow_replay`).
    #[arg(long)]
    allow_replay: bool,
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
pub(crate) async fn run(
    args: DashboardArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut config = context.config.clone();
    config.dashboard.allow_replay |= args.allow_replay;
    let metrics = Metrics::new()?;
    let dashboard = Dashboard::connect(&config, metrics.clone())
        .await
        .with_context(|| {
            format!(
                "connecting to NATS {} and Redis {}",
                config.nats.url, config.redis.url
            )
        })?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    writeln!(out, "dashboard: http://{}/", listener.local_addr()?)?;
    out.flush()?;
    let endpoints = http::Endpoints {
        metrics,
        readiness: Readiness::new(),
        dashboard: Some(dashboard),
    };
    http::serve(listener, endpoints, super::replica::shutdown_signal()).await;
    Ok(())
}
