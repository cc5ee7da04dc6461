//! The task state machine against the Lua scripts that implement it, on a real redis-server.
//!
//! Every (state, event) pair is a case. For each pair [`TaskState::apply`] accepts, the script
//! implementing the event must answer (in its typed result) and store (in the task's `state`
//! field) exactly the state `apply` returns, and keep the task in the priority queue exactly
//! when that state is `queued`. For every pair `apply` refuses, the script must refuse or do
//! nothing, and leave the stored state as it was. The expected states come from the pure state
//! machine, not from this file, so a script and the machine drifting apart fails here. Cases run
//! one after the other on one server and each failure is listed on its own.
//!
//! `Cancelled` of a granted task takes two scripts, as in the service: `cancel_task` marks it
//! (the task stays granted, its agent is told) and the agent's confirmation, a failure report
//! through `complete_tasks`, cancels it.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::scripts::{Fixture, fixture};
use switchyard_decision::task_state::initial_state;
use switchyard_decision::{Resources, TaskEvent, TaskState};
use switchyard_protocol::RejectReason;
use switchyard_server::state::{
    CancelOutcome, CompleteOutcome, Completion, Deadline, DeadlineKind, DeadlineOutcome,
    GrantOutcome, RequeueOutcome, ResolveOutcome, SubmitOutcome, SubmitRequest,
};

const RETENTION_S: u64 = 3600;
const LR: f64 = 0.5;
/// The one agent every grant goes to; big enough never to be full.
const AGENT: &str = "w";

/// Every event but `Submitted`, which is not a transition (a new task's first state is
/// [`initial_state`], checked on its own below).
const EVENTS: [TaskEvent; 8] = [
    TaskEvent::DependenciesMet,
    TaskEvent::DependencyFailed,
    TaskEvent::Granted,
    TaskEvent::Completed,
    TaskEvent::Failed,
    TaskEvent::Requeued,
    TaskEvent::Cancelled,
    TaskEvent::TimedOut,
];

/// A script's typed answer, reduced to what the state machine speaks of.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The script applied the event (or, for a finished task, repeated its outcome) and names
    /// this state.
    Now(TaskState),
    /// The script refused, or found nothing to do; the typed answer, for the report.
    Refused(String),
}

fn submitted(outcome: SubmitOutcome) -> Answer {
    match outcome {
        SubmitOutcome::Queued => Answer::Now(TaskState::Queued),
        SubmitOutcome::Waiting { .. } => Answer::Now(TaskState::WaitingDependencies),
        SubmitOutcome::Failed { .. } => Answer::Now(TaskState::Failed),
        other @ (SubmitOutcome::Duplicate { .. } | SubmitOutcome::Refused(_)) => {
            Answer::Refused(format!("{other:?}"))
        }
    }
}

fn resolved(outcome: ResolveOutcome) -> Answer {
    match outcome {
        ResolveOutcome::Queued => Answer::Now(TaskState::Queued),
        ResolveOutcome::Waiting => Answer::Now(TaskState::WaitingDependencies),
        ResolveOutcome::Failed { .. } => Answer::Now(TaskState::Failed),
        other @ ResolveOutcome::Noop => Answer::Refused(format!("{other:?}")),
    }
}

fn granted(outcome: GrantOutcome) -> Answer {
    match outcome {
        GrantOutcome::Granted { .. } => Answer::Now(TaskState::Granted),
        other @ (GrantOutcome::NotQueued { .. }
        | GrantOutcome::NoFit
        | GrantOutcome::Budget { .. }) => Answer::Refused(format!("{other:?}")),
    }
}

fn finished(outcome: CompleteOutcome) -> Answer {
    match outcome {
        CompleteOutcome::Finished { success: true, .. } => Answer::Now(TaskState::Completed),
        CompleteOutcome::Finished { success: false, .. } => Answer::Now(TaskState::Failed),
        CompleteOutcome::Cancelled { .. } => Answer::Now(TaskState::Cancelled),
        // A failed attempt with attempts left: `Requeued`, to `queued`.
        CompleteOutcome::Retrying { .. } => Answer::Now(TaskState::Queued),
        other @ CompleteOutcome::Refused(_) => Answer::Refused(format!("{other:?}")),
    }
}

fn cancelled(outcome: CancelOutcome) -> Answer {
    match outcome {
        CancelOutcome::Cancelled { .. } => Answer::Now(TaskState::Cancelled),
        CancelOutcome::Cancelling { .. } => Answer::Now(TaskState::Granted),
        other @ (CancelOutcome::Finished { .. } | CancelOutcome::Refused(_)) => {
            Answer::Refused(format!("{other:?}"))
        }
    }
}

fn requeued(outcome: RequeueOutcome) -> Answer {
    match outcome {
        RequeueOutcome::Requeued => Answer::Now(TaskState::Queued),
        RequeueOutcome::Cancelled => Answer::Now(TaskState::Cancelled),
        other @ RequeueOutcome::Noop => Answer::Refused(format!("{other:?}")),
    }
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what} failed: {e}")
}

fn timed_out(outcome: DeadlineOutcome) -> Answer {
    match outcome {
        DeadlineOutcome::Failed { .. } => Answer::Now(TaskState::Failed),
        DeadlineOutcome::Retrying { .. } => Answer::Now(TaskState::Queued),
        DeadlineOutcome::Cancelled { .. } => Answer::Now(TaskState::Cancelled),
        other => Answer::Refused(format!("{other:?}")),
    }
}

/// A time limit running out, as the optimizer's deadline pass applies it: the deadline the
/// task's state calls for (run when granted, queue otherwise) is put in its set as already due,
/// then enforced.
async fn time_out(f: &Fixture, task_id: &str) -> Result<Answer, String> {
    let record = f
        .store
        .task_record(task_id)
        .await
        .map_err(failed("task_record"))?;
    let get = |k: &str| {
        record
            .as_ref()
            .and_then(|r| r.get(k).cloned())
            .unwrap_or_default()
    };
    let (kind, key, n) = if get("state") == "granted" {
        let attempt = Some(get("attempt")).filter(|a| !a.is_empty());
        (
            DeadlineKind::Run,
            f.keys.run_deadlines(),
            attempt.unwrap_or("1".into()),
        )
    } else {
        (
            DeadlineKind::Queue,
            f.keys.queue_deadlines(),
            get("grant_seq"),
        )
    };
    let member = format!("{task_id}|{}", if n.is_empty() { "0".into() } else { n });
    let _: i64 = redis::cmd("ZADD")
        .arg(key)
        .arg(0)
        .arg(&member)
        .query_async(&mut f.raw.clone())
        .await
        .map_err(failed("ZADD"))?;
    let deadline = Deadline {
        kind,
        task_id: task_id.to_string(),
        member,
    };
    let outcome = f
        .store
        .enforce_deadline(&deadline, AGENT, 0.1, RETENTION_S)
        .await;
    Ok(timed_out(outcome.map_err(failed("enforce_deadline"))?))
}

/// A case's task and the one dependency it is submitted with.
struct Task {
    id: String,
    dep: String,
}

impl Task {
    fn new(name: String) -> Task {
        Task {
            dep: format!("{name}-dep"),
            id: name,
        }
    }
}

fn request(task_id: &str, dependencies: &[&str]) -> SubmitRequest {
    SubmitRequest {
        task_id: task_id.into(),
        message_id: format!("m-{task_id}"),
        submitter: "orch".into(),
        task_type: "default".into(),
        priority: 5,
        required: Resources {
            cpu: 1,
            ..Resources::default()
        },
        estimated_duration_s: 0.0,
        dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
        strategy: None,
        explain: false,
        replies: switchyard_protocol::Replies::All,
        options: Vec::new(),
    }
}

async fn register(f: &Fixture) {
    let room = Resources {
        cpu: 1_000_000,
        memory: 1_000_000,
        tokens: 1_000_000,
        time: 1_000_000,
    };
    f.store
        .register_agent(AGENT, "worker", &room, 1.0, 0)
        .await
        .expect("register_agent");
}

async fn submit(f: &Fixture, task_id: &str, dependencies: &[&str]) -> Result<Answer, String> {
    let req = request(task_id, dependencies);
    let outcome = f.store.submit_task(&req, RETENTION_S).await;
    Ok(submitted(outcome.map_err(failed("submit_task"))?))
}

async fn grant(f: &Fixture, task_id: &str) -> Result<Answer, String> {
    let outcome = f.store.grant_task(task_id, &[AGENT.to_string()]).await;
    Ok(granted(outcome.map_err(failed("grant_task"))?))
}

async fn complete(f: &Fixture, task_id: &str, success: bool) -> Result<Answer, String> {
    let report = Completion {
        task_id,
        agent_id: AGENT,
        success,
        execution_time_s: 0.0,
        grant_seq: None,
        usage: None,
    };
    let outcome = f.store.complete_task(&report, LR, RETENTION_S);
    Ok(finished(outcome.await.map_err(failed("complete_task"))?))
}

/// The task's stored `state` field, typed; `None` for no task at all.
async fn stored_state(f: &Fixture, task_id: &str) -> Result<Option<TaskState>, String> {
    let record = f.store.task_record(task_id).await;
    let Some(record) = record.map_err(failed("task_record"))? else {
        return Ok(None);
    };
    let raw = record.get("state").cloned().unwrap_or_default();
    TaskState::parse(&raw)
        .map(Some)
        .ok_or_else(|| format!("stored state {raw:?} is not a TaskState"))
}

async fn in_queue(f: &Fixture, task_id: &str) -> Result<bool, String> {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(f.keys.queue())
        .arg(task_id)
        .query_async(&mut f.raw.clone())
        .await
        .map_err(failed("ZSCORE"))?;
    Ok(score.is_some())
}

/// Finishes a dependency that is still queued, as its agent would, so the dependent's
/// resolution follows a real outcome. One already finished is left as it is.
async fn settle(f: &Fixture, dep: &str, success: bool) -> Result<(), String> {
    if stored_state(f, dep).await? != Some(TaskState::Queued) {
        return Ok(());
    }
    let outcome = (grant(f, dep).await?, complete(f, dep, success).await?);
    let want = if success {
        TaskState::Completed
    } else {
        TaskState::Failed
    };
    if outcome != (Answer::Now(TaskState::Granted), Answer::Now(want)) {
        return Err(format!("dependency {dep} did not finish: {outcome:?}"));
    }
    Ok(())
}

/// Applies `event` to the task with the script that implements it, as the optimizer calls it.
async fn drive(f: &Fixture, task: &Task, event: TaskEvent) -> Result<Answer, String> {
    let resolve = |succeeded| {
        f.store
            .resolve_dependency(&task.id, &task.dep, succeeded, RETENTION_S)
    };
    Ok(match event {
        TaskEvent::Submitted { .. } => return Err("submitted is not a transition".into()),
        TaskEvent::DependenciesMet => {
            settle(f, &task.dep, true).await?;
            resolved(resolve(true).await.map_err(failed("resolve_dependency"))?)
        }
        TaskEvent::DependencyFailed => {
            settle(f, &task.dep, false).await?;
            resolved(resolve(false).await.map_err(failed("resolve_dependency"))?)
        }
        TaskEvent::Granted => grant(f, &task.id).await?,
        TaskEvent::Completed => complete(f, &task.id, true).await?,
        TaskEvent::Failed => complete(f, &task.id, false).await?,
        TaskEvent::Requeued => {
            let outcome = f.store.requeue_task(&task.id, AGENT, RETENTION_S).await;
            requeued(outcome.map_err(failed("requeue_task"))?)
        }
        TaskEvent::TimedOut => time_out(f, &task.id).await?,
        TaskEvent::Cancelled => {
            let outcome = f
                .store
                .cancel_task(&task.id, "orch", false, "", RETENTION_S)
                .await;
            match outcome.map_err(failed("cancel_task"))? {
                // Granted: the agent confirms the cancel by reporting the grant failed.
                CancelOutcome::Cancelling { .. } => complete(f, &task.id, false).await?,
                other => cancelled(other),
            }
        }
    })
}

/// What the scripts did after a transition `apply` accepts, against what it returned.
async fn check_moved(
    f: &Fixture,
    task_id: &str,
    to: TaskState,
    answer: Answer,
) -> Result<(), String> {
    if answer != Answer::Now(to) {
        return Err(format!(
            "the script answered {answer:?}, the state machine says {to}"
        ));
    }
    let stored = stored_state(f, task_id).await?;
    if stored != Some(to) {
        return Err(format!(
            "stored state {stored:?}, the state machine says {to}"
        ));
    }
    let queued = in_queue(f, task_id).await?;
    if queued != (to == TaskState::Queued) {
        return Err(format!("{to} but in the priority queue: {queued}"));
    }
    Ok(())
}

/// What the scripts did after an event `apply` refuses in `from`: nothing. A finished task may
/// repeat its outcome (completions are idempotent), but no answer may name another state.
async fn check_refused(
    f: &Fixture,
    task_id: &str,
    from: TaskState,
    answer: Answer,
) -> Result<(), String> {
    match answer {
        Answer::Refused(_) => {}
        Answer::Now(state) if state == from && from.is_terminal() => {}
        Answer::Now(state) => {
            return Err(format!(
                "the state machine refuses it, the script answered {state}"
            ));
        }
    }
    let stored = stored_state(f, task_id).await?;
    if stored != Some(from) {
        return Err(format!("refused, yet the stored state became {stored:?}"));
    }
    Ok(())
}

/// The events that take a task submitted with one unmet dependency to `state`.
fn path_to(state: TaskState) -> &'static [TaskEvent] {
    use TaskEvent as E;
    match state {
        TaskState::WaitingDependencies => &[],
        TaskState::Queued => &[E::DependenciesMet],
        TaskState::Granted => &[E::DependenciesMet, E::Granted],
        TaskState::Completed => &[E::DependenciesMet, E::Granted, E::Completed],
        TaskState::Failed => &[E::DependenciesMet, E::Granted, E::Failed],
        TaskState::Cancelled => &[E::DependenciesMet, E::Cancelled],
    }
}

/// Submits the task (waiting on its dependency) and walks it to `state` through the scripts,
/// checking every step against the state machine as well.
async fn reach(f: &Fixture, task: &Task, state: TaskState) -> Result<(), String> {
    submit(f, &task.dep, &[]).await?;
    let answer = submit(f, &task.id, &[&task.dep]).await?;
    let mut now = initial_state(1, false);
    check_moved(f, &task.id, now, answer).await?;
    for event in path_to(state) {
        let next = now.apply(event).map_err(|e| e.to_string())?;
        let answer = drive(f, task, *event).await?;
        check_moved(f, &task.id, next, answer).await?;
        now = next;
    }
    Ok(())
}

async fn run_case(f: &Fixture, from: TaskState, event: TaskEvent) -> Result<(), String> {
    let task = Task::new(format!("{from}-{}", event.name()));
    reach(f, &task, from)
        .await
        .map_err(|e| format!("getting to {from}: {e}"))?;
    let answer = drive(f, &task, event).await?;
    match from.apply(&event) {
        Ok(to) => check_moved(f, &task.id, to, answer).await,
        Err(_) => check_refused(f, &task.id, from, answer).await,
    }
}

/// Runs every (state, event) case the state machine accepts (`valid`) or refuses, on one
/// server, and fails listing every case that disagreed.
async fn run_cases(valid: bool) {
    let f = fixture().await;
    register(&f).await;
    let (mut ran, mut failures) = (0, Vec::new());
    for from in TaskState::ALL {
        for event in EVENTS
            .into_iter()
            .filter(|e| from.apply(e).is_ok() == valid)
        {
            ran += 1;
            let case = format!("{from} + {}", event.name());
            match run_case(&f, from, event).await {
                Ok(()) => eprintln!("ok    {case}"),
                Err(why) => {
                    eprintln!("FAIL  {case}: {why}");
                    failures.push(format!("{case}: {why}"));
                }
            }
        }
    }
    assert!(ran > 0, "no case to run");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases disagree with TaskState::apply:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_of_the_table_is_what_the_scripts_do() {
    run_cases(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_the_table_refuses_changes_nothing() {
    run_cases(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_starts_where_initial_state_says() {
    let f = fixture().await;
    register(&f).await;
    let free = submit(&f, "free", &[]).await.unwrap();
    assert_eq!(free, Answer::Now(initial_state(0, false)));
    let after = submit(&f, "after", &["free"]).await.unwrap();
    assert_eq!(after, Answer::Now(initial_state(1, false)));
    submit(&f, "doomed", &[]).await.unwrap();
    settle(&f, "doomed", false).await.unwrap();
    let orphan = submit(&f, "orphan", &["doomed", "free"]).await.unwrap();
    assert_eq!(orphan, Answer::Now(initial_state(1, true)));
    for (task, want) in [
        ("free", initial_state(0, false)),
        ("after", initial_state(1, false)),
        ("orphan", initial_state(1, true)),
    ] {
        assert_eq!(stored_state(&f, task).await.unwrap(), Some(want), "{task}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_a_queued_task_is_refused() {
    let f = fixture().await;
    register(&f).await;
    submit(&f, "q", &[]).await.unwrap();
    assert!(TaskState::Queued.apply(&TaskEvent::Completed).is_err());
    let report = Completion {
        task_id: "q",
        agent_id: AGENT,
        success: true,
        execution_time_s: 0.0,
        grant_seq: None,
        usage: None,
    };
    match f
        .store
        .complete_task(&report, LR, RETENTION_S)
        .await
        .unwrap()
    {
        CompleteOutcome::Refused(refusal) => {
            assert_eq!(refusal.reason, RejectReason::TaskNotGranted, "{refusal:?}")
        }
        other => panic!("completing a queued task was not refused: {other:?}"),
    }
    assert_eq!(
        stored_state(&f, "q").await.unwrap(),
        Some(TaskState::Queued)
    );
    assert!(in_queue(&f, "q").await.unwrap(), "still in the queue");
}

/// A failed attempt with attempts left is `Requeued` (to `queued`) by `complete_tasks`: out of
/// the priority queue until its back-off ends (in the retry set), its grant ended so a report
/// of it again answers the same, and `promote_retries` puts it back in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_with_attempts_left_is_requeued() {
    let f = fixture().await;
    register(&f).await;
    let mut req = request("r", &[]);
    req.options = vec![
        ("max_attempts", "2".into()),
        ("retry_backoff_ms", "0".into()),
        ("retry_backoff_max_ms", "0".into()),
    ];
    f.store.submit_task(&req, RETENTION_S).await.unwrap();
    assert_eq!(
        grant(&f, "r").await.unwrap(),
        Answer::Now(TaskState::Granted)
    );
    let want = TaskState::Granted.apply(&TaskEvent::Requeued).unwrap();
    let report = Completion {
        task_id: "r",
        agent_id: AGENT,
        success: false,
        execution_time_s: 0.0,
        grant_seq: Some(1),
        usage: None,
    };
    for _ in 0..2 {
        let outcome = f
            .store
            .complete_task(&report, LR, RETENTION_S)
            .await
            .unwrap();
        assert!(
            matches!(outcome, CompleteOutcome::Retrying { attempt: 2, .. }),
            "{outcome:?}"
        );
        assert_eq!(stored_state(&f, "r").await.unwrap(), Some(want));
        assert!(!in_queue(&f, "r").await.unwrap(), "waits out its back-off");
    }
    let promoted = f.store.promote_retries(&["r".to_string()]).await.unwrap();
    assert_eq!(promoted, ["r"]);
    assert!(in_queue(&f, "r").await.unwrap(), "back in the queue");
    // The last attempt's failure is `Failed`.
    assert_eq!(
        grant(&f, "r").await.unwrap(),
        Answer::Now(TaskState::Granted)
    );
    assert_eq!(
        complete(&f, "r", false).await.unwrap(),
        Answer::Now(TaskState::Failed)
    );
}
