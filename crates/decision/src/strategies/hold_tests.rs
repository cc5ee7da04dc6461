//! When adaptive makes a task wait for a busy agent instead of placing it now.

use super::*;
use crate::{
    AgentView, DecisionContext, PatternStats, PatternTable, Resources, TaskView, plan_batch,
};

/// cpu-only agent: `capacity` and `reserved` in whole cores.
fn agent(id: &str, agent_type: &str, capacity: u64, reserved: u64) -> AgentView {
    let cpu = |cores: u64| Resources {
        cpu: cores * 1000,
        memory: 0,
        tokens: 0,
        time: 0,
    };
    AgentView {
        agent_id: id.into(),
        agent_type: agent_type.into(),
        capacity: cpu(capacity),
        reserved: cpu(reserved),
        score: 0.9,
        priority_weight: 1.0,
        active_tasks: reserved as u32,
        learned: Default::default(),
        idle_s: 0.0,
    }
}

fn task(id: &str) -> TaskView {
    TaskView {
        task_id: id.to_owned(),
        task_type: "job".to_owned(),
        priority: 5,
        required: Resources {
            cpu: 1000,
            memory: 0,
            tokens: 0,
            time: 0,
        },
        seq: 0,
        estimated_duration_s: 10.0,
        avoid_agents: Vec::new(),
    }
}

/// "fast" takes `fast_ratio` of the estimate, "slow" the estimate itself; both always succeed.
fn learned(fast_ratio: f64) -> PatternTable {
    let mut table = PatternTable::new();
    for (agent_type, ratio) in [("fast", fast_ratio), ("slow", 1.0)] {
        let stats = PatternStats {
            attempts: 50,
            successes: 50,
            success_ema: 1.0,
            duration_ratio_ema: ratio,
            explorations: 0,
        };
        table.insert("job", agent_type, stats);
    }
    table
}

fn hold(agents: &[AgentView], patterns: &PatternTable, held: &[u32]) -> Option<String> {
    let ctx = DecisionContext::new(patterns);
    Adaptive
        .hold_for(&task("t"), agents, &ctx, held)
        .map(|i| agents[i].agent_id.to_string())
}

#[test]
fn waits_for_a_busy_agent_that_is_much_faster() {
    let agents = [agent("f", "fast", 4, 4), agent("s", "slow", 4, 0)];
    let patterns = learned(0.1);
    assert_eq!(hold(&agents, &patterns, &[0, 0]).as_deref(), Some("f"));
}

#[test]
fn does_not_wait_for_an_agent_that_is_only_a_little_faster() {
    let agents = [agent("f", "fast", 4, 4), agent("s", "slow", 4, 0)];
    let patterns = learned(0.8);
    assert_eq!(hold(&agents, &patterns, &[0, 0]), None);
}

#[test]
fn stops_waiting_once_the_busy_agents_turns_are_spoken_for() {
    let agents = [agent("f", "fast", 4, 4), agent("s", "slow", 4, 0)];
    let patterns = learned(0.1);
    assert_eq!(hold(&agents, &patterns, &[40, 0]), None);
    // In a plan: the first tasks wait for "f", later ones go to "s" instead of piling up.
    let tasks: Vec<TaskView> = (0..40).map(|i| task(&format!("t{i}"))).collect();
    let plans = plan_batch(
        &Adaptive,
        &tasks,
        &agents,
        &DecisionContext::new(&patterns),
        2,
    );
    let waiting = plans.iter().filter(|p| p.candidates.is_empty()).count();
    assert!(waiting >= 1, "some tasks wait for the fast agent");
    assert!(
        plans
            .iter()
            .any(|p| p.candidates.first().map(String::as_str) == Some("s")),
        "not every task waits"
    );
}

#[test]
fn never_waits_for_an_agent_too_small_for_the_task_or_when_nothing_has_room() {
    let patterns = learned(0.1);
    let too_small = [agent("f", "fast", 0, 0), agent("s", "slow", 4, 0)];
    assert_eq!(hold(&too_small, &patterns, &[0, 0]), None);
    let all_busy = [agent("f", "fast", 4, 4), agent("s", "slow", 4, 4)];
    assert_eq!(hold(&all_busy, &patterns, &[0, 0]), None);
}

#[test]
fn other_strategies_never_wait() {
    let agents = [agent("f", "fast", 4, 4), agent("s", "slow", 4, 0)];
    let patterns = learned(0.1);
    let ctx = DecisionContext::new(&patterns);
    for kind in StrategyKind::ALL {
        if kind == StrategyKind::Adaptive {
            continue;
        }
        assert_eq!(
            kind.build().hold_for(&task("t"), &agents, &ctx, &[0, 0]),
            None
        );
    }
}
