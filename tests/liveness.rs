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

use common::{Cluster, hget, hget_i64, next_grant, within};
use switchyard_client::{Agent, Coordinator, GrantStream};
use switchyard_protocol::{AgentRegister, TaskSubmit};
use switchyard_server::state::Keys;

async fn agent_with_lease(cluster: &Cluster, id: &str, lease_s: f64) -> Agent {
    let reg = AgentRegister::new(id, "worker")
        .capacity("cpu", 2.0)
        .lease(lease_s);
    within(
        30,
        &format!("{id} to be registered"),
        Agent::register(cluster.nats().await, cluster.subjects(), reg),
    )
    .await
    .expect("registers")
}

type Redis = redis::aio::MultiplexedConnection;

async fn agent_status(redis: &mut Redis, agent: &str) -> Option<String> {
    hget(redis, &Keys::new("switchyard").agent(agent), "status").await
}

async fn reserved_cpu(redis: &mut Redis, agent: &str) -> i64 {
    hget_i64(redis, &Keys::new("switchyard").agent(agent), "res_cpu").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_loses_its_tasks_and_its_late_completion_is_refused() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.coordination.optimization_interval_s = 0.2;
    cluster.add_replica().await;
    let mut redis = cluster.redis().await;
    let orch = cluster.coordinator("orch").await;

    // `fragile` is alone, so it gets the task.
    let mut fragile = agent_with_lease(&cluster, "fragile", 1.0).await;
    let mut fragile_grants = fragile.grants().await.expect("grants");
    orch.submit_task(TaskSubmit::new("job").resource("cpu", 2.0))
        .await
        .expect("submitted");
    let first = next_grant(10, "grant to fragile", &mut fragile_grants).await;
    assert_eq!(
        (first.payload.task_id.as_str(), first.payload.grant_seq),
        ("job", 1)
    );

    // `steady` has a short lease too but keeps heartbeating; `fragile` goes silent.
    let steady_since = tokio::time::Instant::now();
    let steady = agent_with_lease(&cluster, "steady", 1.5).await;
    let mut steady_grants = steady.grants().await.expect("grants");
    fragile.stop_heartbeats();
    the_task_moves_to_steady(&mut redis, &mut steady_grants).await;

    // Not a synchronisation sleep: survival can only be shown by letting the lease pass.
    tokio::time::sleep_until(steady_since + std::time::Duration::from_millis(2_500)).await;
    assert_eq!(
        agent_status(&mut redis, "steady").await.as_deref(),
        Some("active"),
        "heartbeats kept steady alive past its 1.5 s lease"
    );
    assert!(cluster.metrics[0].agents_expired.get() >= 1);

    the_late_completion_is_refused(&fragile, &mut redis).await;
    drop(fragile_grants);
    drop(fragile);
    let _back = fragile_rejoins_and_takes_new_work(&cluster, &orch, &mut redis).await;
    steady
        .complete_task_confirmed("job", true, 1.0)
        .await
        .expect("the new owner completes it");
}

/// Within the lease plus an optimization interval (and slack for a loaded CI machine), the
/// task is taken back from `fragile` and granted to `steady`.
async fn the_task_moves_to_steady(redis: &mut Redis, steady_grants: &mut GrantStream) {
    let second = next_grant(10, "re-grant to steady", steady_grants).await;
    assert_eq!(
        (second.payload.task_id.as_str(), second.payload.grant_seq),
        ("job", 2)
    );
    assert_eq!(
        agent_status(redis, "fragile").await.as_deref(),
        Some("dead")
    );
    let released = reserved_cpu(redis, "fragile").await;
    assert_eq!(released, 0, "reservation released");
    assert_eq!(reserved_cpu(redis, "steady").await, 2000);
}

/// The dead agent's late completion is refused, not counted.
async fn the_late_completion_is_refused(fragile: &Agent, redis: &mut Redis) {
    let late = fragile
        .complete_task_confirmed("job", true, 1.0)
        .await
        .expect_err("refused");
    assert_eq!(late.reason_code(), Some("agent_not_active"), "{late}");
    let keys = Keys::new("switchyard");
    let state = hget(redis, &keys.task("job"), "state").await;
    assert_eq!(state.as_deref(), Some("granted"));
    assert_eq!(hget_i64(redis, &keys.stats(), "completed").await, 0);
}

/// It rejoins by registering again and takes new work; answers the rejoined agent.
async fn fragile_rejoins_and_takes_new_work(
    cluster: &Cluster,
    orch: &Coordinator,
    redis: &mut Redis,
) -> Agent {
    let back = agent_with_lease(cluster, "fragile", 30.0).await;
    let mut back_grants = back.grants().await.expect("grants");
    assert_eq!(
        agent_status(redis, "fragile").await.as_deref(),
        Some("active")
    );
    orch.submit_task(TaskSubmit::new("job-2").resource("cpu", 2.0))
        .await
        .expect("submitted");
    let grant = next_grant(10, "grant to the returned agent", &mut back_grants).await;
    assert_eq!(grant.payload.task_id, "job-2");
    back
}
