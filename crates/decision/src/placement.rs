//! Choosing agents for tasks.
//!
//! Placement works on plain snapshots ([`AgentView`], [`TaskView`]) read from Redis by the
//! caller, plus what has been learned ([`DecisionContext`]), and produces a *proposal*: for each
//! task, a short list of candidate agents, best first. Nothing here reserves anything. The Redis
//! grant script re-checks capacity atomically at grant time and falls back to later candidates,
//! so a stale snapshot or a racing optimizer replica costs at most a fallback, never an
//! over-commitment.

use std::cmp::Ordering;
use std::sync::Arc;

use super::learning::AgentLearning;
use super::patterns::PatternTable;
use super::resources::{Resources, fits_within, peak_utilization};

mod explain;
mod hold;
mod plan;

pub use explain::Explanation;
pub use hold::{HeadHold, beside_hold, choose_hold_agent, may_backfill, shortfall};
pub use plan::{
    PlannedGrant, SAMPLE_ABOVE, SAMPLE_SIZE, plan_batch, plan_batch_explained, plan_batch_with,
    sample_candidates,
};

/// A snapshot of one agent as placement sees it.
///
/// The id and type are shared strings: a sampled decision copies the views it ranks, and a copy
/// should cost a reference count, not two allocations.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// Unique agent id.
    pub agent_id: Arc<str>,
    /// The agent's declared type; available to strategies that match tasks to agent types.
    pub agent_type: Arc<str>,
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
    /// What has been learned about this agent beyond its type (pace, failures, drift); neutral
    /// for a new agent.
    pub learned: AgentLearning,
    /// Seconds since the agent last finished an attempt, while none of its runs is out (0 while
    /// one is, or when it never ran): how old what has been learned about it is.
    pub idle_s: f64,
}

/// A snapshot of one task waiting to be placed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// Unique task id.
    pub task_id: String,
    /// The task's type; available to strategies that match tasks to agent types.
    pub task_type: String,
    /// Priority, higher first; the caller orders a batch by it.
    pub priority: u8,
    /// Resources the task needs, milli-units.
    pub required: Resources,
    /// FIFO sequence number given at submission (`queue_seq` in Redis). The same on every
    /// replica, so strategies that rotate (round-robin) need no shared cursor.
    pub seq: u64,
    /// The submitter's estimate of the run time, seconds; 0 when not given.
    pub estimated_duration_s: f64,
    /// Agents whose attempts at this task failed (a retried task): placement proposes them
    /// last, after every other agent the task fits on, but does not exclude them, so a fleet of
    /// one still runs the retry. Empty for a first attempt.
    pub avoid_agents: Vec<String>,
}

impl TaskView {
    /// Whether an attempt of this task already failed on `agent_id`.
    pub fn avoids(&self, agent_id: &str) -> bool {
        self.avoid_agents.iter().any(|a| a == agent_id)
    }
}

/// What has been learned, passed to every decision.
///
/// Strategies must not keep state of their own (replicas would disagree); anything learned lives
/// in Redis and reaches them through here.
#[derive(Debug, Clone, Copy)]
pub struct DecisionContext<'a> {
    /// Success and duration per (task type, agent type).
    pub patterns: &'a PatternTable,
}

/// Backs [`DecisionContext::empty`].
static EMPTY_PATTERNS: PatternTable = PatternTable::new();

impl<'a> DecisionContext<'a> {
    /// A context over the given patterns.
    pub fn new(patterns: &'a PatternTable) -> DecisionContext<'a> {
        DecisionContext { patterns }
    }
}

impl DecisionContext<'static> {
    /// A context that knows nothing yet: every learned strategy falls back to its priors.
    pub fn empty() -> DecisionContext<'static> {
        DecisionContext {
            patterns: &EMPTY_PATTERNS,
        }
    }
}

/// One candidate's score, as a strategy ranks it and as `explain` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CandidateScore {
    /// Index of the agent in the slice the strategy was given.
    pub index: usize,
    /// The agent's id, so an explanation stands on its own. Shared with the [`AgentView`] it
    /// scores; serialized as a plain string.
    #[serde(serialize_with = "serialize_shared_str")]
    pub agent_id: Arc<str>,
    /// Higher is better; comparable only among candidates of the same decision.
    pub score: f64,
}

/// Serializes an `Arc<str>` as the string itself (serde's `rc` feature is not enabled).
fn serialize_shared_str<S: serde::Serializer>(
    value: &Arc<str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

/// A placement policy: the seam where strategies plug in.
///
/// [`LeastLoaded`] is the default; the others live in
/// [`strategies`](super::strategies) and are selected by
/// [`StrategyKind`](super::StrategyKind). The optimizer and [`plan_batch`] only ever see
/// `&dyn Strategy`. Implementations must be pure and deterministic (no clock, no randomness, no
/// state of their own; anything varying comes in through the task, the agents or the
/// [`DecisionContext`]) so that every replica, the simulator and the tests decide alike.
pub trait Strategy: Send + Sync {
    /// A stable name for configuration, logs and metrics labels.
    fn name(&self) -> &'static str;

    /// Scores of the agents the task fits on (higher is better), for ranking and `explain`.
    ///
    /// Only agents where the task fits (see [`fits_within`]) may appear, each at most once.
    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore>;

    /// Whether this strategy reads learned patterns; callers skip loading them otherwise.
    fn uses_patterns(&self) -> bool {
        false
    }

    /// Whether the task should wait for a busy agent instead of going to one with room now:
    /// the index of the agent it waits for, or `None` (the default: never wait).
    /// `held[i]` counts the tasks of this plan already waiting for agent `i`, so a strategy can
    /// tell that a popular agent's future room is spoken for. Only full (unsampled) plans ask.
    fn hold_for(
        &self,
        _task: &TaskView,
        _agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
        _held: &[u32],
    ) -> Option<usize> {
        None
    }

    /// How much the strategy would prefer each agent for `task` if it were idle, lower is
    /// better (one value per agent, in order), or `None` (the default) when it has no such
    /// order. A large fleet is ranked on a sample; with preferences, the plan also offers the
    /// strategy the most preferred agents (with room, and busy ones for [`Strategy::hold_for`]),
    /// so the best agents are not lost to sampling. Must not depend on the agents' load, so one
    /// order serves a whole batch. Called once per task type per batch, over the whole fleet:
    /// keep it to a few operations per agent.
    fn preferences(
        &self,
        _task: &TaskView,
        _agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Option<Vec<f64>> {
        None
    }

    /// The agent type `task` is sent to try, when the strategy explores (a grant to an agent of
    /// that type is counted in the pair's
    /// [`PatternStats::explorations`](crate::PatternStats::explorations)), or `None` (the
    /// default).
    fn explores(
        &self,
        _task: &TaskView,
        _agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Option<Arc<str>> {
        None
    }

    /// Agents that can take the task, best first, as indexes into `agents`.
    ///
    /// The default sorts [`Strategy::scores`] descending, ties to fewer active tasks, then the
    /// lower agent id, so the same snapshot always gives the same answer.
    fn rank(&self, task: &TaskView, agents: &[AgentView], ctx: &DecisionContext<'_>) -> Vec<usize> {
        rank_by_score(self.scores(task, agents, ctx), agents)
    }
}

/// Sorts candidates best first: higher score, then fewer active tasks, then lower agent id.
pub(crate) fn rank_by_score(mut scored: Vec<CandidateScore>, agents: &[AgentView]) -> Vec<usize> {
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| tie_by_index(agents, a.index, b.index))
    });
    scored.into_iter().map(|c| c.index).collect()
}

/// [`compare_tie`] between two agents given by index; out-of-range indexes sort last.
pub(crate) fn tie_by_index(agents: &[AgentView], a: usize, b: usize) -> Ordering {
    match (agents.get(a), agents.get(b)) {
        (Some(x), Some(y)) => compare_tie(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(&b),
    }
}

/// Deterministic tie-break between two equally scored agents.
pub(crate) fn compare_tie(a: &AgentView, b: &AgentView) -> Ordering {
    a.active_tasks
        .cmp(&b.active_tasks)
        .then_with(|| a.agent_id.cmp(&b.agent_id))
}

/// Whether the task fits on the agent's free capacity.
pub(crate) fn fits(task: &TaskView, agent: &AgentView) -> bool {
    fits_within(&task.required, &agent.reserved, &agent.capacity)
}

/// The agents the task fits on, with their indexes.
pub(crate) fn fitting<'a>(
    task: &TaskView,
    agents: &'a [AgentView],
) -> impl Iterator<Item = (usize, &'a AgentView)> {
    agents
        .iter()
        .enumerate()
        .filter(move |(_, agent)| fits(task, agent))
}

/// What the agent would have reserved after taking the task.
pub(crate) fn reserved_after(task: &TaskView, agent: &AgentView) -> Resources {
    agent.reserved.saturating_add(&task.required)
}

/// Scores every agent the task fits on with `score(agent)`.
pub(crate) fn score_fitting(
    task: &TaskView,
    agents: &[AgentView],
    mut score: impl FnMut(&AgentView) -> f64,
) -> Vec<CandidateScore> {
    fitting(task, agents)
        .map(|(index, agent)| CandidateScore {
            index,
            agent_id: agent.agent_id.clone(),
            score: score(agent),
        })
        .collect()
}

/// Places each task where it leaves the fleet most evenly loaded.
///
/// The score is `1 - peak utilization after taking the task`: the bottleneck kind is what limits
/// further placements, so a task heavy in one kind goes where that kind has room, and a small
/// agent is not treated as empty just because its other kinds are idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl Strategy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn scores(
        &self,
        task: &TaskView,
        agents: &[AgentView],
        _ctx: &DecisionContext<'_>,
    ) -> Vec<CandidateScore> {
        score_fitting(task, agents, |agent| {
            1.0 - peak_utilization(&reserved_after(task, agent), &agent.capacity)
        })
    }
}

#[cfg(test)]
mod tests;
