//! `switchyard sim`: a workload file under every strategy, in the deterministic simulator or,
//! with `--live`, replayed through the real optimizer.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_sim::{SimReport, Workload};

use super::{RunContext, write_json_line};
use crate::fleet::live::{self, LiveOptions};

#[derive(clap::Args)]
pub(crate) struct SimArgs {
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
    /// Turn the head reservation off (the workload's `head_reservation`; with --live, the
    /// optimizer's `coordination.head_reservation`), to compare.
    #[arg(long)]
    no_head_reservation: bool,
}

/// Simulates (or replays) the workload, writes the optional plot, and prints the report.
pub(crate) async fn run(
    args: SimArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut workload = read_workload(&args.workload)?;
    if args.no_head_reservation {
        workload.head_reservation = false;
    }
    let options = LiveOptions {
        tasks: args.tasks.unwrap_or(LiveOptions::default().tasks),
        time_scale: args.time_scale,
        limit_s: args.limit_s,
        start_servers: context.start_servers,
    };
    let report = if args.live {
        replay_live(context, &workload, &options).await?
    } else {
        switchyard_sim::run_all(&live::first_tasks(&workload, args.tasks))?
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, switchyard_sim::render_svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        return write_json_line(out, &report);
    }
    write!(out, "{}", report.render_table())?;
    if args.live {
        write_rankings(out, &report, &workload, &options)?;
    }
    Ok(())
}

/// The workload file, named after its file stem.
fn read_workload(path: &Path) -> anyhow::Result<Workload> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    switchyard_sim::parse_named(&text, &stem)
        .with_context(|| format!("workload {}", path.display()))
}

/// `sim --live`: the replay, with progress lines.
async fn replay_live(
    context: &RunContext<'_>,
    workload: &Workload,
    options: &LiveOptions,
) -> anyhow::Result<SimReport> {
    (context.progress)(&format!(
        "live: first {} of {} tasks, {}x faster than real time, through the real optimizer; every strategy but the oracle",
        options.tasks.min(workload.tasks.count as usize),
        workload.tasks.count,
        options.time_scale
    ));
    context.note_local_servers();
    Ok(live::run_live(&context.config, workload, options, context.progress).await?)
}

/// How the live ranking by mean completion compares with the offline simulator's on the same
/// tasks.
fn write_rankings(
    out: &mut dyn Write,
    report: &SimReport,
    workload: &Workload,
    options: &LiveOptions,
) -> anyhow::Result<()> {
    let offline = switchyard_sim::run_all(&live::first_tasks(workload, Some(options.tasks)))?;
    let live_order = live::ranking(report, |_| true);
    let offline_order = live::ranking(&offline, |name| report.strategies.contains_key(name));
    writeln!(
        out,
        "ranking by mean completion, live:     {}",
        live_order.join(" < ")
    )?;
    writeln!(
        out,
        "same tasks in the offline simulator:  {}",
        offline_order.join(" < ")
    )?;
    Ok(())
}
