//! Strategies that decide from what has been learned: adaptive and historical.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Expected duration ratio and success probability of a (task type, agent type) pair.
#[derive(Debug, Clone, Copy)]
struct PairEstimate {
    ratio: f64,
    success: f64,
    /// How often the pair has been tried: its completions or the grants made to explore it,
    /// whichever is more (0 for a pair never granted: the estimate is a prior).
    tries: u64,
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
        PairEstimate {
            ratio,
            success,
            tries: stats.attempts.max(stats.explorations),
        }
    }

    /// Expected time per estimated second, counting retries: `ratio / success`.
    fn cost(self) -> f64 {
        self.ratio / self.success
    }
}

/// The estimate for a pair: learned if it has been observed; otherwise what its agent type did
/// on the other task types ([`transferred`]), starting from the submitter's estimate (ratio 1)
/// and the success of the best pair known for the task type (neutral when nothing is known).
///
/// The estimate is the prior because it is the one thing said about the task before anyone ran
/// it. An unseen pair is then tried as soon as running as estimated beats what is known (the
/// known agents are slower than estimated, or full), or when a task explores it
/// ([`explored_type`]), and not before: on a large fleet, optimism about a type whose first
/// results are still running would send it hundreds of tasks blind (generated workloads with
/// 1,000+ agents went from 11× to 3× the oracle's mean with this).
fn pair_estimate(patterns: &PatternTable, task_type: &str, agent_type: &str) -> PairEstimate {
    let stats = patterns.get(task_type, agent_type);
    if let Some(stats) = stats.filter(|s| s.attempts > 0) {
        return PairEstimate::from_stats(stats);
    }
    let explorations = stats.map_or(0, |s| s.explorations);
    let best_success = patterns
        .for_task(task_type)
        .filter(|(_, s)| s.attempts > 0)
        .map(|(_, s)| PairEstimate::from_stats(s))
        .min_by(|a, b| a.cost().total_cmp(&b.cost()))
        .map_or(NEUTRAL_SCORE, |best| best.success);
    PairEstimate {
        tries: explorations,
        ..transferred(patterns, task_type, agent_type, best_success)
    }
}

/// How many task types' worth of weight the prior (ratio 1, the task type's best success) keeps
/// against what an agent type did on its other task types.
const TRANSFER_PRIOR: f64 = 1.0;

/// An unseen pair's estimate from what its agent type did on the other task types: the mean of
/// its log duration ratios and of its success rates there, shrunk toward the prior as if the
/// prior were [`TRANSFER_PRIOR`] more task types.
///
/// A host that is slow (or flaky) at one kind of work is usually slow (or flaky) at the others
/// (a shared cpu, a congested link, a weak model), so a type seen fast on one task type is tried
/// first on the next; a specialist breaks the rule, and is corrected by its first runs and found
/// by exploration. One task type seen at ratio 0.25 makes the estimate 0.5; two make it 0.4.
fn transferred(
    patterns: &PatternTable,
    task_type: &str,
    agent_type: &str,
    prior_success: f64,
) -> PairEstimate {
    let (mut log_sum, mut timed, mut success_sum, mut seen) = (0.0, 0.0, 0.0, 0.0);
    for (_, stats) in patterns
        .for_agent(agent_type)
        .filter(|(other, stats)| *other != task_type && stats.attempts > 0)
    {
        let pair = PairEstimate::from_stats(stats);
        if stats.successes > 0 {
            log_sum += pair.ratio.ln();
            timed += 1.0;
        }
        success_sum += pair.success;
        seen += 1.0;
    }
    PairEstimate {
        ratio: (log_sum / (timed + TRANSFER_PRIOR)).exp(),
        success: (success_sum + TRANSFER_PRIOR * prior_success) / (seen + TRANSFER_PRIOR),
        tries: 0,
    }
}

/// What adaptive expects of one agent for one task.
#[derive(Debug, Clone, Copy)]
struct Expectation {
    /// Expected run time of one attempt, seconds (in units of the estimate when none is given).
    run_s: f64,
    /// Probability that an attempt succeeds.
    success: f64,
}

impl Expectation {
    /// `estimate × pair ratio × agent pace`, and the pair's success corrected by the agent's own
    /// failure excess; an idle agent's penalties fade with the runs it could have done since it
    /// last ran ([`AgentLearning::faded`](crate::AgentLearning::faded)).
    fn of(task: &TaskView, agent: &AgentView, pair: PairEstimate) -> Expectation {
        let typical_s = estimate_of(task) * pair.ratio;
        let learned = agent.learned.faded(agent.idle_s / typical_s);
        Expectation {
            run_s: typical_s * learned.pace_factor(),
            success: learned.success_given(pair.success, MIN_SUCCESS),
        }
    }

    /// Expected time until an attempt succeeds when each failure costs a whole attempt:
    /// `run / success` (the mean of a geometric number of attempts).
    fn to_success_s(self) -> f64 {
        self.run_s / self.success
    }
}

/// Pair estimates per agent type, looked up once per decision.
struct Pairs<'a> {
    patterns: &'a PatternTable,
    task_type: &'a str,
    by_type: BTreeMap<Arc<str>, PairEstimate>,
}

impl<'a> Pairs<'a> {
    fn new(task: &'a TaskView, ctx: &DecisionContext<'a>) -> Pairs<'a> {
        Pairs {
            patterns: ctx.patterns,
            task_type: &task.task_type,
            by_type: BTreeMap::new(),
        }
    }

    fn pair(&mut self, agent: &AgentView) -> PairEstimate {
        match self.by_type.get(&*agent.agent_type) {
            Some(&pair) => pair,
            None => {
                let pair = pair_estimate(self.patterns, self.task_type, &agent.agent_type);
                self.by_type.insert(agent.agent_type.clone(), pair);
                pair
            }
        }
    }

    fn expect(&mut self, task: &TaskView, agent: &AgentView) -> Expectation {
        let pair = self.pair(agent);
        Expectation::of(task, agent, pair)
    }
}

/// Places each task where it is expected to be **completed successfully soonest**.
///
/// For a task with estimate `T` seconds (1 when not given; common to every candidate) on agent
/// `a` of type `A`, the expected completion is
///
/// `E(a) = wait(a) + T × ratio(task type, A) × pace(a) / success(a)`
///
/// * `ratio` — learned actual / estimated duration of the (task type, agent type) pair
///   ([`PatternStats`]); what a type does, transferable to its new agents;
/// * `pace(a)` — how much slower or faster this agent runs than its type
///   ([`AgentLearning`](crate::AgentLearning)), with a change test that catches an agent that
///   slowed down (or came back) within a few of its runs; while an agent that has changed
///   before runs nothing its penalties fade (halving every 60 runs it could have done), so an
///   agent avoided since it slowed down is tried again in time and seen to have come back;
/// * `success(a)` — the pair's learned success probability less the agent's own failure excess,
///   so `1 / success` is the expected number of attempts: a retry costs a whole attempt;
/// * `wait(a)` — for an agent with room now, a mild load penalty, `× (1 + QUEUE_WEIGHT × peak
///   utilization after placing)` (loaded hosts share cpu, memory and I/O; it also spreads a batch
///   over equals); for a busy agent, see below.
///
/// A new agent of a known type starts as its type (its pace is neutral), so it shares its type's
/// work from its first task. A pair never observed starts from what its agent type did on the
/// other task types, or as estimated when it did nothing yet (see `pair_estimate`): it is tried
/// as soon as that beats the agents known, or they are full, or when one of the tasks that
/// explore takes it (one in `EXPLORE_PERIOD`, see `explored_type`), and is then judged on
/// evidence. The score reported is `1 / E` (higher is better; × `EXPLORE_BOOST` for the type an
/// exploring task explores).
///
/// **Waiting for a busy agent** ([`Strategy::hold_for`]) is decided on the same scale: a busy
/// agent's `E` adds its expected wait — its first slot frees when the soonest of its running
/// tasks ends, about `run / (slots + 1)` for tasks like this one, and every task of the same plan
/// already waiting for it takes one such turn first. The task waits when that `E` is below
/// [`HOLD_GAIN`] times the best `E` among agents with room, and only while fewer tasks wait for
/// that agent than it has slots: the wait is a guess (running tasks' ends are not known), and a
/// queue behind a few fast agents must not clog the dispatch window while slower agents idle. On a large fleet the plan offers the strategy the agents it prefers
/// ([`Strategy::preferences`]) as well as a sample, so waiting for the fastest is decided at any
/// fleet size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Adaptive;

impl Strategy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn uses_patterns(&self) -> bool {
        true
    }

    fn preferences(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Option<Vec<f64>> {
        let mut pairs = Pairs::new(task, ctx);
        Some(
            agents
                .iter()
                .map(|agent| pairs.expect(task, agent).to_success_s())
                .collect(),
        )
    }

    fn hold_for(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
        held: &[u32],
    ) -> Option<usize> {
        let mut pairs = Pairs::new(task, ctx);
        let best_now = fitting(task, agents)
            .map(|(_, agent)| pairs.expect(task, agent).to_success_s() * queue_factor(task, agent))
            .fold(f64::INFINITY, f64::min);
        if !best_now.is_finite() {
            return None; // nothing has room: the task waits anyway
        }
        let idle = Resources::default();
        let (agent, total) = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !fits(task, a) && fits_within(&task.required, &idle, &a.capacity))
            .filter(|&(i, a)| f64::from(held.get(i).copied().unwrap_or(0)) < slots_for(task, a))
            .map(|(i, a)| {
                let expected = pairs.expect(task, a);
                let turns = f64::from(held.get(i).copied().unwrap_or(0)) + 1.0;
                let wait = expected.run_s * turns / (slots_for(task, a) + 1.0);
                (i, wait + expected.to_success_s())
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        (total < HOLD_GAIN * best_now).then_some(agent)
    }

    fn explores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Option<Arc<str>> {
        explored_type(task, agents, &mut Pairs::new(task, ctx))
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        let mut pairs = Pairs::new(task, ctx);
        let explored = explored_type(task, agents, &mut pairs);
        score_fitting(task, agents, |agent| {
            let expected = pairs.expect(task, agent);
            let explore = if explored.as_deref() == Some(&*agent.agent_type) {
                EXPLORE_BOOST
            } else {
                1.0
            };
            explore / (expected.to_success_s() * queue_factor(task, agent))
        })
    }
}

/// One task in this many (by queue sequence) explores; see [`explored_type`].
pub(super) const EXPLORE_PERIOD: u64 = 50;
/// A pair is explored until its record holds this many completions, or this many grants were
/// made to explore it (counted when granted: `PatternStats::explorations`).
pub(super) const EXPLORE_TRIES: u64 = 3;
/// How much an exploring task prefers the agents of the type it explores: enough to outrank
/// any agent that is not much more than a hundred times faster.
const EXPLORE_BOOST: f64 = 100.0;

/// The agent type this task is sent to explore, if it is one of the tasks that explore: every
/// [`EXPLORE_PERIOD`]-th task by queue sequence (so every replica and the simulator agree) goes
/// to an agent type whose pair with the task's type has fewer than [`EXPLORE_TRIES`]
/// completions and exploring grants, taking such types (among the agents it fits on) in turn.
/// The grants count as they are made, so a pair whose runs are long gets its few explorers, not
/// one every fifty tasks until the first of them reports (a generated 68-agent fleet sent 14
/// tasks to explore a type 9× slower before its first run of them ended).
///
/// Without it a pair first judged by its prior can be passed over for good: an unseen type is
/// expected to run as estimated, so once a pair known to beat the estimate exists, a type that
/// would be twice as fast again is never tried (a generated 1,654-agent fleet never gave its
/// fastest type for one task type a single task, and ran 1.72× the oracle's mean over the second
/// half of the run; with exploration, 1.08×). Exploring a few tasks in fifty bounds what trying costs — it is
/// never the blind flood an optimistic prior sends — and stops once every pair has been seen.
fn explored_type(task: &TaskView, agents: &[AgentView], pairs: &mut Pairs<'_>) -> Option<Arc<str>> {
    if task.seq % EXPLORE_PERIOD != 0 {
        return None;
    }
    let mut untried: Vec<Arc<str>> = Vec::new();
    for (_, agent) in fitting(task, agents) {
        let known = untried.iter().any(|t| **t == *agent.agent_type);
        if !known && pairs.pair(agent).tries < EXPLORE_TRIES {
            untried.push(agent.agent_type.clone());
        }
    }
    untried.sort();
    let turn = (task.seq / EXPLORE_PERIOD) as usize % untried.len().max(1);
    untried.get(turn).cloned()
}

/// A task waits for a busy agent only if that is expected to finish it in at most this share of
/// the time the best agent with room would take. Waiting bets on the busy agent's running tasks
/// ending as estimated, and under a steady stream a busy fast agent's next free slot is taken
/// by the next arrival anyway (waiting then only swaps which task runs there, and adds the
/// wait), so it must pay clearly: it pays at the tail of a burst, when the fast agent would
/// otherwise idle. Tuned on generated workloads (seed 1): 0.5 queued too much behind a few
/// fast agents, 0 lost the burst tails.
const HOLD_GAIN: f64 = 0.3;

/// The task's estimate in seconds; 1 when not given (common to every candidate of a decision).
fn estimate_of(task: &TaskView) -> f64 {
    if task.estimated_duration_s.is_finite() && task.estimated_duration_s > 0.0 {
        task.estimated_duration_s
    } else {
        1.0
    }
}

/// `1 + QUEUE_WEIGHT × peak utilization after placing`: the penalty of a loaded agent.
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

/// Places each task with the agent *type* that has done it best so far: the fewest expected
/// seconds per success, from the type's record alone.
///
/// The score is `success rate / duration ratio` of the (task type, agent type) pair — the
/// inverse of the expected time per success counting retries — with the success rate the
/// posterior mean under a uniform Beta(1, 1) prior, `(successes + 1) / (attempts + 2)`, and the
/// ratio the learned actual / estimated duration (1 when unseen): an unseen pair scores 0.5, a
/// pair with 9 successes in 10 at half the estimate about 1.67. Ties (agents of the same type)
/// go to the less loaded agent (peak utilization after placing), then as usual.
///
/// Unlike [`Adaptive`] it does not tell agents of one type apart, explore, or wait for a busy
/// agent: it spreads a type's work evenly over its agents and follows a type's long record, so
/// it suits fleets whose agents of a type are interchangeable and steady.
#[derive(Debug, Clone, Copy, Default)]
pub struct Historical;

/// The pair's `(successes + 1) / (attempts + 2) / duration ratio`; 0.5 when unseen.
fn success_per_time(patterns: &PatternTable, task_type: &str, agent_type: &str) -> f64 {
    patterns.get(task_type, agent_type).map_or(0.5, |s| {
        let success = (s.successes as f64 + 1.0) / (s.attempts as f64 + 2.0);
        let ratio = if s.duration_ratio_ema.is_finite() && s.successes > 0 {
            s.duration_ratio_ema.clamp(1.0 / RATIO_LIMIT, RATIO_LIMIT)
        } else {
            1.0
        };
        success / ratio
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
            success_per_time(ctx.patterns, &task.task_type, &agent.agent_type)
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
