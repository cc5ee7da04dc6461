//! Several optimizer processes against the same servers: every task granted exactly once, no
//! agent over capacity, nothing lost; redelivered and re-sent submits never grant twice, even
//! when a replica is SIGKILLed between its Redis commit and its acknowledgement.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{
    Cluster, GrantTap, OptimizerProcess, config_for, events_drained, hget, hget_i64, init_tracing,
    next_grant, optimizer_ready, redis_at, register_within, wait_for_stat, wait_for_state, within,
};
use futures::future::join_all;
use switchyard_client::{Agent, Coordinator};
use switchyard_harness::LocalServers;
use switchyard_protocol::{AgentRegister, Envelope, MessageType, Subjects, TaskSubmit, now_ms};
use switchyard_server::state::Keys;

const AGENTS: usize = 50;
const SUBMITTERS: usize = 8;
const TASKS_PER_SUBMITTER: usize = 250;
const AGENT_CPU: u64 = 4_000;

/// One simulated agent that checks, from the grants it receives, that it is never asked to hold
/// more than its capacity. It releases its own book-keeping *before* reporting completion, so
/// the optimizer can only re-use that capacity after the release.
async fn run_agent(
    agent: Agent,
    grants_seen: Arc<Mutex<HashMap<String, u32>>>,
    violations: Arc<Mutex<Vec<String>>>,
) {
    let mut grants = agent.grants().await.expect("grant stream");
    let mut holding: u64 = 0;
    while let Some(Ok(grant)) = grants.next().await {
        let g = grant.payload;
        let cpu = (g.resources.get("cpu").copied().unwrap_or(0.0) * 1000.0).round() as u64;
        holding += cpu;
        if holding > AGENT_CPU {
            violations
                .lock()
                .expect("lock")
                .push(format!("{} holds {holding} milli-cpu", agent.agent_id()));
        }
        *grants_seen
            .lock()
            .expect("lock")
            .entry(g.task_id.clone())
            .or_default() += 1;
        holding -= cpu;
        agent
            .complete_grant(&g, true, 0.001)
            .await
            .expect("completion stored");
    }
}

/// Grants each agent received (by task) and every time one held more than its capacity.
#[derive(Clone, Default)]
struct Ledger {
    grants_seen: Arc<Mutex<HashMap<String, u32>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

fn agent_id(i: usize) -> String {
    format!("agent-{i:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replica_processes_fifty_agents_two_thousand_tasks() {
    init_tracing();
    let servers = LocalServers::start().await.expect("servers");
    let config = config_for(&servers);
    let _a = OptimizerProcess::spawn(&config, &[]);
    let _b = OptimizerProcess::spawn(&config, &[]);
    let nats = async_nats::connect(servers.nats.url()).await.expect("nats");
    optimizer_ready(&nats).await;

    let ledger = Ledger::default();
    for i in 0..AGENTS {
        let reg = AgentRegister::new(agent_id(i), "worker")
            .capacity("cpu", 4.0)
            .capacity("memory", 4096.0);
        // Registration waits for a replica's reply: both processes are up once this returns.
        let agent = register_within(&nats, reg).await;
        tokio::spawn(run_agent(
            agent,
            ledger.grants_seen.clone(),
            ledger.violations.clone(),
        ));
    }
    let mut redis = redis_at(&servers).await;
    let (stop_sampling, sampler) = sample_reservations(redis.clone());
    join_all((0..SUBMITTERS).map(|s| submit_share(nats.clone(), s))).await;

    let total = (SUBMITTERS * TASKS_PER_SUBMITTER) as i64;
    wait_for_stat(&mut redis, 180, "completed", total).await;
    let _ = stop_sampling.send(true);
    let worst = within(10, "the sampler to stop", sampler)
        .await
        .expect("sampler");
    assert!(
        worst <= AGENT_CPU as i64,
        "Redis showed {worst} milli-cpu reserved on a 4-cpu agent"
    );
    every_task_granted_once_and_released(&mut redis, &ledger, total).await;
}

/// Samples every agent's reservation in Redis until told to stop; answers the largest seen.
fn sample_reservations(
    mut redis: redis::aio::MultiplexedConnection,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<i64>,
) {
    let keys = Keys::new("switchyard");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut worst = 0;
        while !*stop_rx.borrow() {
            for i in 0..AGENTS {
                let reserved = hget_i64(&mut redis, &keys.agent(&agent_id(i)), "res_cpu").await;
                worst = worst.max(reserved);
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(5), stop_rx.changed()).await;
        }
        worst
    });
    (stop_tx, sampler)
}

/// Submitter `s` submits its share of the tasks (1, 2 or 3 cpu, priorities spread).
async fn submit_share(nats: async_nats::Client, s: usize) {
    let orch = Coordinator::with_client(nats, &format!("submitter-{s}"), Subjects::default())
        .await
        .expect("coordinator");
    for t in 0..TASKS_PER_SUBMITTER {
        let cpu = 1.0 + ((s + t) % 3) as f64;
        let task = TaskSubmit::new(format!("s{s}-t{t}"))
            .priority(((s * 7 + t) % 11) as u8)
            .resource("cpu", cpu);
        orch.submit_task(task).await.expect("submit stored");
    }
}

async fn every_task_granted_once_and_released(
    redis: &mut redis::aio::MultiplexedConnection,
    ledger: &Ledger,
    total: i64,
) {
    let keys = Keys::new("switchyard");
    let violations = ledger.violations.lock().expect("lock").clone();
    assert!(violations.is_empty(), "over capacity: {violations:?}");
    let granted = hget_i64(redis, &keys.stats(), "granted").await;
    assert_eq!(granted, total, "granted exactly once each");
    assert_eq!(hget_i64(redis, &keys.stats(), "submitted").await, total);
    let seen = ledger.grants_seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), total as usize, "every task reached an agent");
    let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubles.is_empty(),
        "tasks delivered more than once: {doubles:?}"
    );
    for i in 0..AGENTS {
        let reserved = hget_i64(redis, &keys.agent(&agent_id(i)), "res_cpu").await;
        assert_eq!(reserved, 0, "all released");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_submit_twice_grants_once() {
    let cluster = Cluster::start(2).await;
    let agent = cluster.agent("only", "worker", 4.0, 1024.0).await;
    let orch: Coordinator = cluster.coordinator("orch").await;
    let nats = cluster.nats().await;
    let js = async_nats::jetstream::new(nats.clone());

    let envelope = Envelope::new(
        "orch",
        MessageType::TaskSubmit,
        TaskSubmit::new("once").resource("cpu", 1.0),
        now_ms(),
    );
    // Twice with the same Nats-Msg-Id: JetStream drops the copy.
    orch.publish(&envelope).await.expect("first");
    orch.publish(&envelope).await.expect("second, deduplicated");
    // And once more under a different Nats-Msg-Id, as if re-sent after the dedupe window:
    // it reaches an optimizer, which must recognise the message id and not grant again.
    let body = serde_json::to_vec(&envelope).expect("json");
    let headers = switchyard_client::transport::msg_id_headers("resent-after-window");
    js.publish_with_headers("coord.task_submit.orch", headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    within(20, "events applied", events_drained(&nats)).await;
    let mut redis = cluster.redis().await;
    let keys = Keys::new("switchyard");
    assert_eq!(
        hget(&mut redis, &keys.task("once"), "grant_seq")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(hget_i64(&mut redis, &keys.stats(), "granted").await, 1);
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("only"), "res_cpu").await,
        1000,
        "reserved once"
    );
    let mut grants = agent.grants().await.expect("grants");
    let grant = next_grant(10, "the grant", &mut grants).await;
    assert_eq!(grant.payload.task_id, "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_after_commit_before_ack_does_not_cause_a_second_grant() {
    init_tracing();
    let servers = LocalServers::start().await.expect("servers");
    let mut config = config_for(&servers);
    config.jetstream.ack_wait_ms = 1_000;
    let nats = async_nats::connect(servers.nats.url()).await.expect("nats");
    let agent = steady_registered_by_a_replica_that_leaves(&config, &nats).await;

    let mut tap = GrantTap::start(&nats, "steady").await;
    let mut redis = redis_at(&servers).await;
    let mut faulty = replica_stalled_after_committing_fragile(&config, &nats, &mut redis).await;
    faulty.kill();

    // Another replica gets the redelivered submit (after ack_wait) and must not grant again.
    let _healthy = OptimizerProcess::spawn(&config, &[]);
    let mut grants = agent.grants().await.expect("grants");
    let grant = next_grant(
        30,
        "the grant, published by the healthy replica",
        &mut grants,
    )
    .await;
    assert_eq!(
        (grant.payload.task_id.as_str(), grant.payload.grant_seq),
        ("fragile", 1)
    );
    within(30, "redelivered submit applied", events_drained(&nats)).await;
    fragile_granted_and_reserved_once(&mut redis).await;
    // Copies of the grant may have been sent (the outbox re-sends until acknowledged), but
    // every one of them is the same grant.
    let copies = tap.seen(std::time::Duration::from_millis(300)).await;
    assert!(!copies.is_empty(), "the grant went out");
    assert!(
        copies.iter().all(|c| *c == ("fragile".to_string(), 1)),
        "{copies:?}"
    );
}

/// A healthy replica sets up the streams and registers agent `steady` (2 cpu), then leaves
/// gracefully.
async fn steady_registered_by_a_replica_that_leaves(
    config: &switchyard_server::config::Config,
    nats: &async_nats::Client,
) -> Agent {
    let mut setup = OptimizerProcess::spawn(config, &[]);
    optimizer_ready(nats).await;
    let reg = AgentRegister::new("steady", "worker").capacity("cpu", 2.0);
    let agent = register_within(nats, reg).await;
    assert!(
        setup.terminate().success(),
        "graceful SIGTERM exit: {}",
        setup.log()
    );
    agent
}

/// The faulty replica commits the grant of `fragile` to Redis, then stalls before publishing
/// and acking.
async fn replica_stalled_after_committing_fragile(
    config: &switchyard_server::config::Config,
    nats: &async_nats::Client,
    redis: &mut redis::aio::MultiplexedConnection,
) -> OptimizerProcess {
    let faulty = OptimizerProcess::spawn(config, &[("SWITCHYARD_FAULT_STALL_AFTER_COMMIT", "1")]);
    let orch = Coordinator::with_client(nats.clone(), "orch", Subjects::default())
        .await
        .expect("coordinator");
    orch.submit_task(TaskSubmit::new("fragile").resource("cpu", 2.0))
        .await
        .expect("stored");
    wait_for_state(redis, 30, "fragile", "granted").await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(Keys::new("switchyard").grant_outbox())
        .arg("fragile|1")
        .query_async(redis)
        .await
        .expect("ZSCORE");
    assert!(score.is_some(), "the committed grant waits in the outbox");
    // The stall is compiled into test builds only (the `fault-injection` feature): without it
    // this replica would have published and acked, and the test would prove nothing.
    within(10, "the faulty replica stalls after its commit", async {
        while !faulty
            .log()
            .contains("fault injection: stalling after commit")
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    faulty
}

async fn fragile_granted_and_reserved_once(redis: &mut redis::aio::MultiplexedConnection) {
    let keys = Keys::new("switchyard");
    let granted = hget_i64(redis, &keys.stats(), "granted").await;
    assert_eq!(granted, 1, "granted once");
    let grant_seq = hget(redis, &keys.task("fragile"), "grant_seq").await;
    assert_eq!(grant_seq.as_deref(), Some("1"));
    let reserved = hget_i64(redis, &keys.agent("steady"), "res_cpu").await;
    assert_eq!(reserved, 2000, "reserved once");
}

/// COORDINATION_SYNC broadcasts sent by a replica (one per interval while it holds the lease).
fn syncs_sent(m: &switchyard_server::metrics::Metrics) -> u64 {
    m.messages
        .with_label_values(&[MessageType::CoordinationSync.as_str(), "out"])
        .get()
}

fn exports_queue_depth(m: &switchyard_server::metrics::Metrics) -> bool {
    let metric = switchyard_server::metrics::QUEUE_DEPTH;
    m.render()
        .lines()
        .any(|l| l.starts_with(&format!("{metric} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_exports_the_global_gauges() {
    let cluster = Cluster::start(2).await;
    let reporter = within(20, "a replica to hold the sync lease", async {
        loop {
            if let Some(i) = cluster.metrics.iter().position(|m| m.is_reporting()) {
                return i;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Four more broadcasts: the lease stays with its holder, pass after pass.
    let from = syncs_sent(&cluster.metrics[reporter]);
    within(20, "four more intervals", async {
        while syncs_sent(&cluster.metrics[reporter]) < from + 4 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let other = &cluster.metrics[1 - reporter];
    assert!(cluster.metrics[reporter].is_reporting(), "the lease moved");
    assert!(exports_queue_depth(&cluster.metrics[reporter]));
    assert!(!other.is_reporting());
    assert!(!exports_queue_depth(other), "{}", other.render());
    assert_eq!(syncs_sent(other), 0, "the other replica never broadcast");
    let reporting = switchyard_server::metrics::REPORTING_REPLICA;
    assert!(other.render().contains(&format!("{reporting} 0")));

    // The backlog gauges: one entry put in the dead-letter stream shows in its depth.
    let js = async_nats::jetstream::new(cluster.nats().await);
    let subject = cluster.subjects().dead_letter("task_submit");
    js.publish(subject, "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored in the dead-letter stream");
    let m = &cluster.metrics[reporter];
    within(20, "the dead-letter depth to count it", async {
        while m.dead_letter_depth.get() < 1.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let text = m.render();
    for consumer in ["optimizer", "optimizer_control"] {
        let line = format!("switchyard_consumer_pending_events{{consumer=\"{consumer}\"}} 0");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(!other.render().contains("switchyard_dead_letter_depth"));
}
