//! Time limits and retries (issue 12 items 2 and 3) against real servers: queue and run
//! timeouts by the Redis clock, retries on another agent, the last attempt's final reply, the
//! back-off as a waiting reason, a cancel during the back-off, two replicas enforcing the same
//! deadlines once, and the Lua back-off formula against the decision crate's.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Cluster, config_for, hget, hget_i64, submit_reply, wait_for_stat, wait_for_state, within,
};
use switchyard_client::{Agent, Allocation, Cancellation, Coordinator, GrantStream, Work};
use switchyard_harness::LocalServers;
use switchyard_protocol::{
    Envelope, ReplyStatus, TaskCancelNotice, TaskGrant, TaskSubmit, WaitReason,
};
use switchyard_server::state::Keys;

fn keys() -> Keys {
    Keys::new("switchyard")
}

fn task(id: &str) -> TaskSubmit {
    TaskSubmit::new(id).resource("cpu", 1.0)
}

/// Servers and `replicas` optimizers that enforce deadlines every 50 ms.
async fn start(replicas: usize) -> Cluster {
    common::init_tracing();
    let servers = LocalServers::start().await.expect("servers start");
    let mut config = config_for(&servers);
    config.coordination.grant_resend_ms = 50;
    Cluster::start_on(servers, config, replicas).await
}

async fn state_of(cluster: &Cluster, task_id: &str) -> Option<String> {
    hget(&mut cluster.redis().await, &keys().task(task_id), "state").await
}

async fn field(cluster: &Cluster, task_id: &str, name: &str) -> Option<String> {
    hget(&mut cluster.redis().await, &keys().task(task_id), name).await
}

async fn reserved_cpu(cluster: &Cluster, agent_id: &str) -> i64 {
    let key = keys().agent(agent_id);
    hget_i64(&mut cluster.redis().await, &key, "res_cpu").await
}

async fn stat(cluster: &Cluster, name: &str) -> i64 {
    hget_i64(&mut cluster.redis().await, &keys().stats(), name).await
}

async fn zcard(cluster: &Cluster, key: &str) -> i64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut cluster.redis().await)
        .await
        .expect("ZCARD")
}

/// The next grant or notice on a stream.
async fn next_work(grants: &mut GrantStream, what: &str) -> Work {
    within(15, what, grants.next_work())
        .await
        .expect("stream open")
        .expect("work")
}

async fn next_grant(grants: &mut GrantStream, what: &str) -> Envelope<TaskGrant> {
    loop {
        if let Work::Grant(grant) = next_work(grants, what).await {
            return grant;
        }
    }
}

async fn next_notice(grants: &mut GrantStream, what: &str) -> Envelope<TaskCancelNotice> {
    loop {
        if let Work::Cancel(notice) = next_work(grants, what).await {
            return notice;
        }
    }
}

/// Two one-cpu agents and a submitter.
async fn two_agents(cluster: &Cluster) -> (Agent, Agent, Coordinator) {
    let a = cluster.agent("a1", "worker", 1.0, 1024.0).await;
    let b = cluster.agent("a2", "worker", 1.0, 1024.0).await;
    (a, b, cluster.coordinator("orch").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_and_a_waiting_task_time_out_and_their_dependents_fail() {
    let cluster = start(1).await;
    let orch = cluster.coordinator("orch").await;
    let mut events = orch.events();
    // No agent: the queued task can never be granted; the waiting one waits on a task never
    // submitted.
    let queued = orch.allocate_task(task("q").queue_timeout(0.3)).await;
    assert_eq!(queued.unwrap(), Allocation::Queued);
    let waiting = task("w").depends_on("never").queue_timeout(0.3);
    assert_eq!(
        orch.allocate_task(waiting).await.unwrap(),
        Allocation::Waiting
    );
    let dependent = task("d").depends_on("w");
    assert_eq!(
        orch.allocate_task(dependent).await.unwrap(),
        Allocation::Waiting
    );
    let untimed = orch.allocate_task(task("forever")).await.unwrap();
    assert_eq!(untimed, Allocation::Queued);

    let told = submit_reply(&mut events, "q", &[ReplyStatus::Queued]).await;
    assert_eq!(told.status, ReplyStatus::Failed);
    assert_eq!(told.detail.as_deref(), Some("queue_timeout"));
    let mut redis = cluster.redis().await;
    wait_for_state(&mut redis, 10, "w", "failed").await;
    wait_for_state(&mut redis, 10, "d", "failed").await;
    assert_eq!(
        field(&cluster, "q", "reason").await.as_deref(),
        Some("queue_timeout")
    );
    assert_eq!(
        field(&cluster, "w", "reason").await.as_deref(),
        Some("queue_timeout")
    );
    assert_eq!(
        field(&cluster, "d", "reason").await.as_deref(),
        Some("dependency_failed:w")
    );
    assert_eq!(
        zcard(&cluster, &keys().queue()).await,
        1,
        "only the untimed task is left"
    );
    assert_eq!(zcard(&cluster, &keys().waiting()).await, 0);
    assert_eq!(stat(&cluster, "timed_out").await, 2);
    let timeouts = cluster.metrics[0]
        .task_timeouts
        .with_label_values(&["queue"])
        .get();
    assert_eq!(timeouts, 2);
    assert_eq!(
        state_of(&cluster, "forever").await.as_deref(),
        Some("queued")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_timeout_releases_the_grant_tells_the_agent_and_retries_on_another() {
    let cluster = start(1).await;
    let (a, b, orch) = two_agents(&cluster).await;
    let (mut ga, mut gb) = (a.grants().await.unwrap(), b.grants().await.unwrap());
    let mut events = orch.events();
    let slow = task("slow")
        .run_timeout(0.3)
        .max_attempts(2)
        .retry_backoff(0.05);
    let first = orch.allocate_task(slow).await.unwrap();
    let Allocation::Granted {
        agent_id: first_agent,
    } = first
    else {
        panic!("{first:?}")
    };
    let (stuck, stuck_grants, other, other_grants) = if first_agent == "a1" {
        (&a, &mut ga, &b, &mut gb)
    } else {
        (&b, &mut gb, &a, &mut ga)
    };
    let grant = next_grant(stuck_grants, "the first grant").await;
    // The agent never reports: at the deadline it is told to stop...
    let notice = next_notice(stuck_grants, "the run-timeout notice").await;
    assert!(notice.payload.is_run_timeout(), "{:?}", notice.payload);
    assert_eq!(notice.payload.grant_seq, grant.payload.grant_seq);
    // ... its reservation is already released, and the task runs again on the other agent.
    assert_eq!(reserved_cpu(&cluster, stuck.agent_id()).await, 0);
    let again = next_grant(other_grants, "the retry's grant").await;
    assert_eq!(again.payload.task_id, "slow");
    assert!(again.payload.grant_seq > grant.payload.grant_seq);
    assert_eq!(
        field(&cluster, "slow", "attempt").await.as_deref(),
        Some("2")
    );
    // A late report of the stopped grant is refused.
    let late = stuck
        .complete_grant_confirmed(&grant.payload, true, 1.0)
        .await;
    assert_eq!(late.unwrap_err().reason_code(), Some("stale_grant"));
    // The other agent's report completes it; the submitter hears it once, at the end.
    other
        .complete_grant(&again.payload, true, 0.1)
        .await
        .unwrap();
    let told = submit_reply(
        &mut events,
        "slow",
        &[ReplyStatus::Granted, ReplyStatus::Queued],
    )
    .await;
    assert_eq!(told.status, ReplyStatus::Completed);
    assert_eq!(stat(&cluster, "timed_out").await, 1);
    assert_eq!(stat(&cluster, "retried").await, 1);
    let m = &cluster.metrics[0];
    assert_eq!(m.task_timeouts.with_label_values(&["run"]).get(), 1);
    assert_eq!(m.task_retries.with_label_values(&["run_timeout"]).get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_waits_its_back_off_then_runs_on_the_other_agent() {
    let cluster = start(1).await;
    let (a, b, orch) = two_agents(&cluster).await;
    let (mut ga, mut gb) = (a.grants().await.unwrap(), b.grants().await.unwrap());
    let mut events = orch.events();
    let flaky = task("flaky").max_attempts(3).retry_backoff(1.0);
    let first = orch.allocate_task(flaky).await.unwrap();
    let after = orch
        .allocate_task(task("after").depends_on("flaky"))
        .await
        .unwrap();
    assert_eq!(after, Allocation::Waiting);
    let Allocation::Granted {
        agent_id: first_agent,
    } = first
    else {
        panic!("{first:?}")
    };
    let (failing, failing_grants, other_grants) = if first_agent == "a1" {
        (&a, &mut ga, &mut gb)
    } else {
        (&b, &mut gb, &mut ga)
    };
    let grant = next_grant(failing_grants, "the first grant").await;
    failing
        .complete_grant(&grant.payload, false, 0.1)
        .await
        .unwrap();
    // Back in the queue after its back-off, not failed: the submitter hears `queued`, the
    // dependent keeps waiting, and the status says why it waits.
    let told = submit_reply(&mut events, "flaky", &[ReplyStatus::Granted]).await;
    assert_eq!(told.status, ReplyStatus::Queued, "{told:?}");
    assert!(
        told.detail
            .unwrap_or_default()
            .contains("retrying after back-off")
    );
    assert_eq!(state_of(&cluster, "flaky").await.as_deref(), Some("queued"));
    assert_eq!(
        state_of(&cluster, "after").await.as_deref(),
        Some("waiting")
    );
    let view = orch.task_status("flaky").await.unwrap().expect("listed");
    assert!(
        matches!(
            view.reason,
            Some(WaitReason::RetryBackoff { attempt: 2, .. })
        ),
        "{view:?}"
    );
    assert!(
        view.detail.starts_with("retrying after back-off until"),
        "{view:?}"
    );
    let listed = orch
        .status_with(switchyard_protocol::StatusQuery {
            include_tasks: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        listed.tasks.iter().any(|t| t.task_id == "flaky"),
        "{listed:?}"
    );
    // The retry goes to the agent it has not failed on, though both are free.
    let again = next_grant(other_grants, "the retry's grant").await;
    assert_eq!(again.payload.task_id, "flaky");
    let failed_agents = field(&cluster, "flaky", "failed_agents").await;
    assert_eq!(failed_agents.as_deref(), Some(first_agent.as_str()));
    let second = if first_agent == "a1" { &b } else { &a };
    second
        .complete_grant(&again.payload, true, 0.1)
        .await
        .unwrap();
    let told = submit_reply(
        &mut events,
        "flaky",
        &[ReplyStatus::Granted, ReplyStatus::Queued],
    )
    .await;
    assert_eq!(told.status, ReplyStatus::Completed);
    // Its dependent runs now.
    wait_for_state(&mut cluster.redis().await, 10, "after", "granted").await;
    assert_eq!(
        cluster.metrics[0]
            .task_retries
            .with_label_values(&["failed"])
            .get(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_failed_attempt_fails_the_task_and_its_dependents() {
    let cluster = start(1).await;
    // One agent: the retry goes to the agent it failed on, there being no other.
    let solo = cluster.agent("solo", "worker", 1.0, 1024.0).await;
    let mut grants = solo.grants().await.unwrap();
    let orch = cluster.coordinator("orch").await;
    let mut events = orch.events();
    orch.allocate_task(task("doomed").max_attempts(2).retry_backoff(0.05))
        .await
        .unwrap();
    orch.allocate_task(task("next").depends_on("doomed"))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let grant = next_grant(&mut grants, &format!("attempt {attempt}")).await;
        assert_eq!(grant.payload.task_id, "doomed");
        solo.complete_grant(&grant.payload, false, 0.1)
            .await
            .unwrap();
    }
    let told = submit_reply(
        &mut events,
        "doomed",
        &[ReplyStatus::Granted, ReplyStatus::Queued],
    )
    .await;
    assert_eq!(told.status, ReplyStatus::Failed);
    wait_for_state(&mut cluster.redis().await, 10, "next", "failed").await;
    assert_eq!(
        state_of(&cluster, "doomed").await.as_deref(),
        Some("failed")
    );
    assert_eq!(
        field(&cluster, "doomed", "attempt").await.as_deref(),
        Some("2")
    );
    assert_eq!(stat(&cluster, "retried").await, 1);
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_back_off_cancels_the_task() {
    let cluster = start(1).await;
    let solo = cluster.agent("solo", "worker", 1.0, 1024.0).await;
    let mut grants = solo.grants().await.unwrap();
    let orch = cluster.coordinator("orch").await;
    orch.allocate_task(task("t").max_attempts(3).retry_backoff(30.0))
        .await
        .unwrap();
    let grant = next_grant(&mut grants, "the grant").await;
    solo.complete_grant(&grant.payload, false, 0.1)
        .await
        .unwrap();
    let mut redis = cluster.redis().await;
    wait_for_stat(&mut redis, 10, "retried", 1).await;
    assert_eq!(zcard(&cluster, &keys().retries()).await, 1);
    assert_eq!(
        orch.cancel_task("t").await.unwrap(),
        Cancellation::Cancelled
    );
    assert_eq!(state_of(&cluster, "t").await.as_deref(), Some("cancelled"));
    assert_eq!(
        zcard(&cluster, &keys().retries()).await,
        0,
        "out of the retry set"
    );
    assert_eq!(zcard(&cluster, &keys().queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_time_each_task_out_once() {
    const TASKS: usize = 8;
    let cluster = start(2).await;
    let big = cluster.agent("big", "worker", TASKS as f64, 8192.0).await;
    let orch = cluster.coordinator("orch").await;
    for i in 0..TASKS {
        // Run timeouts, with a long back-off so the retries stay put.
        let t = task(&format!("r{i}"))
            .run_timeout(0.2)
            .max_attempts(2)
            .retry_backoff(60.0);
        orch.allocate_task(t).await.unwrap();
        // Queue timeouts: nothing could hold these.
        let q = TaskSubmit::new(format!("q{i}"))
            .resource("cpu", 1000.0)
            .queue_timeout(0.2);
        orch.allocate_task(q).await.unwrap();
    }
    let mut redis = cluster.redis().await;
    wait_for_stat(&mut redis, 20, "timed_out", 2 * TASKS as i64).await;
    within(20, "the deadlines to be spent", async {
        while zcard(&cluster, &keys().run_deadlines()).await
            + zcard(&cluster, &keys().queue_deadlines()).await
            > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        stat(&cluster, "timed_out").await,
        2 * TASKS as i64,
        "once each"
    );
    assert_eq!(
        stat(&cluster, "retried").await,
        TASKS as i64,
        "one retry each"
    );
    for i in 0..TASKS {
        assert_eq!(
            field(&cluster, &format!("r{i}"), "attempt")
                .await
                .as_deref(),
            Some("2")
        );
        assert_eq!(
            field(&cluster, &format!("q{i}"), "reason").await.as_deref(),
            Some("queue_timeout")
        );
    }
    let counted = |kind: &str| -> u64 {
        cluster
            .metrics
            .iter()
            .map(|m| m.task_timeouts.with_label_values(&[kind]).get())
            .sum()
    };
    assert_eq!(
        (counted("run"), counted("queue")),
        (TASKS as u64, TASKS as u64)
    );
    assert_eq!(
        reserved_cpu(&cluster, "big").await,
        0,
        "every grant released"
    );
    drop(big);
}

/// The back-off the scripts compute is the decision crate's, for a spread of inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_back_off_as_the_decision_crate_does() {
    let servers = LocalServers::start().await.expect("servers start");
    let mut redis = common::redis_at(&servers).await;
    let lib = include_str!("../crates/server/src/state/lua/lib.lua");
    let script = format!(
        "local KINDS = {{'cpu', 'memory', 'tokens', 'time'}}\n\
         local LEARNED_FIELDS = {{}}\n{lib}\n\
         return retry_backoff_ms(ARGV[1], ARGV[2], ARGV[3])"
    );
    for (base, failures, cap) in [
        (1000u64, 1u32, 60_000u64),
        (1000, 2, 60_000),
        (250, 5, 60_000),
        (1000, 10, 60_000),
        (0, 3, 60_000),
        (1500, 3, 5000),
        (100, 80, 1_000_000),
        (1, 1, 0),
    ] {
        let lua: u64 = redis::cmd("EVAL")
            .arg(&script)
            .arg(0)
            .arg(base)
            .arg(failures)
            .arg(cap)
            .query_async(&mut redis)
            .await
            .expect("EVAL");
        let rust = switchyard_decision::retry_backoff_ms(base, failures, cap);
        assert_eq!(
            lua, rust,
            "base {base} ms, {failures} failures, cap {cap} ms"
        );
    }
}
