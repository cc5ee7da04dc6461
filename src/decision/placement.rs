//! Choosing agents for tasks.
//!
//! Placement works on plain snapshots ([`AgentView`], [`TaskView`]) read from Redis by the
//! caller, and produces a *proposal*: for each task, a short list of candidate agents, best first.
//! Nothing here reserves anything. The Redis grant script re-checks capacity atomically at grant
//! time and falls back to later candidates, so a stale snapshot or a racing optimizer replica
//! costs at most a fallback, never an over-commitment.

use std::cmp::Ordering;

use super::resources::{Resources, fits_within, peak_utilization};

/// A snapshot of one agent as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// Unique agent id.
    pub agent_id: String,
    /// The agent's declared type; available to strategies that match tasks to agent types.
    pub agent_type: String,
    /// Total resources the agent offers, milli-units.
    pub capacity: Resources,
    /// Resources currently reserved by granted tasks, milli-units.
    pub reserved: Resources,
    /// Performance score kept by the optimizer; for score-aware strategies.
    pub score: f64,
    /// Operator-set preference weight; for weighted strategies.
    pub priority_weight: f64,
    /// Number of tasks currently granted to the agent.
    pub active_tasks: u32,
}

/// A snapshot of one task waiting to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Unique task id.
    pub task_id: String,
    /// The task's type; available to strategies that match tasks to agent types.
    pub task_type: String,
    /// Priority, higher first; the caller orders a batch by it.
    pub priority: u8,
    /// Resources the task needs, milli-units.
    pub required: Resources,
}

/// A placement policy: the seam where strategies plug in.
///
/// [`LeastLoaded`] is the default. Later strategies (adaptive, round-robin, score- or
/// type-aware, ...) implement this trait and are selected by configuration; the optimizer and
/// [`plan_batch`] only ever see `&dyn Strategy`. Implementations must be pure and deterministic
/// (no clock, no randomness of their own; anything varying, such as a round-robin cursor or a
/// seed, is passed in when the strategy is built) so that decisions are reproducible in tests.
pub trait Strategy: Send + Sync {
    /// A stable name for configuration, logs and metrics labels.
    fn name(&self) -> &'static str;

    /// Agents that can take the task, best first, as indexes into `agents`.
    ///
    /// Only agents where the task fits (see [`fits_within`]) may be returned, each at most once.
    fn rank(&self, task: &TaskView, agents: &[AgentView]) -> Vec<usize>;
}

/// Places each task where it leaves the fleet most evenly loaded.
///
/// Agents are ordered by their peak (bottleneck) utilization *after* taking the task, so a task
/// heavy in one kind goes where that kind has room, and a small agent is not treated as empty
/// just because its other kinds are idle. Ties go to the agent with fewer active tasks, then to
/// the lower agent id, so the same snapshot always gives the same answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl Strategy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn rank(&self, task: &TaskView, agents: &[AgentView]) -> Vec<usize> {
        let mut scored: Vec<(usize, &AgentView, f64)> = agents
            .iter()
            .enumerate()
            .filter(|(_, agent)| fits_within(&task.required, &agent.reserved, &agent.capacity))
            .map(|(index, agent)| {
                let after = agent.reserved.saturating_add(&task.required);
                (index, agent, peak_utilization(&after, &agent.capacity))
            })
            .collect();
        scored.sort_by(|&(_, a, load_a), &(_, b, load_b)| {
            load_a.total_cmp(&load_b).then_with(|| compare_tie(a, b))
        });
        scored.into_iter().map(|(index, _, _)| index).collect()
    }
}

/// Deterministic tie-break between two equally loaded agents.
fn compare_tie(a: &AgentView, b: &AgentView) -> Ordering {
    a.active_tasks
        .cmp(&b.active_tasks)
        .then_with(|| a.agent_id.cmp(&b.agent_id))
}

/// The proposal for one task of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGrant {
    /// Index of the task in the slice passed to [`plan_batch`].
    pub task_index: usize,
    /// Agent ids to try, best first, at most `max_candidates`; empty if the task fits nowhere.
    pub candidates: Vec<String>,
}

/// Plans a batch of tasks, in the order given (the caller passes highest priority first).
///
/// Each task is ranked against a working copy of the agents in which the earlier tasks of this
/// batch are already reserved on their first candidate. Without that, every task of a batch would
/// see the same snapshot and pile onto the same emptiest agent, and all but the first would fall
/// back at grant time. The result is a proposal only; the grant script has the final word.
///
/// Indexes a strategy returns that are out of range, repeated, or where the task does not fit
/// are skipped, so a faulty strategy degrades the plan but cannot make it unsafe.
pub fn plan_batch(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    max_candidates: usize,
) -> Vec<PlannedGrant> {
    let mut working: Vec<AgentView> = agents.to_vec();
    let mut plans = Vec::with_capacity(tasks.len());
    for (task_index, task) in tasks.iter().enumerate() {
        let chosen = candidate_indexes(strategy, task, &working, max_candidates);
        if let Some(agent) = chosen.first().and_then(|&first| working.get_mut(first)) {
            agent.reserved = agent.reserved.saturating_add(&task.required);
            agent.active_tasks = agent.active_tasks.saturating_add(1);
        }
        let candidates = chosen
            .iter()
            .filter_map(|&index| working.get(index))
            .map(|agent| agent.agent_id.clone())
            .collect();
        plans.push(PlannedGrant {
            task_index,
            candidates,
        });
    }
    plans
}

/// The strategy's ranking, sanitised and capped at `max_candidates`.
fn candidate_indexes(
    strategy: &dyn Strategy,
    task: &TaskView,
    agents: &[AgentView],
    max_candidates: usize,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(max_candidates.min(agents.len()));
    for index in strategy.rank(task, agents) {
        if chosen.len() >= max_candidates {
            break;
        }
        let fits = agents
            .get(index)
            .is_some_and(|a| fits_within(&task.required, &a.reserved, &a.capacity));
        if fits && !chosen.contains(&index) {
            chosen.push(index);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: u64, memory: u64, tokens: u64) -> Resources {
        Resources {
            cpu,
            memory,
            tokens,
            time: 0,
        }
    }

    fn agent(id: &str, capacity: Resources, reserved: Resources) -> AgentView {
        AgentView {
            agent_id: id.to_owned(),
            agent_type: "worker".to_owned(),
            capacity,
            reserved,
            score: 1.0,
            priority_weight: 1.0,
            active_tasks: 0,
        }
    }

    fn task(id: &str, required: Resources) -> TaskView {
        TaskView {
            task_id: id.to_owned(),
            task_type: "job".to_owned(),
            priority: 5,
            required,
        }
    }

    fn ids(agents: &[AgentView], ranked: &[usize]) -> Vec<String> {
        ranked.iter().map(|&i| agents[i].agent_id.clone()).collect()
    }

    #[test]
    fn name_is_stable() {
        assert_eq!(LeastLoaded.name(), "least_loaded");
    }

    #[test]
    fn least_loaded_picks_the_emptier_agent() {
        let agents = vec![
            agent("busy", res(4000, 4000, 0), res(3000, 1000, 0)),
            agent("idle", res(4000, 4000, 0), res(0, 0, 0)),
        ];
        let ranked = LeastLoaded.rank(&task("t", res(1000, 0, 0)), &agents);
        assert_eq!(ids(&agents, &ranked), ["idle", "busy"]);
    }

    #[test]
    fn least_loaded_judges_load_after_placement() {
        // "small" is idle but the task would fill it; "big" is somewhat busy but has more room.
        let agents = vec![
            agent("small", res(1000, 1000, 0), res(0, 0, 0)),
            agent("big", res(10_000, 10_000, 0), res(2000, 2000, 0)),
        ];
        let ranked = LeastLoaded.rank(&task("t", res(1000, 0, 0)), &agents);
        assert_eq!(ids(&agents, &ranked), ["big", "small"]);
    }

    #[test]
    fn agent_lacking_a_kind_is_never_ranked_for_it() {
        let agents = vec![
            agent("no_tokens", res(8000, 8000, 0), res(0, 0, 0)),
            agent("llm", res(1000, 1000, 1_000_000), res(900, 900, 0)),
        ];
        let needs_tokens = task("t", res(100, 100, 1000));
        assert_eq!(
            ids(&agents, &LeastLoaded.rank(&needs_tokens, &agents)),
            ["llm"]
        );
        let cpu_only = task("u", res(100, 0, 0));
        assert_eq!(LeastLoaded.rank(&cpu_only, &agents).len(), 2);
    }

    #[test]
    fn full_agent_is_not_ranked() {
        let agents = vec![agent("full", res(1000, 0, 0), res(1000, 0, 0))];
        assert!(
            LeastLoaded
                .rank(&task("t", res(1, 0, 0)), &agents)
                .is_empty()
        );
    }

    #[test]
    fn ties_break_on_active_tasks_then_id() {
        let mut agents = vec![
            agent("c", res(1000, 0, 0), res(0, 0, 0)),
            agent("a", res(1000, 0, 0), res(0, 0, 0)),
            agent("b", res(1000, 0, 0), res(0, 0, 0)),
        ];
        let t = task("t", res(100, 0, 0));
        assert_eq!(
            ids(&agents, &LeastLoaded.rank(&t, &agents)),
            ["a", "b", "c"]
        );
        agents[1].active_tasks = 2;
        assert_eq!(
            ids(&agents, &LeastLoaded.rank(&t, &agents)),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn ranking_does_not_depend_on_input_order() {
        let mut agents = vec![
            agent("x", res(1000, 0, 0), res(100, 0, 0)),
            agent("y", res(1000, 0, 0), res(0, 0, 0)),
            agent("z", res(1000, 0, 0), res(0, 0, 0)),
        ];
        let t = task("t", res(100, 0, 0));
        let first = ids(&agents, &LeastLoaded.rank(&t, &agents));
        agents.reverse();
        assert_eq!(ids(&agents, &LeastLoaded.rank(&t, &agents)), first);
    }

    #[test]
    fn plan_batch_spreads_equal_tasks_over_equal_agents() {
        let agents = vec![
            agent("a", res(4000, 4000, 0), res(0, 0, 0)),
            agent("b", res(4000, 4000, 0), res(0, 0, 0)),
        ];
        let tasks: Vec<_> = (0..4)
            .map(|i| task(&format!("t{i}"), res(1000, 1000, 0)))
            .collect();
        let plan = plan_batch(&LeastLoaded, &tasks, &agents, 2);
        assert_eq!(plan.len(), 4);
        let firsts: Vec<_> = plan.iter().map(|p| p.candidates[0].as_str()).collect();
        assert_eq!(firsts.iter().filter(|&&id| id == "a").count(), 2);
        assert_eq!(firsts.iter().filter(|&&id| id == "b").count(), 2);
        assert_eq!(firsts, ["a", "b", "a", "b"]);
        for (i, p) in plan.iter().enumerate() {
            assert_eq!(p.task_index, i);
        }
    }

    #[test]
    fn plan_batch_gives_empty_candidates_when_nothing_fits() {
        let agents = vec![agent("a", res(1000, 1000, 0), res(0, 0, 0))];
        let tasks = vec![task("huge", res(5000, 0, 0)), task("ok", res(500, 0, 0))];
        let plan = plan_batch(&LeastLoaded, &tasks, &agents, 3);
        assert_eq!(
            plan[0],
            PlannedGrant {
                task_index: 0,
                candidates: vec![]
            }
        );
        assert_eq!(plan[1].candidates, ["a"]);
    }

    #[test]
    fn plan_batch_accounts_for_earlier_tasks_filling_an_agent() {
        let agents = vec![agent("a", res(1000, 0, 0), res(0, 0, 0))];
        let tasks = vec![task("t0", res(600, 0, 0)), task("t1", res(600, 0, 0))];
        let plan = plan_batch(&LeastLoaded, &tasks, &agents, 3);
        assert_eq!(plan[0].candidates, ["a"]);
        assert!(plan[1].candidates.is_empty());
    }

    #[test]
    fn plan_batch_does_not_modify_the_callers_agents() {
        let agents = vec![agent("a", res(1000, 0, 0), res(0, 0, 0))];
        let _ = plan_batch(&LeastLoaded, &[task("t", res(500, 0, 0))], &agents, 1);
        assert_eq!(agents[0].reserved, Resources::default());
        assert_eq!(agents[0].active_tasks, 0);
    }

    #[test]
    fn max_candidates_caps_the_list() {
        let agents: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|id| agent(id, res(1000, 0, 0), res(0, 0, 0)))
            .collect();
        let tasks = vec![task("t", res(100, 0, 0))];
        assert_eq!(
            plan_batch(&LeastLoaded, &tasks, &agents, 2)[0].candidates,
            ["a", "b"]
        );
        assert_eq!(
            plan_batch(&LeastLoaded, &tasks, &agents, 10)[0]
                .candidates
                .len(),
            4
        );
        assert!(
            plan_batch(&LeastLoaded, &tasks, &agents, 0)[0]
                .candidates
                .is_empty()
        );
    }

    #[test]
    fn plan_batch_handles_empty_inputs() {
        assert!(plan_batch(&LeastLoaded, &[], &[], 3).is_empty());
        let plan = plan_batch(&LeastLoaded, &[task("t", res(1, 0, 0))], &[], 3);
        assert!(plan[0].candidates.is_empty());
    }

    /// A deliberately broken strategy: out-of-range, repeated and non-fitting indexes.
    struct Faulty;

    impl Strategy for Faulty {
        fn name(&self) -> &'static str {
            "faulty"
        }
        fn rank(&self, _task: &TaskView, _agents: &[AgentView]) -> Vec<usize> {
            vec![7, 1, 1, 0, 0, 2]
        }
    }

    #[test]
    fn plan_batch_sanitises_a_faulty_strategy() {
        let agents = vec![
            agent("a", res(1000, 0, 0), res(0, 0, 0)),
            agent("b", res(1000, 0, 0), res(0, 0, 0)),
            agent("full", res(1000, 0, 0), res(1000, 0, 0)),
        ];
        let plan = plan_batch(&Faulty, &[task("t", res(100, 0, 0))], &agents, 5);
        assert_eq!(plan[0].candidates, ["b", "a"]);
    }
}
