//! What happens when attempts end, tasks fail for good, and agents degrade or die; the fleet.

use std::sync::Arc;

use super::{Engine, Ev, SimError, to_us};
use crate::state::SimAgent;
use crate::workload::{AgentEventKind, Workload};
use switchyard_decision::{
    AgentLearning, Completion, NEUTRAL_SCORE, PatternStats, TaskEvent, TaskState, retry_backoff_s,
    updated_score,
};

impl Engine<'_> {
    /// Attempt `grant` of task `t` ends; a report about an earlier grant (its agent died and
    /// the task was granted again, or is queued) changes nothing.
    pub(super) fn finish(&mut self, t: usize, grant: u32) -> Result<(), SimError> {
        let run = &self.runs[t];
        let (true, Some(a)) = (run.is(TaskState::Granted), run.agent) else {
            return Ok(());
        };
        if run.grants != grant {
            return Ok(());
        }
        let (success, actual_s) = run.outcome;
        self.settle_budgets(t);
        self.learn(t, a, success, actual_s);
        let run = &mut self.runs[t];
        run.agent = None;
        run.first_ok.get_or_insert(success);
        if success {
            self.step(t, TaskEvent::Completed)?;
            self.runs[t].completed_us = Some(self.now_us);
            self.terminal();
            return self.resolve_children(t);
        }
        self.retry_or_fail(t, a, TaskEvent::Failed)
    }

    /// Attempt of `t` on agent `a` failed (reported, or stopped at its run timeout): retried
    /// after its back-off while attempts remain (`Requeued`), else the task fails for good by
    /// `last` (`Failed`, or `TimedOut` at a run timeout) with its dependents. As the service.
    pub(super) fn retry_or_fail(
        &mut self,
        t: usize,
        a: usize,
        last: TaskEvent,
    ) -> Result<(), SimError> {
        let max_attempts = self.max_attempts(t);
        let run = &mut self.runs[t];
        run.failures += 1;
        if !run.failed_agents.contains(&a) {
            run.failed_agents.push(a);
        }
        if run.failures >= max_attempts {
            self.step(t, last)?;
            self.terminal();
            return self.fail_dependents(t);
        }
        // A retried attempt goes back to the queue, but only once its back-off is over.
        // The service's formula (the decision crate's, which its scripts follow).
        let retry = &self.w.retry;
        let backoff = retry_backoff_s(retry.backoff_s, run.failures, retry.backoff_max_s);
        let retry_at = self.now_us + to_us(backoff);
        self.runs[t].retries += 1;
        self.step(t, TaskEvent::Requeued)?;
        self.runs[t].retry_at_us = Some(retry_at);
        self.schedule(retry_at, Ev::Requeue(t));
        Ok(())
    }

    /// Releases `t`'s reservation on agent `a` and learns from the attempt, as the completion
    /// script does (and enforce_deadline.lua for a run stopped at its timeout: a failure).
    pub(super) fn learn(&mut self, t: usize, a: usize, success: bool, actual_s: f64) {
        let task = &self.stream[t];
        self.agents[a].release(t, &task.required);
        let lr = self.w.learning_rate;
        let agent = &mut self.agents[a];
        agent.score = updated_score(agent.score, lr, success, task.estimated_s, actual_s);
        let task_type = &self.w.tasks.types[task.type_index].name;
        // The agent's residual is judged against what its type was expected to do, before this
        // run is folded into the type (as complete_tasks.lua does).
        let expected = self
            .patterns
            .get(task_type, &agent.type_name)
            .cloned()
            .unwrap_or_else(PatternStats::neutral);
        let outcome = Completion {
            success,
            estimated_s: task.estimated_s,
            actual_s,
        };
        agent.learned.record(
            outcome,
            expected.duration_ratio_ema,
            expected.success_ema,
            lr,
        );
        // Simulated milliseconds, at least 1 (0 reads as never learned).
        agent.learned.learned_at_ms = (self.now_us / 1000).max(1);
        self.patterns.record(
            task_type,
            &agent.type_name,
            success,
            task.estimated_s,
            actual_s,
            lr,
        );
    }

    pub(super) fn terminal(&mut self) {
        self.finished += 1;
        self.last_finish_us = self.now_us;
    }

    /// `t` completed: children with no parent left to wait for are queued.
    pub(super) fn resolve_children(&mut self, t: usize) -> Result<(), SimError> {
        for i in 0..self.runs[t].children.len() {
            let c = self.runs[t].children[i];
            let run = &mut self.runs[c];
            run.pending_parents = run.pending_parents.saturating_sub(1);
            if run.pending_parents == 0 && run.is(TaskState::WaitingDependencies) {
                self.step(c, TaskEvent::DependenciesMet)?;
                self.make_ready(c);
            }
        }
        Ok(())
    }

    /// `t` failed for good: so does every arrived task waiting on it, transitively (later
    /// arrivals see the failed parent when they arrive). Each is failed as it is found, so a
    /// task reachable through two failed parents fails once.
    pub(super) fn fail_dependents(&mut self, t: usize) -> Result<(), SimError> {
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            for i in 0..self.runs[x].children.len() {
                let c = self.runs[x].children[i];
                if self.runs[c].is(TaskState::WaitingDependencies) {
                    self.step(c, TaskEvent::DependencyFailed)?;
                    self.terminal();
                    stack.push(c);
                }
            }
        }
        Ok(())
    }

    pub(super) fn agent_event(&mut self, i: usize) -> Result<(), SimError> {
        let Some(e) = self.w.events.get(i) else {
            return Ok(());
        };
        let Some(a) = self
            .agent_index
            .get(&agent_id(&e.agent.agent_type, e.agent.index))
            .copied()
        else {
            return Ok(());
        };
        match e.kind {
            AgentEventKind::Degrade => {
                let f = e.speed_factor.unwrap_or(1.0);
                self.agents[a].speed_factor *= f;
                self.speed_factor[a] = self.agents[a].speed_factor;
            }
            AgentEventKind::Die => {
                self.agents[a].alive = false;
                for t in self.agents[a].running.clone() {
                    self.agents[a].release(t, &self.stream[t].required);
                    self.release_slots(t);
                    self.runs[t].first_ok.get_or_insert(false);
                    self.runs[t].agent = None;
                    self.step(t, TaskEvent::Requeued)?;
                    self.make_ready(t);
                    self.start_queue_deadline(t);
                }
            }
        }
        Ok(())
    }
}

/// The id of the `index`-th agent of a type.
pub fn agent_id(agent_type: &str, index: u32) -> String {
    format!("{agent_type}-{index:03}")
}

pub(super) fn build_agents(w: &Workload) -> Vec<SimAgent> {
    let mut agents = Vec::with_capacity(w.agent_count());
    for (type_index, t) in w.agent_types.iter().enumerate() {
        let type_name: Arc<str> = t.name.as_str().into();
        for index in 0..t.count {
            agents.push(SimAgent {
                id: agent_id(&t.name, index).into(),
                type_index,
                type_name: type_name.clone(),
                capacity: t.capacity_milli,
                reserved: Default::default(),
                active: 0,
                score: NEUTRAL_SCORE,
                alive: true,
                speed_factor: 1.0,
                running: Vec::new(),
                learned: AgentLearning::default(),
            });
        }
    }
    agents
}
