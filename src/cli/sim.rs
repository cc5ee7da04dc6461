//! `switchyard sim`: a workload file under every strategy, in the deterministic simulator or,
//! with `--live`, replayed through the real optimizer; with `--generate`, many random workloads
//! and the distribution of each strategy's results over them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use std::time::Instant;

use switchyard_sim::distribution::{self, RunInput};
use switchyard_sim::generate::GenOptions;
use switchyard_sim::{SimReport, Workload};

use super::{RunContext, write_json_line};
use crate::fleet::live::{self, LiveOptions};

#[derive(clap::Args)]
pub(crate) struct SimArgs {
    /// Workload TOML (see docs/workloads.md).
    #[arg(long, required_unless_present = "generate")]
    workload: Option<PathBuf>,
    /// Draw N random workloads instead (docs/workloads.md, "Generated workloads") and report
    /// each strategy's distribution over them.
    #[arg(long, value_name = "N", conflicts_with_all = ["workload", "live", "plot", "tasks"], requires = "seed")]
    generate: Option<u64>,
    /// With --generate: the generator's seed (tune on 1, report on 2).
    #[arg(long, requires = "generate")]
    seed: Option<u64>,
    /// With --generate: write every workload to DIR/gen-<seed>-<i>.toml.
    #[arg(long, value_name = "DIR", requires = "generate")]
    out: Option<PathBuf>,
    /// With --generate: how many workloads with adaptive's lowest gain to name.
    #[arg(long, value_name = "K", requires = "generate", default_value_t = 5)]
    worst: usize,
    /// With --generate: multiply every workload's task count (e.g. 0.1 for a quick look).
    #[arg(long, value_name = "F", requires = "generate", default_value_t = 1.0)]
    tasks_scale: f64,
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
    let Some(path) = &args.workload else {
        return generate(&args, context, out);
    };
    let mut workload = read_workload(path)?;
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

/// Threads `--generate` simulates on; results do not depend on it.
const GENERATE_THREADS: usize = 2;

/// `sim --generate`: draw, optionally write, simulate on two threads, summarize.
fn generate(args: &SimArgs, context: &RunContext<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or(0);
    let (workloads, files) = draw_all(args, seed)?;
    let started = Instant::now();
    (context.progress)(&format!(
        "simulating {} generated workloads (seed {seed}) under every strategy and the oracle on {GENERATE_THREADS} threads",
        workloads.len()
    ));
    let reports = distribution::run_many(&workloads, GENERATE_THREADS, &mut |_, r| {
        (context.progress)(&format!(
            "  {} done ({} agents, {} tasks) at {:.1}s",
            r.workload,
            r.agents,
            r.tasks,
            started.elapsed().as_secs_f64()
        ));
    })?;
    (context.progress)(&format!(
        "simulated in {:.1}s wall clock",
        started.elapsed().as_secs_f64()
    ));
    let runs: Vec<RunInput> = reports
        .into_iter()
        .zip(workloads.iter().zip(files))
        .map(|(report, (w, file))| RunInput {
            report,
            offered_load: switchyard_sim::generate::offered_load(w).unwrap_or(0.0),
            file,
        })
        .collect();
    let summary = distribution::summarize(seed, args.tasks_scale, &runs, args.worst);
    if args.json {
        return write_json_line(out, &summary);
    }
    write!(out, "{}", summary.render_table())?;
    Ok(())
}

/// The `--generate` workloads of `seed`, and where each was written (with `--out`).
fn draw_all(args: &SimArgs, seed: u64) -> anyhow::Result<(Vec<Workload>, Vec<Option<String>>)> {
    anyhow::ensure!(
        args.tasks_scale.is_finite() && args.tasks_scale > 0.0,
        "--tasks-scale must be > 0"
    );
    let options = GenOptions {
        tasks_scale: args.tasks_scale,
    };
    let mut workloads = Vec::new();
    let mut files = Vec::new();
    for i in 0..args.generate.unwrap_or(0) {
        let mut w = switchyard_sim::generate::generate(seed, i, &options)?;
        if args.no_head_reservation {
            w.head_reservation = false;
        }
        files.push(write_generated(args.out.as_deref(), &w)?);
        workloads.push(w);
    }
    Ok((workloads, files))
}

/// Writes `w` to `dir/<name>.toml` when a directory is given; returns the path written.
fn write_generated(dir: Option<&Path>, w: &Workload) -> anyhow::Result<Option<String>> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.toml", w.name));
    std::fs::write(&path, switchyard_sim::generate::to_toml(w)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path.display().to_string()))
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
