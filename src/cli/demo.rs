//! `switchyard demo`.

use std::io::Write;

use super::{RunContext, write_json_line};
use crate::fleet::demo::{DemoOptions, render_table, run_demo};

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
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
    /// Serve the web dashboard here while the demo runs (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    dashboard: String,
    /// No dashboard.
    #[arg(long)]
    no_dashboard: bool,
    /// Keep the deployment and its dashboard up this many seconds after the tasks finished
    /// (Ctrl-C ends it sooner).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    hold: u64,
}

/// Runs the demo and prints its summary; fails when a task never finished, so scripts notice.
pub(crate) async fn run(
    args: DemoArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let options = DemoOptions {
        agents: args.agents,
        tasks: args.tasks,
        replicas: args.replicas,
        seed: args.seed,
        start_servers: context.start_servers,
        dashboard: (!args.no_dashboard).then_some(args.dashboard),
        hold: std::time::Duration::from_secs(args.hold),
    };
    context.note_local_servers();
    let summary = run_demo(&context.config, &options, context.progress).await?;
    if args.json {
        write_json_line(out, &summary)?;
    } else {
        writeln!(out, "{}", render_table(&summary))?;
    }
    let finished = summary.tasks_completed + summary.tasks_failed;
    anyhow::ensure!(
        finished == summary.tasks_submitted,
        "only {finished} of {} tasks finished",
        summary.tasks_submitted
    );
    Ok(())
}
