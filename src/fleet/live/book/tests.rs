//! The driver's bookkeeping without servers: dependencies, retries, stale reports, dying agents.

use super::*;
use crate::fleet::live::work::task_id;
use switchyard_sim::StrategyMetrics;

/// Three tasks in a chain (each depends on the one before), two agents of one type.
fn chain(max_attempts: u32) -> Workload {
    let text = format!(
        r#"
seed = 5
[[agent_types]]
name = "w"
count = 2
capacity = {{ cpu = 2 }}
[tasks]
count = 3
arrival = "bursty"
burst_size = 3
burst_every_s = 10.0
[[tasks.types]]
name = "job"
priority = [4, 4]
resources = {{ cpu = 1 }}
estimated_duration_s = [1.0, 1.0]
[tasks.dependencies]
probability = 1.0
lookback = 1
[retry]
max_attempts = {max_attempts}
backoff_s = 2.0
"#
    );
    Workload::parse(&text).expect("valid workload")
}

#[test]
fn children_wait_for_their_parents_and_metrics_follow() {
    let mut book = Book::new(&chain(3));
    assert_eq!(book.stream()[1].parents, [0]);
    assert_eq!(book.arrive(0, 0.0).submit, [0]);
    assert!(book.arrive(1, 0.0).submit.is_empty(), "held for task 0");
    assert!(book.arrive(2, 0.0).submit.is_empty());
    book.granted(&task_id(0, 1), "w-000", 1.0);
    assert_eq!(book.finished(&task_id(0, 1), true, 3.0).submit, [1]);
    book.granted(&task_id(1, 1), "w-001", 3.0);
    assert_eq!(book.finished(&task_id(1, 1), true, 4.0).submit, [2]);
    book.granted(&task_id(2, 1), "w-000", 4.0);
    assert!(book.finished(&task_id(2, 1), true, 8.0).submit.is_empty());
    assert!(book.is_done());
    let m = StrategyMetrics::from_outcome(&book.outcome());
    assert_eq!(m.tasks_completed, 3);
    assert_eq!(m.makespan_s, 8.0);
    assert!((m.mean_completion_s - (3.0 + 4.0 + 8.0) / 3.0).abs() < 1e-9);
    assert_eq!(m.first_attempt_success, 1.0);
    assert_eq!(m.grants_by_agent_type["w"], 3);
    // One agent of two is half used (1 of 2 cpus) from 1 s to 8 s, nothing before:
    // (7 s × 0.5) / (2 agents × 8 s).
    assert!((m.utilization - 7.0 * 0.5 / 16.0).abs() < 1e-9, "{m:?}");
}

#[test]
fn failures_retry_with_backoff_then_fail_dependents() {
    let mut book = Book::new(&chain(2));
    book.arrive(0, 0.0);
    book.arrive(1, 0.0);
    book.granted(&task_id(0, 1), "w-000", 0.0);
    let effects = book.finished(&task_id(0, 1), false, 1.0);
    assert_eq!(
        effects.requeue,
        [(0, 3.0)],
        "backoff 2 s after the first failure"
    );
    assert_eq!(book.attempt(0), 1);
    assert!(book.retry_due(0));
    assert!(!book.retry_due(0), "only once");
    assert_eq!(book.attempt(0), 2);
    // A late report about the first attempt changes nothing.
    book.granted(&task_id(0, 1), "w-001", 3.5);
    assert!(book.finished(&task_id(0, 1), true, 3.5).submit.is_empty());
    book.granted(&task_id(0, 2), "w-001", 4.0);
    assert_eq!(
        book.finished(&task_id(0, 2), false, 5.0),
        Effects::default()
    );
    // Task 0 failed for good; task 1, waiting on it, fails too; task 2 fails on arrival.
    assert!(!book.is_done());
    book.arrive(2, 6.0);
    assert!(book.is_done());
    let m = StrategyMetrics::from_outcome(&book.outcome());
    assert_eq!((m.tasks_completed, m.tasks_failed), (0, 3));
    assert_eq!(m.attempts, 2);
    assert_eq!(m.first_attempt_success, 0.0);
    assert_eq!(m.makespan_s, 6.0);
}

#[test]
fn a_dying_agent_gives_its_tasks_back_and_repeats_are_ignored() {
    let mut book = Book::new(&chain(3));
    book.arrive(0, 0.0);
    book.granted(&task_id(0, 1), "w-000", 0.0);
    book.granted(&task_id(0, 1), "w-000", 0.5);
    book.granted(&task_id(0, 1), "nobody", 0.5);
    let a = book.agent_index("w-000").expect("agent");
    book.agent_died(a, 1.0);
    book.granted(&task_id(0, 1), "w-001", 1.5);
    book.finished(&task_id(0, 1), true, 2.0);
    let outcome = book.outcome();
    let first = &outcome.tasks[0];
    assert_eq!(
        first.grants, 2,
        "the repeat and the unknown agent were not counted"
    );
    assert_eq!(
        first.first_attempt_ok,
        Some(false),
        "cut short by the dying agent"
    );
    assert_eq!(first.completed_s, Some(2.0));
    assert_eq!(first.first_start_s, Some(0.0));
    assert_eq!(first.last_start_s, Some(1.5));
}
