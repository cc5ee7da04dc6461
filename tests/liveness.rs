//! Heartbeats and leases: a silent agent is marked dead by the coordinator's clock, its tasks are
//! granted elsewhere, its late completion is refused, and it can rejoin by registering again.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::{Cluster, hget, hget_i64, within};
use switchyard_client::Agent;
use switchyard_protocol::{AgentRegister, TaskSubmit};
use switchyard_server::state::Keys;

async fn agent_with_lease(cluster: &Cluster, id: &str, lease_s: f64) -> Agent {
    let reg = AgentRegister::new(id, "worker")
        .capacity("cpu", 2.0)
        .lease(lease_s);
    Agent::register(cluster.nats().await, cluster.subjects(), reg)
        .await
        .expect("registers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_loses_its_tasks_and_its_late_completion_is_refused() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.coordination.optimization_interval_s = 0.2;
    cluster.add_replica().await;
    let keys = Keys::new("switchyard");
    let mut redis = cluster.redis().await;
    let orch = cluster.coordinator("orch").await;

    // `fragile` is alone, so it gets the task.
    let mut fragile = agent_with_lease(&cluster, "fragile", 1.0).await;
    let mut fragile_grants = fragile.grants().await.expect("grants");
    orch.submit_task(TaskSubmit::new("job").resource("cpu", 2.0))
        .await
        .expect("submitted");
    let first = within(10, "grant to fragile", fragile_grants.next())
        .await
        .expect("open")
        .expect("grant");
    assert_eq!(
        (first.payload.task_id.as_str(), first.payload.grant_seq),
        ("job", 1)
    );

    // `steady` has a short lease too but keeps heartbeating; `fragile` goes silent.
    let steady_since = tokio::time::Instant::now();
    let steady = agent_with_lease(&cluster, "steady", 1.5).await;
    let mut steady_grants = steady.grants().await.expect("grants");
    fragile.stop_heartbeats();

    // Within the lease plus an optimization interval (and slack for a loaded CI machine), the
    // task is taken back and granted to `steady`.
    let second = within(10, "re-grant to steady", steady_grants.next())
        .await
        .expect("open")
        .expect("grant");
    assert_eq!(
        (second.payload.task_id.as_str(), second.payload.grant_seq),
        ("job", 2)
    );
    assert_eq!(
        hget(&mut redis, &keys.agent("fragile"), "status")
            .await
            .as_deref(),
        Some("dead")
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("fragile"), "res_cpu").await,
        0,
        "reservation released"
    );
    assert_eq!(
        hget_i64(&mut redis, &keys.agent("steady"), "res_cpu").await,
        2000
    );
    // Not a synchronisation sleep: survival can only be shown by letting the lease pass.
    tokio::time::sleep_until(steady_since + std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        hget(&mut redis, &keys.agent("steady"), "status")
            .await
            .as_deref(),
        Some("active"),
        "heartbeats kept steady alive past its 1.5 s lease"
    );
    assert!(cluster.metrics[0].agents_expired.get() >= 1);

    // The dead agent's late completion is refused, not counted.
    let late = fragile
        .complete_task_confirmed("job", true, 1.0)
        .await
        .expect_err("refused");
    assert_eq!(late.reason_code(), Some("agent_not_active"), "{late}");
    assert_eq!(
        hget(&mut redis, &keys.task("job"), "state")
            .await
            .as_deref(),
        Some("granted")
    );
    assert_eq!(hget_i64(&mut redis, &keys.stats(), "completed").await, 0);

    // It rejoins by registering again and takes new work.
    drop(fragile_grants);
    drop(fragile);
    let back = agent_with_lease(&cluster, "fragile", 30.0).await;
    let mut back_grants = back.grants().await.expect("grants");
    assert_eq!(
        hget(&mut redis, &keys.agent("fragile"), "status")
            .await
            .as_deref(),
        Some("active")
    );
    orch.submit_task(TaskSubmit::new("job-2").resource("cpu", 2.0))
        .await
        .expect("submitted");
    let grant = within(10, "grant to the returned agent", back_grants.next())
        .await
        .expect("open")
        .expect("grant");
    assert_eq!(grant.payload.task_id, "job-2");
    steady
        .complete_task_confirmed("job", true, 1.0)
        .await
        .expect("the new owner completes it");
}
