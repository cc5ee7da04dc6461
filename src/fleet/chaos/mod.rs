//! The fault matrix behind `switchyard chaos`: per scenario, a fresh topology on loopback (NATS,
//! Redis with AOF, two optimizer processes), agents with short leases working tasks for a random
//! short time, a steady load, one fault injected a third of the way into it, and the invariants
//! checked afterwards from what the agents saw and from Redis.
//!
//! * `scenario` — the matrix as a table: what each fault needs and from when recovery counts;
//! * `topology` — servers, proxies and optimizer processes;
//! * `agents`, `ledger`, `load` — the fleet, what it saw, the submits;
//! * `faults` — injecting each fault;
//! * `invariants`, `report` — the checks and the table.

mod agents;
mod faults;
mod invariants;
mod ledger;
mod load;
mod report;
mod scenario;
mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use invariants::{DeadLetters, Outcomes, Recovery, Reservations};
pub use report::{ChaosReport, ScenarioReport, render_table};
pub use scenario::Scenario;

use agents::{AGENT_CPU, AgentPlan, Fleet, agent_id};
use faults::{FaultWindow, Targets};
use ledger::Ledger;
use load::Submits;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_client::{Coordinator, transport};
use switchyard_protocol::Subjects;
use switchyard_server::config::Config;
use switchyard_server::state::Keys;
use topology::Topology;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub scenarios: Vec<Scenario>,
    pub agents: usize,
    /// Submits per second.
    pub rate: f64,
    /// How long the load lasts per scenario.
    pub duration: Duration,
    /// The agents' lease (seconds without a heartbeat before they count as dead).
    pub lease_s: f64,
    pub seed: u64,
    /// The `optimizer` binary to start.
    pub optimizer_bin: PathBuf,
    /// How long after the load every task has to be terminal.
    pub drain_within: Duration,
}

impl ChaosOptions {
    /// The `optimizer` binary next to the running executable (where cargo puts both).
    pub fn optimizer_next_to_current_exe() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let path = exe
            .parent()?
            .join(format!("optimizer{}", std::env::consts::EXE_SUFFIX));
        path.is_file().then_some(path)
    }
}

/// Runs every scenario of `options` in turn against `config` (whose server URLs are replaced by
/// each scenario's own servers).
pub async fn run_chaos(
    config: &Config,
    options: &ChaosOptions,
    progress: &dyn Fn(&str),
) -> Result<ChaosReport, Error> {
    let mut scenarios = Vec::with_capacity(options.scenarios.len());
    for &scenario in &options.scenarios {
        progress(&format!("{}: {}", scenario.name(), scenario.spec().fault));
        let report = run_scenario(scenario, config, options, progress).await?;
        progress(&format!(
            "{}: {} ({} tasks, {} lost, {} stuck, {} double-worked)",
            report.scenario,
            if report.passed { "pass" } else { "FAIL" },
            report.tasks,
            report.outcomes.lost,
            report.outcomes.stuck,
            report.double_worked.len()
        ));
        scenarios.push(report);
    }
    Ok(ChaosReport {
        agents: options.agents,
        rate: options.rate,
        duration_s: options.duration.as_secs_f64(),
        lease_s: options.lease_s,
        seed: options.seed,
        passed: scenarios.iter().all(|s| s.passed),
        scenarios,
    })
}

/// What runs during one scenario besides the topology.
struct Running {
    nats: async_nats::Client,
    subjects: Subjects,
    ledger: Ledger,
    fleet: Fleet,
    submits: Submits,
    /// Stops the reservation sampler, which then answers what it saw.
    stop_sampling: watch::Sender<bool>,
    sampler: JoinHandle<Reservations>,
}

/// When things happened during a scenario.
struct Timeline {
    load_started: Instant,
    /// When the load's last submit was due.
    load_end: Instant,
    fault: FaultWindow,
}

async fn run_scenario(
    scenario: Scenario,
    config: &Config,
    options: &ChaosOptions,
    progress: &dyn Fn(&str),
) -> Result<ScenarioReport, Error> {
    let spec = scenario.spec();
    let mut topology = Topology::start(&spec, config, &options.optimizer_bin).await?;
    let mut running = start_fleet(&topology, options).await?;
    progress(&format!(
        "{}: {} agents registered, load starts",
        spec.name, options.agents
    ));
    let timeline = drive(scenario, &mut topology, &mut running, options, progress).await?;
    let mut report = check(scenario, &topology, running, timeline, options).await?;
    report.optimizer_start_retries = topology.startup_restarts;
    report.judge();
    Ok(report)
}

/// Connects, registers the agents and starts sampling their reservations.
async fn start_fleet(topology: &Topology, options: &ChaosOptions) -> Result<Running, Error> {
    let subjects = Subjects::new(topology.config.nats.subject_prefix.clone());
    let nats = transport::connect(&topology.config.nats.url, "chaos-driver").await?;
    let ledger = Ledger::default();
    let plan = AgentPlan {
        lease_s: options.lease_s,
        seed: options.seed,
        ledger: ledger.clone(),
    };
    let fleet = Fleet::start(&topology.config.nats.url, &subjects, options.agents, &plan).await?;
    let (stop_sampling, sampler) = invariants::sample_reservations(
        topology.config.redis.clone(),
        Keys::new(&topology.config.redis.key_prefix),
        (0..options.agents).map(agent_id).collect(),
        (AGENT_CPU * 1000) as i64,
    );
    Ok(Running {
        nats,
        subjects,
        ledger,
        fleet,
        submits: Submits::default(),
        stop_sampling,
        sampler,
    })
}

/// Waits for every task to end (or the deadline), stops the fleet and checks the invariants.
async fn check(
    scenario: Scenario,
    topology: &Topology,
    running: Running,
    timeline: Timeline,
    options: &ChaosOptions,
) -> Result<ScenarioReport, Error> {
    let spec = scenario.spec();
    let submitted = running.submits.all();
    let stored: Vec<String> = submitted
        .iter()
        .filter(|s| s.stored)
        .map(|s| s.envelope.payload.task_id.clone())
        .collect();
    let redis = &topology.config.redis;
    let outcomes = invariants::final_states(redis, &stored, options.drain_within).await?;
    let _ = running.stop_sampling.send(true);
    let reservations = running.sampler.await.unwrap_or_default();
    let dead_letters = invariants::dead_letters(&running.nats, &running.subjects).await?;
    let agent_ids: Vec<String> = (0..options.agents).map(agent_id).collect();
    let dead = invariants::dead_agents(redis, &agent_ids).await?;
    running.fleet.stop().await;
    let fault = &timeline.fault;
    let mut report = ScenarioReport {
        scenario: spec.name,
        fault: spec.fault,
        note: fault.note.clone(),
        fault_at_s: (fault.start - timeline.load_started).as_secs_f64(),
        fault_for_s: (fault.end - fault.start).as_secs_f64(),
        tasks: stored.len() as u64,
        not_accepted: (submitted.len() - stored.len()) as u64,
        outcomes,
        reservations,
        dead_letters,
        ..ScenarioReport::default()
    };
    what_the_agents_saw(
        &mut report,
        &running.ledger,
        dead,
        &timeline,
        spec.recover_from,
    );
    Ok(report)
}

/// Fills in the parts of `report` that come from the agents' ledger and the dead agents.
fn what_the_agents_saw(
    report: &mut ScenarioReport,
    ledger: &Ledger,
    dead: Vec<String>,
    timeline: &Timeline,
    recover_from: scenario::RecoverFrom,
) {
    let killed = ledger.killed_agents();
    let (live_dead, killed_dead): (Vec<String>, Vec<String>) =
        dead.into_iter().partition(|a| !killed.contains(a));
    let intervals = ledger.intervals(Instant::now());
    let grants = ledger.grant_times();
    (report.regranted_after_kill_s, report.never_regranted) =
        invariants::regrants_after_kill(&intervals);
    report.grants = grants.len() as u64;
    report.double_worked = invariants::double_worked(&intervals);
    report.over_capacity_seen = ledger.over_capacity_events();
    report.recovery =
        invariants::recovery(&grants, &timeline.fault, recover_from, timeline.load_end);
    report.live_agents_marked_dead = live_dead;
    report.killed_agents_marked_dead = killed_dead.len() as u64;
    report.unreported_completions = ledger.unreported_count();
}

/// Runs the load, injects the fault a third of the way into it, and waits for the load to end.
/// Answers when the load started and ended (its last submit was due), and the fault's window.
async fn drive(
    scenario: Scenario,
    topology: &mut Topology,
    running: &mut Running,
    options: &ChaosOptions,
    progress: &dyn Fn(&str),
) -> Result<Timeline, Error> {
    let orch =
        Coordinator::with_client(running.nats.clone(), "chaos-load", running.subjects.clone())
            .await?;
    let load_started = Instant::now();
    let load = tokio::spawn(load::run(
        Arc::new(orch),
        options.rate,
        options.duration,
        running.submits.clone(),
    ));
    tokio::time::sleep(options.duration / 3).await;
    let targets = Targets {
        fleet: &mut running.fleet,
        ledger: &running.ledger,
        submits: &running.submits,
        nats: &running.nats,
        subjects: &running.subjects,
    };
    let fault = match faults::inject(scenario, topology, targets).await {
        Ok(fault) => fault,
        Err(e) => {
            load.abort();
            return Err(e);
        }
    };
    progress(&format!("{}: fault over: {}", scenario.name(), fault.note));
    // Every submit is retried for at most a minute after the load's end.
    let load_within = options.duration + Duration::from_secs(90);
    let abort = load.abort_handle();
    match tokio::time::timeout(load_within, load).await {
        Ok(_) => Ok(Timeline {
            load_started,
            load_end: load_started + options.duration,
            fault,
        }),
        Err(_) => {
            abort.abort();
            Err(Error::new(ErrorKind::Timeout, "the load did not finish"))
        }
    }
}
