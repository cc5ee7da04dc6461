//! Time limits and retries in Redis: the due deadlines and back-offs (read by the Redis clock),
//! and the two transitions that act on them, `enforce_deadline.lua` and `promote_retries.lua`.
//! Every replica may run them for the same entries: each script checks again, atomically, that
//! its entry is due and still applies, so an entry acts once.

use redis::AsyncCommands;

use super::records::{field, unexpected};
use super::store::Store;
use switchyard_client::error::Error;

/// Which limit a deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineKind {
    /// `queue_timeout_s`: a waiting or queued task not granted in time.
    Queue,
    /// `run_timeout_s`: one attempt running too long.
    Run,
}

impl DeadlineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::Queue => "queue",
            DeadlineKind::Run => "run",
        }
    }
}

/// A deadline read as due: its kind, task and member in its sorted set.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadline {
    pub kind: DeadlineKind,
    pub task_id: String,
    /// `task_id|grant_seq` (queue) or `task_id|attempt` (run).
    pub member: String,
}

/// What `enforce_deadline.lua` did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadlineOutcome {
    /// Started again since it was read: later.
    NotDue,
    /// The wait or attempt it was for has ended: the entry is dropped.
    Gone,
    /// Another agent holds the task now (a handoff): enforce again naming it.
    Moved { agent_id: String },
    /// Failed with `queue_timeout` or `run_timeout` (`agent_id`/`grant_seq`: the grant
    /// stopped; empty and 0 for a queue timeout); these dependents fail in turn.
    Failed {
        agent_id: String,
        grant_seq: u64,
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
    /// The grant was taken back; the task runs again as `attempt` after `retry_at_ms`.
    Retrying {
        agent_id: String,
        grant_seq: u64,
        retry_at_ms: u64,
        attempt: u32,
        submitter: String,
        submit_message_id: String,
    },
    /// The grant was taken back from a task whose cancel was requested: cancelled.
    Cancelled {
        agent_id: String,
        grant_seq: u64,
        submitter: String,
        submit_message_id: String,
        dependents: Vec<String>,
    },
}

impl DeadlineOutcome {
    fn parse(reply: &[String]) -> Result<Self, Error> {
        let seq = || field(reply, 2).parse().unwrap_or(0);
        Ok(match reply.first().map(String::as_str) {
            Some("not_due") => DeadlineOutcome::NotDue,
            Some("gone") => DeadlineOutcome::Gone,
            Some("moved") => DeadlineOutcome::Moved {
                agent_id: field(reply, 1),
            },
            Some("failed") => DeadlineOutcome::Failed {
                agent_id: field(reply, 1),
                grant_seq: seq(),
                submitter: field(reply, 3),
                submit_message_id: field(reply, 4),
                dependents: reply.iter().skip(5).cloned().collect(),
            },
            Some("cancelled") => DeadlineOutcome::Cancelled {
                agent_id: field(reply, 1),
                grant_seq: seq(),
                submitter: field(reply, 3),
                submit_message_id: field(reply, 4),
                dependents: reply.iter().skip(5).cloned().collect(),
            },
            Some("retrying") => DeadlineOutcome::Retrying {
                agent_id: field(reply, 1),
                grant_seq: seq(),
                retry_at_ms: field(reply, 3).parse().unwrap_or(0),
                attempt: field(reply, 4).parse().unwrap_or(0),
                submitter: field(reply, 5),
                submit_message_id: field(reply, 6),
            },
            _ => return Err(unexpected("enforce_deadline", reply)),
        })
    }
}

/// The task id of a deadline member (`task_id|n`).
fn task_of(member: &str) -> Option<&str> {
    member.rsplit_once('|').map(|(task, _)| task)
}

impl Store {
    /// Deadlines past due by the Redis clock, queue deadlines first, at most `limit` of each.
    pub async fn due_deadlines(&self, limit: usize) -> Result<Vec<Deadline>, Error> {
        let now = self.redis_now_ms().await?;
        let mut due = Vec::new();
        for (kind, key) in [
            (DeadlineKind::Queue, self.keys().queue_deadlines()),
            (DeadlineKind::Run, self.keys().run_deadlines()),
        ] {
            let members: Vec<String> = self
                .conn()
                .zrangebyscore_limit(key, 0, now, 0, limit as isize)
                .await?;
            due.extend(members.into_iter().filter_map(|member| {
                Some(Deadline {
                    kind,
                    task_id: task_of(&member)?.to_string(),
                    member,
                })
            }));
        }
        Ok(due)
    }

    /// Acts on one due deadline; `agent_id`: the agent the caller read as holding the task
    /// (run deadlines). A stopped run teaches the agent and its type's pattern a failure at
    /// `learning_rate`. See `lua/enforce_deadline.lua`.
    pub async fn enforce_deadline(
        &self,
        deadline: &Deadline,
        agent_id: &str,
        learning_rate: f64,
        retention_s: u64,
    ) -> Result<DeadlineOutcome, Error> {
        let k = self.keys();
        let id = &deadline.task_id;
        let mut inv = self.scripts.enforce_deadline.prepare_invoke();
        inv.key(k.task(id))
            .key(k.queue_deadlines())
            .key(k.run_deadlines())
            .key(k.retries())
            .key(k.queue())
            .key(k.waiting())
            .key(k.unmet_dependencies(id))
            .key(k.stats())
            .key(k.dependents(id))
            .key(k.grant_outbox())
            .key(k.cancel_outbox())
            .key(k.fleet_log())
            .key(k.agent(agent_id))
            .key(k.agent_tasks(agent_id))
            .key(k.story(id))
            .key(k.patterns());
        if deadline.kind == DeadlineKind::Run {
            for key in self.task_budget_keys(&[id.as_str()]).await? {
                inv.key(key);
            }
        }
        let reply: Vec<String> = inv
            .arg(id)
            .arg(deadline.kind.as_str())
            .arg(&deadline.member)
            .arg(agent_id)
            .arg(retention_s)
            .arg(learning_rate)
            .invoke_async(&mut self.conn())
            .await?;
        DeadlineOutcome::parse(&reply)
    }

    /// Retried tasks whose back-off is over (Redis clock), at most `limit`.
    pub async fn due_retries(&self, limit: usize) -> Result<Vec<String>, Error> {
        let now = self.redis_now_ms().await?;
        Ok(self
            .conn()
            .zrangebyscore_limit(self.keys().retries(), 0, now, 0, limit as isize)
            .await?)
    }

    /// Moves these retried tasks into the priority queue if their back-off is over; returns
    /// those moved. See `lua/promote_retries.lua`.
    pub async fn promote_retries(&self, task_ids: &[String]) -> Result<Vec<String>, Error> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = self.scripts.promote_retries.prepare_invoke();
        inv.key(k.retries()).key(k.queue()).key(k.queue_deadlines());
        for id in task_ids {
            inv.key(k.task(id));
        }
        for id in task_ids {
            inv.key(k.story(id));
        }
        for id in task_ids {
            inv.arg(id);
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_parse_from_the_script_replies() {
        let reply = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            DeadlineOutcome::parse(&reply(&["failed", "", "0", "orch", "m1", "d1"])).ok(),
            Some(DeadlineOutcome::Failed {
                agent_id: String::new(),
                grant_seq: 0,
                submitter: "orch".into(),
                submit_message_id: "m1".into(),
                dependents: vec!["d1".into()],
            })
        );
        let retry = DeadlineOutcome::parse(&reply(&["retrying", "a1", "3", "1700", "2", "", "m"]));
        assert!(matches!(
            retry,
            Ok(DeadlineOutcome::Retrying {
                grant_seq: 3,
                retry_at_ms: 1700,
                attempt: 2,
                ..
            })
        ));
        assert!(DeadlineOutcome::parse(&reply(&["what"])).is_err());
        assert_eq!(task_of("t:1|4"), Some("t:1"));
    }
}
