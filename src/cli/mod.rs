//! The command-line layer of the `switchyard` and `optimizer` binaries: the clap definitions and
//! one small handler per subcommand, so the binaries only parse, run and turn the result into an
//! exit code.
//!
//! Handlers write their results to an [`std::io::Write`] handle and their progress lines to a
//! callback, both given by the binary: the library itself never touches standard output or error.

mod auth;
mod bench;
mod chaos;
mod demo;
pub mod logging;
pub mod replica;
mod sim;
mod status;
mod task;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;
use switchyard_server::config::Config;

use crate::fleet::bench::BenchOptions;

#[derive(Parser)]
#[command(
    name = "switchyard",
    about = "Coordination for fleets of software agents"
)]
pub struct Cli {
    /// TOML file overriding config/default.toml.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// The subcommands' doc comments are their `--help` text; their arguments are in the files that
// handle them.
#[derive(Subcommand)]
enum Command {
    /// Optimizer replicas plus a simulated fleet working through a few hundred tasks.
    /// Uses NATS_URL and REDIS_URL when both are set, else starts its own servers.
    Demo(demo::DemoArgs),
    /// Queue depth, counters and the agent table of a running deployment (NATS_URL).
    Status(status::StatusArgs),
    /// One task of a running deployment (NATS_URL): its state, why it waits, and its story,
    /// every transition with its time and details.
    Task(task::TaskArgs),
    /// Load through the real path: distinct lifecycles/s, request→grant latency, server cost per lifecycle (and against the bare allocation loop with --baseline).
    Bench(BenchOptions),
    /// Messages between agents: throughput per delivery mode, and latency per priority while a
    /// receiver is backed up (NATS_URL, else its own servers).
    MessageBench(bench::MessageBenchArgs),
    /// Cost of one placement decision per strategy at each fleet size (no servers needed).
    DecisionCost(bench::DecisionCostArgs),
    /// Deterministic discrete-event simulation of a workload file under every strategy plus
    /// an oracle that knows the hidden truth (no servers needed). With --live, the workload is
    /// replayed scaled down through the real optimizer over NATS and Redis instead (uses
    /// NATS_URL and REDIS_URL when both are set, else starts its own servers).
    Sim(sim::SimArgs),
    /// The fault matrix: per scenario its own servers on loopback, two optimizer processes,
    /// agents with leases under a steady load, one fault mid-load, and the invariants checked
    /// (nothing lost, nothing worked twice at once, no agent over capacity, recovery times).
    Chaos(chaos::ChaosArgs),
    /// Identities of a secured deployment: `auth init DIR`, `auth add-agent ID --dir DIR`.
    Auth(auth::AuthArgs),
}

/// What every subcommand runs with besides its own arguments.
struct RunContext<'a> {
    config: Config,
    /// Neither NATS_URL nor REDIS_URL names both servers, so drivers start local ones.
    start_servers: bool,
    /// Progress lines and notices for the person at the terminal.
    progress: &'a dyn Fn(&str),
}

impl RunContext<'_> {
    /// Says so when the run is about to start its own servers, since that takes a while and
    /// ignores a half-set environment.
    fn note_local_servers(&self) {
        if self.start_servers {
            (self.progress)(
                "NATS_URL/REDIS_URL not both set: starting local nats-server and redis-server",
            );
        }
    }
}

/// Runs the parsed command line: results go to `out`, progress lines to `progress`.
pub async fn run(cli: Cli, out: &mut dyn Write, progress: &dyn Fn(&str)) -> anyhow::Result<()> {
    let context = RunContext {
        config: Config::load(cli.config.as_deref())?,
        start_servers: std::env::var_os("NATS_URL").is_none()
            || std::env::var_os("REDIS_URL").is_none(),
        progress,
    };
    match cli.command {
        Command::Demo(args) => demo::run(args, &context, out).await,
        Command::Status(args) => status::run(args, &context, out).await,
        Command::Task(args) => task::run(args, &context, out).await,
        Command::Bench(options) => bench::load(options, &context, out).await,
        Command::MessageBench(args) => bench::messages(args, &context, out).await,
        Command::DecisionCost(args) => bench::decisions(&args, out),
        Command::Sim(args) => sim::run(args, &context, out).await,
        Command::Chaos(args) => chaos::run(args, &context, out).await,
        Command::Auth(args) => auth::run(args, &context, out),
    }
}

/// `--json` output: the whole result as one line.
fn write_json_line(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string(value)?)?;
    Ok(())
}
