//! Dispatch: planning rounds over the ready queue with the real `plan_batch`, and grants.

use std::cmp::Reverse;

use super::{Engine, Ev, Placer, SimError, to_us};
use crate::oracle::Oracle;
use crate::rng::SplitMix;
use crate::state::SimAgent;
use switchyard_decision::resources::fits_within;
use switchyard_decision::{
    AgentView, DecisionContext, PlannedGrant, Resources, TaskEvent, TaskState, TaskView, plan_batch,
};

impl Engine<'_> {
    /// One dispatch pass: planning rounds over the queue head, as the optimizer runs them.
    pub(super) fn dispatch(&mut self) -> Result<(), SimError> {
        let window = self.w.dispatch_window;
        loop {
            let ready: Vec<usize> = self.ready.iter().map(|&(_, t)| t).collect();
            let mut head = Vec::with_capacity(window);
            for t in ready {
                if head.len() == window {
                    break;
                }
                if !self.budget_blocked(t) {
                    head.push(t);
                }
            }
            let views: Vec<AgentView> = self
                .agents
                .iter()
                .filter(|a| a.alive)
                .map(SimAgent::view)
                .collect();
            if head.is_empty() || views.is_empty() {
                return Ok(());
            }
            let tasks: Vec<TaskView> = head.iter().map(|&t| self.task_view(t)).collect();
            let plans = self.plan(&tasks, &views);
            let mut granted = 0;
            let mut blocked = Vec::new();
            for plan in plans {
                let task = head[plan.task_index];
                if plan.candidates.is_empty() || !self.budgets_allow(task, &mut blocked) {
                    continue;
                }
                let fit = self.first_fitting(task, &plan.candidates);
                if let Some(agent) = fit {
                    self.grant(task, agent)?;
                    granted += 1;
                }
            }
            if !(head.len() == window && granted == head.len()) {
                return Ok(());
            }
        }
    }

    /// The first candidate that is alive and still has room: the grant script's re-check.
    fn first_fitting(&self, task: usize, candidates: &[String]) -> Option<usize> {
        let required = &self.stream[task].required;
        candidates
            .iter()
            .filter_map(|id| self.agent_index.get(id).copied())
            .find(|&a| {
                let agent = &self.agents[a];
                agent.alive && fits_within(required, &agent.reserved, &agent.capacity)
            })
    }

    pub(super) fn task_view(&self, t: usize) -> TaskView {
        let task = &self.stream[t];
        TaskView {
            task_id: format!("t{t}"),
            task_type: self.w.tasks.types[task.type_index].name.clone(),
            priority: task.priority,
            required: task.required,
            seq: t as u64,
            estimated_duration_s: task.estimated_s,
        }
    }

    pub(super) fn plan(&self, tasks: &[TaskView], views: &[AgentView]) -> Vec<PlannedGrant> {
        let ctx = DecisionContext::new(&self.patterns);
        let max = self.w.max_candidates;
        match self.placer {
            Placer::Strategy(s) => plan_batch(s, tasks, views, &ctx, max),
            Placer::Oracle => {
                let oracle = Oracle::new(
                    self.w,
                    &self.agent_index,
                    &self.agent_type,
                    &self.speed_factor,
                    self.releases(),
                );
                plan_batch(&oracle, tasks, views, &ctx, max)
            }
        }
    }

    /// Per agent, its running attempts as (seconds until they end, resources), soonest first:
    /// hidden truth only the oracle is given.
    fn releases(&self) -> Vec<Vec<(f64, Resources)>> {
        self.agents
            .iter()
            .map(|agent| {
                let mut ends: Vec<(f64, Resources)> = agent
                    .running
                    .iter()
                    .map(|&t| {
                        let run = &self.runs[t];
                        let end_us = run.last_start_us + to_us(run.outcome.1).max(1);
                        let left = end_us.saturating_sub(self.now_us) as f64 / 1e6;
                        (left, self.stream[t].required)
                    })
                    .collect();
                ends.sort_by(|a, b| a.0.total_cmp(&b.0));
                ends
            })
            .collect()
    }

    pub(super) fn grant(&mut self, t: usize, a: usize) -> Result<(), SimError> {
        if !self.runs[t].is_ready() {
            let run = &self.runs[t];
            let what = format!(
                "task {t} granted while {:?} (back-off {:?})",
                run.state, run.retry_at_us
            );
            return Err(self.invariant(what));
        }
        if let Some(&p) = self.stream[t]
            .parents
            .iter()
            .find(|&&p| !self.runs[p].is(TaskState::Completed))
        {
            return Err(self.invariant(format!("task {t} granted before its parent {p} completed")));
        }
        self.ready.remove(&(Reverse(self.stream[t].priority), t));
        self.agents[a].reserve(t, &self.stream[t].required);
        self.agents[a]
            .check_capacity()
            .map_err(|what| self.invariant(what))?;
        self.take_budgets(t);
        self.check_budgets().map_err(|what| self.invariant(what))?;
        let outcome = self.draw_attempt(t, a);
        if let Some(n) = self.grants_by_type.get_mut(self.agents[a].type_index) {
            *n += 1;
        }
        self.step(t, TaskEvent::Granted)?;
        let run = &mut self.runs[t];
        run.grants += 1;
        run.agent = Some(a);
        run.first_start_us.get_or_insert(self.now_us);
        run.last_start_us = self.now_us;
        run.outcome = outcome;
        let grant = run.grants;
        self.schedule(
            self.now_us + to_us(outcome.1).max(1),
            Ev::Finish { task: t, grant },
        );
        Ok(())
    }

    /// Success and actual duration of the next attempt of `t` on `a`, from the hidden truth.
    /// Drawn from a stream keyed by (task, attempt), so every strategy meets the same luck.
    pub(super) fn draw_attempt(&self, t: usize, a: usize) -> (bool, f64) {
        let task = &self.stream[t];
        let truth = self.w.truth(
            self.agents[a].type_index,
            &self.w.tasks.types[task.type_index].name,
        );
        let mut rng = SplitMix::keyed(self.w.seed, t as u64, u64::from(self.runs[t].grants));
        let success = rng.unit() >= truth.failure_rate;
        let noise = rng.lognormal_unit_mean(truth.noise);
        (
            success,
            task.estimated_s * truth.speed * self.agents[a].speed_factor * noise,
        )
    }
}
