//! The handoff and resource-request scripts against a real redis-server (no NATS): accepted
//! handoffs move ownership and reservation exactly, refused, rejected and expired ones change
//! nothing, every answer repeats idempotently, and a grown reservation is what completion frees.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::scripts::{Fixture, fixture, refused, res, submit_req};
use common::within;
use switchyard_decision::Resources;
use switchyard_protocol::{HandoffStatus, RejectReason};
use switchyard_server::state::{
    AnswerOutcome, BeginHandoff, BeginOutcome, CompleteOutcome, GrowOutcome, GrowRequest,
    HandoffVerdict, RequeueOutcome, SubmitOutcome,
};

const TTL_MS: u64 = 60_000;

fn handoff<'a>(id: &'a str, task: &'a str, from: &'a str, to: &'a str) -> BeginHandoff<'a> {
    BeginHandoff {
        handoff_id: id,
        task_id: task,
        from_agent: from,
        to_agent: to,
        grant_seq: None,
        timeout_ms: TTL_MS,
        priority: "high",
    }
}

fn grow<'a>(
    message_id: &'a str,
    task: &'a str,
    agent: &'a str,
    extra: Resources,
) -> GrowRequest<'a> {
    GrowRequest {
        message_id,
        task_id: task,
        agent_id: agent,
        grant_seq: None,
        extra,
    }
}

/// The handoff and resource-request transitions, and an agent's load.
impl Fixture {
    async fn begin(&self, req: &BeginHandoff<'_>) -> BeginOutcome {
        self.store
            .begin_handoff(req, TTL_MS)
            .await
            .expect("begin_handoff")
    }

    async fn answer(&self, handoff_id: &str, agent_id: &str, accept: bool) -> AnswerOutcome {
        self.store
            .answer_handoff(handoff_id, agent_id, accept, TTL_MS)
            .await
            .expect("answer_handoff")
    }

    async fn grow(&self, req: &GrowRequest<'_>) -> GrowOutcome {
        self.store
            .grow_reservation(req, TTL_MS)
            .await
            .expect("grow_reservation")
    }

    /// Reservations (cpu, memory, tokens, time) and active task count of an agent.
    async fn load(&self, agent_id: &str) -> [i64; 5] {
        let [cpu, memory, tokens, time] = self.reserved(agent_id).await;
        let active = self.agent_i64(agent_id, "active_tasks").await;
        [cpu, memory, tokens, time, active]
    }
}

fn verdict(outcome: AnswerOutcome) -> HandoffVerdict {
    match outcome {
        AnswerOutcome::Decided(v) => v,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

fn refused_begin(outcome: BeginOutcome) -> (RejectReason, bool) {
    match outcome {
        BeginOutcome::Refused {
            refusal, repeat, ..
        } => (refusal.reason, repeat),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_handoff_moves_ownership_and_reservation_exactly() {
    let mut f = fixture().await;
    f.register("a", res(4000, 4000)).await;
    f.register("b", res(4000, 4000)).await;
    f.granted("t", res(1500, 512), "a").await;
    f.granted("other", res(500, 0), "b").await;

    a_begun_handoff_moves_nothing(&mut f).await;
    let v = verdict(f.answer("h1", "b", true).await);
    assert_eq!(
        (v.status, v.grant_seq, v.repeat),
        (HandoffStatus::Accepted, Some(2), false)
    );
    assert!(v.decided_ms >= v.created_ms);
    assert_eq!(
        (v.handoff.task_id.as_str(), v.handoff.priority.as_str()),
        ("t", "high")
    );
    the_task_and_its_reservation_moved_to_b(&mut f).await;

    // Repeats answer the same and move nothing again; the verdict is kept as a tombstone.
    let again = verdict(f.answer("h1", "b", true).await);
    assert_eq!(
        (again.status, again.grant_seq, again.repeat),
        (HandoffStatus::Accepted, Some(2), true)
    );
    assert_eq!(again.decided_ms, v.decided_ms);
    assert_eq!(f.load("b").await, [2000, 512, 0, 0, 2]);
    assert!(matches!(
        f.begin(&handoff("h1", "t", "a", "b")).await,
        BeginOutcome::Answered { .. }
    ));
    assert!(f.pttl(&f.keys.handoff("h1")).await > 0);

    only_the_new_owner_completes(&mut f).await;
}

/// Handoff h1 of t from a to b begins: pending for its timeout, nothing moved, and the same
/// initiate again is a no-op.
async fn a_begun_handoff_moves_nothing(f: &mut Fixture) {
    let begun = f.begin(&handoff("h1", "t", "a", "b")).await;
    assert!(
        matches!(begun, BeginOutcome::Pending { repeat: false, .. }),
        "{begun:?}"
    );
    let pending_ttl = f.pttl(&f.keys.handoff("h1")).await;
    assert!(
        pending_ttl > 0 && pending_ttl <= TTL_MS as i64,
        "{pending_ttl}"
    );
    assert_eq!(f.load("a").await, [1500, 512, 0, 0, 1]);
    assert!(matches!(
        f.begin(&handoff("h1", "t", "a", "b")).await,
        BeginOutcome::Pending { repeat: true, .. }
    ));
}

async fn the_task_and_its_reservation_moved_to_b(f: &mut Fixture) {
    assert_eq!(f.load("a").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.load("b").await, [2000, 512, 0, 0, 2]);
    assert!(f.tasks_of("a").await.is_empty());
    assert_eq!(f.tasks_of("b").await, vec!["other", "t"]);
    assert_eq!(f.task_field("t", "agent").await, "b");
    assert_eq!(f.task_field("t", "grant_seq").await, "2");
    assert_eq!(f.task_field("t", "state").await, "granted");
}

/// The old agent's late reports are refused; the new owner completes with the new grant.
async fn only_the_new_owner_completes(f: &mut Fixture) {
    assert_eq!(
        f.complete_grant("t", "a", Some(1)).await,
        refused(
            RejectReason::StaleGrant,
            "task t is on grant 2; this report is about an earlier grant"
        )
    );
    assert_eq!(
        f.complete_grant("t", "a", None).await,
        refused(RejectReason::WrongAgent, "task t is held by agent b, not a")
    );
    assert!(matches!(
        f.complete_grant("t", "b", Some(2)).await,
        CompleteOutcome::Finished { success: true, .. }
    ));
    assert_eq!(f.load("b").await, [500, 0, 0, 0, 1]);
    let stats = f.keys.stats();
    let handed_off: Option<String> = f
        .raw_query("HGET", redis::cmd("HGET").arg(stats).arg("handed_off"))
        .await;
    assert_eq!(handed_off.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_to_an_agent_without_room_is_refused_and_remembered() {
    let f = fixture().await;
    f.register("a", res(4000, 4000)).await;
    f.register("small", res(1000, 4000)).await;
    f.granted("t", res(1500, 0), "a").await;

    let (reason, repeat) = refused_begin(f.begin(&handoff("h", "t", "a", "small")).await);
    assert_eq!(
        (reason, repeat),
        (RejectReason::InsufficientCapacity, false)
    );
    let (reason, repeat) = refused_begin(f.begin(&handoff("h", "t", "a", "small")).await);
    assert_eq!((reason, repeat), (RejectReason::InsufficientCapacity, true));
    // An answer to a refused handoff gets the refusal, and nothing moves.
    let v = verdict(f.answer("h", "small", true).await);
    assert_eq!(v.status, HandoffStatus::Refused);
    assert_eq!(
        v.refusal.map(|r| r.reason),
        Some(RejectReason::InsufficientCapacity)
    );
    assert_eq!(f.load("a").await, [1500, 0, 0, 0, 1]);
    assert_eq!(f.load("small").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.task_field("t", "agent").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_is_refused_when_the_new_agent_filled_up_meanwhile() {
    let f = fixture().await;
    f.register("a", res(4000, 0)).await;
    f.register("b", res(2000, 0)).await;
    f.granted("t", res(1500, 0), "a").await;
    assert!(matches!(
        f.begin(&handoff("h", "t", "a", "b")).await,
        BeginOutcome::Pending { .. }
    ));
    f.granted("filler", res(1000, 0), "b").await;

    let v = verdict(f.answer("h", "b", true).await);
    assert_eq!((v.status, v.grant_seq), (HandoffStatus::Refused, None));
    assert_eq!(
        v.refusal.map(|r| r.reason),
        Some(RejectReason::InsufficientCapacity)
    );
    assert_eq!(f.load("a").await, [1500, 0, 0, 0, 1]);
    assert_eq!(f.load("b").await, [1000, 0, 0, 0, 1]);
    assert_eq!(f.task_field("t", "agent").await, "a");
    assert_eq!(f.task_field("t", "grant_seq").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_handoff_leaves_everything_as_it_was() {
    let mut f = fixture().await;
    f.register("a", res(4000, 4000)).await;
    f.register("b", res(4000, 4000)).await;
    f.granted("t", res(1500, 512), "a").await;
    assert!(matches!(
        f.begin(&handoff("h", "t", "a", "b")).await,
        BeginOutcome::Pending { .. }
    ));
    let before = (
        f.load("a").await,
        f.load("b").await,
        f.store.task_record("t").await.expect("read"),
    );

    let v = verdict(f.answer("h", "b", false).await);
    assert_eq!(
        (v.status, v.grant_seq, v.repeat),
        (HandoffStatus::Rejected, None, false)
    );
    let after = (
        f.load("a").await,
        f.load("b").await,
        f.store.task_record("t").await.expect("read"),
    );
    assert_eq!(before, after);
    // A change of mind is too late: the first answer stands.
    let again = verdict(f.answer("h", "b", true).await);
    assert_eq!(
        (again.status, again.repeat),
        (HandoffStatus::Rejected, true)
    );
    assert_eq!(f.tasks_of("a").await, vec!["t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_handoff_cannot_be_accepted() {
    let mut f = fixture().await;
    f.register("a", res(4000, 0)).await;
    f.register("b", res(4000, 0)).await;
    f.granted("t", res(1500, 0), "a").await;
    let mut req = handoff("h", "t", "a", "b");
    req.timeout_ms = 200;
    assert!(matches!(f.begin(&req).await, BeginOutcome::Pending { .. }));
    let key = f.keys.handoff("h");
    within(10, "the handoff's key to expire", async {
        while f.exists(&key).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        f.answer("h", "b", true).await,
        AnswerOutcome::UnknownHandoff
    );
    assert_eq!(f.load("a").await, [1500, 0, 0, 0, 1]);
    assert_eq!(f.load("b").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.task_field("t", "agent").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_checks_the_task_and_both_agents() {
    let f = fixture().await;
    f.register("a", res(4000, 0)).await;
    f.register("b", res(4000, 0)).await;
    f.register("gone", res(4000, 0)).await;
    f.store.deregister_agent("gone").await.expect("deregister");
    f.granted("t", res(1000, 0), "a").await;
    let queued = submit_req("queued", "m-q", 5, res(99_000, 0));
    assert_eq!(f.submit(&queued).await, SubmitOutcome::Queued);

    let cases: [(BeginHandoff, RejectReason); 6] = [
        (handoff("h1", "t", "b", "a"), RejectReason::WrongAgent),
        (handoff("h2", "nope", "a", "b"), RejectReason::UnknownTask),
        (
            handoff("h3", "queued", "a", "b"),
            RejectReason::TaskNotGranted,
        ),
        (handoff("h4", "t", "a", "ghost"), RejectReason::UnknownAgent),
        (
            handoff("h5", "t", "a", "gone"),
            RejectReason::AgentNotActive,
        ),
        (
            BeginHandoff {
                grant_seq: Some(7),
                ..handoff("h6", "t", "a", "b")
            },
            RejectReason::StaleGrant,
        ),
    ];
    for (req, expected) in cases {
        let (reason, _) = refused_begin(f.begin(&req).await);
        assert_eq!(reason, expected, "{req:?}");
    }
    assert!(matches!(
        f.begin(&BeginHandoff {
            grant_seq: Some(1),
            ..handoff("ok", "t", "a", "b")
        })
        .await,
        BeginOutcome::Pending { .. }
    ));
    // The same id for another handoff, and an answer from the wrong agent.
    assert_eq!(
        f.begin(&handoff("ok", "t", "a", "gone")).await,
        BeginOutcome::Conflict
    );
    assert_eq!(
        f.answer("ok", "a", true).await,
        AnswerOutcome::WrongAgent {
            to_agent: "b".into()
        }
    );
    assert_eq!(
        f.answer("never", "b", true).await,
        AnswerOutcome::UnknownHandoff
    );
    assert_eq!(f.load("a").await, [1000, 0, 0, 0, 1]);
    assert_eq!(f.load("b").await, [0, 0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grown_reservation_is_granted_once_and_released_by_completion() {
    let mut f = fixture().await;
    f.register("a", res(4000, 1000)).await;
    f.register("b", res(4000, 1000)).await;
    f.granted("t", res(1000, 100), "a").await;

    let first = f.grow(&grow("r1", "t", "a", res(2000, 0))).await;
    assert_eq!(first.refusal, None);
    assert_eq!(first.reservation, Some(res(3000, 100)));
    assert!(!first.repeat);
    assert_eq!(f.load("a").await, [3000, 100, 0, 0, 1]);
    assert!(f.pttl(&f.keys.resource_request("r1")).await > 0);
    // The same request again (a redelivery) does not grow it twice.
    let again = f.grow(&grow("r1", "t", "a", res(2000, 0))).await;
    assert_eq!(
        (again.reservation, again.repeat),
        (Some(res(3000, 100)), true)
    );
    assert_eq!(f.load("a").await, [3000, 100, 0, 0, 1]);

    // Beyond the agent's free capacity: refused, the reservation told unchanged.
    let too_much = f.grow(&grow("r2", "t", "a", res(0, 901))).await;
    assert_eq!(
        too_much.refusal.map(|r| r.reason),
        Some(RejectReason::InsufficientCapacity)
    );
    assert_eq!(too_much.reservation, Some(res(3000, 100)));
    // Not this agent's task, or an older grant: refused, nothing told.
    let wrong = f.grow(&grow("r3", "t", "b", res(1, 0))).await;
    assert_eq!(
        (wrong.refusal.map(|r| r.reason), wrong.reservation),
        (Some(RejectReason::WrongAgent), None)
    );
    let stale = f
        .grow(&GrowRequest {
            grant_seq: Some(9),
            ..grow("r4", "t", "a", res(1, 0))
        })
        .await;
    assert_eq!(
        stale.refusal.map(|r| r.reason),
        Some(RejectReason::StaleGrant)
    );
    assert_eq!(f.load("a").await, [3000, 100, 0, 0, 1]);

    // A handoff moves the grown reservation; completion releases all of it.
    assert!(matches!(
        f.begin(&handoff("h", "t", "a", "b")).await,
        BeginOutcome::Pending { .. }
    ));
    assert_eq!(
        verdict(f.answer("h", "b", true).await).status,
        HandoffStatus::Accepted
    );
    assert_eq!(f.load("a").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.load("b").await, [3000, 100, 0, 0, 1]);
    assert!(matches!(
        f.complete_grant("t", "b", Some(2)).await,
        CompleteOutcome::Finished { .. }
    ));
    assert_eq!(f.load("b").await, [0, 0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_task_releases_its_grown_reservation_and_keeps_the_grown_needs() {
    let f = fixture().await;
    f.register("a", res(4000, 0)).await;
    f.granted("t", res(1000, 0), "a").await;
    assert_eq!(
        f.grow(&grow("r", "t", "a", res(500, 0))).await.refusal,
        None
    );
    assert_eq!(
        f.store.requeue_task("t", "a", 3600).await.expect("requeue"),
        RequeueOutcome::Requeued
    );
    assert_eq!(f.load("a").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.task_field("t", "req_cpu").await, "1500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_being_cancelled_is_not_handed_off() {
    let f = fixture().await;
    f.register("a", res(4000, 4000)).await;
    f.register("b", res(4000, 4000)).await;
    f.register("c", res(4000, 4000)).await;
    f.granted("t", res(1000, 0), "a").await;
    // A handoff begun before the cancel: its acceptance is refused afterwards.
    assert!(matches!(
        f.begin(&handoff("h-before", "t", "a", "b")).await,
        BeginOutcome::Pending { .. }
    ));
    f.store
        .cancel_task("t", "orch", false, "cancelled", 60)
        .await
        .expect("cancel_task");
    assert_eq!(f.task_field("t", "cancel_requested").await, "1");

    let v = verdict(f.answer("h-before", "b", true).await);
    assert_eq!(v.status, HandoffStatus::Refused);
    assert_eq!(
        v.refusal.map(|r| r.reason),
        Some(RejectReason::TaskCancelling)
    );
    // One begun after the cancel is refused at once.
    let (reason, repeat) = refused_begin(f.begin(&handoff("h-after", "t", "a", "c")).await);
    assert_eq!((reason, repeat), (RejectReason::TaskCancelling, false));
    assert_eq!(
        f.task_field("t", "agent").await,
        "a",
        "the task stays to be stopped"
    );
    assert_eq!(f.load("a").await, [1000, 0, 0, 0, 1]);
    assert_eq!(f.load("b").await, [0, 0, 0, 0, 0]);
    assert_eq!(f.load("c").await, [0, 0, 0, 0, 0]);
}
