//! TASK_CANCEL against real servers and two optimizer replicas: a cancel in each state of the
//! task, races with the grant and with the completion, idempotence (the same cancel twice, and
//! one redelivered), dependents failing with `dependency_cancelled`, who may cancel, and the
//! granted task's agent being told and confirming (or leaving). Every check of the shared state
//! reads Redis; counters prove that no transition was applied twice.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::{Cluster, hget, hget_i64, submit_reply, wait_for_state, within};
use switchyard_client::{
    Agent, Allocation, Cancellation, ClientEvent, Coordinator, GrantStream, Work,
};
use switchyard_protocol::{
    Envelope, MessageType, ReplyStatus, TaskCancel, TaskCancelNotice, TaskSubmit, now_ms,
};
use switchyard_server::state::Keys;

fn keys() -> Keys {
    Keys::new("switchyard")
}

fn task(id: &str) -> TaskSubmit {
    TaskSubmit::new(id).resource("cpu", 1.0)
}

async fn stat(cluster: &Cluster, name: &str) -> i64 {
    hget_i64(&mut cluster.redis().await, &keys().stats(), name).await
}

async fn state_of(cluster: &Cluster, task_id: &str) -> Option<String> {
    hget(&mut cluster.redis().await, &keys().task(task_id), "state").await
}

async fn reserved_cpu(cluster: &Cluster, agent_id: &str) -> i64 {
    hget_i64(
        &mut cluster.redis().await,
        &keys().agent(agent_id),
        "res_cpu",
    )
    .await
}

async fn in_queue(cluster: &Cluster, task_id: &str) -> bool {
    in_sorted_set(cluster, &keys().queue(), task_id).await
}

async fn in_sorted_set(cluster: &Cluster, key: &str, task_id: &str) -> bool {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(key)
        .arg(task_id)
        .query_async(&mut cluster.redis().await)
        .await
        .expect("ZSCORE");
    score.is_some()
}

/// The next cancel notice on the grant stream (grants before it are skipped).
async fn next_notice(grants: &mut GrantStream, what: &str) -> Envelope<TaskCancelNotice> {
    within(10, what, async {
        loop {
            match grants
                .next_work()
                .await
                .expect("stream open")
                .expect("work")
            {
                Work::Cancel(notice) => return notice,
                Work::Grant(_) => {}
            }
        }
    })
    .await
}

async fn setup(cpu: f64) -> (Cluster, Agent, Coordinator) {
    let cluster = Cluster::start(2).await;
    let agent = cluster.agent("solo", "worker", cpu, 8192.0).await;
    let orch = cluster.coordinator("orch").await;
    (cluster, agent, orch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_each_state_is_applied_or_answered_as_such() {
    let (cluster, agent, orch) = setup(1.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let mut events = orch.events();

    // Granted: fills the only agent. Queued: waits behind it. Waiting: on a task not submitted.
    let fill = orch.allocate_task(task("fill")).await.expect("fill");
    assert!(matches!(fill, Allocation::Granted { .. }), "{fill:?}");
    assert_eq!(
        orch.allocate_task(task("q")).await.unwrap(),
        Allocation::Queued
    );
    let waiting = orch
        .allocate_task(task("w").depends_on("not-yet"))
        .await
        .unwrap();
    assert_eq!(waiting, Allocation::Waiting);
    assert!(in_sorted_set(&cluster, &keys().waiting(), "w").await);

    // Waiting and queued: cancelled at once, out of the queue.
    assert_eq!(
        orch.cancel_task("w").await.unwrap(),
        Cancellation::Cancelled
    );
    assert_eq!(
        orch.cancel_task("q").await.unwrap(),
        Cancellation::Cancelled
    );
    assert_eq!(state_of(&cluster, "w").await.as_deref(), Some("cancelled"));
    assert_eq!(state_of(&cluster, "q").await.as_deref(), Some("cancelled"));
    assert!(
        !in_queue(&cluster, "q").await,
        "a cancelled task left the queue"
    );
    assert!(
        !in_sorted_set(&cluster, &keys().waiting(), "w").await,
        "a cancelled waiting task is no longer counted as waiting"
    );
    let status = orch.status().await.expect("status");
    assert_eq!((status.queue_depth, status.waiting_depth), (0, 0));
    let told = submit_reply(&mut events, "q", &[ReplyStatus::Queued]).await;
    assert_eq!(told.status, ReplyStatus::Cancelled, "the submitter is told");

    // Granted: the agent is told, the task stays granted (and reserved) until it confirms.
    let answer = orch.cancel_task("fill").await.unwrap();
    assert_eq!(
        answer,
        Cancellation::Cancelling {
            agent_id: "solo".into()
        }
    );
    let notice = next_notice(&mut grants, "the cancel notice").await;
    assert_eq!(notice.message_type, MessageType::TaskCancel);
    assert_eq!(
        (notice.payload.task_id.as_str(), notice.payload.grant_seq),
        ("fill", 1)
    );
    assert_eq!(state_of(&cluster, "fill").await.as_deref(), Some("granted"));
    assert_eq!(
        reserved_cpu(&cluster, "solo").await,
        1000,
        "held until confirmed"
    );
    agent
        .confirm_cancel(&notice.payload)
        .await
        .expect("confirm");
    wait_for_state(&mut cluster.redis().await, 10, "fill", "cancelled").await;
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0, "released");
    let told = submit_reply(&mut events, "fill", &[ReplyStatus::Granted]).await;
    assert_eq!(told.status, ReplyStatus::Cancelled);

    // The freed agent takes new work; the cancelled queued task is never granted.
    let next = orch.allocate_task(task("next")).await.unwrap();
    assert!(matches!(next, Allocation::Granted { .. }), "{next:?}");
    assert_eq!(state_of(&cluster, "q").await.as_deref(), Some("cancelled"));

    // Completed and failed: nothing to cancel, answered as such.
    agent
        .complete_task_confirmed("next", true, 0.1)
        .await
        .unwrap();
    let done = orch.cancel_task("next").await.unwrap();
    assert!(
        matches!(
            done,
            Cancellation::AlreadyFinished {
                status: ReplyStatus::Completed,
                ..
            }
        ),
        "{done:?}"
    );
    orch.allocate_task(task("bad")).await.unwrap();
    agent
        .complete_task_confirmed("bad", false, 0.1)
        .await
        .unwrap();
    let failed = orch.cancel_task("bad").await.unwrap();
    assert!(
        matches!(
            failed,
            Cancellation::AlreadyFinished {
                status: ReplyStatus::Failed,
                ..
            }
        ),
        "{failed:?}"
    );
    assert_eq!(
        state_of(&cluster, "next").await.as_deref(),
        Some("completed")
    );
    assert_eq!(state_of(&cluster, "bad").await.as_deref(), Some("failed"));
    assert_eq!(stat(&cluster, "cancelled").await, 3);
    assert_eq!(
        stat(&cluster, "failed").await,
        1,
        "a cancel is not a failure"
    );

    // Unknown tasks are refused.
    let unknown = orch.cancel_task("nope").await.unwrap_err();
    assert_eq!(unknown.reason_code(), Some("unknown_task"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_submitter_or_an_operator_may_cancel() {
    let (cluster, _agent, orch) = setup(0.0).await;
    let other = cluster.coordinator("other").await;
    assert_eq!(
        orch.allocate_task(task("mine")).await.unwrap(),
        Allocation::Queued
    );
    let refused = other.cancel_task("mine").await.unwrap_err();
    assert_eq!(refused.reason_code(), Some("not_submitter"));
    assert_eq!(state_of(&cluster, "mine").await.as_deref(), Some("queued"));
    let ops = cluster.coordinator("ops").await;
    let by_operator = ops
        .cancel_task_as_operator("mine", Some("maintenance"))
        .await
        .unwrap();
    assert_eq!(by_operator, Cancellation::Cancelled);
    let reason = hget(
        &mut cluster.redis().await,
        &keys().task("mine"),
        "cancelled_by",
    )
    .await;
    assert_eq!(reason.as_deref(), Some("ops"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cancel_twice_or_redelivered_is_applied_once() {
    let (cluster, agent, orch) = setup(1.0).await;
    let mut grants = agent.grants().await.expect("grants");
    orch.allocate_task(task("held")).await.unwrap();
    assert_eq!(
        orch.allocate_task(task("q")).await.unwrap(),
        Allocation::Queued
    );

    // The same cancel twice (a client retry: new message ids).
    assert_eq!(
        orch.cancel_task("q").await.unwrap(),
        Cancellation::Cancelled
    );
    assert_eq!(
        orch.cancel_task("q").await.unwrap(),
        Cancellation::Cancelled
    );
    assert_eq!(stat(&cluster, "cancelled").await, 1);

    // One cancel delivered twice (same message id, stored twice, as a redelivery would bring
    // it): both copies are answered, and applied once.
    let mut events = orch.events();
    let cancel = Envelope::new(
        "orch",
        MessageType::TaskCancel,
        TaskCancel {
            task_id: "held".into(),
            reason: None,
        },
        now_ms(),
    );
    let id = cancel.message_id.to_string();
    let js = async_nats::jetstream::new(cluster.nats().await);
    let subject = cluster
        .subjects()
        .addressed(MessageType::TaskCancel, "orch");
    for copy in ["a", "b"] {
        let dedupe_id = format!("{id}-{copy}");
        switchyard_client::transport::publish_stored(&js, subject.clone(), &dedupe_id, &cancel)
            .await
            .expect("stored");
    }
    let answers = within(10, "both copies answered", async {
        let mut answers = Vec::new();
        while answers.len() < 2 {
            if let Ok(ClientEvent::Reply(r)) = events.recv().await
                && r.correlation_id.as_deref() == Some(id.as_str())
            {
                answers.push(r.payload.status);
            }
        }
        answers
    })
    .await;
    assert_eq!(answers, [ReplyStatus::Cancelling, ReplyStatus::Cancelling]);
    let notice = next_notice(&mut grants, "the notice").await;
    agent.confirm_cancel(&notice.payload).await.unwrap();
    // Confirming twice (a copy of the notice) changes nothing either.
    agent.confirm_cancel(&notice.payload).await.unwrap();
    wait_for_state(&mut cluster.redis().await, 10, "held", "cancelled").await;
    assert_eq!(
        orch.cancel_task("held").await.unwrap(),
        Cancellation::Cancelled
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stat(&cluster, "cancelled").await, 2);
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0);
    let active = hget_i64(
        &mut cluster.redis().await,
        &keys().agent("solo"),
        "active_tasks",
    )
    .await;
    assert_eq!(active, 0, "released once, not twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_a_cancelled_task_fail_with_dependency_cancelled() {
    let (cluster, _agent, orch) = setup(0.0).await;
    let mut events = orch.events();
    assert_eq!(
        orch.allocate_task(task("p")).await.unwrap(),
        Allocation::Queued
    );
    let child = orch
        .allocate_task(task("child").depends_on("p"))
        .await
        .unwrap();
    assert_eq!(child, Allocation::Waiting);
    let grandchild = orch
        .allocate_task(task("grandchild").depends_on("child"))
        .await
        .unwrap();
    assert_eq!(grandchild, Allocation::Waiting);

    assert_eq!(
        orch.cancel_task("p").await.unwrap(),
        Cancellation::Cancelled
    );
    let skip = [ReplyStatus::Waiting];
    let c = submit_reply(&mut events, "child", &skip).await;
    assert_eq!(
        (c.status, c.detail.as_deref()),
        (ReplyStatus::Failed, Some("dependency_cancelled:p"))
    );
    let g = submit_reply(&mut events, "grandchild", &skip).await;
    assert_eq!(
        (g.status, g.detail.as_deref()),
        (ReplyStatus::Failed, Some("dependency_failed:child"))
    );
    assert_eq!(state_of(&cluster, "child").await.as_deref(), Some("failed"));
    assert_eq!(
        state_of(&cluster, "grandchild").await.as_deref(),
        Some("failed")
    );

    // A task submitted after its dependency was cancelled fails at once.
    let late = orch
        .allocate_task(task("late").depends_on("p"))
        .await
        .unwrap();
    assert_eq!(
        late,
        Allocation::Failed {
            reason: "dependency_cancelled:p".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_whose_agent_leaves_is_cancelled_not_requeued() {
    let (cluster, agent, orch) = setup(1.0).await;
    let mut grants = agent.grants().await.expect("grants");
    orch.allocate_task(task("t")).await.unwrap();
    assert!(matches!(
        orch.cancel_task("t").await.unwrap(),
        Cancellation::Cancelling { .. }
    ));
    next_notice(&mut grants, "the notice").await;
    // The agent never confirms; it leaves (a lease running out takes the same path).
    agent.deregister().await.expect("deregister");
    wait_for_state(&mut cluster.redis().await, 10, "t", "cancelled").await;
    assert!(!in_queue(&cluster, "t").await, "not re-queued");
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0);
    assert_eq!(stat(&cluster, "requeued").await, 0);
    assert_eq!(stat(&cluster, "cancelled").await, 1);
}

/// Cancels `task_id`, sent right after its submit: submits and cancels travel on different lanes,
/// so the cancel may be applied first and find no task (`unknown_task`); the caller sends it again,
/// as a client would.
async fn cancel_once_submitted(orch: &Coordinator, task_id: &str) -> Cancellation {
    within(10, "the cancel to find its task", async {
        loop {
            match orch.cancel_task(task_id).await {
                Ok(answer) => return answer,
                Err(e) if e.reason_code() == Some("unknown_task") => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cancel of {task_id}: {e}"),
            }
        }
    })
    .await
}

/// Cancels race the grants of the same tasks, on two replicas. Whichever wins, the task ends
/// cancelled, its reservation is released exactly once, and each cancel is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_grant_ends_cancelled_and_released_once() {
    const N: usize = 20;
    let (cluster, agent, orch) = setup(100.0).await;
    let mut grants = agent.grants().await.expect("grants");
    let agent = std::sync::Arc::new(agent);
    // The agent holds every grant and confirms every cancel notice.
    let confirming = agent.clone();
    let worker = tokio::spawn(async move {
        while let Some(Ok(work)) = grants.next_work().await {
            if let Work::Cancel(notice) = work {
                confirming
                    .confirm_cancel(&notice.payload)
                    .await
                    .expect("confirm");
            }
        }
    });
    let mut answers = Vec::new();
    for i in 0..N {
        let id = format!("r{i}");
        orch.submit_task(task(&id)).await.expect("submitted");
        answers.push(cancel_once_submitted(&orch, &id).await);
    }
    let mut redis = cluster.redis().await;
    for i in 0..N {
        wait_for_state(&mut redis, 15, &format!("r{i}"), "cancelled").await;
    }
    let cancelling = answers
        .iter()
        .filter(|a| matches!(a, Cancellation::Cancelling { .. }))
        .count();
    eprintln!("{cancelling} of {N} cancels came after the grant");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stat(&cluster, "cancelled").await, N as i64);
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0);
    let active = hget_i64(&mut redis, &keys().agent("solo"), "active_tasks").await;
    assert_eq!(active, 0);
    worker.abort();
}

/// A cancel races the agent's report. The report and the cancel are each one script: the
/// answer to the cancel always agrees with the final state, and the reservation is released once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_completion_agrees_with_the_outcome() {
    const N: usize = 10;
    let (cluster, agent, orch) = setup(100.0).await;
    let mut grants = agent.grants().await.expect("grants");
    for i in 0..N {
        let id = format!("c{i}");
        let granted = orch.allocate_task(task(&id)).await.unwrap();
        assert!(matches!(granted, Allocation::Granted { .. }), "{granted:?}");
        let grant = within(10, "the grant", async {
            loop {
                if let Some(Ok(Work::Grant(g))) = grants.next_work().await {
                    return g;
                }
            }
        })
        .await;
        // Even tasks succeed, odd ones fail, each reported as the cancel goes out.
        let success = i % 2 == 0;
        let (report, answer) = tokio::join!(
            agent.complete_grant(&grant.payload, success, 0.1),
            orch.cancel_task(&id)
        );
        report.expect("reported");
        let answer = answer.expect("cancel answered");
        let want = match (&answer, success) {
            (Cancellation::AlreadyFinished { status, .. }, _)
                if *status == ReplyStatus::Completed =>
            {
                "completed"
            }
            (Cancellation::AlreadyFinished { status, .. }, _) if *status == ReplyStatus::Failed => {
                "failed"
            }
            // The cancel came first: a success still completes it, a failure confirms it.
            (Cancellation::Cancelling { .. }, true) => "completed",
            (Cancellation::Cancelling { .. }, false) => "cancelled",
            other => panic!("unexpected answer {other:?}"),
        };
        wait_for_state(&mut cluster.redis().await, 10, &id, want).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let finished = stat(&cluster, "completed").await
        + stat(&cluster, "failed").await
        + stat(&cluster, "cancelled").await;
    assert_eq!(finished, N as i64, "each task finished exactly once");
    assert_eq!(reserved_cpu(&cluster, "solo").await, 0);
}

/// An agent that never confirms, and then goes silent: the notice is sent again (same message
/// id) while it lives, and when its lease ends (Redis clock) the task is cancelled, not re-queued,
/// and its reservation released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_cancel_is_resent_and_ends_with_the_lease() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.coordination.optimization_interval_s = 0.2;
    cluster.config.coordination.grant_resend_ms = 200;
    cluster.add_replica().await;
    cluster.add_replica().await;
    let registration = switchyard_protocol::AgentRegister::new("mute", "worker")
        .capacity("cpu", 1.0)
        .lease(1.5);
    let mut agent = within(
        30,
        "mute to register",
        Agent::register(cluster.nats().await, cluster.subjects(), registration),
    )
    .await
    .expect("registers");
    let mut grants = agent.grants().await.expect("grants");
    let orch = cluster.coordinator("orch").await;
    let mut events = orch.events();
    orch.allocate_task(task("t")).await.unwrap();
    assert!(matches!(
        orch.cancel_task("t").await.unwrap(),
        Cancellation::Cancelling { .. }
    ));
    let first = next_notice(&mut grants, "the notice").await;
    let again = next_notice(&mut grants, "the notice sent again").await;
    assert_eq!(first.message_id, again.message_id, "every copy has one id");
    assert_eq!(state_of(&cluster, "t").await.as_deref(), Some("granted"));

    agent.stop_heartbeats();
    wait_for_state(&mut cluster.redis().await, 15, "t", "cancelled").await;
    assert!(!in_queue(&cluster, "t").await, "not re-queued");
    assert_eq!(reserved_cpu(&cluster, "mute").await, 0);
    assert_eq!(stat(&cluster, "requeued").await, 0);
    let told = submit_reply(&mut events, "t", &[ReplyStatus::Granted]).await;
    assert_eq!(told.status, ReplyStatus::Cancelled, "the submitter is told");
}
