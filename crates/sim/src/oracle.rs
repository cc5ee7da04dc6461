//! The ORACLE: a placement strategy that knows the workload's hidden truth.
//!
//! For each task it estimates, on every live agent, the time until the task would complete
//! successfully: the true mean duration (estimate × true speed × the agent's current degradation;
//! the noise has mean 1) inflated for the true failure rate (geometric retries, each failure also
//! costing the first retry backoff), plus — on an agent without room now — the wait until enough
//! of its running attempts end (their true end times are known to the oracle). If the best agent
//! is one worth waiting for, the task is held back (no candidates) and that agent's future room is
//! booked for it, so later tasks of the same round do not count on it too; otherwise the agents
//! with room are ranked by expected completion (holding only pays when the wait wins by
//! [`HOLD_GAIN`]). No real strategy can know these numbers, so the
//! oracle is the reference the learned strategies are measured against — a strong heuristic
//! (earliest expected completion), not a proven optimum.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::workload::Workload;
use switchyard_decision::placement::CandidateScore;
use switchyard_decision::resources::fits_within;
use switchyard_decision::{AgentView, DecisionContext, Resources, Strategy, TaskView};

/// A task is held for a busy agent only if that finishes it in at most this fraction of the
/// time the best agent with room would take: waiting is a bet against future arrivals (a
/// higher-priority task may take the awaited room), so it must pay clearly.
pub const HOLD_GAIN: f64 = 0.5;

/// The oracle for one dispatch round; cheap to build, borrows the engine's state.
pub struct Oracle<'a> {
    /// The workload, for the true speeds and failure rates.
    pub workload: &'a Workload,
    /// Agent id → simulator agent index.
    pub agent_index: &'a HashMap<String, usize>,
    /// Simulator agent index → index of its agent type.
    pub agent_type: &'a [usize],
    /// Simulator agent index → current duration multiplier from degradation (1.0 = healthy).
    pub speed_factor: &'a [f64],
    /// Simulator agent index → its running attempts as (seconds until they end, resources),
    /// soonest first.
    pub releases: Vec<Vec<(f64, Resources)>>,
    /// Simulator agent index → resources booked this round by tasks held back for it.
    held: Mutex<Vec<Resources>>,
}

impl<'a> Oracle<'a> {
    /// An oracle over the engine's current state.
    pub fn new(
        workload: &'a Workload,
        agent_index: &'a HashMap<String, usize>,
        agent_type: &'a [usize],
        speed_factor: &'a [f64],
        releases: Vec<Vec<(f64, Resources)>>,
    ) -> Oracle<'a> {
        let held = Mutex::new(vec![Resources::default(); agent_type.len()]);
        Oracle {
            workload,
            agent_index,
            agent_type,
            speed_factor,
            releases,
            held,
        }
    }

    /// Expected seconds from start to successful completion of the task on agent `agent`.
    pub fn expected_completion_s(&self, task: &TaskView, agent: usize) -> f64 {
        let type_index = self.agent_type.get(agent).copied().unwrap_or(usize::MAX);
        let truth = self.workload.truth(type_index, &task.task_type);
        let factor = self.speed_factor.get(agent).copied().unwrap_or(1.0);
        let duration = task.estimated_duration_s * truth.speed * factor;
        let p = truth.failure_rate;
        if p >= 1.0 {
            return f64::INFINITY;
        }
        (duration + p * self.workload.retry.backoff_s) / (1.0 - p)
    }

    /// Seconds until `task` (on top of what is already booked) fits on the agent; infinite if
    /// it never does while only the running attempts end.
    fn wait_s(&self, task: &TaskView, view: &AgentView, agent: usize, booked: &Resources) -> f64 {
        let need = task.required.saturating_add(booked);
        let mut reserved = view.reserved;
        if fits_within(&need, &reserved, &view.capacity) {
            return 0.0;
        }
        for (at, freed) in self.releases.get(agent).into_iter().flatten() {
            reserved = reserved.saturating_sub(freed);
            if fits_within(&need, &reserved, &view.capacity) {
                return *at;
            }
        }
        f64::INFINITY
    }

    /// The agent without room now that would complete the task soonest, with that time.
    fn best_wait(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        held: &[Resources],
    ) -> Option<(usize, f64)> {
        agents
            .iter()
            .filter(|a| !fits_within(&task.required, &a.reserved, &a.capacity))
            .filter_map(|a| {
                let agent = *self.agent_index.get(&*a.agent_id)?;
                let booked = held.get(agent).copied().unwrap_or_default();
                let total =
                    self.wait_s(task, a, agent, &booked) + self.expected_completion_s(task, agent);
                total.is_finite().then_some((agent, total))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl Strategy for Oracle<'_> {
    fn name(&self) -> &'static str {
        "oracle"
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        let scored: Vec<CandidateScore> = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| fits_within(&task.required, &a.reserved, &a.capacity))
            .filter_map(|(index, a)| {
                let agent = *self.agent_index.get(&*a.agent_id)?;
                let expected = self.expected_completion_s(task, agent);
                Some(CandidateScore {
                    index,
                    agent_id: a.agent_id.clone(),
                    score: -expected,
                })
            })
            .collect();
        let best_now = scored
            .iter()
            .map(|c| -c.score)
            .fold(f64::INFINITY, f64::min);
        // One plan at a time updates the bookings whole: after a panic elsewhere they are
        // still consistent, so a poisoned lock is taken as it is.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match self.best_wait(task, agents, &held) {
            Some((agent, total)) if total < HOLD_GAIN * best_now => {
                if let Some(booked) = held.get_mut(agent) {
                    *booked = booked.saturating_add(&task.required);
                }
                Vec::new()
            }
            _ => scored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_decision::Resources;

    const W: &str = r#"
seed = 1
[retry]
backoff_s = 2.0
[[agent_types]]
name = "fast"
count = 1
capacity = { cpu = 2 }
truth.job = { speed = 0.5, failure_rate = 0.5 }
[[agent_types]]
name = "slow"
count = 1
capacity = { cpu = 2 }
truth.job = { speed = 1.5 }
[tasks]
count = 1
arrival = "poisson"
rate_per_s = 1.0
[[tasks.types]]
name = "job"
priority = [1, 1]
resources = { cpu = 1 }
estimated_duration_s = [10.0, 10.0]
"#;

    fn view(id: &str, reserved_cpu: u64) -> AgentView {
        AgentView {
            agent_id: id.into(),
            agent_type: "x".into(),
            capacity: Resources {
                cpu: 2000,
                ..Resources::default()
            },
            reserved: Resources {
                cpu: reserved_cpu,
                ..Resources::default()
            },
            score: 0.5,
            priority_weight: 1.0,
            active_tasks: 0,
            learned: Default::default(),
            idle_s: 0.0,
        }
    }

    fn task() -> TaskView {
        TaskView {
            task_id: "t".into(),
            task_type: "job".into(),
            priority: 1,
            required: Resources {
                cpu: 1000,
                ..Resources::default()
            },
            seq: 0,
            estimated_duration_s: 10.0,
            avoid_agents: Vec::new(),
        }
    }

    #[test]
    fn oracle_prefers_lowest_expected_completion() {
        let w = Workload::parse(W).unwrap();
        let index: HashMap<String, usize> = [("f".to_owned(), 0), ("s".to_owned(), 1)].into();
        let types = [0, 1];
        let healthy = [1.0, 1.0];
        let oracle = Oracle::new(&w, &index, &types, &healthy, vec![vec![], vec![]]);
        // fast: (5 + 0.5 * 2) / 0.5 = 12; slow: 15.
        assert!((oracle.expected_completion_s(&task(), 0) - 12.0).abs() < 1e-9);
        let agents = [view("s", 0), view("f", 0)];
        let ctx = DecisionContext::empty();
        assert_eq!(oracle.rank(&task(), &agents, &ctx), [1, 0]);
        // Degraded 2x, the fast agent loses (22 > 15); a full agent is never ranked.
        let degraded = [2.0, 1.0];
        let oracle = Oracle::new(&w, &index, &types, &degraded, vec![vec![], vec![]]);
        assert_eq!(oracle.rank(&task(), &agents, &ctx), [0, 1]);
        let agents = [view("s", 1500), view("f", 0)];
        assert_eq!(oracle.rank(&task(), &agents, &ctx), [1]);
    }

    #[test]
    fn oracle_holds_a_task_for_a_much_better_busy_agent_once() {
        let w = Workload::parse(W).unwrap();
        let index: HashMap<String, usize> = [("f".to_owned(), 0), ("s".to_owned(), 1)].into();
        let types = [0, 1];
        let slow_degraded = [1.0, 3.0];
        let one_cpu = Resources {
            cpu: 1000,
            ..Resources::default()
        };
        // "f" is full but frees one cpu in 1 s: 1 + 12 = 13 s against 45 s on "s" now.
        let releases = vec![vec![(1.0, one_cpu)], vec![]];
        let oracle = Oracle::new(&w, &index, &types, &slow_degraded, releases);
        let agents = [view("f", 2000), view("s", 0)];
        let ctx = DecisionContext::empty();
        assert!(oracle.rank(&task(), &agents, &ctx).is_empty(), "held for f");
        // The freed cpu is booked now, so the next task does not wait for it too.
        assert_eq!(oracle.rank(&task(), &agents, &ctx), [1]);
        // Not worth waiting for when the gain is small: 13 s against 15 s on a healthy "s".
        let healthy = [1.0, 1.0];
        let releases = vec![vec![(1.0, one_cpu)], vec![]];
        let oracle = Oracle::new(&w, &index, &types, &healthy, releases);
        assert_eq!(oracle.rank(&task(), &agents, &ctx), [1]);
    }
}
