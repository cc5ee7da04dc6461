//! `optimizer`: one stateless Switchyard optimizer replica. Run as many as you like.
//!
//! Configuration: `config/default.toml` defaults, `--config FILE` (or SWITCHYARD_CONFIG), then
//! environment variables (`optimizer --help` lists every one with its default).
//! Logs: standard error, JSON lines unless it is a terminal (LOG_FORMAT=json|text|auto).
//! The replica itself is `switchyard::cli::replica`; this file sets up logging, parses and runs.

use clap::Parser;
use switchyard::cli::replica::{self, ReplicaArgs};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed first, so --help and --version answer whatever the logging settings say.
    let args = ReplicaArgs::parse();
    switchyard::cli::logging::init(replica::DEFAULT_LOG_FILTER)?;
    replica::run(args).await
}
