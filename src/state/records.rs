//! Typed answers of the transition scripts, parsed from their reply arrays.

use crate::decision::{Resources, TaskView};
use crate::error::{Error, ErrorKind};

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
    pub replies: crate::protocol::Replies,
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
        state: String,
        agent: String,
    },
    /// Another message already submitted this task id.
    TaskExists {
        state: String,
        agent: String,
    },
}

/// One task of a dispatch round and its candidate agents, best first.
#[derive(Debug, Clone, Copy)]
pub struct GrantRequest<'a> {
    pub task_id: &'a str,
    pub candidates: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
pub enum GrantOutcome {
    Granted { agent_id: String, grant_seq: u64 },
    NotQueued { state: String },
    NoFit,
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
    UnknownAgent,
    UnknownTask,
    WrongAgent {
        owner: String,
    },
    /// The agent is dead or deregistered; its tasks were given back.
    AgentNotActive {
        status: String,
    },
    /// The report names an earlier grant of the task; `current` is the task's grant number.
    StaleGrant {
        current: String,
    },
    NotGranted {
        state: String,
    },
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
    UnknownAgent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeartbeatOutcome {
    Alive,
    UnknownAgent,
    NotActive { status: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpireOutcome {
    Alive,
    /// Dead; these tasks are still granted to it and must be re-queued.
    Dead {
        tasks: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequeueOutcome {
    Requeued,
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
    pub strategy: Option<crate::decision::StrategyKind>,
    /// The submit asked for the grant to explain its placement.
    pub explain: bool,
    /// Which replies the submitter wants.
    pub replies: crate::protocol::Replies,
}

fn unexpected(script: &str, reply: &[String]) -> Error {
    Error::new(
        ErrorKind::Redis,
        format!("{script} returned an unexpected reply {reply:?}"),
    )
}

fn field(reply: &[String], i: usize) -> String {
    reply.get(i).cloned().unwrap_or_default()
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
                state: field(reply, 1),
                agent: field(reply, 2),
            },
            Some("task_exists") => SubmitOutcome::TaskExists {
                state: field(reply, 1),
                agent: field(reply, 2),
            },
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
            Some("not_queued") => GrantOutcome::NotQueued {
                state: field(reply, 1),
            },
            Some("no_fit") => GrantOutcome::NoFit,
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
            Some("unknown_agent") => CompleteOutcome::UnknownAgent,
            Some("unknown_task") => CompleteOutcome::UnknownTask,
            Some("wrong_agent") => CompleteOutcome::WrongAgent {
                owner: field(reply, 1),
            },
            Some("agent_not_active") => CompleteOutcome::AgentNotActive {
                status: field(reply, 1),
            },
            Some("stale_grant") => CompleteOutcome::StaleGrant {
                current: field(reply, 1),
            },
            Some("task_not_granted") => CompleteOutcome::NotGranted {
                state: field(reply, 1),
            },
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

impl DeregisterOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("deregistered") => DeregisterOutcome::Deregistered {
                tasks: reply.iter().skip(1).cloned().collect(),
            },
            Some("unknown_agent") => DeregisterOutcome::UnknownAgent,
            _ => return Err(unexpected("deregister_agent", reply)),
        })
    }
}

impl HeartbeatOutcome {
    /// One agent's entry of `record_heartbeats`: `alive`, `unknown_agent` or the status of an
    /// agent that is not active.
    pub(crate) fn parse(entry: &str) -> Self {
        match entry {
            "alive" => HeartbeatOutcome::Alive,
            "unknown_agent" => HeartbeatOutcome::UnknownAgent,
            status => HeartbeatOutcome::NotActive {
                status: status.to_string(),
            },
        }
    }
}

impl ExpireOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("alive") => ExpireOutcome::Alive,
            Some("dead") => ExpireOutcome::Dead {
                tasks: reply.iter().skip(1).cloned().collect(),
            },
            _ => return Err(unexpected("expire_agent", reply)),
        })
    }
}

impl RequeueOutcome {
    pub(crate) fn parse(reply: &[String]) -> Result<Self, Error> {
        Ok(match reply.first().map(String::as_str) {
            Some("requeued") => RequeueOutcome::Requeued,
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
        assert!(GrantOutcome::parse(&s(&["bogus"])).is_err());
        assert!(SubmitOutcome::parse(&[]).is_err());
    }
}
