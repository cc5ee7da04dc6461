//! `switchyard sim --live`: a workload replayed through the real optimizer over NATS and Redis,
//! scaled down and time-compressed, with simulated agents acting out the workload's hidden truth,
//! reported in the simulator's metrics so the two rankings can be compared.
//!
//! For each strategy (not the oracle: it decides from the hidden truth, which a live optimizer
//! does not have) a fresh optimizer replica runs with that strategy as its default, under its own
//! subject and Redis key prefix, so nothing learned in one run leaks into the next. The task
//! stream is the workload's, cut to its first `tasks` tasks; virtual time runs `time_scale` times
//! faster than the wall clock, and every time reported is in virtual seconds, as in `sim`.

mod book;
mod driver;
mod work;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::deployment::Deployment;
use super::{SIM_AGENT_LEASE_S, SubmitClock, spawn_sim_agent};
use book::LiveAgent;
use driver::{Driver, FleetControl};
use switchyard_client::Coordinator;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_decision::StrategyKind;
use switchyard_harness::LocalServers;
use switchyard_protocol::{AgentRegister, validate_agent_id};
use switchyard_server::config::Config;
use switchyard_sim::{SimReport, StrategyMetrics, Workload};
use work::{SpeedFactor, work_model};

/// How a live run is scaled.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Most tasks replayed: the workload's stream is cut to its first `tasks`.
    pub tasks: usize,
    /// Virtual seconds per wall-clock second.
    pub time_scale: f64,
    /// Give up on a strategy after this many wall-clock seconds; its open tasks count as
    /// unfinished.
    pub limit_s: f64,
    /// Start local servers instead of using the config's URLs.
    pub start_servers: bool,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            tasks: 200,
            time_scale: 50.0,
            limit_s: 120.0,
            start_servers: true,
        }
    }
}

/// The workload cut to its first `tasks` tasks (all of them for `None`): the same tasks the
/// full stream starts with, since the stream is drawn in order. This is what a live run replays,
/// and what the offline simulator runs to compare on the same tasks.
pub fn first_tasks(workload: &Workload, tasks: Option<usize>) -> Workload {
    let mut cut = workload.clone();
    if let Some(tasks) = tasks {
        let cap = u32::try_from(tasks).unwrap_or(u32::MAX).max(1);
        cut.tasks.count = cut.tasks.count.min(cap);
    }
    cut
}

/// Replays the workload's first `options.tasks` tasks under every strategy; `progress` gets a
/// line per strategy.
pub async fn run_live(
    config: &Config,
    workload: &Workload,
    options: &LiveOptions,
    progress: impl Fn(&str),
) -> Result<SimReport, Error> {
    check(workload, options)?;
    let workload = Arc::new(first_tasks(workload, Some(options.tasks)));
    let (base, _servers) = base_config(config, &workload, options).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut strategies = BTreeMap::new();
    for kind in StrategyKind::ALL {
        let config = strategy_config(&base, &run[..8], kind);
        let outcome = run_strategy(&config, &workload, options).await?;
        let metrics = StrategyMetrics::from_outcome(&outcome);
        progress(&format!(
            "{kind}: {} completed, {} failed, {} unfinished, makespan {:.1} s (virtual)",
            metrics.tasks_completed,
            metrics.tasks_failed,
            metrics.tasks_unfinished,
            metrics.makespan_s
        ));
        strategies.insert(kind.as_str().to_owned(), metrics);
    }
    Ok(SimReport {
        workload: workload.name.clone(),
        seed: workload.seed,
        tasks: workload.tasks.count,
        agents: workload.agent_count(),
        strategies,
    })
}

/// The configuration every strategy's run starts from (servers, the workload's tuning), and the
/// local servers when the run starts its own (they live as long as the returned handle).
async fn base_config(
    config: &Config,
    workload: &Workload,
    options: &LiveOptions,
) -> Result<(Config, Option<LocalServers>), Error> {
    let mut base = config.clone();
    let servers = if options.start_servers {
        let servers = LocalServers::start()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Harness, "cannot start local servers", e))?;
        base.nats.url = servers.nats.url();
        base.redis.url = servers.redis.url();
        Some(servers)
    } else {
        None
    };
    base.coordination.learning_rate = workload.learning_rate;
    base.coordination.max_candidates = workload.max_candidates;
    base.coordination.dispatch_window = workload.dispatch_window;
    base.coordination.head_reservation = workload.head_reservation;
    base.tenants.weights = workload.tenants.clone();
    // In-process replicas must not fight a running optimizer for its metrics port.
    base.metrics.addr = "127.0.0.1:0".into();
    Ok((base, servers))
}

/// Refuses what cannot run live before any server is started.
fn check(workload: &Workload, options: &LiveOptions) -> Result<(), Error> {
    let invalid = |what: String| Err(Error::new(ErrorKind::InvalidInput, what));
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        return invalid(format!(
            "time scale must be > 0, not {}",
            options.time_scale
        ));
    }
    if !(options.limit_s.is_finite() && options.limit_s > 0.0) {
        return invalid(format!("limit must be > 0 s, not {}", options.limit_s));
    }
    for t in &workload.agent_types {
        let last = switchyard_sim::engine::agent_id(&t.name, t.count.saturating_sub(1));
        if !validate_agent_id(&last) {
            return invalid(format!(
                "agent type {:?} cannot run live: agent ids like {last:?} must be 1-64 of [A-Za-z0-9_-]",
                t.name
            ));
        }
    }
    Ok(())
}

/// A config of its own for one strategy: its default strategy, and prefixes no other run uses.
fn strategy_config(base: &Config, run: &str, kind: StrategyKind) -> Config {
    let mut config = base.clone();
    let prefix = format!("simlive-{run}-{}", kind.as_str().replace('_', "-"));
    config.nats.subject_prefix = prefix.clone();
    config.redis.key_prefix = prefix;
    config.coordination.default_strategy = kind.as_str().to_owned();
    config
}

/// One strategy: an optimizer replica, the fleet, the driver; everything stopped afterwards.
async fn run_strategy(
    config: &Config,
    workload: &Arc<Workload>,
    options: &LiveOptions,
) -> Result<switchyard_sim::Outcome, Error> {
    let deployment = Deployment::start(config, 1, false).await?;
    let result = drive(&deployment, workload, options).await;
    deployment.stop().await;
    result
}

async fn drive(
    deployment: &Deployment,
    workload: &Arc<Workload>,
    options: &LiveOptions,
) -> Result<switchyard_sim::Outcome, Error> {
    let (fleet, agents) = start_fleet(deployment, workload).await?;
    let orch = Coordinator::with_client(
        deployment.nats_client("simlive-driver").await?,
        "simlive-driver",
        deployment.subjects(),
    )
    .await?;
    let replies = orch.events();
    let driver = Driver::new(workload, &orch, &fleet, options.time_scale);
    let outcome = driver
        .run(replies, Duration::from_secs_f64(options.limit_s))
        .await;
    for stop in &fleet.stops {
        let _ = stop.send(true);
    }
    for agent in agents {
        let _ = agent.await;
    }
    outcome
}

/// Registers one simulated agent per workload agent, each acting out its type's truth.
async fn start_fleet(
    deployment: &Deployment,
    workload: &Arc<Workload>,
) -> Result<(FleetControl, Vec<tokio::task::JoinHandle<()>>), Error> {
    let client = deployment.nats_client("simlive-agents").await?;
    // The driver follows the optimizer's replies, not the agents' own reports: drain those.
    let (events, mut drain) = mpsc::channel(1024);
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    let mut control = FleetControl {
        factors: Vec::new(),
        stops: Vec::new(),
    };
    let mut handles = Vec::new();
    for agent in &book::fleet(workload) {
        let factor = SpeedFactor::healthy();
        let (stop, stopped) = watch::channel(false);
        let handle = spawn_sim_agent(
            client.clone(),
            deployment.subjects(),
            registration(agent),
            work_model(workload.clone(), agent.type_index, factor.clone()),
            SubmitClock::default(),
            events.clone(),
            stopped,
        )
        .await?;
        control.factors.push(factor);
        control.stops.push(stop);
        handles.push(handle);
    }
    Ok((control, handles))
}

fn registration(agent: &LiveAgent) -> AgentRegister {
    let mut registration =
        AgentRegister::new(agent.id.clone(), agent.type_name.clone()).lease(SIM_AGENT_LEASE_S);
    registration.max_resources = agent.capacity.to_units();
    registration
}

/// Strategy names ordered by mean completion time, best first (ties by name).
pub fn ranking(report: &SimReport, include: impl Fn(&str) -> bool) -> Vec<String> {
    let mut rows: Vec<(&String, f64)> = report
        .strategies
        .iter()
        .filter(|(name, _)| include(name))
        .map(|(name, m)| (name, m.mean_completion_s))
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    rows.into_iter().map(|(name, _)| name.clone()).collect()
}
