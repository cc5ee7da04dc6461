//! The scenario's fleet: in-process agents with short leases that work each grant for a random
//! short time, record it in the [`Ledger`], and report it (retrying while NATS is away, as a real
//! agent would). The agent-kill fault drops some of them mid-task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::ledger::Ledger;
use switchyard_client::error::Error;
use switchyard_client::{Agent, GrantStream, transport};
use switchyard_protocol::{AgentRegister, Subjects, TaskGrant};
use switchyard_sim::rng::SplitMix;

/// Every agent carries this many cpus; every task needs one.
pub(crate) const AGENT_CPU: u64 = 4;
/// Shortest and longest time an agent works on a grant (ms).
const WORK_MS: (f64, f64) = (100.0, 1_000.0);
/// Share of the grants an agent reports as failed (so dependents fail in cascade too).
const FAIL_SHARE: f64 = 0.05;
/// How long an agent keeps trying to get one completion stored.
const REPORT_WITHIN: Duration = Duration::from_secs(120);
/// Agents share this many NATS connections.
const CONNECTIONS: usize = 4;

/// What every agent of the fleet shares.
#[derive(Clone)]
pub(crate) struct AgentPlan {
    pub(crate) lease_s: f64,
    pub(crate) seed: u64,
    pub(crate) ledger: Ledger,
}

struct Running {
    id: String,
    task: JoinHandle<()>,
}

/// The running agents and the switch that stops them.
pub(crate) struct Fleet {
    agents: Vec<Running>,
    stop: watch::Sender<bool>,
}

pub(crate) fn agent_id(i: usize) -> String {
    format!("chaos-agent-{i:03}")
}

impl Fleet {
    /// Registers `count` agents (each waits for an optimizer's confirmation).
    pub(crate) async fn start(
        nats_url: &str,
        subjects: &Subjects,
        count: usize,
        plan: &AgentPlan,
    ) -> Result<Fleet, Error> {
        let names: Vec<String> = (0..CONNECTIONS)
            .map(|i| format!("chaos-agents-{i}"))
            .collect();
        let clients =
            futures::future::try_join_all(names.iter().map(|n| transport::connect(nats_url, n)))
                .await?;
        let (stop, stop_rx) = watch::channel(false);
        let registrations = (0..count).map(|i| {
            let registration = AgentRegister::new(agent_id(i), "chaos")
                .capacity("cpu", AGENT_CPU as f64)
                .capacity("memory", 4096.0)
                .lease(plan.lease_s);
            Agent::register(
                clients[i % clients.len()].clone(),
                subjects.clone(),
                registration,
            )
        });
        let registered: Vec<Agent> = futures::stream::iter(registrations)
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut agents = Vec::with_capacity(count);
        for agent in registered {
            let grants = agent.grants().await?;
            let id = agent.agent_id().to_string();
            let task = tokio::spawn(work_grants(
                Arc::new(agent),
                grants,
                plan.clone(),
                stop_rx.clone(),
            ));
            agents.push(Running { id, task });
        }
        Ok(Fleet { agents, stop })
    }

    /// Drops every `every`-th agent as a crashed process would go: no completion, no
    /// deregistration, no more heartbeats. Answers how many.
    pub(crate) fn kill_every(&mut self, every: usize, ledger: &Ledger) -> usize {
        let mut killed = 0;
        for running in self.agents.iter().step_by(every.max(1)) {
            running.task.abort();
            ledger.killed(&running.id);
            killed += 1;
        }
        killed
    }

    /// Stops every agent (their work in progress is dropped) and waits until they have.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        for running in std::mem::take(&mut self.agents) {
            running.task.abort();
            let _ = running.task.await;
        }
    }
}

impl Drop for Fleet {
    /// A scenario that fails half-way leaves no agent running (after [`Fleet::stop`] this finds
    /// nothing left to do).
    fn drop(&mut self) {
        for running in &self.agents {
            running.task.abort();
        }
    }
}

/// One agent: takes grants until stopped, working each in its own task.
async fn work_grants(
    agent: Arc<Agent>,
    mut grants: GrantStream,
    plan: AgentPlan,
    mut stop: watch::Receiver<bool>,
) {
    let held = Arc::new(AtomicU64::new(0));
    let mut work = JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            next = grants.next() => next,
        };
        let grant = match next {
            Some(Ok(grant)) => grant.payload,
            Some(Err(_)) => continue,
            None => break,
        };
        plan.ledger
            .started(&grant.task_id, &grant.agent_id, grant.grant_seq);
        let cpu = grant.resources.get("cpu").copied().unwrap_or(0.0).ceil() as u64;
        let holding = held.fetch_add(cpu, Ordering::SeqCst) + cpu;
        if holding > AGENT_CPU {
            plan.ledger.over_capacity(format!(
                "{} handed {holding} cpus (has {AGENT_CPU})",
                grant.agent_id
            ));
        }
        work.spawn(perform(agent.clone(), grant, plan.clone(), held.clone()));
        while work.try_join_next().is_some() {}
    }
}

/// Works on one grant, then reports it, retrying while the report cannot be stored.
async fn perform(agent: Arc<Agent>, grant: TaskGrant, plan: AgentPlan, held: Arc<AtomicU64>) {
    let mut rng = SplitMix::keyed(plan.seed, fnv(&grant.task_id), grant.grant_seq);
    let busy = Duration::from_secs_f64(rng.range(WORK_MS.0, WORK_MS.1) / 1_000.0);
    let success = rng.unit() >= FAIL_SHARE;
    tokio::time::sleep(busy).await;
    let cpu = grant.resources.get("cpu").copied().unwrap_or(0.0).ceil() as u64;
    // Released before reporting: the optimizer can re-use the capacity only after the report.
    held.fetch_sub(cpu, Ordering::SeqCst);
    plan.ledger
        .finished(&grant.task_id, &grant.agent_id, grant.grant_seq, success);
    let started = Instant::now();
    while let Err(e) = agent
        .complete_grant(&grant, success, busy.as_secs_f64())
        .await
    {
        if started.elapsed() > REPORT_WITHIN {
            tracing::warn!(task_id = %grant.task_id, error = %e, "completion never stored");
            plan.ledger.unreported();
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// FNV-1a of a task id: a stable key for its random stream.
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
