//! A replica that cannot reach Redis says so on `/readyz` and stops pulling events, so a Redis
//! stall longer than all of an event's deliveries (`max_deliver` × the back-off) dead-letters
//! nothing: the events wait in the stream and are applied once Redis answers again.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::{Cluster, within};
use switchyard_protocol::{Replies, TaskSubmit};

/// SIGSTOP or SIGCONT to a server process.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_pauses_pulling_and_dead_letters_nothing() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.jetstream.max_deliver = 3;
    cluster.add_replica().await;
    let readiness = cluster.readiness[0].clone();
    let agent = cluster.agent("worker", "worker", 64.0, 65536.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;
    assert_eq!(readiness.problem(), None, "ready before the stall");

    let redis_pid = cluster.servers.redis.pid().expect("redis runs");
    signal(redis_pid, "-STOP");
    within(10, "/readyz to report redis", async {
        while readiness.problem().as_deref() != Some("redis unreachable") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Longer than three deliveries with their back-off and the 2 s Redis timeout each.
    for i in 0..10 {
        let submit = TaskSubmit::new(format!("t{i}")).resource("cpu", 1.0);
        orch.submit_task(submit.replies(Replies::None))
            .await
            .expect("stored");
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(redis_pid, "-CONT");

    let mut granted = std::collections::HashSet::new();
    within(60, "every task granted after the stall", async {
        while granted.len() < 10 {
            let grant = grants.next().await.expect("open").expect("grant");
            granted.insert(grant.payload.task_id);
        }
    })
    .await;
    assert_eq!(readiness.problem(), None, "ready again");
    assert_eq!(
        cluster.metrics[0].dead_letters.get(),
        0,
        "nothing dead-lettered"
    );
}
