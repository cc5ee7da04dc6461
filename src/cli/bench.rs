//! The measuring subcommands: `bench` (coordination load), `message-bench` (messages between
//! agents) and `decision-cost` (one placement decision, no servers).

use std::io::Write;
use std::time::Duration;

use super::{RunContext, write_json_line};
use crate::fleet::bench::{BenchOptions, run_bench};
use crate::fleet::decision_cost;
use crate::fleet::message_bench::{self, MessageBenchOptions};

#[derive(clap::Args)]
pub(crate) struct MessageBenchArgs {
    /// Messages per delivery mode in the throughput runs.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Seconds of the backlog run.
    #[arg(long, default_value_t = 5.0)]
    backlog_seconds: f64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct DecisionCostArgs {
    /// Fleet sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    agents: Vec<usize>,
    /// Milliseconds of measurement per strategy and size.
    #[arg(long, default_value_t = 300)]
    millis: u64,
    #[arg(long)]
    json: bool,
}

/// `bench`: load through the real path, with progress lines while it runs.
pub(crate) async fn load(
    mut options: BenchOptions,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    options.start_servers = context.start_servers;
    let report = run_bench(&context.config, &options, context.progress).await?;
    if options.json {
        write_json_line(out, &report)
    } else {
        writeln!(out, "{}", report.render())?;
        Ok(())
    }
}

/// `message-bench`: throughput per delivery mode and latency per priority under a backlog.
pub(crate) async fn messages(
    args: MessageBenchArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let options = MessageBenchOptions {
        messages: args.messages,
        backlog_s: args.backlog_seconds,
        start_servers: context.start_servers,
    };
    let report = message_bench::run_message_bench(&context.config, &options).await?;
    if args.json {
        write_json_line(out, &report)
    } else {
        writeln!(out, "{}", message_bench::render_message_bench(&report))?;
        Ok(())
    }
}

/// `decision-cost`: microseconds per placement decision, per strategy and fleet size.
pub(crate) fn decisions(args: &DecisionCostArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let costs = decision_cost::measure(&args.agents, Duration::from_millis(args.millis));
    if args.json {
        return write_json_line(out, &costs);
    }
    writeln!(
        out,
        "{:<16} {:>8} {:>14}",
        "strategy", "agents", "µs/decision"
    )?;
    for c in &costs {
        writeln!(
            out,
            "{:<16} {:>8} {:>14.2}",
            c.strategy, c.agents, c.micros_per_decision
        )?;
    }
    Ok(())
}
