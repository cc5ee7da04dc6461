//! The protocol needs no Rust SDK: `tests/python/agent.py`, written from `docs/protocol.md` with
//! nothing but `nats-py`, registers, receives grants, acknowledges them and completes the tasks
//! against a real optimizer, and, given the server list of a 3-node NATS cluster, keeps working
//! when the node it is connected to is killed.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::{
    Cluster, cluster_config, hget, hget_i64, python, redis_at_url, require_python_nats, within,
};
use switchyard_client::{Coordinator, transport};
use switchyard_harness::{NatsCluster, RedisServer};
use switchyard_protocol::{Subjects, TaskSubmit, TraceContext};
use switchyard_server::optimizer::{Faults, Optimizer};
use switchyard_server::state::Keys;

const AGENT_ID: &str = "py-agent";

type Redis = redis::aio::MultiplexedConnection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_registers_takes_grants_and_completes() {
    require_python_nats();
    let cluster = Cluster::start(1).await;
    let mut redis = cluster.redis().await;
    let mut child = spawn_python_agent(&cluster);
    python::registered(&mut child, &mut redis, AGENT_ID).await;

    let orch = cluster.coordinator("orch").await;
    let mut submits = Vec::new();
    let mut traces = Vec::new();
    for task_id in ["py-1", "py-2"] {
        let parent = TraceContext::new_root();
        let message_id = orch
            .submit_task_traced(
                TaskSubmit::new(task_id).resource("cpu", 1.0),
                Some(parent.clone()),
            )
            .await
            .expect("submitted");
        submits.push((task_id, message_id.to_string()));
        traces.push((task_id, parent.trace_id_hex()));
    }

    let out = within(60, "the python agent to finish", child.wait_with_output())
        .await
        .expect("agent output");
    let (result, line) = python::result_line(&out);
    assert_eq!(result["agent_id"], AGENT_ID);
    let mut completed: Vec<&str> = result["completed"]
        .as_array()
        .expect("completed is an array")
        .iter()
        .map(|v| v.as_str().expect("task id"))
        .collect();
    completed.sort_unstable();
    assert_eq!(completed, ["py-1", "py-2"], "both tasks completed: {line}");
    each_grant_correlated_to_its_submit(&result, &line, &submits);
    each_grant_in_its_submits_trace(&result, &line, &traces);
    the_authoritative_state_agrees(&mut redis, &submits).await;
}

fn spawn_python_agent(cluster: &Cluster) -> tokio::process::Child {
    let args = ["--nats", &cluster.servers.nats.url(), "--tasks", "2"];
    python::spawn_agent(AGENT_ID, &args)
}

fn each_grant_correlated_to_its_submit(
    result: &serde_json::Value,
    line: &str,
    submits: &[(&str, String)],
) {
    let grants = result["grants"].as_array().expect("grants is an array");
    assert_eq!(grants.len(), 2, "one grant per task: {line}");
    for (task_id, message_id) in submits {
        let grant = grants
            .iter()
            .find(|g| g["task_id"] == *task_id)
            .unwrap_or_else(|| panic!("no grant for {task_id}: {line}"));
        assert_eq!(grant["grant_seq"], 1, "{task_id}: first grant");
        assert_eq!(
            grant["correlation_id"].as_str(),
            Some(message_id.as_str()),
            "{task_id}: the grant is correlated to its TASK_SUBMIT"
        );
    }
}

/// The agent read the `traceparent` header of each grant: the trace its submit started.
fn each_grant_in_its_submits_trace(
    result: &serde_json::Value,
    line: &str,
    traces: &[(&str, String)],
) {
    let grants = result["grants"].as_array().expect("grants is an array");
    for (task_id, trace_id) in traces {
        let grant = grants
            .iter()
            .find(|g| g["task_id"] == *task_id)
            .unwrap_or_else(|| panic!("no grant for {task_id}: {line}"));
        let header = grant["traceparent"].as_str().unwrap_or_default();
        let seen = TraceContext::parse(header).unwrap_or_else(|e| panic!("{task_id}: {e}: {line}"));
        assert_eq!(&seen.trace_id_hex(), trace_id, "{task_id}: {line}");
    }
}

async fn the_authoritative_state_agrees(redis: &mut Redis, submits: &[(&str, String)]) {
    let keys = Keys::new("switchyard");
    for (task_id, _) in submits {
        let state = hget(redis, &keys.task(task_id), "state").await;
        assert_eq!(state.as_deref(), Some("completed"), "{task_id}");
    }
    assert_eq!(
        hget_i64(redis, &keys.agent(AGENT_ID), "res_cpu").await,
        0,
        "reservations released"
    );
    assert_eq!(hget_i64(redis, &keys.stats(), "completed").await, 2);

    // The grants were acknowledged (GRANT_ACK) or completed: nothing is left in the outbox to
    // be sent again.
    let outbox: u64 = redis::cmd("ZCARD")
        .arg(keys.grant_outbox())
        .query_async(redis)
        .await
        .expect("ZCARD");
    assert_eq!(outbox, 0, "every grant acknowledged");
}

/// The cluster's node 0 is the first of the agent's servers (tried in order), so it is the node
/// the agent is connected to; killing it makes the agent reconnect to another and go on. Events
/// and grants live in streams with three replicas, so none is lost with the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_rides_through_the_loss_of_its_nats_node() {
    require_python_nats();
    let redis_server = RedisServer::start().await.expect("redis starts");
    let mut nats = within(60, "the 3-node cluster to form", NatsCluster::start(3))
        .await
        .expect("cluster starts");
    let config = cluster_config(&nats, &redis_server);
    let optimizer = within(60, "the optimizer to connect", async {
        Optimizer::connect(config.clone(), Faults::default()).await
    })
    .await
    .expect("optimizer connects");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(optimizer.run(async {
        let _ = stopped.await;
    }));

    let mut redis = redis_at_url(&redis_server.url()).await;
    let servers = nats.urls().join(",");
    let args = ["--nats", &servers, "--in-order", "--tasks", "4"];
    let mut child = python::spawn_agent(AGENT_ID, &args);
    python::registered(&mut child, &mut redis, AGENT_ID).await;
    let orch_client = transport::connect(&nats.url(), "orch")
        .await
        .expect("orch connects");
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let orch = Coordinator::with_client(orch_client, "orch", subjects)
        .await
        .expect("coordinator");
    submit_until_stored(&orch, &["py-1", "py-2"]).await;
    completed_in_redis(&mut redis, &["py-1", "py-2"]).await;

    nats.kill(0).expect("kill the agent's node");
    submit_until_stored(&orch, &["py-3", "py-4"]).await;

    let out = within(120, "the python agent to finish", child.wait_with_output())
        .await
        .expect("agent output");
    let (result, line) = python::result_line(&out);
    let completed = result["completed"]
        .as_array()
        .expect("completed is an array");
    assert_eq!(completed.len(), 4, "four tasks completed: {line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reconnected to"),
        "the agent moved to another node: {stderr}"
    );
    completed_in_redis(&mut redis, &["py-1", "py-2", "py-3", "py-4"]).await;
    let keys = Keys::new("switchyard");
    assert_eq!(
        hget_i64(&mut redis, &keys.agent(AGENT_ID), "res_cpu").await,
        0
    );
    assert_eq!(hget_i64(&mut redis, &keys.stats(), "completed").await, 4);
    let _ = stop.send(());
    within(30, "the optimizer to stop", running)
        .await
        .expect("optimizer task")
        .expect("optimizer ran without error");
}

/// Submits each task, resending the same submit while the cluster elects new stream leaders
/// (safe: the same message_id is stored once), for at most 30 s per task.
async fn submit_until_stored(orch: &Coordinator, task_ids: &[&str]) {
    for task_id in task_ids {
        let task = TaskSubmit::new(*task_id).resource("cpu", 1.0);
        let what = format!("the submit of {task_id} to be stored");
        within(30, &what, async {
            while let Err(e) = orch.submit_task(task.clone()).await {
                eprintln!("submit {task_id}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    }
}

/// Waits (at most 60 s) until every task of `task_ids` is `completed` in Redis.
async fn completed_in_redis(redis: &mut Redis, task_ids: &[&str]) {
    let keys = Keys::new("switchyard");
    within(60, "the tasks to complete", async {
        for task_id in task_ids {
            while hget(redis, &keys.task(task_id), "state").await.as_deref() != Some("completed") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
}
