//! Adaptive's expected completion and the per-agent learning behind it, on hand-built histories:
//! who wins and why.

use super::learned::{EXPLORE_PERIOD, EXPLORE_TRIES};
use super::*;
use crate::{
    AgentLearning, AgentView, Completion, DecisionContext, PatternStats, PatternTable, Resources,
    TaskView, plan_batch,
};

fn cpu(cores: u64) -> Resources {
    Resources {
        cpu: cores * 1000,
        ..Resources::default()
    }
}

/// An agent with 4 cores, `busy` of them reserved.
fn agent(id: &str, agent_type: &str, busy: u64) -> AgentView {
    AgentView {
        agent_id: id.into(),
        agent_type: agent_type.into(),
        capacity: cpu(4),
        reserved: cpu(busy),
        score: 0.5,
        priority_weight: 1.0,
        active_tasks: busy as u32,
        learned: AgentLearning::default(),
        idle_s: 0.0,
    }
}

fn task(id: &str) -> TaskView {
    TaskView {
        task_id: id.to_owned(),
        task_type: "job".to_owned(),
        priority: 5,
        required: cpu(1),
        seq: 1, // not a multiple of EXPLORE_PERIOD: an ordinary, not an exploring, task
        estimated_duration_s: 10.0,
        avoid_agents: Vec::new(),
    }
}

fn pattern(ratio: f64, success: f64) -> PatternStats {
    PatternStats {
        attempts: 100,
        successes: (100.0 * success) as u64,
        success_ema: success,
        duration_ratio_ema: ratio,
        explorations: 0,
    }
}

fn one_type(ratio: f64, success: f64) -> PatternTable {
    let mut table = PatternTable::new();
    table.insert("job", "w", pattern(ratio, success));
    table
}

fn ranked(agents: &[AgentView], patterns: &PatternTable) -> Vec<String> {
    Adaptive
        .rank(&task("t"), agents, &DecisionContext::new(patterns))
        .into_iter()
        .map(|i| agents[i].agent_id.to_string())
        .collect()
}

/// Feeds `runs` (actual seconds of 10-second tasks; negative: a failure) into `learning` as the
/// completion script would, against a type that runs as estimated and succeeds 95% of the time.
fn history(learning: &mut AgentLearning, runs: &[f64]) {
    for &actual in runs {
        let done = Completion {
            success: actual >= 0.0,
            estimated_s: 10.0,
            actual_s: actual.abs(),
        };
        learning.record(done, 1.0, 0.95, 0.1);
    }
}

#[test]
fn expected_completion_is_estimate_times_ratio_times_pace_over_success() {
    let patterns = one_type(2.0, 0.8);
    let mut a = agent("a", "w", 0);
    a.learned.pace = 1.5_f64.ln();
    let scores = Adaptive.scores(&task("t"), &[a], &DecisionContext::new(&patterns));
    // 10 s × ratio 2 × pace 1.5 / success 0.8 = 37.5 s, × (1 + 0.5 × 1/4 load after placing).
    let expected = 37.5 * (1.0 + 0.5 * 0.25);
    assert!((1.0 / scores[0].score - expected).abs() < 1e-9);
}

#[test]
fn a_degraded_agent_loses_its_work_after_one_slow_run() {
    let patterns = one_type(1.0, 0.95);
    let (mut a, b) = (agent("a", "w", 0), agent("b", "w", 1));
    history(&mut a.learned, &[10.0; 20]);
    // Healthy, and idler: a first.
    assert_eq!(ranked(&[a.clone(), b.clone()], &patterns), ["a", "b"]);
    // One run eight times slower is enough: the change test restarts a's pace from it.
    history(&mut a.learned, &[80.0]);
    assert_eq!(a.learned.drifts, 1);
    assert_eq!(ranked(&[a.clone(), b.clone()], &patterns), ["b", "a"]);
    // Back to normal: two on-time runs and a is preferred again.
    history(&mut a.learned, &[10.0, 10.0]);
    assert_eq!(ranked(&[a, b], &patterns), ["a", "b"]);
}

#[test]
fn an_avoided_agent_is_tried_again_once_it_has_been_idle_long_enough() {
    let patterns = one_type(1.0, 0.95);
    // a slowed down 8× (and was caught); b runs twice as slow as its type, steadily.
    let (mut a, mut b) = (agent("a", "w", 0), agent("b", "w", 0));
    history(&mut a.learned, &[10.0; 20]);
    history(&mut a.learned, &[80.0]);
    history(&mut b.learned, &[20.0; 20]);
    let idle = |mut a: AgentView, runs: f64| {
        a.idle_s = runs * 10.0; // runs of this 10-second task on a type at ratio 1
        a
    };
    // Freshly judged, a is expected at 80 s against b's 20 s.
    assert_eq!(ranked(&[a.clone(), b.clone()], &patterns), ["b", "a"]);
    // The penalty halves (in log-duration) every 60 runs a could have done while idle: after
    // 80 runs it is expected at 8^0.40 = 2.3× (still behind b), after 110 at 8^0.28 = 1.8×.
    assert_eq!(
        ranked(&[idle(a.clone(), 80.0), b.clone()], &patterns),
        ["b", "a"]
    );
    assert_eq!(
        ranked(&[idle(a.clone(), 110.0), b.clone()], &patterns),
        ["a", "b"]
    );
    // What is stored is untouched: one more slow run, and a is avoided again.
    history(&mut a.learned, &[80.0]);
    assert_eq!(ranked(&[a, b], &patterns), ["b", "a"]);
}

#[test]
fn an_agent_that_started_failing_loses_to_its_peers_until_it_recovers() {
    let patterns = one_type(1.0, 0.95);
    let (mut a, b) = (agent("a", "w", 0), agent("b", "w", 1));
    history(&mut a.learned, &[10.0; 10]);
    history(&mut a.learned, &[-10.0, -10.0]);
    // Two failures where its type fails one time in twenty: b, though busier, is expected sooner.
    assert_eq!(ranked(&[a.clone(), b.clone()], &patterns), ["b", "a"]);
    history(&mut a.learned, &[10.0; 6]);
    assert_eq!(ranked(&[a, b], &patterns), ["a", "b"]);
}

#[test]
fn a_retry_costs_a_whole_attempt() {
    let mut patterns = PatternTable::new();
    // "quick" runs in half the time but succeeds only 45%: 0.5 / 0.45 = 1.11 attempts' worth,
    // more than steady's 1.0.
    patterns.insert("job", "quick", pattern(0.5, 0.45));
    patterns.insert("job", "steady", pattern(1.0, 1.0));
    let agents = [agent("q", "quick", 0), agent("s", "steady", 0)];
    assert_eq!(ranked(&agents, &patterns), ["s", "q"]);
    patterns.insert("job", "quick", pattern(0.5, 0.6));
    assert_eq!(ranked(&agents, &patterns), ["q", "s"]);
}

#[test]
fn historical_counts_duration_as_well_as_success() {
    let mut patterns = PatternTable::new();
    // "sure" never fails at the estimate; "swift" fails one run in ten at half of it:
    // (90 + 1) / 102 / 0.5 = 1.78 against (100 + 1) / 102 / 1.0 = 0.99.
    patterns.insert("job", "sure", pattern(1.0, 1.0));
    patterns.insert("job", "swift", pattern(0.5, 0.9));
    let agents = [agent("a", "sure", 0), agent("b", "swift", 0)];
    let order: Vec<usize> = Historical.rank(&task("t"), &agents, &DecisionContext::new(&patterns));
    assert_eq!(order, [1, 0]);
}

/// 1,000 agents of type "slow" and, at the end of the fleet, 4 of type "fast" (`fast_busy`
/// cores of 4 reserved on each), "fast" running in `fast_ratio` of the time.
fn large_fleet(fast_busy: u64, fast_ratio: f64) -> (Vec<AgentView>, PatternTable) {
    let mut agents: Vec<AgentView> = (0..1000)
        .map(|i| agent(&format!("slow-{i:04}"), "slow", 0))
        .collect();
    agents.extend((0..4).map(|i| agent(&format!("zfast-{i}"), "fast", fast_busy)));
    let mut patterns = PatternTable::new();
    patterns.insert("job", "slow", pattern(1.0, 1.0));
    patterns.insert("job", "fast", pattern(fast_ratio, 1.0));
    (agents, patterns)
}

#[test]
fn a_large_fleet_does_not_lose_its_fastest_agents_to_sampling() {
    let (agents, patterns) = large_fleet(0, 0.5);
    let tasks: Vec<TaskView> = (0..8).map(|i| task(&format!("t{i}"))).collect();
    let plans = plan_batch(
        &Adaptive,
        &tasks,
        &agents,
        &DecisionContext::new(&patterns),
        4,
    );
    // A 64-agent sample would hold a fast agent for about one task in four; the preference
    // order offers them to every task, and the batch fills the 16 fast cores first.
    for plan in &plans {
        assert!(plan.candidates[0].starts_with("zfast"), "{plan:?}");
    }
}

#[test]
fn a_large_fleet_waits_for_a_much_faster_busy_agent() {
    let (agents, patterns) = large_fleet(4, 0.1);
    let ctx = DecisionContext::new(&patterns);
    let plans = plan_batch(&Adaptive, &[task("t")], &agents, &ctx, 4);
    // Every fast agent is full, and one ten times faster is worth waiting for.
    assert!(plans[0].candidates.is_empty(), "{plans:?}");
    // Only twice as fast: not worth the wait, the task goes to a slow agent now.
    let (agents, patterns) = large_fleet(4, 0.5);
    let plans = plan_batch(
        &Adaptive,
        &[task("t")],
        &agents,
        &DecisionContext::new(&patterns),
        4,
    );
    assert!(plans[0].candidates[0].starts_with("slow"), "{plans:?}");
}

/// `task("t")` with queue sequence `seq`, ranked among `agents`.
fn ranked_at(seq: u64, agents: &[AgentView], patterns: &PatternTable) -> Vec<String> {
    let task = TaskView { seq, ..task("t") };
    Adaptive
        .rank(&task, agents, &DecisionContext::new(patterns))
        .into_iter()
        .map(|i| agents[i].agent_id.to_string())
        .collect()
}

#[test]
fn an_unseen_type_is_explored_by_one_task_in_fifty() {
    // "w" is known to beat the estimate; "new" has never run a job, so it is expected to run as
    // estimated and loses every ordinary decision.
    let patterns = one_type(0.6, 1.0);
    let agents = [agent("w1", "w", 0), agent("n1", "new", 0)];
    assert_eq!(ranked_at(1, &agents, &patterns), ["w1", "n1"]);
    assert_eq!(
        ranked_at(EXPLORE_PERIOD + 1, &agents, &patterns),
        ["w1", "n1"]
    );
    assert_eq!(ranked_at(EXPLORE_PERIOD, &agents, &patterns), ["n1", "w1"]);
}

#[test]
fn exploration_stops_once_a_pair_has_been_seen_enough() {
    let mut patterns = one_type(0.6, 1.0);
    let slow = PatternStats {
        attempts: EXPLORE_TRIES,
        successes: EXPLORE_TRIES,
        success_ema: 1.0,
        duration_ratio_ema: 2.0,
        explorations: 0,
    };
    patterns.insert("job", "new", slow.clone());
    let agents = [agent("w1", "w", 0), agent("n1", "new", 0)];
    assert_eq!(ranked_at(EXPLORE_PERIOD, &agents, &patterns), ["w1", "n1"]);
    // One completion fewer and the slow-looking pair is still explored.
    let fewer = PatternStats {
        attempts: EXPLORE_TRIES - 1,
        successes: EXPLORE_TRIES - 1,
        ..slow
    };
    patterns.insert("job", "new", fewer);
    assert_eq!(ranked_at(EXPLORE_PERIOD, &agents, &patterns), ["n1", "w1"]);
}

#[test]
fn exploration_stops_after_a_few_exploring_grants_whose_runs_are_still_out() {
    // "new" has never completed a job, but EXPLORE_TRIES tasks were granted to explore it: its
    // runs are long, and more explorers sent now would only pile up behind them.
    let mut patterns = one_type(0.6, 1.0);
    let sent = |explorations| PatternStats {
        explorations,
        ..PatternStats::neutral()
    };
    patterns.insert("job", "new", sent(EXPLORE_TRIES));
    let agents = [agent("w1", "w", 0), agent("n1", "new", 0)];
    let task = TaskView {
        seq: EXPLORE_PERIOD,
        ..task("t")
    };
    let ctx = DecisionContext::new(&patterns);
    assert_eq!(ranked_at(EXPLORE_PERIOD, &agents, &patterns), ["w1", "n1"]);
    assert_eq!(Adaptive.explores(&task, &agents, &ctx), None);
    // One exploring grant fewer and the task is sent to explore "new".
    patterns.insert("job", "new", sent(EXPLORE_TRIES - 1));
    let ctx = DecisionContext::new(&patterns);
    assert_eq!(ranked_at(EXPLORE_PERIOD, &agents, &patterns), ["n1", "w1"]);
    assert_eq!(
        Adaptive.explores(&task, &agents, &ctx).as_deref(),
        Some("new")
    );
    // An ordinary task explores nothing.
    let ordinary = TaskView { seq: 1, ..task };
    assert_eq!(Adaptive.explores(&ordinary, &agents, &ctx), None);
}

#[test]
fn exploring_tasks_take_the_untried_types_in_turn() {
    let patterns = one_type(0.6, 1.0);
    let agents = [
        agent("w1", "w", 0),
        agent("x1", "x", 0),
        agent("y1", "y", 0),
    ];
    let first = |seq| ranked_at(seq, &agents, &patterns)[0].clone();
    assert_eq!(first(EXPLORE_PERIOD), "y1");
    assert_eq!(first(2 * EXPLORE_PERIOD), "x1");
    assert_eq!(first(3 * EXPLORE_PERIOD), "y1");
    assert_eq!(first(3 * EXPLORE_PERIOD + 1), "w1");
}

#[test]
fn an_unseen_pair_starts_from_what_its_type_did_on_other_task_types() {
    // "fast" ran another task type at a quarter of its estimate and has never run a job; "w"
    // runs jobs at 0.6. Shrunk toward the estimate as one more task type, "fast" is expected at
    // exp(ln 0.25 / 2) = 0.5 and is tried first. Without its record it would be 1.0 and lose.
    let mut patterns = one_type(0.6, 1.0);
    patterns.insert("other", "fast", pattern(0.25, 1.0));
    let agents = [agent("w1", "w", 0), agent("f1", "fast", 0)];
    assert_eq!(ranked(&agents, &patterns), ["f1", "w1"]);
    // Both at a quarter of their capacity after placing: × 1.125 each.
    let expected = expected_seconds(&agents, &patterns);
    assert!((expected["f1"] - 10.0 * 0.5 * 1.125).abs() < 1e-9);
    assert!((expected["w1"] - 10.0 * 0.6 * 1.125).abs() < 1e-9);
}

/// Adaptive's expected seconds (the inverse of its score) for an ordinary task, per agent id.
fn expected_seconds(
    agents: &[AgentView],
    patterns: &PatternTable,
) -> std::collections::BTreeMap<String, f64> {
    Adaptive
        .scores(&task("t"), agents, &DecisionContext::new(patterns))
        .into_iter()
        .map(|c| (c.agent_id.to_string(), 1.0 / c.score))
        .collect()
}

#[test]
fn a_type_flaky_elsewhere_is_not_trusted_on_a_new_task_type() {
    // "flaky" succeeds 20% of the time on another task type: on jobs, its success starts at
    // the mean of that and the best job pair's 1.0, so it is expected at 10 / 0.6 s.
    let mut patterns = one_type(1.2, 1.0);
    patterns.insert("other", "flaky", pattern(1.0, 0.2));
    let agents = [agent("w1", "w", 0), agent("k1", "flaky", 0)];
    assert_eq!(ranked(&agents, &patterns), ["w1", "k1"]);
    let expected = expected_seconds(&agents, &patterns);
    assert!((expected["k1"] - 10.0 / 0.6 * 1.125).abs() < 1e-9);
}
