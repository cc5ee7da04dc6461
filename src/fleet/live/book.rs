//! What the live driver knows about each task and agent, kept in virtual seconds, and the
//! [`Outcome`] it turns into: the same per-task records the simulator produces, so both are
//! summarised by the same code ([`StrategyMetrics::from_outcome`]).
//!
//! The driver, not the optimizer, holds dependencies and retries back: the live system fails a
//! task's dependents as soon as the task fails once and never retries, while the workload says a
//! task is retried up to `max_attempts` times and its children wait for it. So a task is
//! submitted only when its parents have completed, and each retry is submitted as a new task.
//!
//! Each task's lifecycle is the service's [`TaskState`], moved only through its transition
//! function, as in the simulator: a report the state machine refuses in the task's state is stale
//! or repeated and changes nothing. A failed attempt that will be retried is `Requeued` and waits
//! out its back-off (a deadline beside the state) before the next attempt is submitted.
//!
//! [`StrategyMetrics::from_outcome`]: switchyard_sim::StrategyMetrics::from_outcome

use std::collections::{BTreeMap, HashMap};

use super::work::parse_task_id;
use switchyard_decision::resources::utilization;
use switchyard_decision::task_state::initial_state;
use switchyard_decision::{Resources, TaskEvent, TaskState};
use switchyard_sim::engine::agent_id;
use switchyard_sim::tasks::{SimTask, generate};
use switchyard_sim::{Outcome, TaskRecord, Workload};

/// One task of the replay. Its lifecycle is the service's own [`TaskState`], moved only by
/// [`Book::step`] (through [`TaskState::apply`]); what only the replay needs is data beside it.
#[derive(Debug, Clone)]
struct TaskRun {
    /// `None` until the task arrives.
    state: Option<TaskState>,
    /// While `Granted`: the agent holding the attempt (index into the book's agents).
    agent: Option<usize>,
    /// While a failed attempt waits out its retry back-off: when the next attempt is submitted,
    /// virtual seconds. The task is `Queued` again (a retried attempt is `Requeued`), but nothing
    /// is on the wire until then.
    retry_at_s: Option<f64>,
    pending_parents: u32,
    children: Vec<usize>,
    /// The attempt on the wire now (1 = first); part of its task id.
    attempt: u32,
    failures: u32,
    grants: u32,
    first_ok: Option<bool>,
    first_start_s: Option<f64>,
    last_start_s: f64,
    completed_s: Option<f64>,
}

impl TaskRun {
    fn is(&self, state: TaskState) -> bool {
        self.state == Some(state)
    }
}

/// One agent of the fleet as the driver tracks it.
#[derive(Debug, Clone)]
pub(crate) struct LiveAgent {
    pub id: String,
    pub type_index: usize,
    pub type_name: String,
    pub capacity: Resources,
    reserved: Resources,
    alive: bool,
}

/// What the driver has to do after a change: submit these tasks now, and queue these again at
/// the given virtual time (retry backoff).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Effects {
    pub submit: Vec<usize>,
    pub requeue: Vec<(usize, f64)>,
}

pub(crate) struct Book {
    stream: Vec<SimTask>,
    runs: Vec<TaskRun>,
    agents: Vec<LiveAgent>,
    agent_index: HashMap<String, usize>,
    max_attempts: u32,
    backoff_s: f64,
    backoff_max_s: f64,
    grants_by_type: BTreeMap<String, u64>,
    /// Task type names, by index.
    task_types: Vec<String>,
    /// Per tenant: (weight, grants made while every tenant had a task queued).
    backlogged_grants: BTreeMap<String, (f64, u64)>,
    finished: usize,
    last_finish_s: f64,
    util_area: f64,
    alive_area: f64,
    clock_s: f64,
}

impl Book {
    /// The workload's task stream and fleet, nothing arrived yet.
    pub(crate) fn new(w: &Workload) -> Book {
        let stream = generate(w);
        let mut runs: Vec<TaskRun> = stream.iter().map(new_run).collect();
        for (i, task) in stream.iter().enumerate() {
            for &p in &task.parents {
                if let Some(parent) = runs.get_mut(p) {
                    parent.children.push(i);
                }
            }
        }
        let agents = fleet(w);
        let backlogged_grants = stream
            .iter()
            .map(|t| (t.tenant.clone(), (w.tenant_weight(&t.tenant), 0)))
            .collect();
        let agent_index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        Book {
            stream,
            runs,
            agents,
            agent_index,
            max_attempts: w.retry.max_attempts,
            backoff_s: w.retry.backoff_s,
            backoff_max_s: w.retry.backoff_max_s,
            grants_by_type: w.agent_types.iter().map(|t| (t.name.clone(), 0)).collect(),
            backlogged_grants,
            task_types: w.tasks.types.iter().map(|t| t.name.clone()).collect(),
            finished: 0,
            last_finish_s: 0.0,
            util_area: 0.0,
            alive_area: 0.0,
            clock_s: 0.0,
        }
    }

    pub(crate) fn stream(&self) -> &[SimTask] {
        &self.stream
    }

    pub(crate) fn agent_index(&self, id: &str) -> Option<usize> {
        self.agent_index.get(id).copied()
    }

    /// Every task completed or failed for good.
    pub(crate) fn is_done(&self) -> bool {
        self.finished == self.runs.len()
    }

    /// The attempt of task `t` currently on the wire.
    pub(crate) fn attempt(&self, t: usize) -> u32 {
        self.runs.get(t).map_or(1, |r| r.attempt)
    }

    /// Task `t` arrives: submitted at once, held for its parents, or failed with a failed parent.
    pub(crate) fn arrive(&mut self, t: usize, now_s: f64) -> Effects {
        self.advance(now_s);
        let mut effects = Effects::default();
        let Some(task) = self.stream.get(t) else {
            return effects;
        };
        let parent_failed = task
            .parents
            .iter()
            .any(|&p| self.runs[p].is(TaskState::Failed));
        let run = &mut self.runs[t];
        if run.state.is_some() {
            return effects;
        }
        let state = initial_state(run.pending_parents as usize, parent_failed);
        run.state = Some(state);
        match state {
            TaskState::Queued => effects.submit.push(t),
            TaskState::Failed => {
                self.terminal(now_s);
                self.fail_dependents(t, now_s);
            }
            _ => {}
        }
        effects
    }

    /// The backoff of task `t` is over: its next attempt is submitted. False if it is not
    /// backing off (nothing to do).
    pub(crate) fn retry_due(&mut self, t: usize) -> bool {
        match self.runs.get_mut(t) {
            Some(run) if run.retry_at_s.is_some() => {
                run.retry_at_s = None;
                run.attempt += 1;
                true
            }
            _ => false,
        }
    }

    /// The optimizer granted `task_id` to `agent_id`. Repeated or stale grant reports (an
    /// earlier attempt, a re-published grant) change nothing.
    pub(crate) fn granted(&mut self, task_id: &str, agent_id: &str, now_s: f64) {
        let (Some((t, attempt)), Some(a)) = (parse_task_id(task_id), self.agent_index(agent_id))
        else {
            return;
        };
        if !self.is_current(t, attempt) || !self.runs[t].is(TaskState::Queued) {
            return;
        }
        self.count_backlogged(t);
        if self.step(t, TaskEvent::Granted).is_none() {
            return;
        }
        self.advance(now_s);
        let agent = &mut self.agents[a];
        agent.reserved = agent.reserved.saturating_add(&self.stream[t].required);
        *self
            .grants_by_type
            .entry(agent.type_name.clone())
            .or_default() += 1;
        let run = &mut self.runs[t];
        run.grants += 1;
        run.first_start_s.get_or_insert(now_s);
        run.last_start_s = now_s;
        run.agent = Some(a);
    }

    /// Counts the grant of `t` for its tenant if every tenant has a task queued now (`t`
    /// included) and some task has finished. A scan of the tasks: live runs are a few hundred tasks.
    fn count_backlogged(&mut self, t: usize) {
        let mut queued: BTreeMap<&str, usize> = BTreeMap::new();
        for (task, run) in self.stream.iter().zip(&self.runs) {
            if run.is(TaskState::Queued) && run.retry_at_s.is_none() {
                *queued.entry(&task.tenant).or_default() += 1;
            }
        }
        // From the first task finished on, as in the simulator (before it, grants fill an empty
        // fleet in arrival order; live, a task counts as queued from its arrival, before the
        // optimizer has it, which would count that fill as contended).
        let all = self.finished > 0
            && self
                .backlogged_grants
                .keys()
                .all(|tenant| queued.get(tenant.as_str()).is_some_and(|&n| n > 0));
        if all && let Some(entry) = self.backlogged_grants.get_mut(&self.stream[t].tenant) {
            entry.1 += 1;
        }
    }

    /// Whether `attempt` is task `t`'s attempt on the wire now (not one backing off).
    fn is_current(&self, t: usize, attempt: u32) -> bool {
        self.runs
            .get(t)
            .is_some_and(|r| r.attempt == attempt && r.retry_at_s.is_none())
    }

    /// The optimizer accepted the outcome of `task_id`.
    pub(crate) fn finished(&mut self, task_id: &str, success: bool, now_s: f64) -> Effects {
        let Some((t, attempt)) = parse_task_id(task_id) else {
            return Effects::default();
        };
        let run = match self.runs.get(t) {
            Some(run) if run.attempt == attempt => run,
            _ => return Effects::default(),
        };
        let (state, agent, backing_off) = (run.state, run.agent, run.retry_at_s.is_some());
        self.advance(now_s);
        match (state, agent) {
            _ if backing_off => return Effects::default(),
            (Some(TaskState::Granted), Some(a)) => self.release(t, a),
            // Its agent died just after reporting; the report reached the optimizer first. So
            // the optimizer still held the attempt granted when it ended: the book's requeue for
            // the dying agent was behind it, and the book catches up through `Granted` (the
            // grant was counted when it was first reported).
            (Some(TaskState::Queued), _) => {
                self.step(t, TaskEvent::Granted);
            }
            _ => return Effects::default(),
        }
        self.runs[t].agent = None;
        self.runs[t].first_ok.get_or_insert(success);
        if success {
            return self.complete(t, now_s);
        }
        self.attempt_failed(t, now_s)
    }

    /// A granted attempt of `t` failed: retried after a back-off while the workload allows
    /// more attempts (`Requeued`), failed for good with its dependents otherwise.
    fn attempt_failed(&mut self, t: usize, now_s: f64) -> Effects {
        let run = &mut self.runs[t];
        run.failures += 1;
        if run.failures >= self.max_attempts {
            if self.step(t, TaskEvent::Failed).is_some() {
                self.terminal(now_s);
                self.fail_dependents(t, now_s);
            }
            return Effects::default();
        }
        let backoff =
            switchyard_decision::retry_backoff_s(self.backoff_s, run.failures, self.backoff_max_s);
        let retry_at_s = now_s + backoff;
        if self.step(t, TaskEvent::Requeued).is_none() {
            return Effects::default();
        }
        self.runs[t].retry_at_s = Some(retry_at_s);
        Effects {
            submit: Vec::new(),
            requeue: vec![(t, retry_at_s)],
        }
    }

    /// Agent `a` left the fleet: the optimizer puts its tasks back in the queue (their first
    /// attempt, if cut short, counts as not successful, as in the simulator).
    pub(crate) fn agent_died(&mut self, a: usize, now_s: f64) {
        self.advance(now_s);
        if let Some(agent) = self.agents.get_mut(a) {
            agent.alive = false;
            agent.reserved = Resources::default();
        }
        for t in 0..self.runs.len() {
            if self.runs[t].agent == Some(a) && self.step(t, TaskEvent::Requeued).is_some() {
                self.runs[t].agent = None;
                self.runs[t].first_ok.get_or_insert(false);
            }
        }
    }

    /// Moves task `t` by `event` through the state machine. `None`, and nothing changes, when
    /// the task has not arrived or the event does not apply to its state: for the book that is
    /// a stale or repeated report, ignored like the others.
    fn step(&mut self, t: usize, event: TaskEvent) -> Option<TaskState> {
        let run = self.runs.get_mut(t)?;
        let next = run.state?.apply(&event).ok()?;
        run.state = Some(next);
        Some(next)
    }

    fn complete(&mut self, t: usize, now_s: f64) -> Effects {
        let mut effects = Effects::default();
        if self.step(t, TaskEvent::Completed).is_none() {
            return effects;
        }
        self.runs[t].completed_s = Some(now_s);
        self.terminal(now_s);
        for i in 0..self.runs[t].children.len() {
            let c = self.runs[t].children[i];
            let child = &mut self.runs[c];
            child.pending_parents = child.pending_parents.saturating_sub(1);
            if child.pending_parents == 0 && child.is(TaskState::WaitingDependencies) {
                self.step(c, TaskEvent::DependenciesMet);
                effects.submit.push(c);
            }
        }
        effects
    }

    /// `t` failed for good: so does every arrived task waiting on it, transitively (later
    /// arrivals see the failed parent when they arrive). Each fails as it is found, so a task
    /// reachable through two failed parents fails once.
    fn fail_dependents(&mut self, t: usize, now_s: f64) {
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            for i in 0..self.runs[x].children.len() {
                let c = self.runs[x].children[i];
                if self.step(c, TaskEvent::DependencyFailed).is_some() {
                    self.terminal(now_s);
                    stack.push(c);
                }
            }
        }
    }

    fn release(&mut self, t: usize, a: usize) {
        if let Some(agent) = self.agents.get_mut(a) {
            agent.reserved = agent.reserved.saturating_sub(&self.stream[t].required);
        }
    }

    fn terminal(&mut self, now_s: f64) {
        self.finished += 1;
        self.last_finish_s = self.last_finish_s.max(now_s);
    }

    /// Moves the clock to `now_s`, integrating utilization over live agents while work remains.
    fn advance(&mut self, now_s: f64) {
        let dt = now_s - self.clock_s;
        if dt > 0.0 && !self.is_done() {
            let live = self.agents.iter().filter(|a| a.alive);
            let (sum, count) = live.fold((0.0, 0.0), |(s, n), a| {
                (s + utilization(&a.reserved, &a.capacity), n + 1.0)
            });
            self.util_area += sum * dt;
            self.alive_area += count * dt;
        }
        self.clock_s = self.clock_s.max(now_s);
    }

    /// The run so far as the simulator's per-task records.
    pub(crate) fn outcome(&self) -> Outcome {
        let tasks = self
            .stream
            .iter()
            .zip(&self.runs)
            .map(|(task, run)| TaskRecord {
                submit_s: task.submit_s,
                priority: task.priority,
                parents: task.parents.clone(),
                first_start_s: run.first_start_s,
                last_start_s: run.first_start_s.map(|_| run.last_start_s),
                completed_s: run.completed_s,
                failed: run.is(TaskState::Failed),
                grants: run.grants,
                first_attempt_ok: run.first_ok,
                // Every failure but a last allowed one was run again.
                retries: run.failures.min(self.max_attempts.saturating_sub(1)),
                // The live replay does not enforce time limits (docs/workloads.md).
                queue_timed_out: false,
                run_timeouts: 0,
                task_type: self
                    .task_types
                    .get(task.type_index)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let utilization = if self.alive_area > 0.0 {
            self.util_area / self.alive_area
        } else {
            0.0
        };
        Outcome {
            tasks,
            makespan_s: self.last_finish_s,
            utilization,
            grants_by_agent_type: self.grants_by_type.clone(),
            backlogged_grants: self.backlogged_grants.clone(),
            // `sim --live` does not replay budgets (tests/budget_bench.rs measures them live).
            budgets: Default::default(),
        }
    }
}

fn new_run(task: &SimTask) -> TaskRun {
    TaskRun {
        state: None,
        agent: None,
        retry_at_s: None,
        pending_parents: task.parents.len() as u32,
        children: Vec::new(),
        attempt: 1,
        failures: 0,
        grants: 0,
        first_ok: None,
        first_start_s: None,
        last_start_s: 0.0,
        completed_s: None,
    }
}

/// The workload's agents, named as the simulator names them (`<type>-000`, ...).
pub(super) fn fleet(w: &Workload) -> Vec<LiveAgent> {
    let mut agents = Vec::with_capacity(w.agent_count());
    for (type_index, t) in w.agent_types.iter().enumerate() {
        for index in 0..t.count {
            agents.push(LiveAgent {
                id: agent_id(&t.name, index),
                type_index,
                type_name: t.name.clone(),
                capacity: t.capacity_milli,
                reserved: Resources::default(),
                alive: true,
            });
        }
    }
    agents
}

#[cfg(test)]
mod tests;
