//! The command-line layer of the `switchyard` and `optimizer` binaries: the clap definitions and
//! one small handler per subcommand, so the binaries only parse, run and turn the result into an
//! exit code.
//!
//! Handlers write their results to an [`std::io::Write`] handle and their progress lines to a
//! callback, both given by the binary: the library itself never touches standard output or error.

mod auth;
mod bench;
mod chaos;
mod dashboard;
mod demo;
pub mod logging;
pub mod replica;
mod sim;
mod status;
mod task;

use std::io::Write;
use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use switchyard_client::{DEFAULT_REPLY_TIMEOUT, request_status, transport};
use switchyard_protocol::{CoordinationSync, StatusQuery, Subjects};
use switchyard_server::build;
use switchyard_server::config::{self, Config};

use crate::fleet::bench::BenchOptions;

#[derive(Parser)]
#[command(
    name = "switchyard",
    about = "Coordination for fleets of software agents",
    version = VERSION_LINE.as_str(),
    after_help = environment_help(&SWITCHYARD_ONLY_ENV, "warn"),
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
    /// The web dashboard of a running deployment (NATS_URL, REDIS_URL) without an optimizer:
    /// fleet, queue, throughput, budgets, dead letters, task search.
    Dashboard(dashboard::DashboardArgs),
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

/// `--version`: the package version, and the commit when the build named one.
pub(crate) static VERSION_LINE: LazyLock<String> = LazyLock::new(build::version_line);

/// Environment variables only the `switchyard` command reads (besides the configuration's).
const SWITCHYARD_ONLY_ENV: [(&str, &str); 5] = [
    (
        "NATS_SERVER_BIN",
        "nats-server to start when NATS_URL and REDIS_URL are not both set (else PATH)",
    ),
    (
        "REDIS_SERVER_BIN",
        "redis-server to start when NATS_URL and REDIS_URL are not both set (else PATH)",
    ),
    (
        "NATS_MONITOR_URL",
        "bench: nats-server's monitoring endpoint, for the NATS figures",
    ),
    (
        "SWITCHYARD_BENCH_METRICS",
        "bench: when set, print each replica's /metrics text at the end",
    ),
    (
        "SWITCHYARD_KEEP_SERVER_DIRS",
        "when set, keep the data directories of the servers it started",
    ),
];

/// The `--help` epilogue: every environment variable a binary reads. The configuration's come
/// from its own list (`switchyard_server::config::env_help`), so none is forgotten; then the
/// binary's own (`extra`), then the ones every binary reads; `log_filter` is its `RUST_LOG`
/// default.
pub(crate) fn environment_help(extra: &[(&str, &str)], log_filter: &str) -> String {
    let mut lines = vec![
        "Environment variables (they override the configuration file):".to_string(),
        config::env_help(),
        config::env_help_line(
            "SWITCHYARD_CONFIG",
            "TOML file overriding config/default.toml, as --config",
            None,
        ),
        config::env_help_line(
            logging::LOG_FORMAT_VAR,
            "json, text or auto (JSON lines unless standard error is a terminal)",
            Some("auto"),
        ),
        config::env_help_line("RUST_LOG", "which log lines are written", Some(log_filter)),
    ];
    lines.extend(
        extra
            .iter()
            .map(|(name, about)| config::env_help_line(name, about, None)),
    );
    lines.join("\n")
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
        Command::Dashboard(args) => dashboard::run(args, &context, out).await,
        Command::Task(args) => task::run(args, &context, out).await,
        Command::Bench(options) => bench::load(options, &context, out).await,
        Command::MessageBench(args) => bench::messages(args, &context, out).await,
        Command::DecisionCost(args) => bench::decisions(&args, out),
        Command::Sim(args) => sim::run(args, &context, out).await,
        Command::Chaos(args) => chaos::run(args, &context, out).await,
        Command::Auth(args) => auth::run(args, &context, out),
    }
}

/// One status query to the deployment at the configured NATS URL. A plain request: an operator's
/// credentials allow it and no subscription of its own.
async fn ask_status(
    context: &RunContext<'_>,
    query: StatusQuery,
) -> anyhow::Result<CoordinationSync> {
    let nats = &context.config.nats;
    let client = transport::connect_secured(&nats.url, "switchyard-cli", &nats.security())
        .await
        .with_context(|| format!("connecting to {}", nats.url))?;
    let subjects = Subjects::new(nats.subject_prefix.clone());
    Ok(request_status(
        &client,
        &subjects,
        "switchyard-cli",
        query,
        DEFAULT_REPLY_TIMEOUT,
    )
    .await?)
}

/// `--json` output: the whole result as one line.
fn write_json_line(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string(value)?)?;
    Ok(())
}
