//! Strategies that decide from what has been learned: adaptive and historical.

use std::collections::BTreeMap;

use crate::Resources;
use crate::learning::NEUTRAL_SCORE;
use crate::patterns::{PatternStats, PatternTable};
use crate::placement::{
    AgentView, CandidateScore, DecisionContext, Strategy, TaskView, fits, fitting, reserved_after,
    score_fitting, tie_by_index,
};
use crate::resources::{fits_within, peak_utilization};

/// How much a fully loaded agent's expected time grows (1 + this × peak utilization): loaded
/// agents share cpu, memory and I/O among more work, and a busy agent is likelier to be the one
/// a later, more urgent task needs.
const QUEUE_WEIGHT: f64 = 0.5;
/// Success probabilities are floored here, so a pair that has always failed is very expensive
/// but its expected time stays finite and comparable.
const MIN_SUCCESS: f64 = 0.05;
/// Duration ratios are kept within `[1 / this, this]`, so one absurd report cannot dominate.
const RATIO_LIMIT: f64 = 1000.0;
/// An unexplored (task type, agent type) pair is assumed this much faster than the best known
/// pair for the task type: optimism that makes it be tried, once, before being judged.
const EXPLORE_FACTOR: f64 = 0.9;

/// Expected duration ratio and success probability of a (task type, agent type) pair.
#[derive(Debug, Clone, Copy)]
struct PairEstimate {
    ratio: f64,
    success: f64,
}

impl PairEstimate {
    fn from_stats(stats: &PatternStats) -> PairEstimate {
        let ratio = if stats.duration_ratio_ema.is_finite() {
            stats
                .duration_ratio_ema
                .clamp(1.0 / RATIO_LIMIT, RATIO_LIMIT)
        } else {
            1.0
        };
        let success = if stats.success_ema.is_finite() {
            stats.success_ema.clamp(MIN_SUCCESS, 1.0)
        } else {
            NEUTRAL_SCORE
        };
        PairEstimate { ratio, success }
    }

    /// Expected time per estimated second, counting retries: `ratio / success`.
    fn cost(self) -> f64 {
        self.ratio / self.success
    }
}

/// The estimate for a pair: learned if it has been observed; otherwise optimistic — a little
/// better than the best pair known for the task type (neutral when nothing is known), so it gets
/// explored instead of starved behind pairs that merely have a history.
fn pair_estimate(patterns: &PatternTable, task_type: &str, agent_type: &str) -> PairEstimate {
    if let Some(stats) = patterns
        .get(task_type, agent_type)
        .filter(|s| s.attempts > 0)
    {
        return PairEstimate::from_stats(stats);
    }
    let best = patterns
        .for_task(task_type)
        .filter(|(_, s)| s.attempts > 0)
        .map(|(_, s)| PairEstimate::from_stats(s))
        .min_by(|a, b| a.cost().total_cmp(&b.cost()));
    match best {
        Some(best) => PairEstimate {
            ratio: best.ratio * EXPLORE_FACTOR,
            success: best.success,
        },
        None => PairEstimate {
            ratio: 1.0,
            success: NEUTRAL_SCORE,
        },
    }
}

/// Whether the agent has never completed anything: its score is still exactly the neutral prior
/// it was registered with (any completion moves it).
fn is_new(agent: &AgentView) -> bool {
    (agent.score - NEUTRAL_SCORE).abs() < 1e-12
}

/// Clamps a score to `[0, 1]`; non-finite reads as neutral.
fn clean_score(score: f64) -> f64 {
    if score.is_finite() {
        score.clamp(0.0, 1.0)
    } else {
        NEUTRAL_SCORE
    }
}

/// Highest score among the experienced candidates of each agent type.
fn best_score_by_type<'a>(task: &TaskView, agents: &'a [AgentView]) -> BTreeMap<&'a str, f64> {
    let mut best: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, agent) in fitting(task, agents).filter(|(_, a)| !is_new(a)) {
        let entry = best.entry(&*agent.agent_type).or_insert(0.0);
        *entry = entry.max(clean_score(agent.score));
    }
    best
}

/// The agent's speed relative to the best of its type, in `(0, 1]`:
/// `(0.5 + score) / (0.5 + best score of the type)`. Patterns already say how good the *type*
/// is; this only marks individual agents that do worse than their peers (degrading, overloaded
/// hosts). A new agent is assumed as good as the best of its type, so it is explored.
fn agent_factor(agent: &AgentView, best_of_type: &BTreeMap<&str, f64>) -> f64 {
    if is_new(agent) {
        return 1.0;
    }
    let score = clean_score(agent.score);
    let best = best_of_type
        .get(&*agent.agent_type)
        .copied()
        .unwrap_or(score)
        .max(score);
    (0.5 + score) / (0.5 + best)
}

/// Places each task where it is expected to complete successfully soonest.
///
/// For a task with estimate `T` seconds (1 when not given; it is common to every candidate, so it
/// never changes the ranking) on agent `a` of type `A`:
///
/// `E = T × ratio(task type, A) × (1 + 0.5 × peak utilization of a after placing)
///      / (speed(a) × success(task type, A))`
///
/// * `ratio` — learned actual / estimated duration of the pair ([`PatternStats`]);
/// * `success` — learned success probability of the pair, so `1 / success` is the expected number
///   of attempts with retries;
/// * `speed(a)` — the agent's score relative to the best of its type (see below), catching
///   individual agents that degrade;
/// * the utilization term — a queueing penalty that spreads work when the best agents fill up.
///
/// Pairs never observed are assumed 10% better than the best known pair for the task type, and
/// agents that have never completed anything as good as the best of their type, so both get
/// tried and then judged on evidence instead of being starved by agents that merely have a
/// history. The score reported is `1 / E` (higher is better).
///
/// **Waiting for a busy agent** ([`Strategy::hold_for`]). Placing now is not always fastest: when
/// an agent that has no room now is expected to finish the task in at most half the time of the
/// best agent with room, counting its wait, the task stays queued for it. The wait is estimated
/// without knowing when running tasks end: its first slot frees when the soonest of its running
/// tasks does, about `run / (slots + 1)` for tasks like this one (`run` = this task's expected time
/// there, `slots` = how many such tasks it holds), and every task of the same plan already
/// waiting for it takes one such turn first, so a popular agent stops attracting waiters.
/// Only full plans (up to 256 agents) consider it: a sampled plan ranks agents with room only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Adaptive;

impl Strategy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn uses_patterns(&self) -> bool {
        true
    }

    fn hold_for(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
        held: &[u32],
    ) -> Option<usize> {
        let best_of_type = best_score_by_type(task, agents);
        let cost = |agent: &AgentView| {
            let pair = pair_estimate(ctx.patterns, &task.task_type, &agent.agent_type);
            estimate_of(task) * pair.cost() / agent_factor(agent, &best_of_type)
        };
        let best_now = fitting(task, agents)
            .map(|(_, agent)| cost(agent) * queue_factor(task, agent))
            .fold(f64::INFINITY, f64::min);
        if !best_now.is_finite() {
            return None; // nothing has room: the task waits anyway
        }
        let idle = Resources::default();
        let (agent, total) = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !fits(task, a) && fits_within(&task.required, &idle, &a.capacity))
            .map(|(i, a)| {
                let run = cost(a);
                // Its first slot frees when the soonest of its running tasks ends (about
                // run / (slots + 1) for tasks like this one), and each task already waiting for
                // it takes one such turn first.
                let turns = f64::from(held.get(i).copied().unwrap_or(0)) + 1.0;
                (i, run + run * turns / (slots_for(task, a) + 1.0))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        (total < HOLD_GAIN * best_now).then_some(agent)
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        let estimate = estimate_of(task);
        let best_of_type = best_score_by_type(task, agents);
        let mut pairs: BTreeMap<&str, PairEstimate> = BTreeMap::new();
        for (_, agent) in fitting(task, agents) {
            pairs
                .entry(&*agent.agent_type)
                .or_insert_with(|| pair_estimate(ctx.patterns, &task.task_type, &agent.agent_type));
        }
        score_fitting(task, agents, |agent| {
            let pair = pairs
                .get(&*agent.agent_type)
                .copied()
                .unwrap_or_else(|| pair_estimate(ctx.patterns, &task.task_type, &agent.agent_type));
            let speed = agent_factor(agent, &best_of_type);
            let expected = estimate * pair.cost() * queue_factor(task, agent) / speed;
            1.0 / expected
        })
    }
}

/// A task waits for a busy agent only if that is expected to finish it in at most this share of
/// the time the best agent with room would take: waiting bets on the busy agent's running tasks
/// ending as estimated, so it must pay clearly.
const HOLD_GAIN: f64 = 0.5;

/// The task's estimate in seconds; 1 when not given (common to every candidate of a decision).
fn estimate_of(task: &TaskView) -> f64 {
    if task.estimated_duration_s.is_finite() && task.estimated_duration_s > 0.0 {
        task.estimated_duration_s
    } else {
        1.0
    }
}

/// `1 + 0.5 × peak utilization after placing`: the queueing penalty of a loaded agent.
fn queue_factor(task: &TaskView, agent: &AgentView) -> f64 {
    let load = peak_utilization(&reserved_after(task, agent), &agent.capacity);
    1.0 + QUEUE_WEIGHT * load.clamp(0.0, 1.0)
}

/// How many tasks like this one the agent holds at once when empty (at least 1).
fn slots_for(task: &TaskView, agent: &AgentView) -> f64 {
    agent
        .capacity
        .iter()
        .filter_map(|(kind, cap)| {
            let need = task.required.get(kind);
            (need > 0).then(|| (cap / need) as f64)
        })
        .fold(f64::INFINITY, f64::min)
        .clamp(1.0, 1.0e6)
}

/// Places each task with the agent type that has succeeded at it most often.
///
/// The score is the posterior mean success rate of the (task type, agent type) pair under a
/// uniform Beta(1, 1) prior, `(successes + 1) / (attempts + 2)`: an unseen pair scores 0.5, a pair
/// with 2 successes in 10 scores 0.25, one with 9 in 10 about 0.83. Ties (agents of the same
/// type) go to the less loaded agent (peak utilization after placing), then as usual.
#[derive(Debug, Clone, Copy, Default)]
pub struct Historical;

/// `(successes + 1) / (attempts + 2)` for the pair; 0.5 when unseen.
fn success_rate(patterns: &PatternTable, task_type: &str, agent_type: &str) -> f64 {
    patterns.get(task_type, agent_type).map_or(0.5, |s| {
        (s.successes as f64 + 1.0) / (s.attempts as f64 + 2.0)
    })
}

impl Strategy for Historical {
    fn name(&self) -> &'static str {
        "historical"
    }

    fn uses_patterns(&self) -> bool {
        true
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        score_fitting(task, agents, |agent| {
            success_rate(ctx.patterns, &task.task_type, &agent.agent_type)
        })
    }

    fn rank(&self, task: &TaskView, agents: &[AgentView], ctx: &DecisionContext<'_>) -> Vec<usize> {
        let load = |i: usize| {
            agents.get(i).map_or(f64::INFINITY, |a| {
                peak_utilization(&reserved_after(task, a), &a.capacity)
            })
        };
        let mut scored: Vec<(CandidateScore, f64)> = self
            .scores(task, agents, ctx)
            .into_iter()
            .map(|c| {
                let l = load(c.index);
                (c, l)
            })
            .collect();
        scored.sort_by(|(a, load_a), (b, load_b)| {
            b.score
                .total_cmp(&a.score)
                .then(load_a.total_cmp(load_b))
                .then_with(|| tie_by_index(agents, a.index, b.index))
        });
        scored.into_iter().map(|(c, _)| c.index).collect()
    }
}
