//! The task lifecycle as a pure state machine.
//!
//! ```text
//!   submitted,                 submitted,            submitted,
//!   deps unmet                 all deps done         a dep already failed
//!        |                           |                     |
//!        v                           v                     v
//!   +---------+                    +--------+            +--------+
//!   | waiting | DependenciesMet -> | queued | <-----+    | failed |
//!   +---------+                    +--------+       |    +--------+
//!        |                             |            |      ^    ^
//!        |                     Granted |   Requeued |      |    |
//!        |                             v            |      |    |
//!        |                        +---------+       |      |    |
//!        |                        | granted | ------+      |    |
//!        |                        +---------+              |    |
//!        |                          |     |     Failed     |    |
//!        |                          |     +----------------+    |
//!        |                Completed |                           |
//!        |                          v                           |
//!        |                   +-----------+                      |
//!        |                   | completed |                      |
//!        |                   +-----------+                      |
//!        |                                                      |
//!        +------------------- DependencyFailed -----------------+
//! ```
//!
//! `Cancelled`, from `waiting`, `queued` and `granted` to the terminal `cancelled`, is left out of
//! the drawing (it would cross every line); it is in the table.
//!
//! As a table (anything not listed is an [`InvalidTransition`]):
//!
//! | from      | event            | to        |
//! |-----------|------------------|-----------|
//! | waiting   | DependenciesMet  | queued    |
//! | waiting   | DependencyFailed | failed    |
//! | queued    | Granted          | granted   |
//! | granted   | Completed        | completed |
//! | granted   | Failed           | failed    |
//! | granted   | Requeued         | queued    |
//! | waiting   | TimedOut         | failed    |
//! | queued    | TimedOut         | failed    |
//! | granted   | TimedOut         | failed    |
//! | waiting   | Cancelled        | cancelled |
//! | queued    | Cancelled        | cancelled |
//! | granted   | Cancelled        | cancelled |
//!
//! `Submitted` is never applied to an existing state: a new task's first state comes from
//! [`initial_state`], and a resubmission of a known task is a duplicate for the caller to treat
//! idempotently, not a transition. `completed`, `failed` and `cancelled` are terminal.
//!
//! **Cancellation** is its own terminal state rather than `failed` with a reason: a cancel is
//! something a user asked for, not something that went wrong, so it is counted apart (the
//! `cancelled` counter), it does not lower the agent's learned score, and a status reader can
//! tell "stopped on purpose" from "broke" without parsing a reason. Its dependents still fail
//! (with the reason `dependency_cancelled:<id>`), since they can never run. A waiting or queued
//! task is cancelled at once (`cancel_task.lua`). A granted task is not: the TASK_CANCEL marks it
//! `cancel_requested` (data beside the state, like a retry back-off in the simulator) and the
//! agent is told; `Cancelled` is applied when the agent confirms by reporting the task failed
//! (`complete_tasks.lua`), or when its lease ends or it deregisters (`requeue_task.lua`, which
//! cancels such a task instead of queueing it). An agent that reports success first has done the
//! work: the task is `completed`, the cancel lost the race.
//!
//! The Lua scripts in `crates/server/src/state/lua` implement this same table against Redis,
//! atomically (one script per event: `resolve_dependency` for the dependency events,
//! `grant_tasks`, `complete_tasks` for `Completed` and `Failed` (and `Cancelled` of a granted
//! task the agent confirms), `requeue_task`, `cancel_task` for `Cancelled` of a waiting or
//! queued task). This Rust version
//! is the reference: it is what the unit tests check exhaustively, `tests/task_states.rs` drives
//! every row of the table through the scripts and checks they agree with it, and the state names
//! returned by [`TaskState::as_str`] are exactly the strings those scripts store.
//!
//! **Retries and time limits.** `Requeued` also takes back a failed attempt that will run again:
//! when an agent reports a grant failed (`complete_tasks`) or the grant outlives its
//! `run_timeout_s` (`enforce_deadline`), and the task has attempts left (`max_attempts`), it goes
//! back to `queued` instead of `failed`, its dependents keep waiting, and its submitter hears no
//! final reply yet. Such a task waits out its back-off ([`crate::retry`]) out of the priority
//! queue (in the retry set, with `retry_at` on the task: data beside the state, like
//! `cancel_requested`); the maintenance work moves it into the queue, at its old place, when the
//! back-off ends. The last attempt's failure is `Failed`. A run timeout with no attempt left, and
//! a queue timeout (`queued` or `waiting` past its `queue_timeout_s`), are the event `TimedOut`,
//! to `failed` with the reason `run_timeout` or `queue_timeout` (`enforce_deadline`; a run
//! timeout with attempts left is `Requeued`, as a reported failure is). An agent leaving or dying
//! is `Requeued` without using an attempt.
//!
//! The simulator (`switchyard-sim`) and the live replay of a workload keep each task in a
//! `TaskState` and move it only with [`TaskState::apply`], with the same rule: `Requeued` for a
//! failed attempt that runs again, the same back-off function, and the same preference for
//! another agent (placement puts [`TaskView::avoid_agents`](crate::TaskView) last). "Not arrived
//! yet" and "waiting out a retry back-off" are data beside the state, not states.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Some dependency has not completed yet.
    #[serde(rename = "waiting")]
    WaitingDependencies,
    /// Ready to run, waiting for an agent with room.
    #[serde(rename = "queued")]
    Queued,
    /// Reserved on an agent, which has been told to run it.
    #[serde(rename = "granted")]
    Granted,
    /// Finished successfully (terminal).
    #[serde(rename = "completed")]
    Completed,
    /// Finished unsuccessfully, or can never run because a dependency failed (terminal).
    #[serde(rename = "failed")]
    Failed,
    /// Cancelled by its submitter or an operator (terminal).
    #[serde(rename = "cancelled")]
    Cancelled,
}

impl TaskState {
    /// Every state, for exhaustive loops.
    pub const ALL: [TaskState; 6] = [
        TaskState::WaitingDependencies,
        TaskState::Queued,
        TaskState::Granted,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The name stored in Redis by the Lua scripts and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::WaitingDependencies => "waiting",
            TaskState::Queued => "queued",
            TaskState::Granted => "granted",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored state name. Exact match: these strings are written only by this service.
    pub fn parse(name: &str) -> Option<Self> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// Whether no further event can move the task: its dependents may now be resolved.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// Applies one event, returning the next state or why the event does not apply here.
    ///
    /// Rejecting instead of ignoring lets callers notice duplicated or reordered messages
    /// (for example a completion for a task that was already requeued) and handle them
    /// idempotently rather than corrupting state.
    pub fn apply(self, event: &TaskEvent) -> Result<TaskState, InvalidTransition> {
        use TaskEvent as E;
        use TaskState as S;
        let next = match (self, event) {
            (S::WaitingDependencies, E::DependenciesMet) => S::Queued,
            (S::WaitingDependencies, E::DependencyFailed) => S::Failed,
            (S::Queued, E::Granted) => S::Granted,
            (S::Granted, E::Completed) => S::Completed,
            (S::Granted, E::Failed) => S::Failed,
            (S::WaitingDependencies | S::Queued | S::Granted, E::TimedOut) => S::Failed,
            (S::Granted, E::Requeued) => S::Queued,
            (S::WaitingDependencies | S::Queued | S::Granted, E::Cancelled) => S::Cancelled,
            _ => {
                return Err(InvalidTransition {
                    from: self,
                    event: event.name(),
                });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// The task was submitted; only meaningful through [`initial_state`].
    Submitted {
        /// How many dependencies have not completed yet.
        unmet_dependencies: usize,
        /// Whether any dependency has already failed.
        failed_dependency: bool,
    },
    /// The last outstanding dependency completed.
    DependenciesMet,
    /// A dependency failed, so this task can never run.
    DependencyFailed,
    /// An agent's resources were reserved for the task.
    Granted,
    /// The agent reported success.
    Completed,
    /// The agent reported failure (of the last attempt, when the task has retries).
    Failed,
    /// A time limit ran out: a waiting or queued task's queue timeout, or the last attempt's
    /// run timeout (with attempts left, a run timeout is `Requeued`).
    TimedOut,
    /// The agent died or deregistered before finishing, or an attempt failed (reported, or past
    /// its run timeout) and the task has attempts left; the task goes back in the queue.
    Requeued,
    /// Its submitter or an operator cancelled it: at once when waiting or queued; when granted,
    /// once the agent confirms or its lease ends.
    Cancelled,
}

impl TaskEvent {
    /// A stable snake_case name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TaskEvent::Submitted { .. } => "submitted",
            TaskEvent::DependenciesMet => "dependencies_met",
            TaskEvent::DependencyFailed => "dependency_failed",
            TaskEvent::Granted => "granted",
            TaskEvent::Completed => "completed",
            TaskEvent::Failed => "failed",
            TaskEvent::Requeued => "requeued",
            TaskEvent::TimedOut => "timed_out",
            TaskEvent::Cancelled => "cancelled",
        }
    }
}

/// An event that does not apply to the task's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid task transition: event {event} in state {from}")]
pub struct InvalidTransition {
    /// The state the task was in.
    pub from: TaskState,
    /// The [`TaskEvent::name`] of the rejected event.
    pub event: &'static str,
}

impl InvalidTransition {
    /// A stable machine-readable code for replies and metrics labels.
    pub fn reason_code(&self) -> &'static str {
        "invalid_transition"
    }
}

/// The first state of a newly submitted task.
///
/// A failed dependency wins over unmet ones: the task can never run, so it fails at once rather
/// than waiting for the remaining dependencies only to fail later.
pub fn initial_state(unmet: usize, any_failed: bool) -> TaskState {
    if any_failed {
        TaskState::Failed
    } else if unmet > 0 {
        TaskState::WaitingDependencies
    } else {
        TaskState::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBMITTED: TaskEvent = TaskEvent::Submitted {
        unmet_dependencies: 0,
        failed_dependency: false,
    };

    const ALL_EVENTS: [TaskEvent; 9] = [
        SUBMITTED,
        TaskEvent::DependenciesMet,
        TaskEvent::DependencyFailed,
        TaskEvent::Granted,
        TaskEvent::Completed,
        TaskEvent::Failed,
        TaskEvent::Requeued,
        TaskEvent::Cancelled,
        TaskEvent::TimedOut,
    ];

    /// The documented table, written independently of `apply`.
    fn expected(from: TaskState, event: &TaskEvent) -> Option<TaskState> {
        use TaskEvent as E;
        use TaskState as S;
        match (from, event) {
            (S::WaitingDependencies, E::DependenciesMet) => Some(S::Queued),
            (S::WaitingDependencies, E::DependencyFailed) => Some(S::Failed),
            (S::Queued, E::Granted) => Some(S::Granted),
            (S::Granted, E::Completed) => Some(S::Completed),
            (S::Granted, E::Failed) => Some(S::Failed),
            (S::Granted, E::Requeued) => Some(S::Queued),
            (S::WaitingDependencies, E::Cancelled) => Some(S::Cancelled),
            (S::Queued, E::Cancelled) => Some(S::Cancelled),
            (S::Granted, E::Cancelled) => Some(S::Cancelled),
            (S::WaitingDependencies, E::TimedOut) => Some(S::Failed),
            (S::Queued, E::TimedOut) => Some(S::Failed),
            (S::Granted, E::TimedOut) => Some(S::Failed),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_event_follows_the_table() {
        let mut valid = 0;
        for from in TaskState::ALL {
            for event in &ALL_EVENTS {
                match (from.apply(event), expected(from, event)) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{from} + {}", event.name());
                        valid += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(
                            err,
                            InvalidTransition {
                                from,
                                event: event.name()
                            }
                        );
                    }
                    (got, want) => panic!("{from} + {}: got {got:?}, want {want:?}", event.name()),
                }
            }
        }
        assert_eq!(valid, 12, "exactly twelve transitions are allowed");
    }

    #[test]
    fn submitted_with_any_counts_is_never_a_transition() {
        for from in TaskState::ALL {
            for (unmet, failed) in [(0, false), (3, false), (0, true), (2, true)] {
                let ev = TaskEvent::Submitted {
                    unmet_dependencies: unmet,
                    failed_dependency: failed,
                };
                assert!(from.apply(&ev).is_err());
            }
        }
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in &ALL_EVENTS {
                assert!(
                    from.apply(event).is_err(),
                    "{from} accepted {}",
                    event.name()
                );
            }
        }
    }

    #[test]
    fn only_completed_failed_and_cancelled_are_terminal() {
        let terminal: Vec<_> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            vec![
                TaskState::Completed,
                TaskState::Failed,
                TaskState::Cancelled
            ]
        );
    }

    #[test]
    fn queued_task_cannot_have_a_dependency_fail() {
        let err = TaskState::Queued
            .apply(&TaskEvent::DependencyFailed)
            .unwrap_err();
        assert_eq!(err.from, TaskState::Queued);
        assert_eq!(err.event, "dependency_failed");
        assert_eq!(err.reason_code(), "invalid_transition");
    }

    #[test]
    fn full_lifecycle_with_requeue() {
        let mut s = initial_state(1, false);
        for ev in [
            TaskEvent::DependenciesMet,
            TaskEvent::Granted,
            TaskEvent::Requeued,
            TaskEvent::Granted,
            TaskEvent::Completed,
        ] {
            s = s.apply(&ev).unwrap();
        }
        assert_eq!(s, TaskState::Completed);
    }

    #[test]
    fn initial_state_rules() {
        assert_eq!(initial_state(0, false), TaskState::Queued);
        assert_eq!(initial_state(2, false), TaskState::WaitingDependencies);
        assert_eq!(initial_state(0, true), TaskState::Failed);
        assert_eq!(initial_state(5, true), TaskState::Failed);
    }

    #[test]
    fn names_match_lua_strings() {
        let names: Vec<_> = TaskState::ALL.into_iter().map(TaskState::as_str).collect();
        assert_eq!(
            names,
            [
                "waiting",
                "queued",
                "granted",
                "completed",
                "failed",
                "cancelled"
            ]
        );
    }

    #[test]
    fn parse_round_trips_and_is_exact() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("waiting_dependencies"), None);
        assert_eq!(TaskState::parse("QUEUED"), None);
        assert_eq!(TaskState::parse(""), None);
    }

    #[test]
    fn serde_uses_the_stored_names() {
        for s in TaskState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: TaskState = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn event_names_are_distinct() {
        let mut names: Vec<_> = ALL_EVENTS.iter().map(TaskEvent::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_EVENTS.len());
    }

    #[test]
    fn error_message_names_state_and_event() {
        let err = TaskState::Completed.apply(&TaskEvent::Granted).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("completed") && msg.contains("granted"),
            "{msg}"
        );
    }
}
