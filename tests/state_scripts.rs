//! The Redis transition scripts against a real redis-server (no NATS): each transition's answers,
//! its idempotency, and that it changes exactly what it should (and nothing when it refuses).

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;

use common::scripts::{
    Fixture, RETENTION_S, all, completion, cpu, fixture, ids, refused, submit_req, with_deps,
};
use common::within;
use futures::future::join_all;
use switchyard_decision::Resources;
use switchyard_decision::TaskState;
use switchyard_protocol::{RejectReason, StatusQuery};
use switchyard_server::state::Refusal;
use switchyard_server::state::{
    CompleteOutcome, Completion, GrantOutcome, RequeueOutcome, ResolveOutcome, SubmitOutcome,
};

/// Steps only these tests use.
impl Fixture {
    async fn complete_timed(
        &self,
        task_id: &str,
        agent_id: &str,
        success: bool,
        execution_time_s: f64,
    ) -> CompleteOutcome {
        let report = Completion {
            success,
            execution_time_s,
            ..completion(task_id, agent_id)
        };
        self.complete_report(&report).await
    }

    async fn resolve(&self, task_id: &str, dependency: &str, succeeded: bool) -> ResolveOutcome {
        self.store
            .resolve_dependency(task_id, dependency, succeeded, RETENTION_S)
            .await
            .expect("resolve_dependency")
    }

    async fn score(&self, agent_id: &str) -> f64 {
        let raw = self.agent_field(agent_id, "score").await;
        raw.parse()
            .unwrap_or_else(|_| panic!("{agent_id}.score = {raw:?} is not a number"))
    }

    /// The counters of a coordination sync (no agents, no patterns).
    async fn counters(&self) -> BTreeMap<String, u64> {
        self.sync_without_agents().await.counters
    }

    async fn sync_without_agents(&self) -> switchyard_protocol::CoordinationSync {
        let query = StatusQuery {
            include_agents: false,
            ..StatusQuery::default()
        };
        self.store
            .coordination_sync(&query)
            .await
            .expect("coordination_sync")
    }

    /// Submits `task_id` (queued) and grants it to `agent_id`.
    async fn submit_and_grant(
        &self,
        req: &switchyard_server::state::SubmitRequest,
        agent_id: &str,
    ) {
        assert_eq!(
            self.submit(req).await,
            SubmitOutcome::Queued,
            "{}",
            req.task_id
        );
        let outcome = self.grant(&req.task_id, &[agent_id]).await;
        assert!(
            matches!(outcome, GrantOutcome::Granted { .. }),
            "{outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_idempotent_and_revives_a_deregistered_agent() {
    let mut f = fixture().await;
    let capacity = Resources {
        cpu: 4000,
        memory: 2_048_000,
        tokens: 0,
        time: 0,
    };
    registering_twice_changes_nothing(&mut f, capacity).await;

    f.store.deregister_agent("a1").await.expect("deregister");
    assert_eq!(f.agent_field("a1", "status").await, "deregistered");
    assert!(f.store.active_agent_ids().await.unwrap().is_empty());
    // No active agent at all: the snapshot and the status are empty, not an error.
    assert!(f.store.agent_snapshot().await.unwrap().is_empty());
    let sync = f
        .store
        .coordination_sync(&StatusQuery::default())
        .await
        .expect("status with no active agent");
    assert!(sync.agents.is_empty());

    f.register("a1", capacity).await;
    assert_eq!(f.agent_field("a1", "status").await, "active");
    assert_eq!(f.store.active_agent_ids().await.unwrap(), ids(&["a1"]));
    let snapshot = f.store.agent_snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].capacity, capacity);
}

async fn registering_twice_changes_nothing(f: &mut Fixture, capacity: Resources) {
    f.register("a1", capacity).await;
    let mut first = f.store.agent_record("a1").await.unwrap().expect("record");
    f.register("a1", capacity).await;
    let mut second = f.store.agent_record("a1").await.unwrap().expect("record");
    // The heartbeat is the only field a repeat may move.
    first.remove("last_heartbeat");
    second.remove("last_heartbeat");
    assert_eq!(first, second, "a repeated registration changes nothing");
    assert_eq!(first.get("status").map(String::as_str), Some("active"));
    assert_eq!(first.get("cap_cpu").map(String::as_str), Some("4000"));
    assert_eq!(f.store.active_agent_ids().await.unwrap(), ids(&["a1"]));
    let agents_key = f.store.keys().agents();
    assert_eq!(f.scard(&agents_key).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_queues_and_detects_duplicates_and_existing_tasks() {
    let mut f = fixture().await;
    let req = submit_req("t1", "m1", 5, cpu(1000));
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    assert_eq!(f.task_state("t1").await.as_deref(), Some("queued"));

    assert_eq!(
        f.submit(&req).await,
        SubmitOutcome::Duplicate {
            state: TaskState::Queued,
            agent: String::new()
        },
        "same message id again is a duplicate"
    );
    let queue = f.store.keys().queue();
    assert_eq!(f.zcard(&queue).await, 1, "no second queue entry");
    another_message_for_the_same_task_is_refused(&mut f).await;
    let sync = f.sync_without_agents().await;
    assert_eq!(sync.counters.get("submitted"), Some(&1));
    assert_eq!(sync.queue_depth, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_stores_the_task_options_by_name() {
    let f = fixture().await;
    let mut req = submit_req("t1", "m1", 5, cpu(1000));
    req.options = vec![("opt_a", "1.5".into()), ("opt_b", "x y".into())];
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    assert_eq!(f.task_field("t1", "opt_a").await, "1.5");
    assert_eq!(f.task_field("t1", "opt_b").await, "x y");
    assert_eq!(
        f.task_field("t1", "state").await,
        "queued",
        "options follow the fixed fields"
    );
}

async fn another_message_for_the_same_task_is_refused(f: &mut Fixture) {
    let other = submit_req("t1", "m2", 9, cpu(5000));
    assert_eq!(
        f.submit(&other).await,
        SubmitOutcome::Refused(Refusal {
            reason: RejectReason::TaskExists,
            message: "task t1 was already submitted by another message (state queued)".into()
        })
    );
    let queue = f.store.keys().queue();
    assert_eq!(f.zcard(&queue).await, 1);
    let record = f.store.task_record("t1").await.unwrap().expect("record");
    assert_eq!(record.get("submit_msg_id").map(String::as_str), Some("m1"));
    assert_eq!(
        record.get("req_cpu").map(String::as_str),
        Some("1000"),
        "the other message did not overwrite the task"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_highest_priority_first_then_fifo() {
    let f = fixture().await;
    for (i, p) in [3u8, 9, 1, 9, 5].into_iter().enumerate() {
        let req = submit_req(&format!("q{i}"), &format!("m{i}"), p, cpu(1000));
        assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    }
    let head = f.store.queue_head(10).await.unwrap();
    let order: Vec<(String, u8)> = head
        .iter()
        .map(|t| (t.view.task_id.clone(), t.view.priority))
        .collect();
    assert_eq!(
        order,
        vec![
            ("q1".to_string(), 9),
            ("q3".to_string(), 9),
            ("q4".to_string(), 5),
            ("q0".to_string(), 3),
            ("q2".to_string(), 1),
        ]
    );
    assert_eq!(head[0].submitter, "orch");
    assert_eq!(head[0].submit_message_id, "m1");
    assert_eq!(head[0].view.required, cpu(1000));
    let first_two: Vec<String> = f
        .store
        .queue_head(2)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.view.task_id)
        .collect();
    assert_eq!(first_two, ids(&["q1", "q3"]));
}

fn granted_to(agent_id: &str, grant_seq: u64) -> GrantOutcome {
    GrantOutcome::Granted {
        agent_id: agent_id.into(),
        grant_seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_reserves_on_the_first_candidate_that_fits() {
    let mut f = fixture().await;
    f.register("a1", cpu(4000)).await;
    f.submit(&submit_req("fits", "m-fits", 5, cpu(3000))).await;

    assert_eq!(f.grant("fits", &["a1"]).await, granted_to("a1", 1));
    assert_eq!(f.reserved("a1").await, [3000, 0, 0, 0]);
    assert_eq!(f.agent_i64("a1", "active_tasks").await, 1);
    assert_eq!(f.task_state("fits").await.as_deref(), Some("granted"));
    let a1_tasks = f.store.keys().agent_tasks("a1");
    assert_eq!(f.scard(&a1_tasks).await, 1);

    // A second grant of the same task changes nothing.
    assert_eq!(
        f.grant("fits", &["a1"]).await,
        GrantOutcome::NotQueued {
            state: Some(TaskState::Granted)
        }
    );
    assert_eq!(f.reserved("a1").await, [3000, 0, 0, 0]);

    too_big_for_every_candidate_changes_nothing(&f).await;
    a_deregistered_candidate_is_skipped(&f).await;
    candidates_are_tried_in_order(&f).await;
    every_kind_must_fit(&f).await;

    // An unknown task is not queued.
    assert_eq!(
        f.grant("nope", &["a3"]).await,
        GrantOutcome::NotQueued { state: None }
    );
}

/// a1 holds 3000 of 4000; a2 (2000) joins; a task of 2500 fits neither.
async fn too_big_for_every_candidate_changes_nothing(f: &Fixture) {
    f.register("a2", cpu(2000)).await;
    f.submit(&submit_req("huge", "m-huge", 5, cpu(2500))).await;
    assert_eq!(f.grant("huge", &["a1", "a2"]).await, GrantOutcome::NoFit);
    assert_eq!(f.reserved("a1").await, [3000, 0, 0, 0]);
    assert_eq!(f.reserved("a2").await, [0, 0, 0, 0]);
    assert_eq!(f.task_state("huge").await.as_deref(), Some("queued"));
    assert_eq!(f.queue_ids().await, ids(&["huge"]));
}

/// A deregistered candidate is skipped even though it has room.
async fn a_deregistered_candidate_is_skipped(f: &Fixture) {
    f.register("gone", cpu(10_000)).await;
    f.store.deregister_agent("gone").await.unwrap();
    f.submit(&submit_req("small", "m-small", 5, cpu(500))).await;
    assert_eq!(f.grant("small", &["gone", "a2"]).await, granted_to("a2", 1));
    assert_eq!(f.reserved("gone").await, [0, 0, 0, 0]);
    assert_eq!(f.reserved("a2").await, [500, 0, 0, 0]);
}

/// Candidates in order: a1 has 1000 free (too little), a2 has 1500 (enough), a3 (plenty)
/// comes last and is not reached.
async fn candidates_are_tried_in_order(f: &Fixture) {
    f.register("a3", cpu(10_000)).await;
    f.submit(&submit_req("mid", "m-mid", 5, cpu(1500))).await;
    assert_eq!(
        f.grant("mid", &["a1", "a2", "a3"]).await,
        granted_to("a2", 1)
    );
    assert_eq!(f.reserved("a1").await, [3000, 0, 0, 0]);
    assert_eq!(f.reserved("a2").await, [2000, 0, 0, 0]);
    assert_eq!(f.reserved("a3").await, [0, 0, 0, 0]);
}

/// Every kind must fit, not just cpu: a3 has no memory.
async fn every_kind_must_fit(f: &Fixture) {
    let need = Resources {
        cpu: 1,
        memory: 1,
        ..Resources::default()
    };
    f.submit(&submit_req("needs-memory", "m-mem", 5, need))
        .await;
    assert_eq!(f.grant("needs-memory", &["a3"]).await, GrantOutcome::NoFit);
    assert_eq!(f.reserved("a3").await, [0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_never_over_reserve() {
    let mut f = fixture().await;
    f.register("solo", cpu(10_000)).await;
    for i in 0..50 {
        let req = submit_req(&format!("c{i}"), &format!("m{i}"), 5, cpu(1000));
        assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    }
    let candidates = ids(&["solo"]);
    let calls = (0..50).map(|i| {
        let store = f.store.clone();
        let candidates = candidates.clone();
        async move { store.grant_task(&format!("c{i}"), &candidates).await }
    });
    let outcomes: Vec<GrantOutcome> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("grant_task"))
        .collect();
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o, GrantOutcome::Granted { .. }))
        .count();
    let no_fit = outcomes
        .iter()
        .filter(|o| **o == GrantOutcome::NoFit)
        .count();
    assert_eq!(granted, 10, "exactly capacity / requirement granted");
    assert_eq!(no_fit, 40, "the rest did not fit: {outcomes:?}");
    assert_eq!(f.agent_i64("solo", "res_cpu").await, 10_000);
    assert_eq!(f.agent_i64("solo", "active_tasks").await, 10);
    let solo_tasks = f.store.keys().agent_tasks("solo");
    assert_eq!(f.scard(&solo_tasks).await, 10);
    let queue = f.store.keys().queue();
    assert_eq!(f.zcard(&queue).await, 40);
    let outbox = f.store.keys().grant_outbox();
    assert_eq!(f.zcard(&outbox).await, 10);
}

/// What task `work` needs, of every kind.
const NEED: Resources = Resources {
    cpu: 1500,
    memory: 512_000,
    tokens: 33_333,
    time: 7_001,
};

fn finished(success: bool, submit_message_id: &str) -> CompleteOutcome {
    CompleteOutcome::Finished {
        success,
        submitter: "orch".into(),
        submit_message_id: submit_message_id.into(),
        dependents: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_releases_exactly_once_and_learns_the_score() {
    let f = fixture().await;
    let capacity = Resources {
        cpu: 4000,
        memory: 1_024_000,
        tokens: 100_000,
        time: 60_000,
    };
    f.register("a1", capacity).await;
    f.register("a2", capacity).await;
    let mut req = submit_req("work", "m-work", 5, NEED);
    req.estimated_duration_s = 2.0;
    f.submit(&req).await;
    assert!(matches!(
        f.grant("work", &["a1"]).await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(f.reserved("a1").await, [1500, 512_000, 33_333, 7_001]);

    refused_completions_release_nothing(&f).await;
    the_completion_releases_once_and_learns(&f).await;
    a_failure_pulls_the_score_halfway_to_zero(&f).await;
    a_queued_task_cannot_be_completed(&f).await;
}

/// Wrong agent, unknown task, unknown agent: refused, nothing released.
async fn refused_completions_release_nothing(f: &Fixture) {
    assert_eq!(
        f.complete("work", "a2", true).await,
        refused(
            RejectReason::WrongAgent,
            "task work is held by agent a1, not a2"
        )
    );
    assert_eq!(
        f.complete("no-such-task", "a1", true).await,
        refused(
            RejectReason::UnknownTask,
            "task no-such-task is unknown (or expired)"
        )
    );
    assert_eq!(
        f.complete("work", "ghost", true).await,
        refused(RejectReason::UnknownAgent, "agent ghost is not registered")
    );
    assert_eq!(f.reserved("a1").await, [1500, 512_000, 33_333, 7_001]);
    assert_eq!(f.task_state("work").await.as_deref(), Some("granted"));
}

/// The completion releases everything and learns (a success at the estimated duration moves
/// the score from 0.5 to 0.75); the same completion again (even claiming the opposite outcome)
/// answers the same and releases nothing twice.
async fn the_completion_releases_once_and_learns(f: &Fixture) {
    let done = finished(true, "m-work");
    assert_eq!(f.complete_timed("work", "a1", true, 2.0).await, done);
    assert_eq!(f.reserved("a1").await, [0, 0, 0, 0]);
    assert_eq!(f.agent_i64("a1", "active_tasks").await, 0);
    let score = f.score("a1").await;
    assert!((score - 0.75).abs() < 1e-12, "score {score}, expected 0.75");
    assert_eq!(f.task_state("work").await.as_deref(), Some("completed"));

    assert_eq!(f.complete_timed("work", "a1", true, 2.0).await, done);
    assert_eq!(f.complete_timed("work", "a1", false, 9.0).await, done);
    assert_eq!(f.reserved("a1").await, [0, 0, 0, 0]);
    assert_eq!(f.agent_i64("a1", "active_tasks").await, 0);
    let score = f.score("a1").await;
    assert!(
        (score - 0.75).abs() < 1e-12,
        "repeat moved the score: {score}"
    );
    assert_eq!(f.counters().await.get("completed"), Some(&1));
}

async fn a_failure_pulls_the_score_halfway_to_zero(f: &Fixture) {
    f.submit(&submit_req("flaky", "m-flaky", 5, NEED)).await;
    assert!(matches!(
        f.grant("flaky", &["a1"]).await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(
        f.complete_timed("flaky", "a1", false, 1.0).await,
        finished(false, "m-flaky")
    );
    let score = f.score("a1").await;
    assert!(
        (score - 0.375).abs() < 1e-12,
        "score {score}, expected 0.375"
    );
    assert_eq!(f.reserved("a1").await, [0, 0, 0, 0]);
    assert_eq!(f.task_state("flaky").await.as_deref(), Some("failed"));
}

async fn a_queued_task_cannot_be_completed(f: &Fixture) {
    f.submit(&submit_req("waiting-room", "m-wr", 5, NEED)).await;
    assert_eq!(
        f.complete("waiting-room", "a1", true).await,
        refused(
            RejectReason::TaskNotGranted,
            "task waiting-room is queued, not granted to a1"
        )
    );
    assert_eq!(
        f.task_state("waiting-room").await.as_deref(),
        Some("queued")
    );
    assert_eq!(f.reserved("a1").await, [0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_queue_on_success_and_cascade_failures() {
    let mut f = fixture().await;
    f.register("w", cpu(100_000)).await;
    a_dependent_is_queued_once_its_dependency_completes(&f).await;
    // A dependency that completed before the dependent was submitted: queued at once.
    assert_eq!(
        f.submit(&with_deps(submit_req("late", "mLate", 5, cpu(1)), &["A"]))
            .await,
        SubmitOutcome::Queued
    );
    a_dependent_waits_for_all_its_dependencies(&f).await;
    a_failure_cascades_through_the_dependents(&f).await;
    failed_tasks_expire_with_the_retention(&mut f).await;

    // Submitted after its dependency failed: fails at once.
    assert_eq!(
        f.submit(&with_deps(submit_req("D", "mD", 5, cpu(1)), &["A2"]))
            .await,
        SubmitOutcome::Failed {
            reason: "dependency_failed:A2".into()
        }
    );
    assert_eq!(f.task_state("D").await.as_deref(), Some("failed"));
    let queue = f.queue_ids().await;
    for t in ["B2", "C", "D"] {
        assert!(!queue.contains(&t.to_string()), "{t} must not be queued");
    }
}

/// B waits for A, and is queued (once) when A completes.
async fn a_dependent_is_queued_once_its_dependency_completes(f: &Fixture) {
    f.submit(&submit_req("A", "mA", 5, cpu(1000))).await;
    assert_eq!(
        f.submit(&with_deps(submit_req("B", "mB", 5, cpu(1000)), &["A"]))
            .await,
        SubmitOutcome::Waiting { unmet: 1 }
    );
    assert_eq!(f.task_state("B").await.as_deref(), Some("waiting"));
    assert_eq!(f.queue_ids().await, ids(&["A"]), "B is not in the queue");
    assert!(matches!(
        f.grant("A", &["w"]).await,
        GrantOutcome::Granted { .. }
    ));
    match f.complete("A", "w", true).await {
        CompleteOutcome::Finished {
            success: true,
            dependents,
            ..
        } => assert_eq!(dependents, ids(&["B"])),
        other => panic!("A should complete, got {other:?}"),
    }
    assert_eq!(f.resolve("B", "A", true).await, ResolveOutcome::Queued);
    assert_eq!(f.task_state("B").await.as_deref(), Some("queued"));
    assert_eq!(f.resolve("B", "A", true).await, ResolveOutcome::Noop);
    assert_eq!(f.queue_ids().await, ids(&["B"]), "queued once");
}

/// Two dependencies: waiting until both are done.
async fn a_dependent_waits_for_all_its_dependencies(f: &Fixture) {
    f.submit(&submit_req("P", "mP", 5, cpu(1))).await;
    f.submit(&submit_req("Q", "mQ", 5, cpu(1))).await;
    assert_eq!(
        f.submit(&with_deps(submit_req("PQ", "mPQ", 5, cpu(1)), &["P", "Q"]))
            .await,
        SubmitOutcome::Waiting { unmet: 2 }
    );
    for t in ["P", "Q"] {
        assert!(matches!(
            f.grant(t, &["w"]).await,
            GrantOutcome::Granted { .. }
        ));
        f.complete(t, "w", true).await;
    }
    assert_eq!(f.resolve("PQ", "P", true).await, ResolveOutcome::Waiting);
    assert_eq!(f.task_state("PQ").await.as_deref(), Some("waiting"));
    assert_eq!(f.resolve("PQ", "Q", true).await, ResolveOutcome::Queued);
}

/// C depends on B2, B2 on A2; A2 fails, and so do B2 and C.
async fn a_failure_cascades_through_the_dependents(f: &Fixture) {
    f.submit(&submit_req("A2", "mA2", 5, cpu(1000))).await;
    f.submit(&with_deps(submit_req("B2", "mB2", 5, cpu(1)), &["A2"]))
        .await;
    f.submit(&with_deps(submit_req("C", "mC", 5, cpu(1)), &["B2"]))
        .await;
    assert!(matches!(
        f.grant("A2", &["w"]).await,
        GrantOutcome::Granted { .. }
    ));
    match f.complete("A2", "w", false).await {
        CompleteOutcome::Finished {
            success: false,
            dependents,
            ..
        } => assert_eq!(dependents, ids(&["B2"])),
        other => panic!("A2 should fail, got {other:?}"),
    }
    let failed = |message_id: &str, dependents: &[&str]| ResolveOutcome::Failed {
        submitter: "orch".into(),
        submit_message_id: message_id.into(),
        dependents: ids(dependents),
    };
    assert_eq!(f.resolve("B2", "A2", false).await, failed("mB2", &["C"]));
    assert_eq!(f.task_state("B2").await.as_deref(), Some("failed"));
    assert_eq!(f.resolve("C", "B2", false).await, failed("mC", &[]));
    assert_eq!(f.task_state("C").await.as_deref(), Some("failed"));
    assert_eq!(
        f.resolve("B2", "A2", false).await,
        failed("mB2", &["C"]),
        "a repeated failure answers the same"
    );
    let record = f.store.task_record("B2").await.unwrap().expect("B2");
    assert_eq!(
        record.get("reason").map(String::as_str),
        Some("dependency_failed:A2")
    );
}

/// Failed tasks and what the repeat answer reads are kept for the retention, not forever.
async fn failed_tasks_expire_with_the_retention(f: &mut Fixture) {
    let b2_key = f.store.keys().task("B2");
    let b2_dependents = f.store.keys().dependents("B2");
    let b2_ttl = f.ttl(&b2_key).await;
    assert!(
        b2_ttl > 0 && b2_ttl <= RETENTION_S as i64,
        "failed task expires (ttl {b2_ttl})"
    );
    let dependents_ttl = f.ttl(&b2_dependents).await;
    assert!(
        dependents_ttl > 0 && dependents_ttl <= RETENTION_S as i64,
        "the failed task's dependents set expires with it (ttl {dependents_ttl})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_returns_a_task_to_its_original_place() {
    let mut f = fixture().await;
    let need = Resources {
        cpu: 1000,
        memory: 2000,
        tokens: 3000,
        time: 4000,
    };
    f.register("x", all(10_000)).await;
    f.submit(&submit_req("early", "m1", 5, need)).await;
    f.submit(&submit_req("later", "m2", 5, need)).await;
    assert!(matches!(
        f.grant("early", &["x"]).await,
        GrantOutcome::Granted { grant_seq: 1, .. }
    ));
    assert_eq!(f.reserved("x").await, [1000, 2000, 3000, 4000]);
    assert_eq!(f.queue_ids().await, ids(&["later"]));

    the_requeue_releases_and_restores_the_queue_place(&mut f).await;

    assert_eq!(
        f.store.requeue_task("early", "x", 3600).await.unwrap(),
        RequeueOutcome::Noop
    );
    assert_eq!(f.reserved("x").await, [0, 0, 0, 0]);
    assert_eq!(f.queue_ids().await, ids(&["early", "later"]));
    assert_eq!(f.counters().await.get("requeued"), Some(&1));

    // Granted again: a new grant number.
    assert_eq!(f.grant("early", &["x"]).await, granted_to("x", 2));
}

async fn the_requeue_releases_and_restores_the_queue_place(f: &mut Fixture) {
    assert_eq!(
        f.store.requeue_task("early", "x", 3600).await.unwrap(),
        RequeueOutcome::Requeued
    );
    assert_eq!(f.reserved("x").await, [0, 0, 0, 0]);
    assert_eq!(f.agent_i64("x", "active_tasks").await, 0);
    assert_eq!(f.task_state("early").await.as_deref(), Some("queued"));
    assert_eq!(
        f.queue_ids().await,
        ids(&["early", "later"]),
        "back ahead of the later task of the same priority"
    );
    let x_tasks = f.store.keys().agent_tasks("x");
    assert_eq!(f.scard(&x_tasks).await, 0);
    assert!(
        f.store.stale_grants(0, 10).await.unwrap().is_empty(),
        "the requeued grant left the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_outbox_lists_unpublished_grants() {
    let f = fixture().await;
    f.register("a1", cpu(4000)).await;
    f.submit(&submit_req("t1", "m1", 5, cpu(1000))).await;
    assert!(f.store.stale_grants(0, 10).await.unwrap().is_empty());
    assert!(matches!(
        f.grant("t1", &["a1"]).await,
        GrantOutcome::Granted { grant_seq: 1, .. }
    ));
    assert_eq!(
        f.store.stale_grants(0, 10).await.unwrap(),
        vec![("t1".to_string(), 1)]
    );
    assert!(
        f.store
            .stale_grants(3_600_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "a fresh grant is not older than an hour"
    );
    f.store
        .acknowledge_grants(&[("t1".to_string(), 1)])
        .await
        .unwrap();
    assert!(f.store.stale_grants(0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_by_the_redis_clock_and_heartbeats_renew_them() {
    use switchyard_server::state::{ExpireOutcome, HeartbeatOutcome};
    let f = fixture().await;
    f.store
        .register_agent("leased", "worker", &cpu(2000), 1.0, 200)
        .await
        .expect("register");
    f.register("forever", cpu(2000)).await; // no lease
    f.submit_and_grant(&submit_req("t1", "m1", 5, cpu(1000)), "leased")
        .await;

    // Fresh: a heartbeat renews, expiry finds it alive.
    assert_eq!(
        f.store.record_heartbeat("leased").await.expect("heartbeat"),
        HeartbeatOutcome::Alive
    );
    assert_eq!(
        f.store.expire_agent("leased", 1).await.expect("expire"),
        ExpireOutcome::Alive
    );
    assert_eq!(
        f.store.record_heartbeat("nobody").await.expect("heartbeat"),
        HeartbeatOutcome::Refused(Refusal {
            reason: RejectReason::UnknownAgent,
            message: "agent nobody is not registered".into()
        })
    );

    // Past the lease it dies, handing back its task; the agent without a lease never does.
    assert_eq!(lease_runs_out(&f, "leased").await, ids(&["t1"]));
    assert_eq!(
        f.store.expire_agent("forever", 1).await.expect("expire"),
        ExpireOutcome::Alive
    );
    a_dead_agent_is_refused_until_it_registers_again(&f).await;
}

/// Polls `expire_agent` (bounded) until `agent_id` is dead; answers the tasks it handed back.
async fn lease_runs_out(f: &Fixture, agent_id: &str) -> Vec<String> {
    use switchyard_server::state::ExpireOutcome;
    within(5, &format!("{agent_id}'s lease to run out"), async {
        loop {
            let outcome = f.store.expire_agent(agent_id, 1).await.expect("expire");
            if let ExpireOutcome::Dead { tasks, just_died } = outcome {
                assert!(just_died, "the first judgment is the death");
                let again = f.store.expire_agent(agent_id, 1).await.expect("again");
                assert_eq!(
                    again,
                    ExpireOutcome::Dead {
                        tasks: tasks.clone(),
                        just_died: false
                    },
                    "a repeat (another replica) is not a second death"
                );
                return tasks;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn a_dead_agent_is_refused_until_it_registers_again(f: &Fixture) {
    use switchyard_server::state::HeartbeatOutcome;
    let active = f.store.active_agent_ids().await.expect("ids");
    assert!(!active.contains(&"leased".to_string()));
    assert_eq!(
        f.store.record_heartbeat("leased").await.expect("heartbeat"),
        HeartbeatOutcome::Refused(Refusal {
            reason: RejectReason::AgentNotActive,
            message: "agent leased is dead: register again to rejoin".into()
        })
    );
    // Its late completion is refused before anything is released or counted.
    assert_eq!(
        f.complete("t1", "leased", true).await,
        refused(
            RejectReason::AgentNotActive,
            "agent leased is dead: its tasks were given to others; register again to rejoin"
        )
    );
    assert_eq!(
        f.store
            .requeue_task("t1", "leased", 3600)
            .await
            .expect("requeue"),
        RequeueOutcome::Requeued
    );
    assert_eq!(
        f.store.agents_past_lease(100).await.expect("candidates"),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_about_an_earlier_grant_cannot_complete_a_later_one() {
    let f = fixture().await;
    f.register("a", cpu(2000)).await;
    f.submit_and_grant(&submit_req("t", "m", 5, cpu(1000)), "a")
        .await;
    // The agent leaves and comes back; the task is granted to it again (grant 2).
    assert_eq!(
        f.store.requeue_task("t", "a", 3600).await.expect("requeue"),
        RequeueOutcome::Requeued
    );
    assert!(matches!(
        f.grant("t", &["a"]).await,
        GrantOutcome::Granted { grant_seq: 2, .. }
    ));
    let stale = refused(
        RejectReason::StaleGrant,
        "task t is on grant 2; this report is about an earlier grant",
    );
    assert_eq!(f.complete_grant("t", "a", Some(1)).await, stale);
    assert!(matches!(
        f.complete_grant("t", "a", Some(2)).await,
        CompleteOutcome::Finished { success: true, .. }
    ));
    // Repeating the accepted report answers the same; the stale one stays refused.
    assert!(matches!(
        f.complete_grant("t", "a", Some(2)).await,
        CompleteOutcome::Finished { .. }
    ));
    assert_eq!(f.complete_grant("t", "a", Some(1)).await, stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_teach_the_same_pattern_statistics_as_the_rust_model() {
    use switchyard_decision::PatternTable;
    let f = fixture().await;
    f.store
        .register_agent("fast", "gpu", &cpu(4000), 1.0, 0)
        .await
        .expect("register");
    let mut model = PatternTable::new();
    // (success, estimated, actual): the Lua update must match PatternTable::record.
    let runs = [
        (true, 10.0, 5.0),
        (false, 10.0, 30.0),
        (true, 10.0, 20.0),
        (true, 10.0, 10.0),
    ];
    for (i, (success, est, actual)) in runs.into_iter().enumerate() {
        let task = format!("t{i}");
        let mut req = submit_req(&task, &format!("m{i}"), 5, cpu(1000));
        req.task_type = "render".into();
        req.estimated_duration_s = est;
        f.submit_and_grant(&req, "fast").await;
        f.complete_timed(&task, "fast", success, actual).await;
        model.record("render", "gpu", success, est, actual, common::scripts::LR);
    }
    let learned = f.store.patterns().await.expect("patterns");
    let got = learned.get("render", "gpu").expect("pair learned");
    let want = model.get("render", "gpu").expect("model");
    assert_eq!(
        (got.attempts, got.successes),
        (want.attempts, want.successes)
    );
    assert!(
        (got.success_ema - want.success_ema).abs() < 1e-9,
        "{got:?} vs {want:?}"
    );
    assert!(
        (got.duration_ratio_ema - want.duration_ratio_ema).abs() < 1e-9,
        "{got:?} vs {want:?}"
    );
    assert!(learned.get("render", "cpu").is_none());
}

/// A grant made to explore a type counts in its pair's `explorations` when it lands on an agent
/// of that type, and not when it lands elsewhere (the first candidate was full) or explores
/// nothing; completions do not touch the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_sent_to_explore_counts_in_the_pattern_when_it_lands_there() {
    use switchyard_server::state::GrantRequest;
    let f = fixture().await;
    for (agent, agent_type, milli) in [("g", "gpu", 1000), ("c", "cpu", 4000)] {
        f.store
            .register_agent(agent, agent_type, &cpu(milli), 1.0, 0)
            .await
            .expect("register");
    }
    for i in 0..4 {
        let mut req = submit_req(&format!("t{i}"), &format!("m{i}"), 5, cpu(1000));
        req.task_type = "render".into();
        assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    }
    let both = ids(&["g", "c"]);
    // t0 explores gpu and gets g; t1 explores gpu but g is full, so it lands on c; t2
    // explores cpu and gets c; t3 explores nothing.
    let requests: Vec<GrantRequest> = [("t0", "gpu"), ("t1", "gpu"), ("t2", "cpu"), ("t3", "")]
        .into_iter()
        .map(|(task_id, explores)| GrantRequest {
            task_id,
            candidates: &both,
            budgets: &[],
            why: "adaptive",
            explores,
        })
        .collect();
    let outcomes = f.store.grant_tasks(&requests).await.expect("grant_tasks");
    let agents: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            GrantOutcome::Granted { agent_id, .. } => agent_id.as_str(),
            _ => "-",
        })
        .collect();
    assert_eq!(agents, ["g", "c", "c", "c"]);
    f.complete_timed("t0", "g", true, 1.0).await;
    let learned = f.store.patterns().await.expect("patterns");
    let explored = |agent_type: &str| learned.get("render", agent_type).map(|p| p.explorations);
    assert_eq!((explored("gpu"), explored("cpu")), (Some(1), Some(1)));
    assert_eq!(learned.get("render", "gpu").map(|p| p.attempts), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_keeps_the_strategy_its_submit_asked_for() {
    use switchyard_decision::StrategyKind;
    let f = fixture().await;
    let mut own = submit_req("own", "m1", 5, cpu(1000));
    own.strategy = Some("round_robin".into());
    assert_eq!(f.submit(&own).await, SubmitOutcome::Queued);
    assert_eq!(
        f.submit(&submit_req("default", "m2", 5, cpu(1000))).await,
        SubmitOutcome::Queued
    );
    let head = f.store.queue_head(10).await.expect("queue head");
    let strategies: Vec<_> = head
        .iter()
        .map(|t| (t.view.task_id.as_str(), t.strategy))
        .collect();
    assert_eq!(
        strategies,
        vec![("own", Some(StrategyKind::RoundRobin)), ("default", None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_keeps_its_explain_flag_through_the_queue() {
    let f = fixture().await;
    let mut explained = submit_req("explained", "m1", 5, cpu(1000));
    explained.explain = true;
    explained.dependencies = vec!["dep".into()];
    assert_eq!(
        f.submit(&submit_req("dep", "m0", 5, cpu(1000))).await,
        SubmitOutcome::Queued
    );
    assert!(matches!(
        f.submit(&explained).await,
        SubmitOutcome::Waiting { .. }
    ));
    assert_eq!(
        f.submit(&submit_req("plain", "m2", 5, cpu(1000))).await,
        SubmitOutcome::Queued
    );
    // The flag sits after the dependency list in ARGV; a waiting task keeps it until it is
    // queued.
    f.register("a", cpu(4000)).await;
    assert!(matches!(
        f.grant("dep", &["a"]).await,
        GrantOutcome::Granted { .. }
    ));
    assert!(matches!(
        f.complete("dep", "a", true).await,
        CompleteOutcome::Finished { success: true, .. }
    ));
    assert_eq!(
        f.resolve("explained", "dep", true).await,
        ResolveOutcome::Queued
    );
    let head = f.store.queue_head(10).await.expect("queue head");
    let flags: Vec<_> = head
        .iter()
        .map(|t| (t.view.task_id.as_str(), t.explain))
        .collect();
    // "explained" was submitted first, so it keeps its place ahead of "plain".
    assert_eq!(flags, vec![("explained", true), ("plain", false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_the_sync_lease_and_renews_it() {
    let mut f = fixture().await;
    let store = f.store.clone();
    let take = move |replica: &'static str, ms: u64| {
        let store = store.clone();
        async move { store.take_sync_lease(replica, ms).await.expect("lease") }
    };
    assert!(take("replica-1", 60_000).await);
    assert!(!take("replica-2", 60_000).await, "held by replica-1");
    assert!(take("replica-1", 60_000).await, "its holder renews it");
    let lease = f.keys.sync_lease();
    let ttl: i64 = f.raw_query("PTTL", redis::cmd("PTTL").arg(&lease)).await;
    assert!(ttl > 50_000, "renewed for the whole length: {ttl} ms");
    let _: () = f.raw_query("DEL", redis::cmd("DEL").arg(lease)).await;
    assert!(take("replica-2", 50).await);
    within(5, "the 50 ms sync lease to expire", async {
        while !take("replica-3", 50).await {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
