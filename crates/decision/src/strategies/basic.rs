//! Strategies that decide from the snapshot alone: round-robin, priority-based, load-balanced.

use crate::placement::{
    AgentView, CandidateScore, DecisionContext, Strategy, TaskView, fitting, reserved_after,
    score_fitting,
};
use crate::resources::{peak_utilization, utilization};

/// Takes turns: the naive baseline the others are measured against.
///
/// The agents the task fits on, sorted by id, are visited starting at position
/// `task.seq % n` and going round. The turn comes from the task's queue sequence number rather
/// than a cursor kept in the strategy, so it needs no state and every replica agrees.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl RoundRobin {
    /// Indexes of the fitting agents in turn order.
    fn rotation(task: &TaskView, agents: &[AgentView]) -> Vec<usize> {
        let mut order: Vec<(usize, &AgentView)> = fitting(task, agents).collect();
        order.sort_by(|(i, a), (j, b)| a.agent_id.cmp(&b.agent_id).then(i.cmp(j)));
        let mut order: Vec<usize> = order.into_iter().map(|(i, _)| i).collect();
        if !order.is_empty() {
            let start = (task.seq % order.len() as u64) as usize;
            order.rotate_left(start);
        }
        order
    }
}

impl Strategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    /// Position in the turn order, as `1 - position / n`: the agent whose turn it is scores 1.
    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        let order = RoundRobin::rotation(task, agents);
        let n = order.len() as f64;
        order
            .iter()
            .enumerate()
            .filter_map(|(position, &index)| {
                agents.get(index).map(|agent| CandidateScore {
                    index,
                    agent_id: agent.agent_id.clone(),
                    score: 1.0 - position as f64 / n,
                })
            })
            .collect()
    }

    fn rank(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<usize> {
        RoundRobin::rotation(task, agents)
    }
}

/// From this priority up a task is urgent: it gets the best agents.
pub(crate) const HIGH_PRIORITY: u8 = 7;
/// Up to this priority a task is routine: it goes where there is room.
pub(crate) const LOW_PRIORITY: u8 = 3;
/// Weight of headroom for urgent tasks: only a tie-break between agents of similar quality.
const URGENT_LOAD_WEIGHT: f64 = 0.05;
/// How strongly routine tasks avoid the best agents, relative to headroom.
const RESERVE_WEIGHT: f64 = 0.25;

/// Urgent work gets the best agents; routine work keeps them free.
///
/// An agent's quality is `score × priority_weight` (the learned performance score times the
/// operator's preference), relative to the best candidate so it lies in `[0, 1]`; its headroom is
/// `1 - peak utilization after placing the task`. Then, with urgency `w` going from 0 at
/// priority ≤ 3 to 1 at priority ≥ 7 (linearly in between):
///
/// `score = w × (quality + 0.05 × headroom) + (1 - w) × (headroom - 0.25 × quality)`
///
/// so a priority-9 task goes to the best agent (load only breaks near-ties), a priority-1 task to
/// the emptiest one, preferring weaker agents among equally empty ones so the best stay free for
/// the urgent work that follows, and mid priorities blend the two.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriorityBased;

/// How urgent a priority is, in `[0, 1]`.
fn urgency(priority: u8) -> f64 {
    let span = f64::from(HIGH_PRIORITY - LOW_PRIORITY);
    ((f64::from(priority) - f64::from(LOW_PRIORITY)) / span).clamp(0.0, 1.0)
}

/// `score × priority_weight`, with negative or non-finite parts counting as 0.
fn quality(agent: &AgentView) -> f64 {
    let clean = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
    clean(agent.score) * clean(agent.priority_weight)
}

impl Strategy for PriorityBased {
    fn name(&self) -> &'static str {
        "priority_based"
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        let best = fitting(task, agents)
            .map(|(_, agent)| quality(agent))
            .fold(0.0, f64::max);
        let w = urgency(task.priority);
        score_fitting(task, agents, |agent| {
            let q = if best > 0.0 {
                quality(agent) / best
            } else {
                0.0
            };
            let headroom = 1.0 - peak_utilization(&reserved_after(task, agent), &agent.capacity);
            w * (q + URGENT_LOAD_WEIGHT * headroom) + (1.0 - w) * (headroom - RESERVE_WEIGHT * q)
        })
    }
}

/// Evens out the load over every resource kind.
///
/// The score is `1 - mean utilization after placing the task`, over the kinds the agent offers.
/// Unlike [`LeastLoaded`](crate::LeastLoaded), which looks at the single most loaded
/// kind, this counts every kind, so an agent busy in one kind but idle in the others still looks
/// attractive for work that needs the idle kinds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadBalanced;

impl Strategy for LoadBalanced {
    fn name(&self) -> &'static str {
        "load_balanced"
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        score_fitting(task, agents, |agent| {
            1.0 - utilization(&reserved_after(task, agent), &agent.capacity)
        })
    }
}
