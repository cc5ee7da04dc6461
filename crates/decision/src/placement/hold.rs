//! The head reservation: a large task at the head of the queue is not starved by smaller ones.
//!
//! When the first task of the queue (highest priority, then oldest, as the queue orders them)
//! fits on no agent right now, it is *held* on one agent, the one where it will fit soonest
//! ([`choose_hold_agent`]). From then on a task other than the held one is granted on that
//! agent only if it fits in capacity the head task will not need ([`may_backfill`]): EASY
//! backfilling's rule for the reserved node, without its shadow-time exception (a running task's
//! end is only an estimate, and an early end is never promised). Every other agent keeps taking
//! small tasks. The held agent drains as its running tasks end, so the head task is granted once
//! the longest of the tasks running there when the hold was taken has ended.
//!
//! "Soonest" is judged from the fleet view alone: the agent whose capacity covers the task and
//! which has the least to release before it fits (the largest shortfall over resource kinds,
//! as a share of the agent's capacity), then the one with fewer running tasks. Running tasks'
//! expected end times are not used: they would need every running task's grant time and
//! estimate per decision, and estimates are optional.

use std::sync::Arc;

use super::{AgentView, TaskView};
use crate::resources::{Resources, fits_within};

/// A hold: `agent_id` is kept for `task_id`, which needs `required`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadHold {
    pub task_id: String,
    pub agent_id: Arc<str>,
    pub required: Resources,
}

/// How far an agent is from having room for `required`: the largest shortfall over kinds as a
/// share of the agent's capacity (0: it fits now). `None` when its capacity can never cover it.
pub fn shortfall(required: &Resources, agent: &AgentView) -> Option<f64> {
    if !fits_within(required, &Resources::default(), &agent.capacity) {
        return None;
    }
    let mut worst: f64 = 0.0;
    for (kind, need) in required.iter() {
        let cap = agent.capacity.get(kind);
        let used = agent.reserved.get(kind);
        let over = (used.saturating_add(need)).saturating_sub(cap);
        if over > 0 && cap > 0 {
            worst = worst.max(over as f64 / cap as f64);
        }
    }
    Some(worst)
}

/// The agent to hold for `head`: the current hold's agent if it can still ever take the task (a
/// hold does not wander while the agent drains), else the agent with the smallest
/// [`shortfall`], then fewest running tasks, then by id. `None` when the task fits on some agent
/// right now (nothing to hold: a plan that left it out did so for tasks ahead of it, or because
/// its strategy chose to wait for a busier, better agent) or when no agent's capacity covers it
/// (an infeasible task is never held for).
pub fn choose_hold_agent(
    head: &TaskView,
    agents: &[AgentView],
    current: Option<&str>,
) -> Option<Arc<str>> {
    if agents
        .iter()
        .any(|a| shortfall(&head.required, a) == Some(0.0))
    {
        return None;
    }
    if let Some(keep) = current.and_then(|id| agents.iter().find(|a| &*a.agent_id == id))
        && shortfall(&head.required, keep).is_some()
    {
        return Some(keep.agent_id.clone());
    }
    agents
        .iter()
        .filter_map(|a| shortfall(&head.required, a).map(|s| (s, a)))
        .min_by(|(s1, a1), (s2, a2)| {
            s1.total_cmp(s2)
                .then(a1.active_tasks.cmp(&a2.active_tasks))
                .then(a1.agent_id.cmp(&a2.agent_id))
        })
        .map(|(_, a)| a.agent_id.clone())
}

/// May `task` be granted on `agent` while `hold` stands? Always on another agent and for the
/// held task itself; on the held agent only in capacity the held task will not need (the task
/// and the held task fit together).
pub fn may_backfill(task: &TaskView, agent: &AgentView, hold: Option<&HeadHold>) -> bool {
    let Some(hold) = hold else {
        return true;
    };
    if hold.agent_id != agent.agent_id || hold.task_id == task.task_id {
        return true;
    }
    let with_head = agent.reserved.saturating_add(&hold.required);
    fits_within(&task.required, &with_head, &agent.capacity)
}

/// The fleet as every task but the held one is planned against while `hold` stands: the held
/// agent's room for the held task counted as reserved, so a plan proposes there only what
/// [`may_backfill`] allows.
pub fn beside_hold(agents: &[AgentView], hold: Option<&HeadHold>) -> Vec<AgentView> {
    let mut views = agents.to_vec();
    if let Some(hold) = hold
        && let Some(held) = views.iter_mut().find(|a| a.agent_id == hold.agent_id)
    {
        held.reserved = held.reserved.saturating_add(&hold.required);
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceKind;

    fn cpu(milli: u64) -> Resources {
        let mut r = Resources::default();
        r.set(ResourceKind::Cpu, milli);
        r
    }

    fn agent(id: &str, cap: u64, reserved: u64, active: u32) -> AgentView {
        AgentView {
            agent_id: id.into(),
            agent_type: "t".into(),
            capacity: cpu(cap),
            reserved: cpu(reserved),
            score: 1.0,
            priority_weight: 1.0,
            active_tasks: active,
            learned: Default::default(),
            idle_s: 0.0,
        }
    }

    fn task(id: &str, need: u64) -> TaskView {
        TaskView {
            task_id: id.into(),
            task_type: "t".into(),
            priority: 5,
            required: cpu(need),
            seq: 0,
            estimated_duration_s: 0.0,
            avoid_agents: Vec::new(),
        }
    }

    #[test]
    fn holds_where_least_must_be_released() {
        let agents = [
            agent("a", 4000, 4000, 4),
            agent("b", 4000, 1000, 1),
            agent("c", 2000, 0, 0),
        ];
        let head = task("big", 4000);
        // c can never take it; b has the least to release.
        assert_eq!(
            choose_hold_agent(&head, &agents, None).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn a_hold_stays_on_its_agent_while_it_drains() {
        let agents = [agent("a", 4000, 3000, 3), agent("b", 4000, 1000, 1)];
        let head = task("big", 4000);
        assert_eq!(
            choose_hold_agent(&head, &agents, Some("a")).as_deref(),
            Some("a")
        );
        // An agent that left, or one too small, is replaced.
        assert_eq!(
            choose_hold_agent(&head, &agents, Some("gone")).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn ties_go_to_fewer_running_tasks_then_id() {
        let agents = [agent("b", 4000, 2000, 2), agent("a", 4000, 2000, 2)];
        let head = task("big", 4000);
        assert_eq!(
            choose_hold_agent(&head, &agents, None).as_deref(),
            Some("a")
        );
        let agents = [agent("a", 4000, 2000, 5), agent("b", 4000, 2000, 1)];
        assert_eq!(
            choose_hold_agent(&head, &agents, None).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn an_infeasible_task_is_held_nowhere() {
        let agents = [agent("a", 4000, 0, 0)];
        assert_eq!(choose_hold_agent(&task("huge", 8000), &agents, None), None);
    }

    #[test]
    fn a_task_that_fits_somewhere_now_needs_no_hold() {
        let agents = [agent("a", 4000, 4000, 4), agent("b", 4000, 0, 0)];
        assert_eq!(
            choose_hold_agent(&task("big", 4000), &agents, Some("a")),
            None
        );
    }

    #[test]
    fn backfill_only_where_the_head_keeps_its_room() {
        let held = agent("a", 8000, 2000, 1);
        let other = agent("b", 8000, 2000, 1);
        let hold = HeadHold {
            task_id: "big".into(),
            agent_id: "a".into(),
            required: cpu(5000),
        };
        assert!(may_backfill(&task("s", 1000), &held, Some(&hold)));
        assert!(!may_backfill(&task("s", 1001), &held, Some(&hold)));
        assert!(may_backfill(&task("s", 6000), &other, Some(&hold)));
        assert!(may_backfill(&task("big", 5000), &held, Some(&hold)));
        assert!(may_backfill(&task("s", 6000), &held, None));
        // The planning view agrees with the rule.
        let views = beside_hold(&[held.clone(), other.clone()], Some(&hold));
        assert_eq!(views[0].reserved, cpu(7000));
        assert_eq!(views[1].reserved, cpu(2000));
    }
}
