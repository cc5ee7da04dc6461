//! Explaining a decision: which candidates a strategy ranked, with their scores, best first.

use super::{AgentView, CandidateScore, DecisionContext, Strategy, TaskView, fits};

/// Why a task's candidates were chosen: every agent the strategy ranked, with its score, in the
/// strategy's own order (best first). When the fleet was sampled, these are the sampled agents.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The strategy's [`Strategy::name`].
    pub strategy: &'static str,
    /// Best first; `index` refers to the agent slice the strategy was given, which for a sampled
    /// decision is the sample, so callers should go by `agent_id`.
    pub candidates: Vec<CandidateScore>,
}

impl Explanation {
    /// The agent the plan puts first, if any.
    pub fn chosen(&self) -> Option<&str> {
        self.candidates.first().map(|c| &*c.agent_id)
    }
}

/// Explains the ranking `ranked` the strategy gave for `task` over `agents`.
///
/// Scores come from [`Strategy::scores`] on the same snapshot. They are listed in the order of
/// `ranked` (which is what the plan follows, including any tie-breaks a strategy applies beyond
/// its scores); a ranked agent the strategy gave no score, or where the task does not fit, is
/// left out, exactly as planning skips it, and so is a repeat.
pub(crate) fn explain(
    strategy: &dyn Strategy,
    task: &TaskView,
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    ranked: &[usize],
) -> Explanation {
    let mut scores = strategy.scores(task, agents, ctx);
    let mut candidates = Vec::with_capacity(ranked.len().min(scores.len()));
    for &index in ranked {
        let fitting = agents.get(index).is_some_and(|a| fits(task, a));
        if !fitting {
            continue;
        }
        // Taking the score out of the list also makes a repeated index find nothing.
        if let Some(at) = scores.iter().position(|c| c.index == index) {
            candidates.push(scores.swap_remove(at));
        }
    }
    Explanation {
        strategy: strategy.name(),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        LeastLoaded, SAMPLE_SIZE, plan_batch, plan_batch_explained, sample_candidates,
    };
    use super::*;
    use crate::patterns::{PatternStats, PatternTable};
    use crate::resources::Resources;
    use crate::strategies::{Adaptive, RoundRobin};

    fn cpu(milli: u64) -> Resources {
        Resources {
            cpu: milli,
            ..Resources::default()
        }
    }

    fn agent(id: &str, agent_type: &str, reserved_cpu: u64) -> AgentView {
        AgentView {
            agent_id: id.into(),
            agent_type: agent_type.into(),
            capacity: cpu(4000),
            reserved: cpu(reserved_cpu),
            score: 0.5,
            priority_weight: 1.0,
            active_tasks: 0,
            learned: Default::default(),
            idle_s: 0.0,
        }
    }

    fn task(id: &str, seq: u64) -> TaskView {
        TaskView {
            task_id: id.to_owned(),
            task_type: "build".to_owned(),
            priority: 5,
            required: cpu(1000),
            seq,
            estimated_duration_s: 10.0,
            avoid_agents: Vec::new(),
        }
    }

    /// The explanation's first candidate is the plan's first, with the highest score, and the
    /// list is sorted best first.
    fn assert_chosen_first(plan: &super::super::PlannedGrant) {
        let explanation = plan.explanation.as_ref().expect("explained");
        let first = explanation.candidates.first().expect("a candidate");
        assert_eq!(Some(&*first.agent_id), explanation.chosen());
        assert_eq!(
            plan.candidates.first().map(String::as_str),
            Some(&*first.agent_id)
        );
        for pair in explanation.candidates.windows(2) {
            assert!(pair[0].score >= pair[1].score, "{explanation:?}");
        }
        let best = explanation
            .candidates
            .iter()
            .map(|c| c.score)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(first.score, best);
    }

    #[test]
    fn lists_every_fitting_candidate_best_first_beyond_max_candidates() {
        let agents = vec![
            agent("busy", "w", 2000),
            agent("full", "w", 3500),
            agent("idle", "w", 0),
            agent("half", "w", 1000),
        ];
        let plan = plan_batch_explained(
            &LeastLoaded,
            &[task("t", 0)],
            &agents,
            &DecisionContext::empty(),
            1,
            &[true],
        );
        assert_eq!(plan[0].candidates, ["idle"]);
        assert_chosen_first(&plan[0]);
        let explanation = plan[0].explanation.as_ref().expect("explained");
        assert_eq!(explanation.strategy, "least_loaded");
        let ids: Vec<&str> = explanation
            .candidates
            .iter()
            .map(|c| &*c.agent_id)
            .collect();
        // "full" has no room for the task, so it was never a candidate.
        assert_eq!(ids, ["idle", "half", "busy"]);
        assert!((explanation.candidates[0].score - 0.75).abs() < 1e-12);
    }

    #[test]
    fn only_asked_for_decisions_are_explained_and_the_plan_is_unchanged() {
        let agents = vec![agent("a", "w", 0), agent("b", "w", 0)];
        let tasks = [task("t0", 0), task("t1", 1), task("t2", 2)];
        let ctx = DecisionContext::empty();
        let explained =
            plan_batch_explained(&LeastLoaded, &tasks, &agents, &ctx, 2, &[false, true]);
        let plain = plan_batch(&LeastLoaded, &tasks, &agents, &ctx, 2);
        let candidates = |p: &[super::super::PlannedGrant]| -> Vec<Vec<String>> {
            p.iter().map(|g| g.candidates.clone()).collect()
        };
        assert_eq!(candidates(&explained), candidates(&plain));
        assert!(explained[0].explanation.is_none());
        assert!(
            explained[2].explanation.is_none(),
            "missing entries mean no"
        );
        assert!(plain.iter().all(|p| p.explanation.is_none()));
        // t1 is scored against the working copy where t0 already sits on its first candidate.
        assert_chosen_first(&explained[1]);
        let scores = &explained[1]
            .explanation
            .as_ref()
            .expect("explained")
            .candidates;
        assert_eq!(&*scores[0].agent_id, plain[1].candidates[0]);
        assert!(scores[0].score > scores[1].score);
    }

    #[test]
    fn round_robin_explains_the_agent_whose_turn_it_is() {
        let agents = vec![agent("a", "w", 0), agent("b", "w", 0), agent("c", "w", 0)];
        let plan = plan_batch_explained(
            &RoundRobin,
            &[task("t", 4)],
            &agents,
            &DecisionContext::empty(),
            2,
            &[true],
        );
        assert_eq!(plan[0].candidates, ["b", "c"]);
        assert_chosen_first(&plan[0]);
        let explanation = plan[0].explanation.as_ref().expect("explained");
        assert_eq!(explanation.strategy, "round_robin");
        assert_eq!(explanation.candidates.len(), 3);
        assert_eq!(explanation.candidates[0].score, 1.0);
    }

    #[test]
    fn adaptive_explains_why_the_fast_type_wins() {
        let agents = vec![agent("slow-1", "slow", 0), agent("fast-1", "fast", 0)];
        let mut patterns = PatternTable::new();
        let mut slow = PatternStats::neutral();
        let mut fast = PatternStats::neutral();
        for _ in 0..10 {
            slow.record(false, 10.0, 40.0, 0.3);
            fast.record(true, 10.0, 10.0, 0.3);
        }
        patterns.insert("build", "slow", slow);
        patterns.insert("build", "fast", fast);
        let ctx = DecisionContext::new(&patterns);
        let plan = plan_batch_explained(&Adaptive, &[task("t", 0)], &agents, &ctx, 4, &[true]);
        assert_eq!(plan[0].candidates, ["fast-1", "slow-1"]);
        assert_chosen_first(&plan[0]);
        let explanation = plan[0].explanation.as_ref().expect("explained");
        assert!(explanation.candidates[0].score > 2.0 * explanation.candidates[1].score);
    }

    #[test]
    fn a_sampled_decision_explains_the_sample_only() {
        let agents: Vec<AgentView> = (0..300)
            .map(|i| agent(&format!("a{i:03}"), "w", (i % 4) * 500))
            .collect();
        let t = task("sampled", 0);
        let plan = plan_batch_explained(
            &LeastLoaded,
            std::slice::from_ref(&t),
            &agents,
            &DecisionContext::empty(),
            3,
            &[true],
        );
        assert_chosen_first(&plan[0]);
        let explanation = plan[0].explanation.as_ref().expect("explained");
        assert_eq!(explanation.candidates.len(), SAMPLE_SIZE);
        let sample: Vec<&str> = sample_candidates(&t, &agents, SAMPLE_SIZE)
            .into_iter()
            .map(|i| &*agents[i].agent_id)
            .collect();
        assert!(
            explanation
                .candidates
                .iter()
                .all(|c| sample.contains(&&*c.agent_id))
        );
    }
}
