//! Who wins and why, per strategy, on hand-built snapshots.

use super::*;
use crate::{
    AgentView, DecisionContext, LeastLoaded, PatternStats, PatternTable, Resources, TaskView,
    plan_batch,
};

fn res(cpu: u64, memory: u64, tokens: u64) -> Resources {
    Resources {
        cpu,
        memory,
        tokens,
        time: 0,
    }
}

fn agent(id: &str, agent_type: &str, reserved_cpu: u64) -> AgentView {
    AgentView {
        agent_id: id.into(),
        agent_type: agent_type.into(),
        capacity: res(1000, 1000, 0),
        reserved: res(reserved_cpu, 0, 0),
        score: 0.9,
        priority_weight: 1.0,
        active_tasks: 0,
        learned: Default::default(),
        idle_s: 0.0,
    }
}

/// `seq` 0 is one of the tasks adaptive explores with (a multiple of its period); adaptive tests
/// that rank by expectation use 1.
fn task(id: &str, priority: u8, seq: u64) -> TaskView {
    TaskView {
        task_id: id.to_owned(),
        task_type: "build".to_owned(),
        priority,
        required: res(100, 0, 0),
        seq,
        estimated_duration_s: 10.0,
        avoid_agents: Vec::new(),
    }
}

fn stats(attempts: u64, successes: u64, success_ema: f64, ratio: f64) -> PatternStats {
    PatternStats {
        attempts,
        successes,
        success_ema,
        duration_ratio_ema: ratio,
        explorations: 0,
    }
}

fn ranked(s: &dyn Strategy, t: &TaskView, agents: &[AgentView], p: &PatternTable) -> Vec<String> {
    s.rank(t, agents, &DecisionContext::new(p))
        .into_iter()
        .map(|i| agents[i].agent_id.to_string())
        .collect()
}

fn first(s: &dyn Strategy, t: &TaskView, agents: &[AgentView], p: &PatternTable) -> String {
    ranked(s, t, agents, p)
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[test]
fn kinds_round_trip_and_build_matching_strategies() {
    for kind in StrategyKind::ALL {
        assert_eq!(StrategyKind::parse(kind.as_str()), Some(kind));
        assert_eq!(kind.build().name(), kind.as_str());
        assert_eq!(kind.to_string().parse::<StrategyKind>(), Ok(kind));
        let json = serde_json::to_string(&kind).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
    }
    assert_eq!(StrategyKind::default(), StrategyKind::LeastLoaded);
}

#[test]
fn parse_accepts_the_seed_spelling() {
    assert_eq!(
        StrategyKind::parse("ROUND_ROBIN"),
        Some(StrategyKind::RoundRobin)
    );
    assert_eq!(
        StrategyKind::parse("Priority-Based"),
        Some(StrategyKind::PriorityBased)
    );
    assert_eq!(
        StrategyKind::parse(" adaptive "),
        Some(StrategyKind::Adaptive)
    );
    assert_eq!(StrategyKind::parse("fastest"), None);
    assert!("".parse::<StrategyKind>().is_err());
}

#[test]
fn round_robin_rotates_with_seq() {
    let agents = vec![agent("c", "w", 0), agent("a", "w", 0), agent("b", "w", 0)];
    let p = PatternTable::new();
    assert_eq!(
        ranked(&RoundRobin, &task("t", 5, 0), &agents, &p),
        ["a", "b", "c"]
    );
    assert_eq!(
        ranked(&RoundRobin, &task("t", 5, 1), &agents, &p),
        ["b", "c", "a"]
    );
    assert_eq!(
        ranked(&RoundRobin, &task("t", 5, 5), &agents, &p),
        ["c", "a", "b"]
    );
}

#[test]
fn round_robin_ignores_load_and_skips_full_agents() {
    let agents = vec![agent("a", "w", 950), agent("b", "w", 0), agent("c", "w", 0)];
    let p = PatternTable::new();
    // "a" cannot take 100 more; the turn goes round the two that can.
    assert_eq!(
        ranked(&RoundRobin, &task("t", 5, 0), &agents, &p),
        ["b", "c"]
    );
    assert_eq!(
        ranked(&RoundRobin, &task("t", 5, 1), &agents, &p),
        ["c", "b"]
    );
    let busy = vec![agent("a", "w", 800), agent("b", "w", 0)];
    assert_eq!(first(&RoundRobin, &task("t", 5, 0), &busy, &p), "a");
}

#[test]
fn round_robin_spreads_a_batch_evenly() {
    let agents: Vec<_> = ["a", "b", "c"].iter().map(|id| agent(id, "w", 0)).collect();
    let tasks: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), 5, i)).collect();
    let plan = plan_batch(&RoundRobin, &tasks, &agents, &DecisionContext::empty(), 1);
    let firsts: Vec<_> = plan.iter().map(|p| p.candidates[0].as_str()).collect();
    assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn priority_based_gives_urgent_work_the_best_agent() {
    let mut agents = vec![agent("star", "w", 600), agent("plain", "w", 0)];
    agents[0].score = 0.95;
    agents[1].score = 0.4;
    let p = PatternTable::new();
    // Priority 9: the best agent, although it is busier.
    assert_eq!(first(&PriorityBased, &task("t", 9, 0), &agents, &p), "star");
    // Priority 1: the emptier agent, keeping the star free.
    assert_eq!(
        first(&PriorityBased, &task("t", 1, 0), &agents, &p),
        "plain"
    );
}

#[test]
fn priority_based_routine_work_leaves_the_best_free() {
    let mut agents = vec![agent("star", "w", 0), agent("plain", "w", 0)];
    agents[0].score = 0.95;
    agents[1].score = 0.4;
    let p = PatternTable::new();
    assert_eq!(
        first(&PriorityBased, &task("t", 2, 0), &agents, &p),
        "plain"
    );
    assert_eq!(first(&PriorityBased, &task("t", 8, 0), &agents, &p), "star");
}

#[test]
fn priority_based_counts_the_operator_weight() {
    let mut agents = vec![agent("scored", "w", 0), agent("weighted", "w", 0)];
    agents[0].score = 0.9;
    agents[1].score = 0.6;
    agents[1].priority_weight = 2.0;
    let p = PatternTable::new();
    assert_eq!(
        first(&PriorityBased, &task("t", 10, 0), &agents, &p),
        "weighted"
    );
}

#[test]
fn load_balanced_uses_the_mean_not_the_peak() {
    let cap = res(1000, 1000, 1000);
    let mut one_kind_busy = agent("one_kind_busy", "w", 0);
    one_kind_busy.capacity = cap;
    one_kind_busy.reserved = res(800, 0, 0); // after: cpu 0.9, mean 0.3
    let mut evenly_busy = agent("evenly_busy", "w", 0);
    evenly_busy.capacity = cap;
    evenly_busy.reserved = res(500, 500, 500); // after: peak 0.6, mean 0.53
    let agents = vec![one_kind_busy, evenly_busy];
    let t = task("t", 5, 0);
    let p = PatternTable::new();
    assert_eq!(first(&LoadBalanced, &t, &agents, &p), "one_kind_busy");
    assert_eq!(first(&LeastLoaded, &t, &agents, &p), "evenly_busy");
}

fn fast_and_slow() -> PatternTable {
    let mut p = PatternTable::new();
    p.insert("build", "fast", stats(20, 18, 0.9, 0.5));
    p.insert("build", "slow", stats(20, 18, 0.9, 1.5));
    p
}

#[test]
fn adaptive_prefers_a_three_times_faster_type_even_when_busier() {
    let agents = vec![agent("s", "slow", 0), agent("f", "fast", 700)];
    assert_eq!(
        first(&Adaptive, &task("t", 5, 1), &agents, &fast_and_slow()),
        "f"
    );
    // Without history the busy agent loses: only load tells them apart.
    assert_eq!(
        first(&Adaptive, &task("t", 5, 1), &agents, &PatternTable::new()),
        "s"
    );
}

#[test]
fn adaptive_weighs_success_probability() {
    let mut p = PatternTable::new();
    p.insert("build", "flaky", stats(20, 4, 0.2, 0.8));
    p.insert("build", "steady", stats(20, 19, 0.95, 1.0));
    let agents = vec![agent("x", "flaky", 0), agent("y", "steady", 0)];
    // Flaky is a bit faster per run but needs ~5 attempts: 0.8 / 0.2 > 1.0 / 0.95.
    assert_eq!(first(&Adaptive, &task("t", 5, 1), &agents, &p), "y");
}

#[test]
fn adaptive_explores_an_unseen_agent_type() {
    let mut p = PatternTable::new();
    // The known type runs 1.5× the estimate: an unseen type, expected at the estimate, is tried.
    p.insert("build", "known", stats(50, 49, 0.98, 1.5));
    let agents = vec![agent("k", "known", 0), agent("n", "novel", 0)];
    assert_eq!(first(&Adaptive, &task("t", 5, 1), &agents, &p), "n");
    // Once tried and found slow, it is judged on the evidence.
    p.insert("build", "novel", stats(1, 1, 0.75, 2.0));
    assert_eq!(first(&Adaptive, &task("t", 5, 1), &agents, &p), "k");
    // A known type faster than estimated keeps the work while it has room; the unseen type
    // gets what does not fit there.
    let mut p = PatternTable::new();
    p.insert("build", "known", stats(50, 49, 0.98, 0.6));
    assert_eq!(first(&Adaptive, &task("t", 5, 1), &agents, &p), "k");
    let agents = vec![agent("k", "known", 1000), agent("n", "novel", 0)];
    assert_eq!(first(&Adaptive, &task("t", 5, 1), &agents, &p), "n");
}

#[test]
fn adaptive_explores_a_new_agent_and_avoids_a_degraded_one() {
    let p = fast_and_slow();
    let mut agents = vec![
        agent("best", "fast", 0),
        agent("worn", "fast", 0),
        agent("new", "fast", 0),
    ];
    // "worn" has been running 3× slower than its type; "new" has no record of its own.
    agents[1].learned.pace = 3.0_f64.ln();
    agents[1].learned.observations = 5;
    agents[0].active_tasks = 1;
    let t = task("t", 5, 0);
    // "new" is taken to be as good as its type (and has fewer tasks); "worn" comes last
    // although its type is the fast one.
    assert_eq!(ranked(&Adaptive, &t, &agents, &p), ["new", "best", "worn"]);
    let scores = Adaptive.scores(&t, &agents, &DecisionContext::new(&p));
    assert_eq!(scores[0].score, scores[2].score);
    assert!((scores[0].score / scores[1].score - 3.0).abs() < 1e-9);
}

#[test]
fn adaptive_score_is_the_inverse_expected_time() {
    let mut p = PatternTable::new();
    p.insert("build", "w", stats(10, 10, 1.0, 2.0));
    let agents = vec![agent("a", "w", 0)];
    let scores = Adaptive.scores(&task("t", 5, 0), &agents, &DecisionContext::new(&p));
    // E = 10 s × ratio 2 × (1 + 0.5 × 0.1) / (speed 1 × success 1) = 21 s.
    assert!((1.0 / scores[0].score - 21.0).abs() < 1e-9);
}

#[test]
fn historical_avoids_a_pair_that_mostly_fails() {
    let mut p = PatternTable::new();
    p.insert("build", "risky", stats(10, 2, 0.2, 1.0));
    let agents = vec![agent("r", "risky", 0), agent("u", "unseen", 500)];
    // risky: (2 + 1) / (10 + 2) = 0.25 < unseen 0.5, despite its lower load.
    assert_eq!(first(&Historical, &task("t", 5, 0), &agents, &p), "u");
    p.insert("build", "risky", stats(10, 9, 0.9, 1.0));
    assert_eq!(first(&Historical, &task("t", 5, 0), &agents, &p), "r");
}

#[test]
fn historical_breaks_ties_by_load() {
    let agents = vec![
        agent("a", "w", 600),
        agent("b", "w", 100),
        agent("c", "w", 300),
    ];
    let t = task("t", 5, 0);
    let p = fast_and_slow();
    assert_eq!(ranked(&Historical, &t, &agents, &p), ["b", "c", "a"]);
    let scores = Historical.scores(&t, &agents, &DecisionContext::new(&p));
    assert!(scores.iter().all(|c| c.score == 0.5));
}

fn mixed_fleet() -> Vec<AgentView> {
    let mut agents = vec![
        agent("a1", "fast", 300),
        agent("a2", "slow", 0),
        agent("a3", "fast", 950),
        agent("a4", "slow", 500),
        agent("a5", "fast", 0),
    ];
    agents[3].score = 0.5;
    agents[4].score = 0.2;
    agents[1].priority_weight = 3.0;
    agents
}

#[test]
fn every_strategy_scores_exactly_the_fitting_agents() {
    let agents = mixed_fleet();
    let p = fast_and_slow();
    let ctx = DecisionContext::new(&p);
    for kind in StrategyKind::ALL {
        let s = kind.build();
        for priority in [0, 5, 10] {
            let t = task("t", priority, 3);
            let mut scored: Vec<_> = s
                .scores(&t, &agents, &ctx)
                .iter()
                .map(|c| c.index)
                .collect();
            scored.sort_unstable();
            assert_eq!(scored, [0, 1, 3, 4], "{kind}");
            let mut ranked = s.rank(&t, &agents, &ctx);
            ranked.sort_unstable();
            assert_eq!(ranked, [0, 1, 3, 4], "{kind}");
        }
    }
}

#[test]
fn every_strategy_is_independent_of_input_order() {
    let agents = mixed_fleet();
    let mut reversed = agents.clone();
    reversed.reverse();
    let p = fast_and_slow();
    for kind in StrategyKind::ALL {
        let s = kind.build();
        for seq in 0..4 {
            let t = task("t", 6, seq);
            assert_eq!(
                ranked(s.as_ref(), &t, &agents, &p),
                ranked(s.as_ref(), &t, &reversed, &p),
                "{kind}"
            );
        }
    }
}

#[test]
fn strategies_cope_with_garbled_inputs() {
    let mut agents = mixed_fleet();
    agents[0].score = f64::NAN;
    agents[1].priority_weight = f64::INFINITY;
    let mut p = PatternTable::new();
    p.insert("build", "fast", stats(3, 1, f64::NAN, f64::INFINITY));
    let mut t = task("t", 9, 0);
    t.estimated_duration_s = f64::NAN;
    for kind in StrategyKind::ALL {
        let scores = kind.build().scores(&t, &agents, &DecisionContext::new(&p));
        assert_eq!(scores.len(), 4, "{kind}");
        assert!(scores.iter().all(|c| !c.score.is_nan()), "{kind}");
    }
}

#[test]
fn kinds_and_built_strategies_agree_on_reading_patterns() {
    for kind in StrategyKind::ALL {
        assert_eq!(kind.uses_patterns(), kind.build().uses_patterns(), "{kind}");
    }
}
