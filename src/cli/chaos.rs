//! `switchyard chaos`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{RunContext, write_json_line};
use crate::fleet::chaos::{ChaosOptions, Scenario, render_table, run_chaos};

#[derive(clap::Args)]
pub(crate) struct ChaosArgs {
    /// A scenario to run (repeatable; default: all): optimizer-kill, optimizer-stop,
    /// nats-node-kill, nats-restart, redis-restart, redis-failover, redis-stop, redis-partition,
    /// nats-partition, agent-kill, duplicate-flood.
    #[arg(long = "scenario", value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,
    /// Agents (4 cpus each; every task needs 1).
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Submits per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of load per scenario (the fault starts a third of the way in).
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// The agents' lease in seconds.
    #[arg(long, default_value_t = 10.0)]
    lease_s: f64,
    /// Seeds the agents' work times and failures.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds after the load within which every task must be terminal.
    #[arg(long, default_value_t = 120.0)]
    drain_s: f64,
    /// The optimizer binary (default: the one next to this executable).
    #[arg(long)]
    optimizer_bin: Option<PathBuf>,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario; one of: {}", names.join(", "))
    })
}

/// Runs the matrix and prints its table; fails when any scenario broke an invariant.
pub(crate) async fn run(
    args: ChaosArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let json = args.json;
    let report = run_chaos(&context.config, &options(args)?, context.progress).await?;
    if json {
        write_json_line(out, &report)?;
    } else {
        writeln!(out, "{}", render_table(&report))?;
    }
    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.scenario)
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "invariants broken in: {}",
        failed.join(", ")
    );
    Ok(())
}

fn options(args: ChaosArgs) -> anyhow::Result<ChaosOptions> {
    anyhow::ensure!(
        args.agents > 0 && args.rate > 0.0 && args.duration_s > 0.0 && args.lease_s > 0.0,
        "--agents, --rate, --duration-s and --lease-s must be positive"
    );
    let optimizer_bin = match args.optimizer_bin {
        Some(path) => path,
        None => ChaosOptions::optimizer_next_to_current_exe().context(
            "no optimizer binary next to this executable; build it (cargo build --bin optimizer) \
             or pass --optimizer-bin",
        )?,
    };
    Ok(ChaosOptions {
        scenarios: if args.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenarios
        },
        agents: args.agents,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        lease_s: args.lease_s,
        seed: args.seed,
        optimizer_bin,
        drain_within: Duration::from_secs_f64(args.drain_s),
    })
}
