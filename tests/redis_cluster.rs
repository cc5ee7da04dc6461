//! Switchyard on a Redis Cluster: a real three-master cluster on loopback (the harness's
//! `RedisCluster`), the store connected with `redis.cluster = true`.
//!
//! A cluster refuses a script whose keys are in different slots (CROSSSLOT), so these tests are
//! what shows that every key of a deployment carries the one hash tag: the real transitions (and
//! the pipelined reads) run through `Store` and do what they do on a single Redis, and all the
//! keys end up on one node. Then one optimizer replica grants over NATS with its state on the
//! cluster.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::scripts::{RETENTION_S, cluster_fixture, cpu, submit_req, with_deps};
use common::within;
use switchyard_client::{Agent, Allocation, Coordinator};
use switchyard_harness::{NatsServer, RedisCluster};
use switchyard_protocol::{AgentRegister, StatusQuery, Subjects, TaskSubmit};
use switchyard_server::config::Config;
use switchyard_server::optimizer::{Faults, Optimizer};
use switchyard_server::state::{
    CompleteOutcome, ExpireOutcome, GrantOutcome, GrantRequest, HeartbeatOutcome, Keys,
    RequeueOutcome, ResolveOutcome, SubmitOutcome,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transitions_run_on_a_three_master_cluster() {
    common::init_tracing();
    let started = std::time::Instant::now();
    let mut f = within(30, "the cluster fixture", cluster_fixture()).await;
    f.register("a", cpu(1000)).await;
    f.register("b", cpu(500)).await;

    // t2 waits on t1; t1 does not fit b, so it goes to a.
    assert_eq!(
        f.submit(&submit_req("t1", "m1", 5, cpu(600))).await,
        SubmitOutcome::Queued
    );
    let t2 = with_deps(submit_req("t2", "m2", 5, cpu(400)), &["t1"]);
    assert_eq!(f.submit(&t2).await, SubmitOutcome::Waiting { unmet: 1 });
    let granted = f.grant("t1", &["b", "a"]).await;
    assert!(
        matches!(&granted, GrantOutcome::Granted { agent_id, .. } if agent_id == "a"),
        "{granted:?}"
    );
    assert_eq!(f.reserved("a").await, [600, 0, 0, 0]);
    assert_eq!(f.tasks_of("a").await, ["t1"]);

    // Completing t1 frees a and names t2, whose dependency then resolves into the queue.
    let done = f.complete("t1", "a", true).await;
    let CompleteOutcome::Finished { dependents, .. } = done else {
        panic!("t1 should finish, got {done:?}");
    };
    assert_eq!(dependents, ["t2"]);
    assert_eq!(f.reserved("a").await, [0, 0, 0, 0]);
    let resolved = f
        .store
        .resolve_dependency("t2", "t1", true, RETENTION_S)
        .await;
    assert_eq!(resolved.expect("resolve"), ResolveOutcome::Queued);
    assert_eq!(f.queue_ids().await, ["t2"]);

    the_batch_scripts_and_reads_run_too(&mut f).await;
    every_key_is_on_one_node(&mut f).await;
    println!(
        "cluster transitions: {:?} (start included)",
        started.elapsed()
    );
}

/// A batch grant, a requeue, heartbeats, an expiry, the pipelined reads and the reads that ask
/// the Redis clock (TIME, a keyless command, sent to the deployment's node).
async fn the_batch_scripts_and_reads_run_too(f: &mut common::scripts::Fixture) {
    assert_eq!(
        f.submit(&submit_req("t3", "m3", 5, cpu(300))).await,
        SubmitOutcome::Queued
    );
    let to_b = ["b".to_string()];
    let batch = [
        GrantRequest {
            task_id: "t2",
            candidates: &to_b,
            budgets: &[],
            why: "",
            explores: "worker",
        },
        GrantRequest {
            task_id: "t3",
            candidates: &to_b,
            budgets: &[],
            why: "",
            explores: "",
        },
    ];
    let outcomes = f.store.grant_tasks(&batch).await.expect("grant_tasks");
    assert!(
        matches!(outcomes[0], GrantOutcome::Granted { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], GrantOutcome::NoFit, "b has 100 left");
    assert_eq!(f.reserved("b").await, [400, 0, 0, 0]);
    let patterns = f.store.patterns().await.expect("patterns");
    let explored = patterns.get("default", "worker").map(|p| p.explorations);
    assert_eq!(explored, Some(1), "t2 explored b's type");

    let requeued = f
        .store
        .requeue_task("t2", "b", 3600)
        .await
        .expect("requeue");
    assert_eq!(requeued, RequeueOutcome::Requeued);
    assert_eq!(f.reserved("b").await, [0, 0, 0, 0]);
    assert_eq!(f.queue_ids().await.len(), 2);

    let beats = f
        .store
        .record_heartbeats(&["a", "b"])
        .await
        .expect("heartbeats");
    assert_eq!(beats, [HeartbeatOutcome::Alive, HeartbeatOutcome::Alive]);
    let snapshot = f.store.agent_snapshot().await.expect("agent snapshot");
    assert_eq!(snapshot.len(), 2);
    // Registered without a lease (0), so nobody is past it; the read still asks the clock.
    assert!(
        f.store
            .agents_past_lease(10)
            .await
            .expect("leases")
            .is_empty()
    );
    assert!(
        f.store
            .stale_grants(0, 10)
            .await
            .expect("outbox")
            .is_empty()
    );
    let expired = f.store.expire_agent("b", 0).await.expect("expire");
    assert_eq!(expired, ExpireOutcome::Alive);

    // Scripts flushed from every node (as after a failover to a node that never loaded them):
    // EVALSHA's NOSCRIPT falls back to loading them again.
    let _: String = f
        .raw_query("SCRIPT FLUSH", redis::cmd("SCRIPT").arg("FLUSH"))
        .await;
    let granted = f.grant("t2", &["a"]).await;
    assert!(
        matches!(granted, GrantOutcome::Granted { .. }),
        "{granted:?}"
    );
    let sync = f.store.coordination_sync(&StatusQuery::default()).await;
    assert_eq!(sync.expect("sync").queue_depth, 1);
}

/// All the keys the transitions wrote are on one node, the one serving the hash tag's slot.
async fn every_key_is_on_one_node(f: &mut common::scripts::Fixture) {
    let cluster = f
        ._server
        .downcast_ref::<RedisCluster>()
        .expect("a cluster fixture");
    let mut sizes = Vec::new();
    for node in cluster.nodes() {
        let mut conn = redis::Client::open(node.url())
            .expect("node url")
            .get_multiplexed_async_connection()
            .await
            .expect("node connects");
        let size: u64 = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("DBSIZE");
        sizes.push(size);
    }
    let holding: Vec<_> = sizes.iter().filter(|&&n| n > 0).collect();
    assert_eq!(holding.len(), 1, "keys per node: {sizes:?}");
    assert!(*holding[0] >= 10, "keys per node: {sizes:?}");
}

/// One in-process optimizer replica with its state on the cluster grants a submitted task to a
/// registered agent over NATS, and the completion frees the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimizer_on_the_cluster_grants_end_to_end() {
    common::init_tracing();
    let (nats, cluster) = within(30, "the servers", async {
        tokio::try_join!(NatsServer::start(), RedisCluster::start()).expect("servers start")
    })
    .await;
    let mut config = Config::default();
    config.nats.url = nats.url();
    config.redis.url = cluster.seed_urls();
    config.redis.cluster = true;
    config.metrics.addr = "127.0.0.1:0".into();
    config.coordination.optimization_interval_s = 0.5;
    let (stop, replica) = start_replica(&config).await;

    let client = async_nats::connect(nats.url()).await.expect("nats");
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let registration = AgentRegister::new("alpha", "worker").capacity("cpu", 2.0);
    let register = Agent::register(client.clone(), subjects.clone(), registration);
    let agent = within(30, "the registration", register)
        .await
        .expect("agent registers");
    let orch = Coordinator::with_client(client, "orch", subjects)
        .await
        .expect("coordinator");
    let task = TaskSubmit::new("e2e-1").resource("cpu", 1.5);
    let allocation = within(30, "the grant", orch.allocate_task(task))
        .await
        .expect("allocated");
    let to_alpha = Allocation::Granted {
        agent_id: "alpha".into(),
    };
    assert_eq!(allocation, to_alpha);

    let complete = agent.complete_task_confirmed("e2e-1", true, 0.1);
    within(30, "the completion", complete)
        .await
        .expect("completion applied");
    assert_eq!(reserved_cpu(&config, "alpha").await, Some(0));
    let _ = stop.send(());
    let _ = within(30, "the replica to stop", replica).await;
}

/// An in-process optimizer replica on `config`, stopped by sending on the channel.
async fn start_replica(
    config: &Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let optimizer = Optimizer::connect(config.clone(), Faults::default())
        .await
        .expect("optimizer connects to the cluster");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(async move {
        let until_stopped = async {
            let _ = stopped.await;
        };
        optimizer.run(until_stopped).await.expect("optimizer runs");
    });
    (stop, replica)
}

/// An agent's cpu reservation, read through a cluster connection of its own.
async fn reserved_cpu(config: &Config, agent_id: &str) -> Option<i64> {
    let mut raw = switchyard_server::state::Connection::open(&config.redis)
        .await
        .expect("raw cluster connection");
    redis::cmd("HGET")
        .arg(Keys::new(&config.redis.key_prefix).agent(agent_id))
        .arg("res_cpu")
        .query_async(&mut raw)
        .await
        .expect("HGET")
}
