//! The benchmark's fleet: agents that complete their grants at once, registered concurrently
//! so that ten thousand of them take seconds, not minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::fleet::deployment::Deployment;
use crate::fleet::{FleetEvent, SIM_AGENT_LEASE_S, SubmitClock, WorkModel, spawn_sim_agent};
use switchyard_client::error::Error;
use switchyard_protocol::AgentRegister;

/// Registrations awaited at once: enough to hide the round trips, few enough not to flood the
/// optimizer's control lane (each one is a JetStream publish, a Redis script, a consumer).
pub(super) const REGISTRATION_CONCURRENCY: usize = 256;
/// Agents per shared NATS connection (one connection each would be ten thousand sockets).
const AGENTS_PER_CONNECTION: usize = 1000;
const MIN_CONNECTIONS: usize = 4;

/// NATS connections a fleet of `agents` shares.
pub(super) fn connections_for(agents: usize) -> usize {
    agents.div_ceil(AGENTS_PER_CONNECTION).max(MIN_CONNECTIONS)
}

/// A registered fleet.
pub(super) struct Fleet {
    pub(super) agents: Vec<JoinHandle<()>>,
    pub(super) registration: Duration,
}

/// Registers `count` agents (cpu 8, memory 8192 each), [`REGISTRATION_CONCURRENCY`] at a time.
/// On error the agents already running stop when `stop`'s sender is dropped.
pub(super) async fn start_fleet(
    deployment: &Deployment,
    count: usize,
    run: &str,
    clock: &SubmitClock,
    events: mpsc::Sender<FleetEvent>,
    stop: &watch::Receiver<bool>,
    progress: &impl Fn(&str),
) -> Result<Fleet, Error> {
    let started = Instant::now();
    let names: Vec<String> = (0..connections_for(count))
        .map(|i| format!("bench-agents-{i}"))
        .collect();
    let clients =
        futures::future::try_join_all(names.iter().map(|n| deployment.nats_client(n))).await?;
    let instant: WorkModel = Arc::new(|_| (Duration::ZERO, true));
    let registrations = futures::stream::iter(0..count).map(|i| {
        let reg = AgentRegister::new(format!("{run}-a{i:03}"), "bench")
            .capacity("cpu", 8.0)
            .capacity("memory", 8192.0)
            .lease(SIM_AGENT_LEASE_S);
        spawn_sim_agent(
            clients[i % clients.len()].clone(),
            deployment.subjects(),
            reg,
            instant.clone(),
            clock.clone(),
            events.clone(),
            stop.clone(),
        )
    });
    let mut registered = 0usize;
    let agents: Vec<JoinHandle<()>> = registrations
        .buffer_unordered(REGISTRATION_CONCURRENCY)
        .inspect_ok(|_| {
            registered += 1;
            if registered % 1000 == 0 && registered < count {
                progress(&format!("registered {registered} agents"));
            }
        })
        .try_collect()
        .await?;
    let registration = started.elapsed();
    progress(&format!(
        "registered {count} agents in {:.1}s over {} connections",
        registration.as_secs_f64(),
        clients.len()
    ));
    Ok(Fleet {
        agents,
        registration,
    })
}
