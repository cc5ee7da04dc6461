//! `switchyard bench`: a steady offered load through the real path (submit over JetStream →
//! optimizer → Redis → grant on the agent's subject → completion → release), reporting full
//! lifecycles per second and request→grant latency percentiles. Agents complete their grants at
//! once, so capacity recycles and the optimizer, not the work, is what is measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::deployment::Deployment;
use super::{
    FleetEvent, LatencySummary, SIM_AGENT_LEASE_S, SubmitClock, WorkModel, spawn_sim_agent,
    stop_fleet,
};
use crate::client::{ClientEvent, Coordinator};
use crate::config::Config;
use crate::error::Error;
use crate::protocol::{AgentRegister, Envelope, MessageType, ReplyStatus, TaskSubmit, now_ms};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Optimizer replicas (in-process, sharing this machine).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Offered submits per second; 0 = as fast as `--inflight` allows.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Simulated agents (cpu 8 each; every task needs 1 cpu).
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Most submits awaiting their JetStream ack at once.
    #[arg(long, default_value_t = 2048)]
    pub inflight: usize,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[arg(skip)]
    pub start_servers: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub replicas: usize,
    pub agents: usize,
    pub offered_rate: u64,
    pub duration_s: f64,
    pub submitted: u64,
    pub completed: u64,
    /// Completed lifecycles per second over the load window.
    pub lifecycles_per_s: f64,
    pub grant_latency_ms: LatencySummary,
    /// Tasks granted more than once (must be 0).
    pub double_grants: u64,
    /// Tasks submitted but not completed within the drain period after the load.
    pub unfinished: u64,
}

impl BenchReport {
    pub fn render(&self) -> String {
        format!(
            "replicas {} · agents {} · offered {}/s for {:.0}s\nsubmitted {} · completed {} · unfinished {} · double grants {}\nlifecycles/s {:.0}\nrequest→grant ms: p50 {:.3} · p99 {:.3} · p999 {:.3} · max {:.3} ({} samples)",
            self.replicas,
            self.agents,
            self.offered_rate,
            self.duration_s,
            self.submitted,
            self.completed,
            self.unfinished,
            self.double_grants,
            self.lifecycles_per_s,
            self.grant_latency_ms.p50,
            self.grant_latency_ms.p99,
            self.grant_latency_ms.p999,
            self.grant_latency_ms.max,
            self.grant_latency_ms.samples
        )
    }
}

pub async fn run_bench(
    config: &Config,
    options: &BenchOptions,
    progress: impl Fn(&str),
) -> Result<BenchReport, Error> {
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

async fn start_fleet(
    deployment: &Deployment,
    options: &BenchOptions,
    run: &str,
    clock: &SubmitClock,
    events: mpsc::Sender<FleetEvent>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let mut fleet = Vec::new();
    let instant: WorkModel = Arc::new(|_| (Duration::ZERO, true));
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(deployment.nats_client(&format!("bench-agents-{i}")).await?);
    }
    for i in 0..options.agents {
        let reg = AgentRegister::new(format!("{run}-a{i:03}"), "bench")
            .capacity("cpu", 8.0)
            .capacity("memory", 8192.0)
            .lease(SIM_AGENT_LEASE_S);
        let client = clients[i % clients.len()].clone();
        let agent = spawn_sim_agent(
            client,
            deployment.subjects(),
            reg,
            instant.clone(),
            clock.clone(),
            events.clone(),
            stop.clone(),
        )
        .await?;
        fleet.push(agent);
    }
    Ok(fleet)
}

async fn drive(
    deployment: &Deployment,
    options: &BenchOptions,
    progress: &impl Fn(&str),
) -> Result<BenchReport, Error> {
    let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (events_tx, mut events_rx) = mpsc::channel(1 << 20);
    let clock = SubmitClock::default();
    let fleet = start_fleet(deployment, options, &run, &clock, events_tx, &stop_rx).await?;
    let orch = Arc::new(
        Coordinator::with_client(
            deployment.nats_client("bench-orchestrator").await?,
            &format!("{run}-orch"),
            deployment.subjects(),
        )
        .await?,
    );
    let mut replies = orch.events();
    let (count_tx, count_rx) = watch::channel(0u64);
    let submitter = tokio::spawn(submit_load(
        orch.clone(),
        clock.clone(),
        options.clone(),
        run.clone(),
        count_tx,
    ));

    let started = Instant::now();
    let load_end = started + Duration::from_secs(options.duration);
    let drain_end = load_end + Duration::from_secs(10);
    let mut tally = Tally::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        let submitted = *count_rx.borrow();
        if now >= drain_end
            || (now >= load_end && submitter.is_finished() && tally.completed >= submitted)
        {
            break;
        }
        tokio::select! {
            event = replies.recv() => tally.reply(event, now <= load_end),
            Some(event) = events_rx.recv() => tally.fleet(event),
            _ = ticker.tick() => progress(&format!("{:>4.0}s submitted {submitted} completed {}", started.elapsed().as_secs_f64(), tally.completed)),
        }
    }
    stop_fleet(&stop_tx, fleet).await;
    let submitted = *count_rx.borrow();
    Ok(BenchReport {
        replicas: options.replicas,
        agents: options.agents,
        offered_rate: options.rate,
        duration_s: options.duration as f64,
        submitted,
        completed: tally.completed,
        lifecycles_per_s: tally.completed_in_window as f64 / options.duration.max(1) as f64,
        grant_latency_ms: LatencySummary::from_durations(&tally.latencies),
        double_grants: tally.grants.values().filter(|n| **n > 1).count() as u64,
        unfinished: submitted.saturating_sub(tally.completed),
    })
}

/// Open-loop submitter: every millisecond, sends what the offered rate says is due, keeping at
/// most `inflight` publishes awaiting their JetStream ack.
async fn submit_load(
    orch: Arc<Coordinator>,
    clock: SubmitClock,
    options: BenchOptions,
    run: String,
    count: watch::Sender<u64>,
) {
    let started = Instant::now();
    let end = started + Duration::from_secs(options.duration);
    let mut pending = FuturesUnordered::new();
    let mut sent: u64 = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < end {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(result) = pending.next(), if !pending.is_empty() => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "submit failed");
                }
                continue;
            }
        }
        let due = if options.rate == 0 {
            u64::MAX
        } else {
            (started.elapsed().as_secs_f64() * options.rate as f64) as u64
        };
        while sent < due && pending.len() < options.inflight {
            let task = TaskSubmit::new(format!("{run}-{sent}"))
                .resource("cpu", 1.0)
                .estimated_duration(0.0);
            let envelope = Envelope::new(
                orch.client_id().to_string(),
                MessageType::TaskSubmit,
                task,
                now_ms(),
            );
            clock.record(envelope.message_id.to_string());
            let orch = orch.clone();
            pending.push(async move { orch.publish(&envelope).await });
            sent += 1;
        }
        let _ = count.send(sent);
    }
    while pending.next().await.is_some() {}
    let _ = count.send(sent);
}

#[derive(Default)]
struct Tally {
    completed: u64,
    completed_in_window: u64,
    latencies: Vec<Duration>,
    grants: HashMap<String, u32>,
}

impl Tally {
    fn reply(
        &mut self,
        event: Result<ClientEvent, tokio::sync::broadcast::error::RecvError>,
        in_window: bool,
    ) {
        if let Ok(ClientEvent::Reply(r)) = event {
            if r.payload.status == ReplyStatus::Completed {
                self.completed += 1;
                self.completed_in_window += u64::from(in_window);
            }
        } else if let Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) = event {
            tracing::warn!(
                lost = n,
                "bench fell behind reading replies; counts are low"
            );
        }
    }

    fn fleet(&mut self, event: FleetEvent) {
        if let FleetEvent::Granted {
            task_id, latency, ..
        } = event
        {
            *self.grants.entry(task_id).or_default() += 1;
            self.latencies.extend(latency);
        }
    }
}
