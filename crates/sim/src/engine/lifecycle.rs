//! What happens when attempts end, tasks fail for good, and agents degrade or die; the fleet.

use std::sync::Arc;

use super::{Engine, Ev, to_us};
use crate::state::{Phase, SimAgent};
use crate::workload::{AgentEventKind, Workload};
use switchyard_decision::{NEUTRAL_SCORE, updated_score};

impl Engine<'_> {
    pub(super) fn finish(&mut self, t: usize, grant: u32) {
        let Phase::Running { agent: a, grant: g } = self.runs[t].phase else {
            return;
        };
        if g != grant {
            return;
        }
        let (success, actual_s) = self.runs[t].outcome;
        let task = &self.stream[t];
        self.agents[a].release(t, &task.required);
        let lr = self.w.learning_rate;
        let agent = &mut self.agents[a];
        agent.score = updated_score(agent.score, lr, success, task.estimated_s, actual_s);
        let task_type = &self.w.tasks.types[task.type_index].name;
        self.patterns.record(
            task_type,
            &agent.type_name,
            success,
            task.estimated_s,
            actual_s,
            lr,
        );
        let run = &mut self.runs[t];
        run.first_ok.get_or_insert(success);
        if success {
            run.phase = Phase::Done;
            run.completed_us = Some(self.now_us);
            self.terminal();
            self.resolve_children(t);
            return;
        }
        run.failures += 1;
        if run.failures >= self.w.retry.max_attempts {
            self.fail_for_good(t);
        } else {
            run.phase = Phase::BackingOff;
            let backoff = self.w.retry.backoff_s * 2f64.powi(run.failures as i32 - 1);
            self.schedule(self.now_us + to_us(backoff), Ev::Requeue(t));
        }
    }

    pub(super) fn terminal(&mut self) {
        self.finished += 1;
        self.last_finish_us = self.now_us;
    }

    pub(super) fn resolve_children(&mut self, t: usize) {
        for i in 0..self.runs[t].children.len() {
            let c = self.runs[t].children[i];
            let run = &mut self.runs[c];
            run.pending_parents = run.pending_parents.saturating_sub(1);
            if run.pending_parents == 0 && run.phase == Phase::Blocked {
                self.enqueue(c);
            }
        }
    }

    /// Fails `t` for good, and every submitted task waiting on it (later arrivals see the failed
    /// parent when they arrive).
    pub(super) fn fail_for_good(&mut self, t: usize) {
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            self.runs[x].phase = Phase::Failed;
            self.terminal();
            for &c in &self.runs[x].children {
                if self.runs[c].phase == Phase::Blocked {
                    stack.push(c);
                }
            }
        }
    }

    pub(super) fn agent_event(&mut self, i: usize) {
        let Some(e) = self.w.events.get(i) else {
            return;
        };
        let Some(a) = self
            .agent_index
            .get(&agent_id(&e.agent.agent_type, e.agent.index))
            .copied()
        else {
            return;
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
                    self.runs[t].first_ok.get_or_insert(false);
                    self.enqueue(t);
                }
            }
        }
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
            });
        }
    }
    agents
}
