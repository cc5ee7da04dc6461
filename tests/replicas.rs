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
    optimizer_ready, within,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replica_processes_fifty_agents_two_thousand_tasks() {
    init_tracing();
    let servers = LocalServers::start().await.expect("servers");
    let config = config_for(&servers);
    let _a = OptimizerProcess::spawn(&config, &[]);
    let _b = OptimizerProcess::spawn(&config, &[]);
    let subjects = Subjects::default();
    let nats = async_nats::connect(servers.nats.url()).await.expect("nats");
    optimizer_ready(&nats).await;

    let grants_seen = Arc::new(Mutex::new(HashMap::new()));
    let violations = Arc::new(Mutex::new(Vec::new()));
    for i in 0..AGENTS {
        let reg = AgentRegister::new(format!("agent-{i:02}"), "worker")
            .capacity("cpu", 4.0)
            .capacity("memory", 4096.0);
        // Registration waits for a replica's reply: both processes are up once this returns.
        let agent = within(
            30,
            "registration",
            Agent::register(nats.clone(), subjects.clone(), reg),
        )
        .await
        .expect("registers");
        tokio::spawn(run_agent(agent, grants_seen.clone(), violations.clone()));
    }

    // Sample every agent's reservation in Redis while the load runs.
    let keys = Keys::new("switchyard");
    let mut redis = redis::Client::open(servers.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = {
        let (mut redis, keys) = (redis.clone(), keys.clone());
        tokio::spawn(async move {
            let mut worst = 0;
            while !*stop_rx.borrow() {
                for i in 0..AGENTS {
                    worst = worst.max(
                        hget_i64(&mut redis, &keys.agent(&format!("agent-{i:02}")), "res_cpu")
                            .await,
                    );
                }
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(5), stop_rx.changed())
                        .await;
            }
            worst
        })
    };

    let submitters = (0..SUBMITTERS).map(|s| {
        let nats = nats.clone();
        let subjects = subjects.clone();
        async move {
            let orch = Coordinator::with_client(nats, &format!("submitter-{s}"), subjects)
                .await
                .expect("coordinator");
            for t in 0..TASKS_PER_SUBMITTER {
                let cpu = 1.0 + ((s + t) % 3) as f64; // 1, 2 or 3 cpu
                let task = TaskSubmit::new(format!("s{s}-t{t}"))
                    .priority(((s * 7 + t) % 11) as u8)
                    .resource("cpu", cpu);
                orch.submit_task(task).await.expect("submit stored");
            }
        }
    });
    join_all(submitters).await;

    let total = (SUBMITTERS * TASKS_PER_SUBMITTER) as i64;
    within(180, "every task completed", async {
        while hget_i64(&mut redis, &keys.stats(), "completed").await < total {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = stop_tx.send(true);
    let worst = sampler.await.expect("sampler");

    assert!(
        violations.lock().expect("lock").is_empty(),
        "over capacity: {:?}",
        violations.lock().expect("lock")
    );
    assert!(
        worst <= AGENT_CPU as i64,
        "Redis showed {worst} milli-cpu reserved on a 4-cpu agent"
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.stats(), "granted").await,
        total,
        "granted exactly once each"
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.stats(), "submitted").await,
        total
    );
    let seen = grants_seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), total as usize, "every task reached an agent");
    let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubles.is_empty(),
        "tasks delivered more than once: {doubles:?}"
    );
    for i in 0..AGENTS {
        assert_eq!(
            hget_i64(&mut redis, &keys.agent(&format!("agent-{i:02}")), "res_cpu").await,
            0,
            "all released"
        );
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
    let grant = within(10, "the grant", grants.next())
        .await
        .expect("open")
        .expect("grant");
    assert_eq!(grant.payload.task_id, "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_after_commit_before_ack_does_not_cause_a_second_grant() {
    init_tracing();
    let servers = LocalServers::start().await.expect("servers");
    let mut config = config_for(&servers);
    config.jetstream.ack_wait_ms = 1_000;
    let subjects = Subjects::default();
    let nats = async_nats::connect(servers.nats.url()).await.expect("nats");

    // A healthy replica sets up the streams and registers the agent, then leaves gracefully.
    let mut setup = OptimizerProcess::spawn(&config, &[]);
    optimizer_ready(&nats).await;
    let reg = AgentRegister::new("steady", "worker").capacity("cpu", 2.0);
    let agent = within(
        30,
        "registration",
        Agent::register(nats.clone(), subjects.clone(), reg),
    )
    .await
    .expect("registers");
    assert!(
        setup.terminate().success(),
        "graceful SIGTERM exit: {}",
        setup.log()
    );

    // The faulty replica commits the grant to Redis, then stalls before publishing and acking.
    let mut faulty =
        OptimizerProcess::spawn(&config, &[("SWITCHYARD_FAULT_STALL_AFTER_COMMIT", "1")]);
    let mut tap = GrantTap::start(&nats, "steady").await;
    let orch = Coordinator::with_client(nats.clone(), "orch", subjects.clone())
        .await
        .expect("coordinator");
    orch.submit_task(TaskSubmit::new("fragile").resource("cpu", 2.0))
        .await
        .expect("stored");
    let mut redis = redis::Client::open(servers.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys = Keys::new("switchyard");
    within(30, "commit by the faulty replica", async {
        while hget(&mut redis, &keys.task("fragile"), "state")
            .await
            .as_deref()
            != Some("granted")
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.grant_outbox())
        .arg("fragile|1")
        .query_async(&mut redis)
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
    faulty.kill();

    // Another replica gets the redelivered submit (after ack_wait) and must not grant again.
    let _healthy = OptimizerProcess::spawn(&config, &[]);
    let mut grants = agent.grants().await.expect("grants");
    let grant = within(
        30,
        "the grant, published by the healthy replica",
        grants.next(),
    )
    .await
    .expect("open")
    .expect("grant");
    assert_eq!(
        (grant.payload.task_id.as_str(), grant.payload.grant_seq),
        ("fragile", 1)
    );
    within(30, "redelivered submit applied", events_drained(&nats)).await;
    assert_eq!(
        hget_i64(&mut redis, &keys.stats(), "granted").await,
        1,
        "granted once"
    );
    assert_eq!(
        hget(&mut redis, &keys.task("fragile"), "grant_seq")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("steady"), "res_cpu").await,
        2000,
        "reserved once"
    );
    // Copies of the grant may have been sent (the outbox re-sends until acknowledged), but
    // every one of them is the same grant.
    let copies = tap.seen(std::time::Duration::from_millis(300)).await;
    assert!(!copies.is_empty(), "the grant went out");
    assert!(
        copies.iter().all(|c| *c == ("fragile".to_string(), 1)),
        "{copies:?}"
    );
}
