//! `switchyard decision-cost`: wall-clock cost of one placement decision per strategy and fleet
//! size, so "decisions must not cost time linear in the fleet" is a measurement, not a claim.
//! Decisions run through the real `plan_batch` (with its sampling above 256 agents) on
//! synthetic fleets with learned patterns; nothing here touches NATS or Redis.

use std::time::{Duration, Instant};

use serde::Serialize;

use switchyard_decision::{
    AgentView, DecisionContext, PatternTable, Resources, StrategyKind, TaskView, plan_batch,
};
use switchyard_sim::rng::SplitMix;

/// Tasks planned per batch, as the optimizer's default dispatch window.
const BATCH: usize = 128;

#[derive(Debug, Clone, Serialize)]
pub struct DecisionCost {
    pub strategy: String,
    pub agents: usize,
    /// Mean wall-clock microseconds per task decision.
    pub micros_per_decision: f64,
}

fn fleet(n: usize, rng: &mut SplitMix) -> Vec<AgentView> {
    (0..n)
        .map(|i| {
            let capacity = Resources {
                cpu: 8_000,
                memory: 16_384_000,
                tokens: 50_000_000,
                time: 0,
            };
            let reserved = Resources {
                cpu: rng.range_inclusive(0, 6) * 1000,
                memory: rng.range_inclusive(0, 12) * 1_024_000,
                tokens: 0,
                time: 0,
            };
            AgentView {
                agent_id: format!("agent-{i:05}").into(),
                agent_type: ["llm", "backend", "data"][i % 3].into(),
                capacity,
                reserved,
                score: rng.range(0.3, 0.9),
                priority_weight: 1.0,
                active_tasks: (reserved.cpu / 1000) as u32,
                learned: Default::default(),
                idle_s: 0.0,
            }
        })
        .collect()
}

fn tasks(rng: &mut SplitMix) -> Vec<TaskView> {
    (0..BATCH)
        .map(|i| TaskView {
            task_id: format!("task-{i}"),
            task_type: ["summarize", "compile", "etl"][i % 3].to_string(),
            priority: (rng.next_u64() % 11) as u8,
            required: Resources {
                cpu: 1000,
                memory: 1_024_000,
                tokens: 0,
                time: 0,
            },
            seq: i as u64,
            estimated_duration_s: rng.range(1.0, 60.0),
            avoid_agents: Vec::new(),
        })
        .collect()
}

fn learned_patterns(rng: &mut SplitMix) -> PatternTable {
    let mut table = PatternTable::new();
    for task_type in ["summarize", "compile", "etl"] {
        for agent_type in ["llm", "backend", "data"] {
            for _ in 0..20 {
                let ok = rng.next_u64() % 10 < 8;
                table.record(task_type, agent_type, ok, 10.0, rng.range(5.0, 20.0), 0.1);
            }
        }
    }
    table
}

/// Measures each strategy at each fleet size for at least `budget` per point.
pub fn measure(fleet_sizes: &[usize], budget: Duration) -> Vec<DecisionCost> {
    let mut rng = SplitMix::new(7);
    let patterns = learned_patterns(&mut rng);
    let ctx = DecisionContext::new(&patterns);
    let batch = tasks(&mut rng);
    let mut out = Vec::new();
    for &n in fleet_sizes {
        let agents = fleet(n, &mut rng);
        for kind in StrategyKind::ALL {
            let strategy = kind.build();
            let started = Instant::now();
            let mut decisions = 0usize;
            while started.elapsed() < budget || decisions == 0 {
                let plan = plan_batch(strategy.as_ref(), &batch, &agents, &ctx, 4);
                decisions += plan.len();
            }
            let micros = started.elapsed().as_secs_f64() * 1e6 / decisions as f64;
            out.push(DecisionCost {
                strategy: kind.as_str().to_string(),
                agents: n,
                micros_per_decision: micros,
            });
        }
    }
    out
}
