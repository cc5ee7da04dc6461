//! `switchyard`: the command line. `demo` runs a whole coordination scenario, `status` shows a
//! running deployment's state, `bench` measures throughput and latency, `sim` compares the
//! placement strategies on a workload file in a deterministic simulation (no servers), or with
//! `--live` through the real optimizer.

// A command-line tool: standard output and error are its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::fleet::bench::{BenchOptions, run_bench};
use switchyard::fleet::demo::{DemoOptions, render_table, run_demo};
use switchyard::fleet::live::{self, LiveOptions};
use switchyard_client::Coordinator;
use switchyard_protocol::StatusQuery;
use switchyard_server::config::Config;

#[derive(Parser)]
#[command(
    name = "switchyard",
    about = "Coordination for fleets of software agents"
)]
struct Cli {
    /// TOML file overriding config/default.toml.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Optimizer replicas plus a simulated fleet working through a few hundred tasks.
    /// Uses NATS_URL and REDIS_URL when both are set, else starts its own servers.
    Demo {
        #[arg(long, default_value_t = 12)]
        agents: usize,
        #[arg(long, default_value_t = 300)]
        tasks: usize,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print the summary as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Queue depth, counters and the agent table of a running deployment (NATS_URL).
    Status {
        #[arg(long)]
        json: bool,
        /// Also show what was learned per (task type, agent type).
        #[arg(long)]
        patterns: bool,
    },
    /// Load through the real path: distinct lifecycles/s, request→grant latency, server cost per lifecycle (and against the bare allocation loop with --baseline).
    Bench(BenchOptions),
    /// Messages between agents: throughput per delivery mode, and latency per priority while a
    /// receiver is backed up (NATS_URL, else its own servers).
    MessageBench {
        /// Messages per delivery mode in the throughput runs.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Seconds of the backlog run.
        #[arg(long, default_value_t = 5.0)]
        backlog_seconds: f64,
        #[arg(long)]
        json: bool,
    },
    /// Cost of one placement decision per strategy at each fleet size (no servers needed).
    DecisionCost {
        /// Fleet sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "100,10000")]
        agents: Vec<usize>,
        /// Milliseconds of measurement per strategy and size.
        #[arg(long, default_value_t = 300)]
        millis: u64,
        #[arg(long)]
        json: bool,
    },
    /// Deterministic discrete-event simulation of a workload file under every strategy plus
    /// an oracle that knows the hidden truth (no servers needed). With --live, the workload is
    /// replayed scaled down through the real optimizer over NATS and Redis instead (uses
    /// NATS_URL and REDIS_URL when both are set, else starts its own servers).
    Sim {
        /// Workload TOML (see docs/workloads.md).
        #[arg(long)]
        workload: PathBuf,
        /// Print the report as one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write an SVG bar chart of mean and p95 completion time to this file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Replay through the real optimizer with simulated agents (every strategy but the
        /// oracle, which needs the hidden truth).
        #[arg(long)]
        live: bool,
        /// Use only the first N tasks of the workload (with --live the default is 200; without,
        /// all of them).
        #[arg(long)]
        tasks: Option<usize>,
        /// With --live: virtual seconds per wall-clock second.
        #[arg(long, requires = "live", default_value_t = 50.0)]
        time_scale: f64,
        /// With --live: wall-clock seconds allowed per strategy; open tasks then count as
        /// unfinished.
        #[arg(long, requires = "live", default_value_t = 120.0)]
        limit_s: f64,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let external =
        std::env::var_os("NATS_URL").is_some() && std::env::var_os("REDIS_URL").is_some();
    match cli.command {
        Command::Demo {
            agents,
            tasks,
            replicas,
            seed,
            json,
        } => {
            let options = DemoOptions {
                agents,
                tasks,
                replicas,
                seed,
                start_servers: !external,
            };
            if !external {
                eprintln!(
                    "NATS_URL/REDIS_URL not both set: starting local nats-server and redis-server"
                );
            }
            let summary = run_demo(&config, &options, |line| eprintln!("{line}")).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{}", render_table(&summary));
            }
            let finished = summary.tasks_completed + summary.tasks_failed;
            anyhow::ensure!(
                finished == summary.tasks_submitted,
                "only {finished} of {} tasks finished",
                summary.tasks_submitted
            );
        }
        Command::Status { json, patterns } => {
            let orch = Coordinator::connect(
                &config.nats.url,
                "switchyard-cli",
                &config.nats.subject_prefix,
            )
            .await
            .with_context(|| format!("connecting to {}", config.nats.url))?;
            let query = StatusQuery {
                include_agents: true,
                include_patterns: patterns,
            };
            let status = orch.status_with(query).await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!(
                    "queue depth {}  counters {:?}",
                    status.queue_depth, status.counters
                );
                println!(
                    "{:<24} {:<10} {:<12} {:>8} {:>7} {:>6}",
                    "agent", "type", "status", "util", "score", "tasks"
                );
                for a in status.agents {
                    println!(
                        "{:<24} {:<10} {:<12} {:>7.1}% {:>7.3} {:>6}",
                        a.agent_id,
                        a.agent_type,
                        a.status,
                        a.utilization * 100.0,
                        a.performance_score,
                        a.active_tasks
                    );
                }
                if patterns {
                    print_patterns(&status.patterns);
                }
            }
        }
        Command::Sim {
            workload,
            json,
            plot,
            live,
            tasks,
            time_scale,
            limit_s,
        } => {
            let text = std::fs::read_to_string(&workload)
                .with_context(|| format!("reading {}", workload.display()))?;
            let stem = workload.file_stem().unwrap_or_default().to_string_lossy();
            let parsed = switchyard_sim::parse_named(&text, &stem)
                .with_context(|| format!("workload {}", workload.display()))?;
            let options = LiveOptions {
                tasks: tasks.unwrap_or(LiveOptions::default().tasks),
                time_scale,
                limit_s,
                start_servers: !external,
            };
            let report = if live {
                sim_live(&config, &parsed, &options).await?
            } else {
                switchyard_sim::run_all(&live::first_tasks(&parsed, tasks))?
            };
            if let Some(path) = plot {
                std::fs::write(&path, switchyard_sim::render_svg(&report))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render_table());
                if live {
                    print_rankings(&report, &parsed, &options)?;
                }
            }
        }
        Command::DecisionCost {
            agents,
            millis,
            json,
        } => {
            let costs = switchyard::fleet::decision_cost::measure(
                &agents,
                std::time::Duration::from_millis(millis),
            );
            if json {
                println!("{}", serde_json::to_string(&costs)?);
            } else {
                println!("{:<16} {:>8} {:>14}", "strategy", "agents", "µs/decision");
                for c in &costs {
                    println!(
                        "{:<16} {:>8} {:>14.2}",
                        c.strategy, c.agents, c.micros_per_decision
                    );
                }
            }
        }
        Command::MessageBench {
            messages,
            backlog_seconds,
            json,
        } => {
            let options = switchyard::fleet::message_bench::MessageBenchOptions {
                messages,
                backlog_s: backlog_seconds,
                start_servers: !external,
            };
            let report =
                switchyard::fleet::message_bench::run_message_bench(&config, &options).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}",
                    switchyard::fleet::message_bench::render_message_bench(&report)
                );
            }
        }
        Command::Bench(mut options) => {
            options.start_servers = !external;
            let json = options.json;
            let report = run_bench(&config, &options, |line| eprintln!("{line}")).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.render());
            }
        }
    }
    Ok(())
}

/// `sim --live`: the replay, with progress on stderr.
async fn sim_live(
    config: &Config,
    workload: &switchyard_sim::Workload,
    options: &LiveOptions,
) -> anyhow::Result<switchyard_sim::SimReport> {
    eprintln!(
        "live: first {} of {} tasks, {}x faster than real time, through the real optimizer; every strategy but the oracle",
        options.tasks.min(workload.tasks.count as usize),
        workload.tasks.count,
        options.time_scale
    );
    if options.start_servers {
        eprintln!("NATS_URL/REDIS_URL not both set: starting local nats-server and redis-server");
    }
    Ok(live::run_live(config, workload, options, |line| eprintln!("{line}")).await?)
}

/// How the live ranking by mean completion compares with the offline simulator's on the same
/// tasks.
fn print_rankings(
    report: &switchyard_sim::SimReport,
    workload: &switchyard_sim::Workload,
    options: &LiveOptions,
) -> anyhow::Result<()> {
    let offline = switchyard_sim::run_all(&live::first_tasks(workload, Some(options.tasks)))?;
    let live_order = live::ranking(report, |_| true);
    let offline_order = live::ranking(&offline, |name| report.strategies.contains_key(name));
    println!(
        "ranking by mean completion, live:     {}",
        live_order.join(" < ")
    );
    println!(
        "same tasks in the offline simulator:  {}",
        offline_order.join(" < ")
    );
    Ok(())
}

fn print_patterns(rows: &[switchyard_protocol::PatternRow]) {
    println!(
        "\n{:<16} {:<16} {:>8} {:>9} {:>9} {:>12}",
        "task type", "agent type", "attempts", "successes", "success", "time ratio"
    );
    for r in rows {
        println!(
            "{:<16} {:<16} {:>8} {:>9} {:>8.1}% {:>12.2}",
            r.task_type,
            r.agent_type,
            r.attempts,
            r.successes,
            r.success_ema * 100.0,
            r.duration_ratio_ema
        );
    }
}
