//! The dependency cascade when a dependent is submitted before its dependency: the protocol allows
//! that order (the dependent waits in the dependency's dependents set before the dependency
//! exists), so a dependency that fails at its own submit must fail its early dependents too.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::{Cluster, hget, within};
use switchyard_client::Allocation;
use switchyard_protocol::{ReplyStatus, TaskSubmit};
use switchyard_server::state::Keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_submitted_first_fails_when_its_dependency_fails_at_submit() {
    let cluster = Cluster::start(1).await;
    let agent = cluster.agent("solo", "worker", 8.0, 8192.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;

    // X runs and fails on its agent.
    let x = orch
        .allocate_task(TaskSubmit::new("x").resource("cpu", 1.0))
        .await
        .expect("x");
    assert!(matches!(x, Allocation::Granted { .. }), "{x:?}");
    within(10, "x's grant", grants.next())
        .await
        .expect("open")
        .expect("grant");
    agent
        .complete_task_confirmed("x", false, 0.1)
        .await
        .expect("x failed");

    // B names A, which does not exist yet: B waits.
    let b = orch
        .allocate_task(TaskSubmit::new("b").depends_on("a"))
        .await
        .expect("b");
    assert_eq!(b, Allocation::Waiting);

    // A depends on the failed X: it fails at its own submit, and B with it.
    let mut events = orch.events();
    let a = orch
        .allocate_task(TaskSubmit::new("a").depends_on("x"))
        .await
        .expect("a");
    assert_eq!(
        a,
        Allocation::Failed {
            reason: "dependency_failed:x".into()
        }
    );
    let reply = within(10, "b's failure", async {
        loop {
            if let Ok(switchyard_client::ClientEvent::Reply(r)) = events.recv().await {
                // A redelivered submit of b (slow runs pass the test's 2 s ack wait) is
                // answered `waiting` again; the answer that counts is b's outcome.
                if r.payload.task_id.as_deref() == Some("b")
                    && r.payload.status != ReplyStatus::Waiting
                {
                    return r.payload;
                }
            }
        }
    })
    .await;
    assert_eq!(reply.status, ReplyStatus::Failed);
    assert_eq!(reply.detail.as_deref(), Some("dependency_failed:a"));
    let mut redis = cluster.redis().await;
    let state = hget(&mut redis, &Keys::new("switchyard").task("b"), "state").await;
    assert_eq!(state.as_deref(), Some("failed"), "b is not left waiting");
}
