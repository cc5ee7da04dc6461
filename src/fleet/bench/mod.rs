//! `switchyard bench`: load through the real path (submit over JetStream → optimizer → Redis →
//! grant on the agent's subject → completion → release), reporting distinct lifecycles per
//! second, request→grant latency percentiles, the bare allocation loop's rate on the same servers
//! for reference (`--baseline`), and what each lifecycle cost the servers. Agents complete their
//! grants at once, so capacity recycles and the optimizer, not the work, is what is measured.

mod agents;
mod load;
mod report;
mod tally;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};

use self::agents::{REGISTRATION_CONCURRENCY, connections_for, start_fleet};
use self::load::{Load, SubmitCount};
use self::tally::Tally;
use super::baseline::run_baseline;
use super::counters::{Cost, Probes, Usage};
use super::deployment::Deployment;
use super::{FleetEvent, LatencySummary, SubmitClock, stop_fleet};
pub use report::BenchReport;
use switchyard_client::Coordinator;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_server::config::Config;

/// How long tasks still in flight at the end of the load may take to finish.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Optimizer replicas (in-process, sharing this machine).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Offered submits per second (open loop). 0 = closed loop: exactly `--inflight` tasks are
    /// kept in flight, a new one submitted as soon as one completes.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of offered load; the counters and lifecycles/s cover exactly this window.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Simulated agents (cpu 8 each; every task needs 1 cpu), registered 256 at a time over
    /// one NATS connection per 1000 agents (at least 4).
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Most tasks in flight (submitted, not yet completed). With `--rate 0` the closed loop
    /// keeps exactly this many (the default, 2048, too); with a rate, submits that would exceed
    /// it wait for a completion, so the offered rate may then not be met.
    #[arg(long, default_value_t = 2048)]
    pub inflight: usize,
    /// First run the bare allocation loop (JetStream pull → one Lua reservation → grant
    /// published and acked) on the same servers, and report lifecycles/s against it.
    #[arg(long)]
    pub baseline: bool,
    /// Seconds the bare allocation loop runs for.
    #[arg(long, default_value_t = 3.0)]
    pub baseline_seconds: f64,
    /// Seconds to measure the registered fleet's cost with no load (servers' CPU, NATS
    /// messages, Redis commands per second) before the load; 0 = skip.
    #[arg(long, default_value_t = 0)]
    pub idle_seconds: u64,
    /// nats-server's monitoring endpoint (`http://host:8222`) when the bench runs against
    /// external servers; without it the NATS figures are left out. Local servers expose theirs.
    #[arg(long, env = "NATS_MONITOR_URL")]
    pub nats_monitor_url: Option<String>,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[arg(skip)]
    pub start_servers: bool,
}

pub async fn run_bench(
    config: &Config,
    options: &BenchOptions,
    progress: impl Fn(&str),
) -> Result<BenchReport, Error> {
    if options.inflight == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--inflight must be at least 1",
        ));
    }
    let deployment = Deployment::start(config, options.replicas, options.start_servers).await?;
    let result = drive(&deployment, options, &progress).await;
    if std::env::var_os("SWITCHYARD_BENCH_METRICS").is_some() {
        for m in deployment.metrics() {
            progress(&m.render());
        }
    }
    deployment.stop().await;
    result
}

/// Where the server counters are read: the local servers' own, or what the options name.
async fn probes_for(deployment: &Deployment, options: &BenchOptions) -> Result<Probes, Error> {
    let redis = switchyard_server::state::redis_client(&deployment.config().redis)?
        .get_multiplexed_async_connection()
        .await?;
    let local = deployment.local_servers();
    Ok(Probes {
        nats_monitor: match local {
            Some(servers) => Some(servers.nats.monitor_url()),
            None => options.nats_monitor_url.clone(),
        },
        nats_pid: local.and_then(|servers| servers.nats.pid()),
        redis,
    })
}

/// The run's figures that the load loop does not count.
struct Setup {
    registration: Duration,
    agent_connections: usize,
    baseline: Option<f64>,
    idle: Option<Cost>,
}

async fn drive(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &impl Fn(&str),
) -> Result<BenchReport, Error> {
    let mut probes = probes_for(deployment, options).await?;
    let baseline = measure_baseline(deployment, options, progress).await?;
    let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel(1 << 20);
    let clock = SubmitClock::default();
    let fleet = start_fleet(
        deployment,
        options.agents,
        &run,
        &clock,
        events_tx,
        &stop_rx,
        progress,
    )
    .await?;
    let measured = async {
        let idle = measure_idle(&mut probes, options.idle_seconds, progress).await?;
        let orch = Coordinator::with_client(
            deployment.nats_client("bench-orchestrator").await?,
            &format!("{run}-orch"),
            deployment.subjects(),
        )
        .await?;
        let load = run_load(
            orch,
            options,
            &run,
            &clock,
            events_rx,
            &mut probes,
            progress,
        );
        Ok::<_, Error>((idle, load.await?))
    }
    .await;
    stop_fleet(&stop_tx, fleet.agents).await;
    let (idle, outcome) = measured?;
    let setup = Setup {
        registration: fleet.registration,
        agent_connections: connections_for(options.agents),
        baseline,
        idle,
    };
    Ok(report(options, &setup, outcome))
}

async fn measure_baseline(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &impl Fn(&str),
) -> Result<Option<f64>, Error> {
    if !options.baseline {
        return Ok(None);
    }
    let nats = deployment.nats_client("bench-baseline").await?;
    let result = run_baseline(nats, &deployment.config().redis, options.baseline_seconds).await?;
    progress(&format!(
        "bare allocation loop: {} allocations in {:.1}s = {:.0}/s",
        result.allocations,
        result.seconds,
        result.per_second()
    ));
    Ok(Some(result.per_second()))
}

/// The fleet's cost per second with nothing submitted: heartbeats, idle pulls, lease checks.
async fn measure_idle(
    probes: &mut Probes,
    seconds: u64,
    progress: &impl Fn(&str),
) -> Result<Option<Cost>, Error> {
    if seconds == 0 {
        return Ok(None);
    }
    progress(&format!("measuring the idle fleet for {seconds}s"));
    let before = probes.snapshot().await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = probes.snapshot().await?;
    Ok(Usage::between(&before, &after).per(started.elapsed().as_secs_f64()))
}

/// What the load loop counted.
struct Outcome {
    tally: Tally,
    count: SubmitCount,
    /// Server work between load start and load end.
    window: Usage,
}

/// Runs the submitter for `--duration` seconds and counts replies and grants until every
/// submitted task has finished or the drain period is over. Server counters are read at load
/// start and load end, so they cover the same window as lifecycles/s.
async fn run_load(
    orch: Coordinator,
    options: &BenchOptions,
    run: &str,
    clock: &SubmitClock,
    mut events: mpsc::Receiver<FleetEvent>,
    probes: &mut Probes,
    progress: &impl Fn(&str),
) -> Result<Outcome, Error> {
    let orch = Arc::new(orch);
    let mut replies = orch.events();
    let slots = Arc::new(Semaphore::new(options.inflight));
    let (count_tx, count_rx) = watch::channel(SubmitCount::default());
    let before = probes.snapshot().await?;
    let started = Instant::now();
    let load_end = started + Duration::from_secs(options.duration);
    let load = Load {
        orch: orch.clone(),
        clock: clock.clone(),
        run: run.to_string(),
        rate: options.rate,
        slots: slots.clone(),
        end: load_end,
    };
    let submitter = tokio::spawn(load.run(count_tx));
    let mut tally = Tally::default();
    let mut window = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        // `is_finished` before the count: a count read first could miss the last submits.
        let done = submitter.is_finished();
        let submitted = count_rx.borrow().submitted();
        let now = Instant::now();
        if window.is_some() && (now >= load_end + DRAIN || (done && tally.finished() >= submitted))
        {
            break;
        }
        tokio::select! {
            event = replies.recv() => tally.reply(event, Instant::now() <= load_end, &slots),
            Some(event) = events.recv() => tally.fleet(event),
            _ = tokio::time::sleep_until(load_end.into()), if window.is_none() => {
                window = Some(Usage::between(&before, &probes.snapshot().await?));
            }
            _ = ticker.tick() => progress(&format!(
                "{:>4.0}s submitted {submitted} completed {}",
                started.elapsed().as_secs_f64(),
                tally.completed.len()
            )),
        }
    }
    let count = *count_rx.borrow();
    Ok(Outcome {
        tally,
        count,
        window: window.unwrap_or_default(),
    })
}

fn report(options: &BenchOptions, setup: &Setup, outcome: Outcome) -> BenchReport {
    let Outcome {
        tally,
        count,
        window,
    } = outcome;
    let window_s = options.duration.max(1) as f64;
    let lifecycles_per_s = tally.completed_in_window as f64 / window_s;
    let ratio = setup
        .baseline
        .filter(|b| *b > 0.0)
        .map(|b| lifecycles_per_s / b);
    BenchReport {
        replicas: options.replicas,
        agents: options.agents,
        offered_rate: options.rate,
        mode: if options.rate == 0 {
            "closed_loop"
        } else {
            "open_loop"
        },
        inflight: options.inflight,
        duration_s: window_s,
        registration_s: setup.registration.as_secs_f64(),
        registration_concurrency: REGISTRATION_CONCURRENCY,
        agent_connections: setup.agent_connections,
        submitted: count.submitted(),
        completed: tally.completed.len() as u64,
        completed_in_window: tally.completed_in_window,
        lifecycles_per_s,
        grant_latency_ms: LatencySummary::from_durations(&tally.latencies),
        double_grants: tally.double_grants(),
        duplicate_completions: tally.duplicate_completions,
        failed: tally.failed.len() as u64,
        error_reports: tally.error_reports,
        submit_errors: count.failed,
        unfinished: count.submitted().saturating_sub(tally.finished()),
        replies_lost: tally.replies_lost,
        baseline_allocations_per_s: setup.baseline,
        ratio_to_baseline: ratio,
        per_lifecycle: window.per(tally.completed_in_window as f64),
        idle_per_s: setup.idle.clone(),
    }
}
