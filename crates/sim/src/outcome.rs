//! What one simulation run produced, per task, before it is summarised into metrics.

use std::collections::BTreeMap;

use super::engine::Engine;
use switchyard_decision::TaskState;

/// One task's history in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Submission time, seconds.
    pub submit_s: f64,
    /// Priority, higher first.
    pub priority: u8,
    /// Tasks this one depended on.
    pub parents: Vec<usize>,
    /// Time of the first grant, seconds; `None` if never granted.
    pub first_start_s: Option<f64>,
    /// Time of the latest grant, seconds; `None` if never granted.
    pub last_start_s: Option<f64>,
    /// Time of the successful completion, seconds; `None` if it never completed.
    pub completed_s: Option<f64>,
    /// Failed for good (retries exhausted or a parent failed).
    pub failed: bool,
    /// Grants, including attempts cut short by a dying agent.
    pub grants: u32,
    /// Whether the first attempt succeeded; `None` if never attempted.
    pub first_attempt_ok: Option<bool>,
    /// Failed attempts run again (after their back-off, preferably on another agent).
    pub retries: u32,
    /// Its queue timeout ran out (it failed for it).
    pub queue_timed_out: bool,
    /// Attempts stopped at their run timeout.
    pub run_timeouts: u32,
    /// Its task type's name.
    pub task_type: String,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every task, in submission order.
    pub tasks: Vec<TaskRecord>,
    /// Time of the last completion or final failure, seconds.
    pub makespan_s: f64,
    /// Time-averaged mean of reserved / capacity over live agents while work remained.
    pub utilization: f64,
    /// Grants per agent type name.
    pub grants_by_agent_type: BTreeMap<String, u64>,
    /// Per tenant: (weight, grants made while every tenant of the workload had a task ready).
    pub backlogged_grants: BTreeMap<String, (f64, u64)>,
    /// Per shared budget, what it gave.
    pub budgets: BTreeMap<String, crate::engine::BudgetUsage>,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Outcome {
    pub(crate) fn from_engine(e: &Engine<'_>) -> Outcome {
        let tasks = e
            .stream
            .iter()
            .zip(&e.runs)
            .map(|(t, r)| TaskRecord {
                submit_s: t.submit_s,
                priority: t.priority,
                parents: t.parents.clone(),
                first_start_s: r.first_start_us.map(secs),
                last_start_s: r.first_start_us.map(|_| secs(r.last_start_us)),
                completed_s: r.completed_us.map(secs),
                failed: r.is(TaskState::Failed),
                grants: r.grants,
                first_attempt_ok: r.first_ok,
                retries: r.retries,
                queue_timed_out: r.queue_timeouts > 0,
                run_timeouts: r.run_timeouts,
                task_type: e.type_name(t.type_index).to_owned(),
            })
            .collect();
        let utilization = if e.alive_area > 0.0 {
            e.util_area / e.alive_area
        } else {
            0.0
        };
        let mut grants_by_agent_type = BTreeMap::new();
        for (a, n) in e.agents.iter().map(|a| (a.type_index, &a.type_name)) {
            let count = e.grants_by_type.get(a).copied().unwrap_or(0);
            grants_by_agent_type.insert(n.to_string(), count);
        }
        let backlogged_grants = e
            .backlogged_grants
            .iter()
            .map(|(tenant, &n)| (tenant.clone(), (e.tenant_weight(tenant), n)))
            .collect();
        Outcome {
            tasks,
            makespan_s: secs(e.last_finish_us),
            utilization,
            grants_by_agent_type,
            backlogged_grants,
            budgets: e.budget_usage(),
        }
    }
}
