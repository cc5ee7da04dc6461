//! `switchyard demo`: optimizer replicas plus a mixed fleet of simulated agents working through
//! a few hundred tasks with priorities, resource needs and dependencies, over real servers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::deployment::Deployment;
use super::{
    FleetEvent, LatencySummary, SIM_AGENT_LEASE_S, SubmitClock, WorkModel, spawn_sim_agent,
    stop_fleet,
};
use switchyard_client::error::Error;
use switchyard_client::{ClientEvent, Coordinator};
use switchyard_protocol::{AgentRegister, ReplyStatus, Subjects, TaskGrant, TaskSubmit};
use switchyard_server::config::Config;
use switchyard_sim::rng::SplitMix;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub agents: usize,
    pub tasks: usize,
    pub replicas: usize,
    pub seed: u64,
    /// Start local servers instead of using the config's URLs.
    pub start_servers: bool,
    /// Serve the web dashboard (with replay allowed) on this address while the demo runs;
    /// `None`: no dashboard.
    pub dashboard: Option<String>,
    /// Keep the deployment (and the dashboard) up this long after the tasks finished, so a
    /// newcomer can look around.
    pub hold: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            agents: 12,
            tasks: 300,
            replicas: 2,
            seed: 7,
            start_servers: true,
            dashboard: None,
            hold: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub agent_type: String,
    pub tasks: u64,
    /// Mean share of the agent's capacity reserved over the run (sampled from Redis).
    pub utilization: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub tasks_submitted: u64,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub grant_latency_ms: LatencySummary,
    pub elapsed_s: f64,
    pub replicas: usize,
    pub agents: Vec<AgentRow>,
    /// The closing announcement, one row per group, in the pattern chosen for it.
    pub announcements: Vec<super::announce::AnnouncementRow>,
}

/// The fleet's agent types: (type, cpu, memory MB, tokens).
const AGENT_TYPES: [(&str, f64, f64, f64); 3] = [
    ("llm", 2.0, 4096.0, 20_000.0),
    ("backend", 8.0, 16_384.0, 0.0),
    ("data", 4.0, 32_768.0, 0.0),
];

/// The demo's task mix: LLM summaries (tokens), compiles (cpu), ETL jobs (memory).
fn demo_task(rng: &mut SplitMix, run: &str, i: usize) -> TaskSubmit {
    let id = format!("{run}-t{i:04}");
    let priority = (rng.next_u64() % 10 + 1) as u8;
    let task = match rng.next_u64() % 3 {
        0 => TaskSubmit::new(id)
            .task_type("summarize")
            .resource("tokens", rng.range(2000.0, 6000.0).round())
            .resource("cpu", 0.5),
        1 => TaskSubmit::new(id)
            .task_type("compile")
            .resource("cpu", rng.range(2.0, 4.0).round())
            .resource("memory", 2048.0),
        _ => TaskSubmit::new(id)
            .task_type("etl")
            .resource("memory", rng.range(4096.0, 12288.0).round())
            .resource("cpu", 1.0),
    };
    let mut task = task
        .priority(priority)
        .estimated_duration(rng.range(0.02, 0.12));
    if i >= 10 && rng.next_u64() % 5 == 0 {
        let dep = i - 1 - (rng.next_u64() % 10) as usize;
        task = task.depends_on(format!("{run}-t{dep:04}"));
    }
    task
}

/// Work model: the estimate, with 3% of tasks failing.
fn demo_work(seed: u64) -> WorkModel {
    Arc::new(move |g: &TaskGrant| {
        let h = g.task_id.bytes().fold(seed, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        (
            Duration::from_secs_f64(g.estimated_duration_s),
            SplitMix::new(h).next_u64() % 100 >= 3,
        )
    })
}

/// Runs the demo against `deployment`; `progress` receives a status line now and then.
pub async fn run_demo(
    config: &Config,
    options: &DemoOptions,
    progress: impl Fn(&str),
) -> Result<DemoSummary, Error> {
    let mut config = config.clone();
    // The demo is a sandbox: its dashboard may replay dead letters.
    config.dashboard.allow_replay = true;
    let mut deployment =
        Deployment::start(&config, options.replicas, options.start_servers).await?;
    if let Some(addr) = &options.dashboard {
        match deployment.serve_dashboard(addr).await {
            Ok(Some(bound)) => progress(&format!("dashboard: http://{bound}/")),
            Ok(None) => progress("dashboard is off ([dashboard] enabled = false)"),
            Err(e) => progress(&format!("no dashboard: {e}")),
        }
    }
    let result = drive(&deployment, options, &progress).await;
    if !options.hold.is_zero() && options.dashboard.is_some() {
        progress(&format!(
            "holding the deployment for {}s so the dashboard stays up (Ctrl-C ends it)",
            options.hold.as_secs()
        ));
        tokio::select! {
            _ = tokio::time::sleep(options.hold) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    deployment.stop().await;
    result
}

/// Starts the fleet, submits every task, and tallies until all have finished or two minutes
/// have passed.
async fn drive(
    deployment: &Deployment,
    options: &DemoOptions,
    progress: &impl Fn(&str),
) -> Result<DemoSummary, Error> {
    let run = format!("demo{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (events_tx, mut events_rx) = mpsc::channel(65_536);
    let clock = SubmitClock::default();
    let fleet = start_fleet(deployment, options, &run, &clock, &events_tx, &stop_rx).await?;
    let orch = Coordinator::with_client(
        deployment.nats_client("demo-orchestrator").await?,
        &format!("{run}-orch"),
        deployment.subjects(),
    )
    .await?;
    // Subscribed before the first submit, so no reply is missed.
    let mut replies = orch.events();
    let started = Instant::now();
    submit_tasks(&orch, &clock, options, &run).await?;
    let mut tally = Tally::default();
    let deadline = started + Duration::from_secs(120);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    while tally.finished() < options.tasks && Instant::now() < deadline {
        tokio::select! {
            event = replies.recv() => tally.reply(event),
            Some(event) = events_rx.recv() => tally.fleet(event),
            _ = ticker.tick() => {
                tally.sample(&orch).await;
                progress(&tally.progress_line(options.tasks));
            }
        }
    }
    stop_fleet(&stop_tx, fleet.agents).await;
    let mut summary = tally.summary(options, started.elapsed(), &fleet.agent_types);
    summary.announcements = announce(deployment, &orch, &run, &summary, &fleet.agent_types).await?;
    Ok(summary)
}

/// The demo's simulated agents: their tasks, and each agent's type by id.
struct DemoFleet {
    agents: Vec<tokio::task::JoinHandle<()>>,
    agent_types: BTreeMap<String, String>,
}

/// Registers `options.agents` simulated agents, taking the [`AGENT_TYPES`] in turn.
async fn start_fleet(
    deployment: &Deployment,
    options: &DemoOptions,
    run: &str,
    clock: &SubmitClock,
    events: &mpsc::Sender<FleetEvent>,
    stop: &watch::Receiver<bool>,
) -> Result<DemoFleet, Error> {
    let client = deployment.nats_client("demo-agents").await?;
    let subjects = deployment.subjects();
    let mut fleet = DemoFleet {
        agents: Vec::new(),
        agent_types: BTreeMap::new(),
    };
    for i in 0..options.agents {
        let (kind, cpu, mem, tokens) = AGENT_TYPES[i % AGENT_TYPES.len()];
        let id = format!("{run}-{kind}-{i:02}");
        fleet.agent_types.insert(id.clone(), kind.to_string());
        let reg = AgentRegister::new(id, kind)
            .capacity("cpu", cpu)
            .capacity("memory", mem)
            .capacity("tokens", tokens)
            .lease(SIM_AGENT_LEASE_S);
        let agent = spawn_sim_agent(
            client.clone(),
            subjects.clone(),
            reg,
            demo_work(options.seed),
            clock.clone(),
            events.clone(),
            stop.clone(),
        )
        .await?;
        fleet.agents.push(agent);
    }
    Ok(fleet)
}

/// Publishes the whole task mix at once, noting each submit's time for the grant latency.
async fn submit_tasks(
    orch: &Coordinator,
    clock: &SubmitClock,
    options: &DemoOptions,
    run: &str,
) -> Result<(), Error> {
    let mut rng = SplitMix::new(options.seed);
    for i in 0..options.tasks {
        let task = demo_task(&mut rng, run, i);
        let envelope = switchyard_protocol::Envelope::new(
            orch.client_id().to_string(),
            switchyard_protocol::MessageType::TaskSubmit,
            task,
            switchyard_protocol::now_ms(),
        );
        clock.record(envelope.message_id.to_string());
        orch.publish(&envelope).await?;
    }
    Ok(())
}

/// The closing announcement of the run's outcome to the fleet's groups.
async fn announce(
    deployment: &Deployment,
    orch: &Coordinator,
    run: &str,
    summary: &DemoSummary,
    agent_types: &BTreeMap<String, String>,
) -> Result<Vec<super::announce::AnnouncementRow>, Error> {
    let headline = serde_json::json!({
        "run": run,
        "completed": summary.tasks_completed,
        "failed": summary.tasks_failed,
    });
    super::announce::announce_run(
        deployment.nats_client("demo-announce").await?,
        &deployment.subjects(),
        orch.client_id(),
        agent_types,
        headline,
    )
    .await
}

#[derive(Default)]
struct Tally {
    granted: u64,
    completed: HashSet<String>,
    failed: HashSet<String>,
    latencies: Vec<Duration>,
    tasks_per_agent: BTreeMap<String, u64>,
    utilization_sum: BTreeMap<String, f64>,
    samples: u64,
    queue_depth: u64,
}

impl Tally {
    fn finished(&self) -> usize {
        self.completed.len() + self.failed.len()
    }

    fn progress_line(&self, submitted: usize) -> String {
        format!(
            "submitted {submitted} · granted {} · completed {} · failed {} · queued {}",
            self.granted,
            self.completed.len(),
            self.failed.len(),
            self.queue_depth
        )
    }

    fn reply(&mut self, event: Result<ClientEvent, tokio::sync::broadcast::error::RecvError>) {
        let Ok(ClientEvent::Reply(reply)) = event else {
            return;
        };
        let Some(task_id) = reply.payload.task_id.clone() else {
            return;
        };
        match reply.payload.status {
            ReplyStatus::Completed => {
                self.completed.insert(task_id);
            }
            ReplyStatus::Failed => {
                self.failed.insert(task_id);
            }
            _ => {}
        }
    }

    fn fleet(&mut self, event: FleetEvent) {
        if let FleetEvent::Granted {
            agent_id, latency, ..
        } = event
        {
            self.granted += 1;
            *self.tasks_per_agent.entry(agent_id).or_default() += 1;
            self.latencies.extend(latency);
        }
    }

    async fn sample(&mut self, orch: &Coordinator) {
        let Ok(status) = orch.status().await else {
            return;
        };
        self.queue_depth = status.queue_depth;
        self.samples += 1;
        for agent in status.agents {
            *self.utilization_sum.entry(agent.agent_id).or_default() += agent.utilization;
        }
    }

    fn summary(
        &self,
        options: &DemoOptions,
        elapsed: Duration,
        types: &BTreeMap<String, String>,
    ) -> DemoSummary {
        let agents = types
            .iter()
            .map(|(id, kind)| AgentRow {
                agent_id: id.clone(),
                agent_type: kind.clone(),
                tasks: self.tasks_per_agent.get(id).copied().unwrap_or(0),
                utilization: self.utilization_sum.get(id).copied().unwrap_or(0.0)
                    / self.samples.max(1) as f64,
            })
            .collect();
        DemoSummary {
            tasks_submitted: options.tasks as u64,
            tasks_completed: self.completed.len() as u64,
            tasks_failed: self.failed.len() as u64,
            grant_latency_ms: LatencySummary::from_durations(&self.latencies),
            elapsed_s: elapsed.as_secs_f64(),
            replicas: options.replicas,
            agents,
            announcements: Vec::new(),
        }
    }
}

/// The summary as a human-readable table.
pub fn render_table(s: &DemoSummary) -> String {
    let mut out = format!(
        "\nSwitchyard demo: {} replicas, {} agents, {:.1}s\n\n  tasks submitted  {:>6}\n  tasks completed  {:>6}\n  tasks failed     {:>6}  (3% injected failures and their dependents)\n  request→grant    p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms ({} grants)\n\n  {:<22} {:<8} {:>6} {:>12}\n",
        s.replicas,
        s.agents.len(),
        s.elapsed_s,
        s.tasks_submitted,
        s.tasks_completed,
        s.tasks_failed,
        s.grant_latency_ms.p50,
        s.grant_latency_ms.p99,
        s.grant_latency_ms.max,
        s.grant_latency_ms.samples,
        "agent",
        "type",
        "tasks",
        "utilization"
    );
    for a in &s.agents {
        out.push_str(&format!(
            "  {:<22} {:<8} {:>6} {:>11.1}%\n",
            a.agent_id,
            a.agent_type,
            a.tasks,
            a.utilization * 100.0
        ));
    }
    if !s.announcements.is_empty() {
        out.push_str(&format!(
            "\n  closing announcement (pattern by group size and shape)\n  {:<10} {:>7} {:<13} {:>9} {:>14}\n",
            "group", "members", "pattern", "delivered", "max latency"
        ));
    }
    for a in &s.announcements {
        out.push_str(&format!(
            "  {:<10} {:>7} {:<13} {:>9} {:>11.1} ms\n",
            a.group, a.members, a.pattern, a.delivered, a.max_latency_ms
        ));
    }
    out
}

/// Subjects for a config (convenience for drivers).
pub fn subjects_of(config: &Config) -> Subjects {
    Subjects::new(config.nats.subject_prefix.clone())
}
