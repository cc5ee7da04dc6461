//! What the live driver knows about each task and agent, kept in virtual seconds, and the
//! [`Outcome`] it turns into: the same per-task records the simulator produces, so both are
//! summarised by the same code ([`StrategyMetrics::from_outcome`]).
//!
//! The driver, not the optimizer, holds dependencies and retries back: the live system fails a
//! task's dependents as soon as the task fails once and never retries, while the workload says a
//! task is retried up to `max_attempts` times and its children wait for it. So a task is
//! submitted only when its parents have completed, and each retry is submitted as a new task.
//!
//! [`StrategyMetrics::from_outcome`]: switchyard_sim::StrategyMetrics::from_outcome

use std::collections::{BTreeMap, HashMap};

use super::work::parse_task_id;
use switchyard_decision::Resources;
use switchyard_decision::resources::utilization;
use switchyard_sim::engine::agent_id;
use switchyard_sim::tasks::{SimTask, generate};
use switchyard_sim::{Outcome, TaskRecord, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not arrived yet.
    Future,
    /// Arrived, waiting for parents.
    Blocked,
    /// Submitted (or given back to the queue by a dying agent), not granted yet.
    Submitted,
    /// Granted to this agent (index into the book's agents).
    Running(usize),
    /// Failed an attempt, waiting out the retry backoff.
    BackingOff,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
struct TaskRun {
    phase: Phase,
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
    grants_by_type: BTreeMap<String, u64>,
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
            grants_by_type: w.agent_types.iter().map(|t| (t.name.clone(), 0)).collect(),
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
        if task
            .parents
            .iter()
            .any(|&p| self.runs[p].phase == Phase::Failed)
        {
            self.fail_for_good(t, now_s);
        } else if self.runs[t].pending_parents == 0 {
            self.runs[t].phase = Phase::Submitted;
            effects.submit.push(t);
        } else {
            self.runs[t].phase = Phase::Blocked;
        }
        effects
    }

    /// The backoff of task `t` is over: its next attempt is submitted. False if it is not
    /// backing off (nothing to do).
    pub(crate) fn retry_due(&mut self, t: usize) -> bool {
        match self.runs.get_mut(t) {
            Some(run) if run.phase == Phase::BackingOff => {
                run.attempt += 1;
                run.phase = Phase::Submitted;
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
        if self.runs.get(t).map(|r| (r.attempt, r.phase)) != Some((attempt, Phase::Submitted)) {
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
        run.phase = Phase::Running(a);
    }

    /// The optimizer accepted the outcome of `task_id`.
    pub(crate) fn finished(&mut self, task_id: &str, success: bool, now_s: f64) -> Effects {
        let Some((t, attempt)) = parse_task_id(task_id) else {
            return Effects::default();
        };
        let phase = match self.runs.get(t) {
            Some(run) if run.attempt == attempt => run.phase,
            _ => return Effects::default(),
        };
        self.advance(now_s);
        match phase {
            Phase::Running(a) => self.release(t, a),
            // Its agent died just after reporting; the report reached the optimizer first.
            Phase::Submitted => {}
            _ => return Effects::default(),
        }
        self.runs[t].first_ok.get_or_insert(success);
        if success {
            return self.complete(t, now_s);
        }
        let run = &mut self.runs[t];
        run.failures += 1;
        if run.failures >= self.max_attempts {
            self.fail_for_good(t, now_s);
            return Effects::default();
        }
        run.phase = Phase::BackingOff;
        let backoff = self.backoff_s * 2f64.powi(run.failures as i32 - 1);
        Effects {
            submit: Vec::new(),
            requeue: vec![(t, now_s + backoff)],
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
        for run in &mut self.runs {
            if run.phase == Phase::Running(a) {
                run.first_ok.get_or_insert(false);
                run.phase = Phase::Submitted;
            }
        }
    }

    fn complete(&mut self, t: usize, now_s: f64) -> Effects {
        self.runs[t].phase = Phase::Done;
        self.runs[t].completed_s = Some(now_s);
        self.terminal(now_s);
        let mut effects = Effects::default();
        for i in 0..self.runs[t].children.len() {
            let c = self.runs[t].children[i];
            let child = &mut self.runs[c];
            child.pending_parents = child.pending_parents.saturating_sub(1);
            if child.pending_parents == 0 && child.phase == Phase::Blocked {
                child.phase = Phase::Submitted;
                effects.submit.push(c);
            }
        }
        effects
    }

    /// Fails `t` for good, and every arrived task waiting on it (later arrivals see the failed
    /// parent when they arrive).
    fn fail_for_good(&mut self, t: usize, now_s: f64) {
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            self.runs[x].phase = Phase::Failed;
            self.terminal(now_s);
            for &c in &self.runs[x].children {
                if self.runs[c].phase == Phase::Blocked {
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
                failed: run.phase == Phase::Failed,
                grants: run.grants,
                first_attempt_ok: run.first_ok,
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
        }
    }
}

fn new_run(task: &SimTask) -> TaskRun {
    TaskRun {
        phase: Phase::Future,
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
