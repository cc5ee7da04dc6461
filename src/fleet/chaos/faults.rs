//! Injecting a scenario's one fault, and when it started and ended.

use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::agents::Fleet;
use super::ledger::Ledger;
use super::load::Submits;
use super::scenario::Scenario;
use super::topology::{Nats, Topology};
use switchyard_client::error::{Error, ErrorKind};
use switchyard_client::transport;
use switchyard_protocol::{Envelope, MessageType, Replies, Subjects, TaskComplete, now_ms};

/// When the fault began and ended (the same instant for a one-off like a kill), and a note on
/// what exactly was done (which node, how many agents...).
#[derive(Debug, Clone)]
pub(crate) struct FaultWindow {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) note: String,
}

/// What a fault may act on besides the servers.
pub(crate) struct Targets<'a> {
    pub(crate) fleet: &'a mut Fleet,
    pub(crate) ledger: &'a Ledger,
    pub(crate) submits: &'a Submits,
    pub(crate) nats: &'a async_nats::Client,
    pub(crate) subjects: &'a Subjects,
}

fn harness(what: &'static str) -> impl FnOnce(switchyard_harness::HarnessError) -> Error {
    move |e| Error::with_source(ErrorKind::Harness, what, e)
}

/// Injects `scenario`'s fault and returns once it is over (the server back, the link restored).
pub(crate) async fn inject(
    scenario: Scenario,
    topology: &mut Topology,
    targets: Targets<'_>,
) -> Result<FaultWindow, Error> {
    let start = Instant::now();
    let note = match scenario {
        Scenario::OptimizerKill => {
            topology.optimizers[0].kill();
            tokio::time::sleep(Duration::from_secs(5)).await;
            topology.optimizers[0].start()?;
            topology.startup_restarts += topology.optimizers[0].supervise_start().await?;
            "optimizer 1 killed, started again after 5 s".to_string()
        }
        Scenario::OptimizerStop => {
            topology.optimizers[0].signal("STOP")?;
            tokio::time::sleep(Duration::from_secs(15)).await;
            topology.optimizers[0].signal("CONT")?;
            "optimizer 1 stopped 15 s".to_string()
        }
        Scenario::NatsNodeKill => {
            kill_events_leader(topology, targets.nats, targets.subjects).await?
        }
        Scenario::NatsRestart => {
            let Nats::Single(server) = &mut topology.nats else {
                return Err(Error::new(
                    ErrorKind::Config,
                    "nats-restart needs a single node",
                ));
            };
            server.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            server
                .start_again()
                .await
                .map_err(harness("nats-server did not start again"))?;
            "nats-server killed, started again after 2 s".to_string()
        }
        Scenario::RedisRestart => {
            topology.redis.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            topology
                .redis
                .start_again()
                .await
                .map_err(harness("redis-server did not start again"))?;
            "redis-server killed, started again after 2 s (AOF loaded)".to_string()
        }
        Scenario::RedisPartition => cut(&topology.redis_proxies, "Redis").await,
        Scenario::NatsPartition => cut(&topology.nats_proxies, "NATS").await,
        Scenario::AgentKill => {
            let killed = targets.fleet.kill_every(4, targets.ledger);
            format!("{killed} agents dropped")
        }
        Scenario::DuplicateFlood => flood(targets).await,
    };
    Ok(FaultWindow {
        start,
        end: Instant::now(),
        note,
    })
}

/// Cuts optimizer 1's proxied link for 10 s.
async fn cut(proxies: &[switchyard_harness::TcpProxy], server: &str) -> String {
    let Some(proxy) = proxies.first() else {
        return format!("no proxy to {server}: nothing cut");
    };
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();
    format!("optimizer 1 <-> {server} cut 10 s")
}

/// Kills the node leading the events stream, starts it again after 10 s.
async fn kill_events_leader(
    topology: &mut Topology,
    nats: &async_nats::Client,
    subjects: &Subjects,
) -> Result<String, Error> {
    let Nats::Cluster(cluster) = &mut topology.nats else {
        return Err(Error::new(
            ErrorKind::Config,
            "nats-node-kill needs a cluster",
        ));
    };
    let js = jetstream::new(nats.clone());
    let mut stream = js
        .get_stream(subjects.events_stream())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Nats, "no events stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| Error::with_source(ErrorKind::Nats, "no events stream info", e))?;
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_default();
    let index = cluster.index_of(&leader).unwrap_or(0);
    cluster.kill(index).map_err(harness("no such node"))?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster
        .start_again(index)
        .await
        .map_err(harness("the node did not rejoin"))?;
    Ok(format!(
        "node {index} ({leader}) led the events stream; killed, back after 10 s"
    ))
}

/// Publishes every submit so far again with its own message id (JetStream drops it) and with a
/// new one (it reaches an optimizer as a new event for the same task), and every completion so
/// far again with a new id (as a redelivery would).
async fn flood(targets: Targets<'_>) -> String {
    let js = jetstream::new(targets.nats.clone());
    let mut published: Vec<Result<(), Error>> = Vec::new();
    for submitted in targets.submits.all() {
        let original = submitted.envelope;
        let copy = Envelope::new(
            original.sender.clone(),
            MessageType::TaskSubmit,
            original.payload.clone(),
            now_ms(),
        );
        for envelope in [original, copy] {
            let subject = targets
                .subjects
                .addressed(MessageType::TaskSubmit, &envelope.sender);
            published.push(publish(&js, subject, &envelope).await);
        }
    }
    for (task_id, agent_id, grant_seq, success) in targets.ledger.finished_grants() {
        let report = TaskComplete {
            task_id,
            agent_id: agent_id.clone(),
            success,
            execution_time_s: 0.5,
            performance_metrics: Default::default(),
            error: None,
            grant_seq: Some(grant_seq),
            replies: Replies::None,
        };
        let envelope = Envelope::new(agent_id, MessageType::TaskComplete, report, now_ms());
        let subject = targets
            .subjects
            .addressed(MessageType::TaskComplete, &envelope.sender);
        published.push(publish(&js, subject, &envelope).await);
    }
    let failed = published.iter().filter(|r| r.is_err()).count();
    format!(
        "{} duplicates published ({failed} not stored)",
        published.len() - failed
    )
}

/// Publishes `envelope` to a stream with its own message id as `Nats-Msg-Id`.
async fn publish<T: serde::Serialize>(
    js: &jetstream::Context,
    subject: String,
    envelope: &Envelope<T>,
) -> Result<(), Error> {
    transport::publish_stored(js, subject, &envelope.message_id.to_string(), envelope).await
}
