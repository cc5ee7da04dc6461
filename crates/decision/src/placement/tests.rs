//! Tests of the placement seam, least-loaded ranking and batch planning.

use super::*;

static EMPTY: DecisionContext<'static> = DecisionContext {
    patterns: &EMPTY_PATTERNS,
};

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
        agent_id: id.into(),
        agent_type: "worker".into(),
        capacity,
        reserved,
        score: 1.0,
        priority_weight: 1.0,
        active_tasks: 0,
        learned: Default::default(),
        idle_s: 0.0,
    }
}

fn task(id: &str, required: Resources) -> TaskView {
    TaskView {
        task_id: id.to_owned(),
        task_type: "job".to_owned(),
        priority: 5,
        required,
        seq: 0,
        estimated_duration_s: 0.0,
        avoid_agents: Vec::new(),
    }
}

fn ids(agents: &[AgentView], ranked: &[usize]) -> Vec<String> {
    ranked
        .iter()
        .map(|&i| agents[i].agent_id.to_string())
        .collect()
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
    let ranked = LeastLoaded.rank(&task("t", res(1000, 0, 0)), &agents, &EMPTY);
    assert_eq!(ids(&agents, &ranked), ["idle", "busy"]);
}

#[test]
fn least_loaded_judges_load_after_placement() {
    // "small" is idle but the task would fill it; "big" is somewhat busy but has more room.
    let agents = vec![
        agent("small", res(1000, 1000, 0), res(0, 0, 0)),
        agent("big", res(10_000, 10_000, 0), res(2000, 2000, 0)),
    ];
    let ranked = LeastLoaded.rank(&task("t", res(1000, 0, 0)), &agents, &EMPTY);
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
        ids(&agents, &LeastLoaded.rank(&needs_tokens, &agents, &EMPTY)),
        ["llm"]
    );
    let cpu_only = task("u", res(100, 0, 0));
    assert_eq!(LeastLoaded.rank(&cpu_only, &agents, &EMPTY).len(), 2);
}

#[test]
fn full_agent_is_not_ranked() {
    let agents = vec![agent("full", res(1000, 0, 0), res(1000, 0, 0))];
    assert!(
        LeastLoaded
            .rank(&task("t", res(1, 0, 0)), &agents, &EMPTY)
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
        ids(&agents, &LeastLoaded.rank(&t, &agents, &EMPTY)),
        ["a", "b", "c"]
    );
    agents[1].active_tasks = 2;
    assert_eq!(
        ids(&agents, &LeastLoaded.rank(&t, &agents, &EMPTY)),
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
    let first = ids(&agents, &LeastLoaded.rank(&t, &agents, &EMPTY));
    agents.reverse();
    assert_eq!(ids(&agents, &LeastLoaded.rank(&t, &agents, &EMPTY)), first);
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
    let plan = plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 2);
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
    let plan = plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 3);
    assert_eq!(
        plan[0],
        PlannedGrant {
            task_index: 0,
            candidates: vec![],
            explanation: None,
            explores: None,
        }
    );
    assert_eq!(plan[1].candidates, ["a"]);
}

#[test]
fn plan_batch_accounts_for_earlier_tasks_filling_an_agent() {
    let agents = vec![agent("a", res(1000, 0, 0), res(0, 0, 0))];
    let tasks = vec![task("t0", res(600, 0, 0)), task("t1", res(600, 0, 0))];
    let plan = plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 3);
    assert_eq!(plan[0].candidates, ["a"]);
    assert!(plan[1].candidates.is_empty());
}

#[test]
fn plan_batch_does_not_modify_the_callers_agents() {
    let agents = vec![agent("a", res(1000, 0, 0), res(0, 0, 0))];
    let _ = plan_batch(
        &LeastLoaded,
        &[task("t", res(500, 0, 0))],
        &agents,
        &EMPTY,
        1,
    );
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
        plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 2)[0].candidates,
        ["a", "b"]
    );
    assert_eq!(
        plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 10)[0]
            .candidates
            .len(),
        4
    );
    assert!(
        plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 0)[0]
            .candidates
            .is_empty()
    );
}

#[test]
fn plan_batch_handles_empty_inputs() {
    assert!(plan_batch(&LeastLoaded, &[], &[], &EMPTY, 3).is_empty());
    let plan = plan_batch(&LeastLoaded, &[task("t", res(1, 0, 0))], &[], &EMPTY, 3);
    assert!(plan[0].candidates.is_empty());
}

/// A deliberately broken strategy: out-of-range, repeated and non-fitting indexes.
struct Faulty;

impl Strategy for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn scores(
        &self,
        _task: &TaskView,
        _agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        Vec::new()
    }
    fn rank(
        &self,
        _task: &TaskView,
        _agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<usize> {
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
    let plan = plan_batch(&Faulty, &[task("t", res(100, 0, 0))], &agents, &EMPTY, 5);
    assert_eq!(plan[0].candidates, ["b", "a"]);
}

fn fleet(n: usize) -> Vec<AgentView> {
    (0..n)
        .map(|i| agent(&format!("a{i:05}"), res(1000, 1000, 0), res(0, 0, 0)))
        .collect()
}

#[test]
fn default_rank_sorts_scores_then_ties() {
    let mut agents = fleet(3);
    agents[0].active_tasks = 1;
    let t = task("t", res(100, 0, 0));
    // All idle and equal: a00000 has an active task, so it goes last.
    assert_eq!(
        ids(&agents, &LeastLoaded.rank(&t, &agents, &EMPTY)),
        ["a00001", "a00002", "a00000"]
    );
    let scores = LeastLoaded.scores(&t, &agents, &EMPTY);
    assert_eq!(scores.len(), 3);
    assert!((scores[0].score - 0.9).abs() < 1e-12);
    assert_eq!(&*scores[0].agent_id, "a00000");
}

#[test]
fn sample_is_deterministic_distinct_and_fitting() {
    let mut agents = fleet(1000);
    for a in agents.iter_mut().step_by(3) {
        a.reserved = res(1000, 0, 0);
    }
    let t = task("some-task", res(100, 0, 0));
    let sample = sample_candidates(&t, &agents, 64);
    assert_eq!(sample, sample_candidates(&t, &agents, 64));
    assert_eq!(sample.len(), 64);
    let mut unique = sample.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 64);
    assert!(sample.iter().all(|&i| fits(&t, &agents[i])));
    let other = sample_candidates(&task("other-task", res(100, 0, 0)), &agents, 64);
    assert_ne!(sample, other);
}

#[test]
fn sample_finds_the_only_agent_with_room() {
    let mut agents = fleet(999);
    for a in agents.iter_mut() {
        a.reserved = res(1000, 0, 0);
    }
    agents[517].reserved = res(0, 0, 0);
    let t = task("t", res(100, 0, 0));
    assert_eq!(sample_candidates(&t, &agents, 64), [517]);
    assert!(sample_candidates(&t, &agents, 0).is_empty());
    assert!(sample_candidates(&t, &[], 5).is_empty());
}

#[test]
fn sample_of_a_small_fleet_is_all_of_it() {
    for n in 1..12 {
        let agents = fleet(n);
        let mut sample = sample_candidates(&task("t", res(1, 0, 0)), &agents, 100);
        sample.sort_unstable();
        assert_eq!(sample, (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn sampled_plan_ranks_correctly_within_the_sample() {
    let mut agents = fleet(2000);
    for (i, a) in agents.iter_mut().enumerate() {
        a.reserved = res((i % 10) as u64 * 100, 0, 0);
    }
    let t = task("t", res(50, 0, 0));
    let sample = sample_candidates(&t, &agents, SAMPLE_SIZE);
    let best_in_sample = sample
        .iter()
        .map(|&i| &agents[i])
        .min_by(|a, b| a.reserved.cpu.cmp(&b.reserved.cpu).then(compare_tie(a, b)))
        .map(|a| a.agent_id.to_string());
    let plan = plan_batch(&LeastLoaded, std::slice::from_ref(&t), &agents, &EMPTY, 3);
    assert_eq!(plan[0].candidates.first().cloned(), best_in_sample);
    assert_eq!(plan[0].candidates.len(), 3);
    // Every candidate came from the sample.
    assert!(
        plan[0]
            .candidates
            .iter()
            .all(|id| { sample.iter().any(|&i| *agents[i].agent_id == **id) })
    );
}

/// Not timed (timing belongs in a benchmark): a batch over 10,000 agents plans fully and stays
/// within the sample per task.
#[test]
fn large_fleet_batch_plans_from_samples() {
    let agents = fleet(10_000);
    let tasks: Vec<_> = (0..200)
        .map(|i| task(&format!("t{i}"), res(100, 100, 0)))
        .collect();
    let plan = plan_batch(&LeastLoaded, &tasks, &agents, &EMPTY, 3);
    assert_eq!(plan.len(), 200);
    assert!(plan.iter().all(|p| p.candidates.len() == 3));
    let mut firsts: Vec<_> = plan.iter().map(|p| p.candidates[0].clone()).collect();
    firsts.sort_unstable();
    firsts.dedup();
    // Different tasks sample different parts of the fleet, so they spread out.
    assert!(firsts.len() > 150);
}

#[test]
fn plan_batch_with_can_disable_sampling() {
    let mut agents = fleet(300);
    agents[299].reserved = res(0, 0, 0);
    for a in agents.iter_mut().take(299) {
        a.reserved = res(500, 0, 0);
    }
    let t = [task("t", res(100, 0, 0))];
    let full = plan_batch_with(&LeastLoaded, &t, &agents, &EMPTY, 1, usize::MAX, 0);
    assert_eq!(full[0].candidates, ["a00299"]);
}

#[test]
fn agents_a_task_failed_on_are_proposed_last_but_still_proposed() {
    let agents = vec![
        agent("a", res(4000, 0, 0), res(0, 0, 0)),
        agent("b", res(4000, 0, 0), res(1000, 0, 0)),
        agent("c", res(4000, 0, 0), res(2000, 0, 0)),
    ];
    let mut t = task("t", res(1000, 0, 0));
    let plan = |t: &TaskView, cap: usize| {
        plan_batch(&LeastLoaded, std::slice::from_ref(t), &agents, &EMPTY, cap)[0]
            .candidates
            .clone()
    };
    assert_eq!(plan(&t, 3), ["a", "b", "c"]);
    t.avoid_agents = vec!["a".into()];
    assert_eq!(plan(&t, 3), ["b", "c", "a"]);
    assert_eq!(
        plan(&t, 1),
        ["b"],
        "the cap applies after the avoided go last"
    );
    t.avoid_agents = vec!["a".into(), "b".into(), "c".into()];
    assert_eq!(
        plan(&t, 2),
        ["a", "b"],
        "avoided everywhere: the strategy's order"
    );
    let alone = vec![agents[0].clone()];
    t.avoid_agents = vec!["a".into()];
    let planned = plan_batch(&LeastLoaded, std::slice::from_ref(&t), &alone, &EMPTY, 4);
    assert_eq!(
        planned[0].candidates,
        ["a"],
        "a fleet of one still runs the retry"
    );
}

#[test]
fn a_sampled_plan_also_puts_avoided_agents_last() {
    let agents: Vec<AgentView> = (0..8)
        .map(|i| agent(&format!("a{i}"), res(4000, 0, 0), res(0, 0, 0)))
        .collect();
    let mut t = task("t", res(1000, 0, 0));
    let first = plan_batch_with(
        &LeastLoaded,
        std::slice::from_ref(&t),
        &agents,
        &EMPTY,
        2,
        4,
        8,
    );
    let avoided = first[0].candidates[0].clone();
    t.avoid_agents = vec![avoided.clone()];
    let again = plan_batch_with(
        &LeastLoaded,
        std::slice::from_ref(&t),
        &agents,
        &EMPTY,
        2,
        4,
        8,
    );
    assert!(
        !again[0].candidates.contains(&avoided),
        "{:?}",
        again[0].candidates
    );
}
