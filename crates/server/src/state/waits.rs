//! Why tasks wait, for status answers: read from Redis when asked, never stored, so a reason is
//! never stale. Tasks waiting on dependencies are listed from the `waiting` index with their unmet
//! dependencies; queued tasks from the priority queue, judged against the active agents:
//! `no agent with capacity` when no agent's whole capacity covers the task (what policy hold
//! keeps), else `behind N tasks` when some agent has room now (the dispatcher has not reached
//! it), else `no agent with free capacity now`; the task an agent is held for (the head hold)
//! says so instead; a retried task waiting out its back-off (listed after the queue and the
//! waiting, from the retry set) says `retrying after back-off until <time>`. The cost is
//! bounded by the query: at most
//! [`MAX_STATUS_TASKS`] tasks, plus one read of the active agents when a queued task is listed.

use redis::AsyncCommands;

use super::store::Store;
use switchyard_client::error::Error;
use switchyard_decision::resources::fits_within;
use switchyard_decision::{AgentView, ResourceKind, Resources, TaskState};
use switchyard_protocol::{MAX_STATUS_TASKS, StatusQuery, TaskWaitView, WaitReason};

/// One task to describe: its id, and its rank in the queue when it is queued.
struct Listed {
    task_id: String,
    score: f64,
    queue_rank: Option<u64>,
}

/// A task's fields a reason needs.
struct TaskRow {
    state: String,
    priority: u8,
    required: Resources,
    /// A retried task waiting out its back-off: until when (Redis clock, ms), and its next
    /// attempt.
    retry: Option<(u64, u32)>,
    budgets: Vec<(String, u64)>,
}

/// Agents indexed per script call at start, so one call stays small.
const INDEX_CHUNK: usize = 256;

impl Store {
    /// Puts every active agent into the capacity index (`lua/index_capacities.lua`): run when a
    /// replica starts, so agents registered by an older version, which kept no index, are
    /// counted by the infeasible check. Costs one script call per 256 agents, once. Returns how
    /// many agents are indexed.
    pub async fn index_capacities(&self) -> Result<u64, Error> {
        let ids = self.active_agent_ids().await?;
        let mut indexed = 0;
        for chunk in ids.chunks(INDEX_CHUNK) {
            let mut inv = self.scripts.index_capacities.prepare_invoke();
            for id in chunk {
                inv.key(self.keys().agent(id));
            }
            for kind in ResourceKind::ALL {
                inv.key(self.keys().capacity_index(kind.as_str()));
            }
            inv.arg(chunk.len());
            for id in chunk {
                inv.arg(id);
            }
            let reply: Vec<u64> = inv.invoke_async(&mut self.conn()).await?;
            indexed += reply.first().copied().unwrap_or(0);
        }
        Ok(indexed)
    }

    /// Tasks waiting on dependencies.
    pub async fn waiting_depth(&self) -> Result<u64, Error> {
        Ok(self.conn().zcard(self.keys().waiting()).await?)
    }

    /// The tasks a status query asks for (`include_tasks`, `task_id`), each with why it waits.
    pub async fn task_waits(&self, query: &StatusQuery) -> Result<Vec<TaskWaitView>, Error> {
        let mut listed = self
            .first_tasks(query.include_tasks.min(MAX_STATUS_TASKS))
            .await?;
        if let Some(id) = &query.task_id {
            if !listed.iter().any(|l| &l.task_id == id) {
                let rank: Option<u64> = self.conn().zrank(self.keys().queue(), id).await?;
                listed.push(Listed {
                    task_id: id.clone(),
                    score: f64::MAX,
                    queue_rank: rank,
                });
            }
        }
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.task_rows(&listed).await?;
        let (agents, hold) = if rows.iter().any(|r| r.state == "queued") {
            (self.agent_snapshot().await?, self.head_hold().await?)
        } else {
            (Vec::new(), None)
        };
        let budgets = self.budgets_of(&rows).await?;
        let mut views = Vec::with_capacity(listed.len());
        for (item, row) in listed.into_iter().zip(rows) {
            let reason = match row.state.as_str() {
                "queued" if row.retry.is_some() => row
                    .retry
                    .map(|(until_ms, attempt)| WaitReason::RetryBackoff { until_ms, attempt }),
                "queued" => Some(match &hold {
                    Some(h) if h.task_id == item.task_id => WaitReason::AgentHeld {
                        agent_id: h.agent_id.to_string(),
                    },
                    _ => queued_reason(&row.required, item.queue_rank.unwrap_or(0), &agents),
                })
                .map(|r| budget_reason(r, &row.budgets, &budgets)),
                "waiting" => Some(WaitReason::Dependencies {
                    unmet: self.unmet_of(&item.task_id).await?,
                }),
                _ => None,
            };
            views.push(TaskWaitView {
                detail: reason
                    .as_ref()
                    .map(WaitReason::describe)
                    .unwrap_or_default(),
                task_id: item.task_id,
                state: row.state,
                priority: row.priority,
                reason,
            });
        }
        Ok(views)
    }

    /// The first `limit` tasks by priority (then FIFO) among the queued and the waiting: both
    /// indexes are scored alike, so the two heads merge by score.
    async fn first_tasks(&self, limit: u32) -> Result<Vec<Listed>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let end = limit as isize - 1;
        let queued: Vec<(String, f64)> = self
            .conn()
            .zrange_withscores(self.keys().queue(), 0, end)
            .await?;
        let waiting: Vec<(String, f64)> = self
            .conn()
            .zrange_withscores(self.keys().waiting(), 0, end)
            .await?;
        let mut listed: Vec<Listed> = queued
            .into_iter()
            .enumerate()
            .map(|(rank, (task_id, score))| Listed {
                task_id,
                score,
                queue_rank: Some(rank as u64),
            })
            .chain(waiting.into_iter().map(|(task_id, score)| Listed {
                task_id,
                score,
                queue_rank: None,
            }))
            .collect();
        // Retries in their back-off, soonest first, after the queue and the waiting: they
        // are out of the queue until then.
        let retrying: Vec<String> = self.conn().zrange(self.keys().retries(), 0, end).await?;
        listed.extend(retrying.into_iter().map(|task_id| Listed {
            task_id,
            score: f64::MAX,
            queue_rank: None,
        }));
        listed.sort_by(|a, b| a.score.total_cmp(&b.score));
        listed.truncate(limit as usize);
        Ok(listed)
    }

    /// State, priority and needs of each listed task, in one pipelined round trip.
    async fn task_rows(&self, listed: &[Listed]) -> Result<Vec<TaskRow>, Error> {
        let mut fields = vec!["state".to_string(), "priority".to_string()];
        fields.extend(
            ResourceKind::ALL
                .iter()
                .map(|k| format!("req_{}", k.as_str())),
        );
        fields.extend(["retry_at".to_string(), "attempt".to_string()]);
        fields.push("budgets".to_string());
        let mut pipe = redis::pipe();
        for item in listed {
            pipe.cmd("HMGET")
                .arg(self.keys().task(&item.task_id))
                .arg(&fields);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(rows.into_iter().map(task_row).collect())
    }

    /// The budgets the queued rows draw from, as Redis holds them now (one pipelined read).
    async fn budgets_of(&self, rows: &[TaskRow]) -> Result<BudgetNow, Error> {
        let names: std::collections::BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.state == "queued")
            .flat_map(|r| r.budgets.iter().map(|(n, _)| n.as_str()))
            .collect();
        if names.is_empty() {
            return Ok(BudgetNow::default());
        }
        let now = self.redis_now_ms().await? as i64;
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HGETALL").arg(self.keys().budget(name));
        }
        let rows: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut self.conn()).await?;
        Ok(BudgetNow {
            now,
            rows: names.into_iter().map(str::to_string).zip(rows).collect(),
        })
    }

    /// The dependencies a waiting task still waits on, sorted.
    async fn unmet_of(&self, task_id: &str) -> Result<Vec<String>, Error> {
        let mut unmet: Vec<String> = self
            .conn()
            .smembers(self.keys().unmet_dependencies(task_id))
            .await?;
        unmet.sort();
        Ok(unmet)
    }
}

fn task_row(row: Vec<Option<String>>) -> TaskRow {
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let mut required = Resources::default();
    for (i, kind) in ResourceKind::ALL.into_iter().enumerate() {
        required.set(kind, field(2 + i).parse().unwrap_or(0));
    }
    let state = field(0);
    let retry_field = 2 + ResourceKind::ALL.len();
    let retry = field(retry_field)
        .parse::<u64>()
        .ok()
        .map(|until| (until, field(retry_field + 1).parse().unwrap_or(2)));
    TaskRow {
        retry,
        // A task that expired or never existed reads as `unknown`.
        state: match TaskState::parse(&state) {
            Some(_) => state,
            None => "unknown".to_string(),
        },
        priority: field(1).parse().unwrap_or(0),
        required,
        budgets: switchyard_decision::budget::parse_draws(&field(retry_field + 2)),
    }
}

/// Budget hashes by name, read at the Redis time `now`.
#[derive(Default)]
struct BudgetNow {
    now: i64,
    rows: std::collections::HashMap<String, std::collections::HashMap<String, String>>,
}

/// A queued task's reason with its budgets in view: an agent that could hold it exists, but a
/// budget it draws from does not allow the draw now (the first such budget is named).
fn budget_reason(reason: WaitReason, draws: &[(String, u64)], budgets: &BudgetNow) -> WaitReason {
    use switchyard_decision::budget::{Bucket, Draw, Rate};
    if reason == WaitReason::NoAgentWithCapacity {
        return reason;
    }
    for (name, amount) in draws {
        let Some(row) = budgets.rows.get(name) else {
            continue;
        };
        let num = |f: &str| row.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let amount = *amount as i64;
        let blocked = if row.get("kind").map(String::as_str) == Some("rate") {
            let rate = Rate {
                limit: num("limit").max(1),
                period_ms: num("period_ms").max(1),
                burst: num("burst"),
            };
            let bucket = Bucket {
                level: num("level"),
                at_ms: num("at"),
            };
            match rate.draw(bucket, budgets.now, amount) {
                Draw::Taken(_) => None,
                Draw::Wait { wait_ms } => Some(Some((budgets.now + wait_ms) as u64)),
                Draw::TooLarge => Some(None),
            }
        } else {
            (switchyard_decision::budget::hold(num("limit"), num("held"), amount).is_none())
                .then_some(None)
        };
        if let Some(until_ms) = blocked {
            return WaitReason::Budget {
                budget: name.clone(),
                until_ms,
            };
        }
    }
    reason
}

/// Why a queued task needing `required`, with `ahead` tasks before it, is not granted, given the
/// active agents.
pub(crate) fn queued_reason(required: &Resources, ahead: u64, agents: &[AgentView]) -> WaitReason {
    let nothing = Resources::default();
    if !agents
        .iter()
        .any(|a| fits_within(required, &nothing, &a.capacity))
    {
        return WaitReason::NoAgentWithCapacity;
    }
    if agents
        .iter()
        .any(|a| fits_within(required, &a.reserved, &a.capacity))
    {
        WaitReason::BehindQueue { ahead }
    } else {
        WaitReason::NoFreeCapacity { ahead }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(cap_cpu: u64, res_cpu: u64) -> AgentView {
        AgentView {
            agent_id: "a".into(),
            agent_type: "w".into(),
            capacity: Resources {
                cpu: cap_cpu,
                ..Resources::default()
            },
            reserved: Resources {
                cpu: res_cpu,
                ..Resources::default()
            },
            score: 0.5,
            priority_weight: 1.0,
            active_tasks: 0,
            learned: Default::default(),
            idle_s: 0.0,
        }
    }

    fn cpu(milli: u64) -> Resources {
        Resources {
            cpu: milli,
            ..Resources::default()
        }
    }

    #[test]
    fn a_queued_task_is_judged_by_capacity_then_by_free_capacity() {
        let small = agent(4000, 0);
        let big_busy = agent(100_000, 90_000);
        assert_eq!(
            queued_reason(&cpu(50_000), 3, std::slice::from_ref(&small)),
            WaitReason::NoAgentWithCapacity
        );
        assert_eq!(
            queued_reason(&cpu(1000), 0, &[]),
            WaitReason::NoAgentWithCapacity
        );
        assert_eq!(
            queued_reason(&cpu(50_000), 3, &[small.clone(), big_busy]),
            WaitReason::NoFreeCapacity { ahead: 3 }
        );
        assert_eq!(
            queued_reason(&cpu(2000), 7, &[small]),
            WaitReason::BehindQueue { ahead: 7 }
        );
    }
}
