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

/// Waits (bounded) until the replica's readiness says Redis is out of reach.
async fn redis_reported_down(readiness: &switchyard_server::optimizer::Readiness) {
    within(10, "/readyz to report redis", async {
        while readiness.problem().as_deref() != Some("redis unreachable") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Submits ten one-cpu tasks `<prefix>0`..`<prefix>9`, asking for no replies.
async fn submit_ten(orch: &switchyard_client::Coordinator, prefix: &str) {
    for i in 0..10 {
        let submit = TaskSubmit::new(format!("{prefix}{i}")).resource("cpu", 1.0);
        orch.submit_task(submit.replies(Replies::None))
            .await
            .expect("stored");
    }
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
    redis_reported_down(&readiness).await;
    // Longer than three deliveries with their back-off and the 2 s Redis timeout each.
    submit_ten(&orch, "t").await;
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

/// A submit whose script call timed out while Redis was paused is dead-lettered on its only
/// delivery; Redis ran it when it resumed, and the dead letter says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_says_whether_its_transition_took_effect() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.jetstream.max_deliver = 1;
    cluster.config.redis.response_timeout_ms = 1_000;
    cluster.add_replica().await;
    let orch = cluster.coordinator("orch").await;
    let redis_pid = cluster.servers.redis.pid().expect("redis runs");

    signal(redis_pid, "-STOP");
    let submit = TaskSubmit::new("slow").resource("cpu", 1.0);
    orch.submit_task(submit.replies(Replies::None))
        .await
        .expect("stored");
    // Past the script's 1 s timeout, within the 1 s the dead-lettering waits to ask Redis.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    signal(redis_pid, "-CONT");

    let nats = cluster.nats().await;
    let js = async_nats::jetstream::new(nats);
    let subjects = cluster.subjects();
    let dead = within(20, "the submit's dead letter", async {
        loop {
            let stream = js
                .get_stream(subjects.dead_letter_stream())
                .await
                .expect("dlq");
            let subject = subjects.dead_letter("task_submit");
            if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let header = |name: &str| {
        dead.headers
            .get(name)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        header("Switchyard-Took-Effect"),
        "yes",
        "{:?}",
        dead.headers
    );
    assert!(
        header("Switchyard-Error").contains("Timeout")
            || header("Switchyard-Error").contains("Redis"),
        "{:?}",
        dead.headers
    );
    // Where it was first received, so the dashboard can replay it there.
    assert_eq!(
        header("Switchyard-Subject"),
        subjects.addressed(switchyard_protocol::MessageType::TaskSubmit, "orch"),
        "{:?}",
        dead.headers
    );
    assert_eq!(cluster.metrics[0].dead_letters.get(), 1);
}

/// The optimizer alone loses Redis (a cut link, Redis itself fine): it says so, pulls nothing,
/// and once the link is back every task submitted meanwhile is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_redis_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start(0).await;
    let redis_addr = format!("127.0.0.1:{}", cluster.servers.redis.port());
    let proxy = switchyard_harness::TcpProxy::start(redis_addr.parse().expect("addr"))
        .await
        .expect("proxy");
    cluster.config.redis.url = format!("redis://127.0.0.1:{}/", proxy.port());
    cluster.config.jetstream.max_deliver = 3;
    cluster.add_replica().await;
    let readiness = cluster.readiness[0].clone();
    let agent = cluster.agent("worker", "worker", 64.0, 65536.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;

    proxy.cut();
    redis_reported_down(&readiness).await;
    submit_ten(&orch, "p").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.restore();

    // Copies of a grant may come (re-sent until acknowledged); each task counts once.
    let mut seen = std::collections::BTreeSet::new();
    within(60, "every task granted after the partition", async {
        while seen.len() < 10 {
            let grant = grants.next().await.expect("open").expect("grant");
            seen.insert((grant.payload.task_id, grant.payload.grant_seq));
        }
    })
    .await;
    assert_eq!(
        seen.len(),
        10,
        "ten tasks, each on its first grant: {seen:?}"
    );
    assert!(seen.iter().all(|(_, seq)| *seq == 1), "{seen:?}");
    assert_eq!(
        cluster.metrics[0].dead_letters.get(),
        0,
        "nothing dead-lettered"
    );
    let mut redis = cluster.redis().await;
    let reserved = common::hget_i64(
        &mut redis,
        &switchyard_server::state::Keys::new("switchyard").agent("worker"),
        "res_cpu",
    )
    .await;
    assert_eq!(reserved, 10_000, "reserved once per task");
}
