//! The protocol needs no Rust SDK: `tests/python/agent.py`, written from `docs/protocol.md` with
//! nothing but `nats-py`, registers, receives grants, acknowledges them and completes the tasks
//! against a real optimizer.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, hget, hget_i64, require_python_nats, within};
use switchyard_protocol::TaskSubmit;
use switchyard_server::state::Keys;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const AGENT_ID: &str = "py-agent";

type Redis = redis::aio::MultiplexedConnection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_registers_takes_grants_and_completes() {
    require_python_nats();
    let cluster = Cluster::start(1).await;
    let mut redis = cluster.redis().await;
    let mut child = spawn_python_agent(&cluster);
    registered(&mut child, &mut redis).await;

    let orch = cluster.coordinator("orch").await;
    let mut submits = Vec::new();
    for task_id in ["py-1", "py-2"] {
        let message_id = orch
            .submit_task(TaskSubmit::new(task_id).resource("cpu", 1.0))
            .await
            .expect("submitted");
        submits.push((task_id, message_id.to_string()));
    }

    let out = within(60, "the python agent to finish", child.wait_with_output())
        .await
        .expect("agent output");
    let (result, line) = result_line(&out);
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
    the_authoritative_state_agrees(&mut redis, &submits).await;
}

fn spawn_python_agent(cluster: &Cluster) -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/agent.py");
    Command::new("python3")
        .arg(script)
        .args(["--nats", &cluster.servers.nats.url()])
        .args(["--agent-id", AGENT_ID, "--tasks", "2", "--prefix", "coord"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts")
}

/// Waits (at most 30 s) until the optimizer applied the python agent's AGENT_REGISTER; fails at
/// once, with its stderr, if the agent exits first.
async fn registered(child: &mut tokio::process::Child, redis: &mut Redis) {
    let key = Keys::new("switchyard").agent(AGENT_ID);
    within(30, "the python agent to register", async {
        loop {
            let status = hget(redis, &key, "status").await;
            if status.as_deref() == Some("active") {
                break;
            }
            if let Some(exit) = child.try_wait().expect("poll the agent") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!("the python agent exited ({exit}) before registering; stderr:\n{stderr}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The agent succeeded and its last stdout line is its JSON result; answers it and the line.
fn result_line(out: &std::process::Output) -> (serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the python agent failed ({}); stderr:\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no result line on stdout; stderr:\n{stderr}"));
    let result: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
    (result, line.to_string())
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
