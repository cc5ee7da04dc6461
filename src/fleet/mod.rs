//! Simulated agent fleets and the drivers behind `switchyard demo`, `switchyard bench`,
//! `switchyard sim --live` and `switchyard chaos`.
//!
//! A simulated agent is a real client: it registers over NATS, receives its grants from its
//! durable consumer, "works" for a while (a sleep decided by a [`WorkModel`]) and reports the
//! completion. Only the work is simulated; every message takes the production path.

mod announce;
pub use announce::AnnouncementRow;
mod baseline;
pub mod bench;
pub mod chaos;
mod counters;
pub use counters::{CommandCalls, Cost};
pub mod decision_cost;
pub mod demo;
pub mod deployment;
pub mod live;
pub mod message_bench;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use stats::{LatencySummary, percentile};
use switchyard_client::Agent;
use switchyard_client::error::Error;
use switchyard_protocol::{AgentRegister, Subjects, TaskGrant};

/// Lease of simulated agents: if a demo or bench process dies, its agents are marked dead
/// (and their tasks re-queued) instead of lingering as active.
pub const SIM_AGENT_LEASE_S: f64 = 10.0;

/// Decides how long a granted task takes and whether it succeeds.
pub type WorkModel = Arc<dyn Fn(&TaskGrant) -> (Duration, bool) + Send + Sync>;

/// When each submit was sent, by message id, so agents can time request → grant.
#[derive(Clone, Default)]
pub struct SubmitClock(Arc<Mutex<HashMap<String, Instant>>>);

impl SubmitClock {
    pub fn record(&self, message_id: String) {
        self.map().insert(message_id, Instant::now());
    }

    /// Time since the submit, forgetting it (each task is timed once).
    pub fn elapsed(&self, message_id: &str) -> Option<Duration> {
        self.map().remove(message_id).map(|t| t.elapsed())
    }

    /// The map, also after a panic elsewhere: each use is one insert or remove, so it is whole.
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a simulated agent reports to its driver.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    Granted {
        task_id: String,
        agent_id: String,
        grant_seq: u64,
        latency: Option<Duration>,
    },
    Finished {
        task_id: String,
        agent_id: String,
        success: bool,
        busy: Duration,
    },
}

/// Starts one simulated agent; it runs until `stop` turns true.
pub async fn spawn_sim_agent(
    client: async_nats::Client,
    subjects: Subjects,
    registration: AgentRegister,
    work: WorkModel,
    clock: SubmitClock,
    events: mpsc::Sender<FleetEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let agent = Arc::new(Agent::register(client, subjects, registration).await?);
    let mut grants = agent.grants().await?;
    Ok(tokio::spawn(async move {
        let mut work_in_progress = JoinSet::new();
        loop {
            let next = tokio::select! {
                _ = stop.changed() => break,
                next = grants.next() => next,
            };
            let Some(Ok(grant)) = next else { break };
            let latency = grant
                .correlation_id
                .as_deref()
                .and_then(|id| clock.elapsed(id));
            let g = grant.payload;
            let _ = events
                .send(FleetEvent::Granted {
                    task_id: g.task_id.clone(),
                    agent_id: g.agent_id.clone(),
                    grant_seq: g.grant_seq,
                    latency,
                })
                .await;
            let (agent, work, events) = (agent.clone(), work.clone(), events.clone());
            work_in_progress.spawn(async move { perform(&agent, &work, g, &events).await });
            while work_in_progress.try_join_next().is_some() {}
        }
        work_in_progress.abort_all();
        // Leave the fleet at once, so a later run against the same servers does not grant work
        // to an agent that is gone until its lease runs out.
        match tokio::time::timeout(Duration::from_secs(5), agent.deregister()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(agent_id = %agent.agent_id(), error = %e, "deregistration failed")
            }
            Err(_) => tracing::warn!(agent_id = %agent.agent_id(), "deregistration timed out"),
        }
    }))
}

/// Stops a fleet: signals `stop` and waits for every agent to deregister.
pub async fn stop_fleet(stop: &watch::Sender<bool>, agents: Vec<tokio::task::JoinHandle<()>>) {
    let _ = stop.send(true);
    for agent in agents {
        let _ = agent.await;
    }
}

async fn perform(
    agent: &Agent,
    work: &WorkModel,
    grant: TaskGrant,
    events: &mpsc::Sender<FleetEvent>,
) {
    let (duration, success) = work(&grant);
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
    if let Err(e) = agent
        .complete_grant(&grant, success, duration.as_secs_f64())
        .await
    {
        tracing::warn!(task_id = %grant.task_id, error = %e, "completion not sent");
        return;
    }
    let _ = events
        .send(FleetEvent::Finished {
            task_id: grant.task_id,
            agent_id: grant.agent_id,
            success,
            busy: duration,
        })
        .await;
}
