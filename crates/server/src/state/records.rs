//! Typed answers of the transition scripts, parsed from their reply arrays.

use switchyard_client::error::{Error, ErrorKind};
use switchyard_decision::{Resources, TaskState, TaskView};
use switchyard_protocol::RejectReason;

/// What the optimizer asks `submit_task` to record.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitRequest {
    pub task_id: String,
    pub message_id: String,
    pub submitter: String,
    pub task_type: String,
    pub priority: u8,
    pub required: Resources,
    pub estimated_duration_s: f64,
    pub dependencies: Vec<String>,
    /// The strategy asked for in the submit, by name; `None`: the optimizer's default.
    pub strategy: Option<String>,
    /// The submit asked for its placement to be explained in the grant.
    pub explain: bool,
    /// Which replies the submitter wants.
    pub replies: switchyard_protocol::Replies,
    /// Per-task settings stored on the task hash as given (field, value), for the scripts of
    /// later transitions to read by name. Empty for a task that sets none.
    pub options: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    Queued,
    Waiting {
        unmet: u64,
    },
    Failed {
        reason: String,
    },
    /// The same submit message was applied before; `state`/`agent` are the task's current ones.
    Duplicate {
        state: TaskState,
        agent: String,
    },
    /// Refused: another message already submitted this task id (`task_exists`).
    Refused(Refusal),
}

/// One task of a dispatch round and its candidate agents, best first.
#[derive(Debug, Clone, Copy)]
pub struct GrantRequest<'a> {
    pub task_id: &'a str,
    pub candidates: &'a [String],
    /// The task's budget draws (QueuedTask::budgets): their keys go to the script.
    pub budgets: &'a [(String, u64)],
    /// Why these candidates, for the task's story: the strategy's name, and when the decision
    /// was explained the scores after a space (`least_loaded a1=0.83,a2=0.61`); "" for none.
    pub why: &'a str,
    /// The agent type the task is sent to explore (PlannedGrant::explores), "" for none: a
    /// grant to an agent of that type counts in the pair's `explorations`.
    pub explores: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GrantOutcome {
    Granted {
        agent_id: String,
        grant_seq: u64,
    },
    /// Someone else granted it, or it finished; `None`: the task is unknown (or expired).
    NotQueued {
        state: Option<TaskState>,
    },
    NoFit,
    /// Budget `budget` does not allow the task's draw now; `wait_ms`: when it would by refill
    /// alone (Redis clock), `None`: only when a concurrency slot is released (or never).
    Budget {
        budget: String,
        wait_ms: Option<u64>,
    },
}

/// A completion report, as `complete_task` needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion<'a> {
    pub task_id: &'a str,
    pub agent_id: &'a str,
    pub success: bool,
    pub execution_time_s: f64,
    /// The grant reported on; `None` accepts any grant of the task to this agent.
    pub grant_seq: Option<u64>,
    /// Actual usage by unit (TASK_COMPLETE.usage): reconciles the task's rate draws.
    pub usage: Option<&'a std::collections::BTreeMap<String, u64>>,
}

/// Why a transition was refused: the reason code and a readable message, both written by the
/// script that refused (every script refuses in this one shape: `refused, code, message`), so
/// the optimizer maps nothing by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub message: String,
}

/// The reason codes the scripts refuse with.
fn reason(code: &str) -> Option<RejectReason> {
    Some(match code {
        "unknown_agent" => RejectReason::UnknownAgent,
        "agent_not_active" => RejectReason::AgentNotActive,
        "unknown_task" => RejectReason::UnknownTask,
        "task_not_granted" => RejectReason::TaskNotGranted,
        "wrong_agent" => RejectReason::WrongAgent,
        "stale_grant" => RejectReason::StaleGrant,
        "insufficient_capacity" => RejectReason::InsufficientCapacity,
        "unknown_handoff" => RejectReason::UnknownHandoff,
        "task_exists" => RejectReason::TaskExists,
        "infeasible" => RejectReason::Infeasible,
        "not_submitter" => RejectReason::NotSubmitter,
        "task_cancelling" => RejectReason::TaskCancelling,
        _ => return None,
    })
}

/// The refusal whose code is at `code` in a script's reply and whose message follows it.
pub(crate) fn refusal(script: &str, reply: &[String], code: usize) -> Result<Refusal, Error> {
    Ok(Refusal {
        reason: reason(&field(reply, code)).ok_or_else(|| unexpected(script, reply))?,
        message: field(reply, code + 1),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompleteOutcome {
    /// Completed (`success`) or failed; `dependents` wait on this task.
    Finished {
        success: bool,
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
    /// A failure reported for a task whose cancel was requested: the agent's confirmation, so
    /// the task is cancelled; `dependents` fail with `dependency_cancelled`.
    Cancelled {
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
    /// A failed attempt with attempts left: the task runs again after its back-off
    /// (`retry_at_ms`, Redis clock) as attempt `attempt`; its dependents keep waiting.
    /// `submitter` is empty unless it wants every reply.
    Retrying {
        submitter: String,
        submit_message_id: String,
        retry_at_ms: u64,
        attempt: u32,
    },
    /// Not applied: unknown agent or task, an agent that is not active, a report about an
    /// earlier grant, the wrong agent, or a task not granted.
    Refused(Refusal),
}

/// What became of a TASK_CANCEL (`lua/cancel_task.lua`).
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Cancelled (now or by an earlier cancel); these dependents fail in turn.
    Cancelled {
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
    /// Granted: its agent is being told; the task is cancelled when the agent confirms or its
    /// lease ends.
    Cancelling { agent_id: String, grant_seq: u64 },
    /// Already completed or failed: nothing to cancel.
    Finished { state: TaskState, agent_id: String },
    /// Unknown task, or a canceller that is neither its submitter nor an operator.
    Refused(Refusal),
}

/// How a dependency ended, for `resolve_dependency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyOutcome {
    Completed,
    Failed,
    Cancelled,
}

impl DependencyOutcome {
    /// The name `resolve_dependency.lua` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyOutcome::Completed => "completed",
            DependencyOutcome::Failed => "failed",
            DependencyOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResolveOutcome {
    Queued,
    Waiting,
    /// Failed with its dependency; these dependents must be failed in turn.
    Failed {
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
    Noop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeregisterOutcome {
    Deregistered { tasks: Vec<String> },
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeartbeatOutcome {
    Alive,
    /// Unknown, or not active (dead, deregistered): register again to rejoin.
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpireOutcome {
    Alive,
    /// Dead; these tasks are still granted to it and must be re-queued.
    Dead {
        tasks: Vec<String>,
        /// This call marked it dead (false: it was already, by another replica or an earlier
        /// pass); only a fresh death is counted and logged.
        just_died: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequeueOutcome {
    Requeued,
    /// Its cancel had been requested: cancelled instead of queued.
    Cancelled,
    Noop,
}

/// A task at the head of the queue, with what a grant message needs.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub view: TaskView,
    pub submitter: String,
    pub submit_message_id: String,
    pub submitted_at_ms: u64,
    /// The strategy the submit asked for; `None`: the optimizer's default.
    pub strategy: Option<switchyard_decision::StrategyKind>,
    /// The submit asked for the grant to explain its placement.
    pub explain: bool,
    /// Which replies the submitter wants.
    pub replies: switchyard_protocol::Replies,
    /// The tenant the task belongs to (`default` when the submit named none).
    pub tenant: String,
    /// The budgets the task draws from, and how much (empty: none).
    pub budgets: Vec<(String, u64)>,
    /// The trace context of the task's `submit` span (stored at submit), if it has one.
    pub trace: Option<switchyard_protocol::TraceContext>,
    /// Which attempt a grant now would start (1, or more for a retried task).
    pub attempt: u32,
}

/// A script answered what its caller does not expect: a defect, never retried.
pub(crate) fn unexpected(script: &str, reply: &[String]) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("{script} returned an unexpected reply {reply:?}"),
    )
}

pub(crate) fn field(reply: &[String], i: usize) -> String {
    reply.get(i).cloned().unwrap_or_default()
}

/// A task state a script named in its reply, typed: a name the state machine does not know is
/// an unexpected reply, not a string to compare by hand further on.
fn state(script: &str, reply: &[String], i: usize) -> Result<TaskState, Error> {
    TaskState::parse(&field(reply, i)).ok_or_else(|| unexpected(script, reply))
}

impl SubmitOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("queued") => SubmitOutcome::Queued,
            Some("waiting") => SubmitOutcome::Waiting {
                unmet: field(reply, 1).parse().unwrap_or(0),
            },
            Some("failed") => SubmitOutcome::Failed {
                reason: field(reply, 1),
            },
            Some("duplicate") => SubmitOutcome::Duplicate {
                state: state("submit_task", reply, 1)?,
                agent: field(reply, 2),
            },
            Some("refused") => SubmitOutcome::Refused(refusal("submit_task", reply, 1)?),
            _ => return Err(unexpected("submit_task", reply)),
        })
    }
}

impl GrantOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("granted") => GrantOutcome::Granted {
                agent_id: field(reply, 1),
                grant_seq: field(reply, 2)
                    .parse()
                    .map_err(|_| unexpected("grant_tasks", reply))?,
            },
            // "missing": no such task.
            Some("not_queued") => GrantOutcome::NotQueued {
                state: TaskState::parse(&field(reply, 1)),
            },
            Some("no_fit") => GrantOutcome::NoFit,
            Some("budget") => GrantOutcome::Budget {
                budget: field(reply, 1),
                wait_ms: field(reply, 2).parse().ok(),
            },
            _ => return Err(unexpected("grant_tasks", reply)),
        })
    }
}

impl CompleteOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        let finished = |success| CompleteOutcome::Finished {
            success,
            submitter: field(reply, 1),
            submit_message_id: field(reply, 2),
            dependents: reply.iter().skip(3).cloned().collect(),
        };
        Ok(match reply.first().map(String::as_str) {
            Some("completed") => finished(true),
            Some("failed") => finished(false),
            Some("cancelled") => CompleteOutcome::Cancelled {
                submitter: field(reply, 1),
                submit_message_id: field(reply, 2),
                dependents: reply.iter().skip(3).cloned().collect(),
            },
            Some("retrying") => CompleteOutcome::Retrying {
                submitter: field(reply, 1),
                submit_message_id: field(reply, 2),
                retry_at_ms: field(reply, 3).parse().unwrap_or(0),
                attempt: field(reply, 4).parse().unwrap_or(0),
            },
            Some("refused") => CompleteOutcome::Refused(refusal("complete_tasks", reply, 1)?),
            _ => return Err(unexpected("complete_task", reply)),
        })
    }
}

impl ResolveOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("queued") => ResolveOutcome::Queued,
            Some("waiting") => ResolveOutcome::Waiting,
            Some("failed") => ResolveOutcome::Failed {
                submitter: field(reply, 1),
                submit_message_id: field(reply, 2),
                dependents: reply.iter().skip(3).cloned().collect(),
            },
            Some("noop") => ResolveOutcome::Noop,
            _ => return Err(unexpected("resolve_dependency", reply)),
        })
    }
}

impl CancelOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("cancelled") => CancelOutcome::Cancelled {
                submitter: field(reply, 1),
                submit_message_id: field(reply, 2),
                dependents: reply.iter().skip(3).cloned().collect(),
            },
            Some("cancelling") => CancelOutcome::Cancelling {
                agent_id: field(reply, 1),
                grant_seq: field(reply, 2)
                    .parse()
                    .map_err(|_| unexpected("cancel_task", reply))?,
            },
            Some("finished") => CancelOutcome::Finished {
                state: state("cancel_task", reply, 1)?,
                agent_id: field(reply, 2),
            },
            Some("refused") => CancelOutcome::Refused(refusal("cancel_task", reply, 1)?),
            _ => return Err(unexpected("cancel_task", reply)),
        })
    }
}

impl DeregisterOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("deregistered") => DeregisterOutcome::Deregistered {
                tasks: reply.iter().skip(1).cloned().collect(),
            },
            Some("refused") => DeregisterOutcome::Refused(refusal("deregister_agent", reply, 1)?),
            _ => return Err(unexpected("deregister_agent", reply)),
        })
    }
}

impl HeartbeatOutcome {
    /// One agent's three entries of `record_heartbeats`.
    pub(crate) fn parse(entry: &[String]) -> Result<Self, Error> {
        Ok(match entry.first().map(String::as_str) {
            Some("alive") => HeartbeatOutcome::Alive,
            Some("refused") => HeartbeatOutcome::Refused(refusal("record_heartbeats", entry, 1)?),
            _ => return Err(unexpected("record_heartbeats", entry)),
        })
    }
}

impl ExpireOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("alive") => ExpireOutcome::Alive,
            Some(outcome @ ("died" | "dead")) => ExpireOutcome::Dead {
                tasks: reply.iter().skip(1).cloned().collect(),
                just_died: outcome == "died",
            },
            _ => return Err(unexpected("expire_agent", reply)),
        })
    }
}

impl RequeueOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("requeued") => RequeueOutcome::Requeued,
            Some("cancelled") => RequeueOutcome::Cancelled,
            Some("noop") => RequeueOutcome::Noop,
            _ => return Err(unexpected("requeue_task", reply)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_script_replies() {
        assert_eq!(
            SubmitOutcome::parse(&s(&["waiting", "2"])).ok(),
            Some(SubmitOutcome::Waiting { unmet: 2 })
        );
        assert_eq!(
            GrantOutcome::parse(&s(&["granted", "a1", "3"])).ok(),
            Some(GrantOutcome::Granted {
                agent_id: "a1".into(),
                grant_seq: 3
            })
        );
        assert_eq!(
            CompleteOutcome::parse(&s(&["failed", "orch", "m1", "t2", "t3"])).ok(),
            Some(CompleteOutcome::Finished {
                success: false,
                submitter: "orch".into(),
                submit_message_id: "m1".into(),
                dependents: s(&["t2", "t3"])
            })
        );
        assert_eq!(
            CancelOutcome::parse(&s(&["cancelling", "a1", "2"])).ok(),
            Some(CancelOutcome::Cancelling {
                agent_id: "a1".into(),
                grant_seq: 2
            })
        );
        assert_eq!(
            CompleteOutcome::parse(&s(&["cancelled", "orch", "m1"])).ok(),
            Some(CompleteOutcome::Cancelled {
                submitter: "orch".into(),
                submit_message_id: "m1".into(),
                dependents: vec![]
            })
        );
        assert!(CancelOutcome::parse(&s(&["finished", "bogus", ""])).is_err());
        assert!(GrantOutcome::parse(&s(&["bogus"])).is_err());
        assert!(SubmitOutcome::parse(&[]).is_err());
    }
}
