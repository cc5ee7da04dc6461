//! Pattern learning: how well each agent type does each task type.
//!
//! Agent scores ([`super::learning`]) say how good one agent is overall; patterns say how good a
//! whole *type* of agent is at a *type* of task, which transfers to agents never seen before and
//! is what the historical and adaptive strategies decide by. The table is plain data: callers load
//! it from Redis (or the simulator builds it) and pass it in through
//! [`DecisionContext`](super::DecisionContext).

use std::collections::BTreeMap;

/// What has been learned about one (task type, agent type) pair.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatternStats {
    /// Completions observed, successful or not.
    pub attempts: u64,
    /// Successful completions observed.
    pub successes: u64,
    /// Moving average of success (1) and failure (0), starting from a neutral 0.5.
    pub success_ema: f64,
    /// Moving average of actual / estimated duration over successes; 1.0 is "as estimated",
    /// 0.5 "twice as fast", 3.0 "three times slower".
    pub duration_ratio_ema: f64,
    /// Grants made to explore the pair (adaptive's exploring tasks), counted when granted, so
    /// exploring stops after a few tries even while their runs are still out.
    #[serde(default)]
    pub explorations: u64,
}

/// Prior of `success_ema`: no evidence either way.
const NEUTRAL_SUCCESS: f64 = 0.5;
/// Prior of `duration_ratio_ema`: runs as estimated.
const NEUTRAL_RATIO: f64 = 1.0;

impl PatternStats {
    /// The neutral prior a pair starts from before its first observation.
    pub fn neutral() -> PatternStats {
        PatternStats {
            attempts: 0,
            successes: 0,
            success_ema: NEUTRAL_SUCCESS,
            duration_ratio_ema: NEUTRAL_RATIO,
            explorations: 0,
        }
    }

    /// Folds one completion in.
    ///
    /// The rate is `max(learning_rate, 1 / (n + 1))` with `n` the observations so far including
    /// this one: while there are few observations the average is the plain mean of the prior
    /// (weighted as one observation) and the observations, so a pair is judged on evidence after
    /// a handful of runs instead of crawling away from the prior at `learning_rate`; later it is a
    /// true moving average that follows change (an agent type degrading) at `learning_rate`.
    /// Durations are learned from successes only, since a failed run's duration says little
    /// about how long the work takes; unknown (non-positive or non-finite) durations are skipped.
    pub fn record(&mut self, success: bool, estimated_s: f64, actual_s: f64, learning_rate: f64) {
        self.attempts = self.attempts.saturating_add(1);
        let x = if success { 1.0 } else { 0.0 };
        let rate = warm_rate(learning_rate, self.attempts);
        self.success_ema += rate * (x - self.success_ema);
        if !success {
            return;
        }
        self.successes = self.successes.saturating_add(1);
        let ratio = actual_s / estimated_s;
        if estimated_s > 0.0 && actual_s > 0.0 && ratio.is_finite() {
            let rate = warm_rate(learning_rate, self.successes);
            self.duration_ratio_ema += rate * (ratio - self.duration_ratio_ema);
        }
    }
}

/// `max(learning_rate, 1 / (n + 1))`, kept within [0, 1]; a non-finite rate learns nothing
/// beyond the warm-up mean.
fn warm_rate(learning_rate: f64, observations: u64) -> f64 {
    let warm = 1.0 / (observations as f64 + 1.0);
    let lr = if learning_rate.is_finite() {
        learning_rate.clamp(0.0, 1.0)
    } else {
        0.0
    };
    lr.max(warm)
}

/// Learned [`PatternStats`] keyed by (task type, agent type).
///
/// Nested ordered maps: lookups borrow `&str` without allocating, iteration order is
/// deterministic, and an empty table can be a `static` (see
/// [`DecisionContext::empty`](super::DecisionContext::empty)).
#[derive(Debug, Clone, Default)]
pub struct PatternTable {
    by_task: BTreeMap<String, BTreeMap<String, PatternStats>>,
}

impl PatternTable {
    /// An empty table; `const` so it can back a `static`.
    pub const fn new() -> PatternTable {
        PatternTable {
            by_task: BTreeMap::new(),
        }
    }

    /// What is known about the pair, if it was ever observed or inserted.
    pub fn get(&self, task_type: &str, agent_type: &str) -> Option<&PatternStats> {
        self.by_task.get(task_type)?.get(agent_type)
    }

    /// Every agent type known for `task_type`, with its stats, in agent-type order.
    pub fn for_task(&self, task_type: &str) -> impl Iterator<Item = (&str, &PatternStats)> {
        self.by_task
            .get(task_type)
            .into_iter()
            .flat_map(|m| m.iter().map(|(agent, stats)| (agent.as_str(), stats)))
    }

    /// Every task type `agent_type` is known for, with its stats, in task-type order.
    pub fn for_agent<'a>(
        &'a self,
        agent_type: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a PatternStats)> + 'a {
        self.by_task
            .iter()
            .filter_map(move |(task, agents)| agents.get(agent_type).map(|s| (task.as_str(), s)))
    }

    /// Folds one completion of `task_type` on an `agent_type` agent in; a pair seen for the
    /// first time starts from [`PatternStats::neutral`]. See [`PatternStats::record`].
    pub fn record(
        &mut self,
        task_type: &str,
        agent_type: &str,
        success: bool,
        estimated_s: f64,
        actual_s: f64,
        learning_rate: f64,
    ) {
        self.pair_mut(task_type, agent_type)
            .record(success, estimated_s, actual_s, learning_rate);
    }

    /// Counts a grant made to explore the pair (a pair seen for the first time starts from
    /// [`PatternStats::neutral`]).
    pub fn record_exploration(&mut self, task_type: &str, agent_type: &str) {
        let stats = self.pair_mut(task_type, agent_type);
        stats.explorations = stats.explorations.saturating_add(1);
    }

    /// The pair's stats, starting from [`PatternStats::neutral`] when it is new.
    fn pair_mut(&mut self, task_type: &str, agent_type: &str) -> &mut PatternStats {
        self.by_task
            .entry(task_type.to_owned())
            .or_default()
            .entry(agent_type.to_owned())
            .or_insert_with(PatternStats::neutral)
    }

    /// Sets the pair's stats, e.g. as loaded from Redis.
    pub fn insert(&mut self, task_type: &str, agent_type: &str, stats: PatternStats) {
        self.by_task
            .entry(task_type.to_owned())
            .or_default()
            .insert(agent_type.to_owned(), stats);
    }

    /// All pairs as `(task_type, agent_type, stats)`, ordered by task type then agent type.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &PatternStats)> {
        self.by_task.iter().flat_map(|(task, agents)| {
            agents
                .iter()
                .map(move |(agent, stats)| (task.as_str(), agent.as_str(), stats))
        })
    }

    /// Number of pairs known.
    pub fn len(&self) -> usize {
        self.by_task.values().map(BTreeMap::len).sum()
    }

    /// Whether no pair is known.
    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pair_is_none() {
        let table = PatternTable::new();
        assert!(table.get("build", "gpu").is_none());
        assert!(table.is_empty());
    }

    #[test]
    fn first_observation_starts_from_the_neutral_prior() {
        let mut table = PatternTable::new();
        table.record("build", "gpu", true, 10.0, 5.0, 0.5);
        let stats = table.get("build", "gpu").cloned().unwrap_or_default();
        assert_eq!(stats.attempts, 1);
        assert_eq!(stats.successes, 1);
        assert_eq!(stats.success_ema, 0.75); // 0.5 + 0.5 * (1 - 0.5)
        assert_eq!(stats.duration_ratio_ema, 0.75); // 1.0 + 0.5 * (0.5 - 1.0)
    }

    #[test]
    fn warm_up_is_the_mean_with_the_prior() {
        let mut stats = PatternStats::neutral();
        for _ in 0..3 {
            stats.record(true, 10.0, 30.0, 0.01);
        }
        // Prior 1.0 and three ratios of 3.0, equally weighted.
        assert!((stats.duration_ratio_ema - 2.5).abs() < 1e-12);
        // Prior 0.5 and three successes.
        assert!((stats.success_ema - 0.875).abs() < 1e-12);
    }

    #[test]
    fn later_observations_move_at_the_learning_rate() {
        let mut stats = PatternStats::neutral();
        for _ in 0..20 {
            stats.record(true, 1.0, 1.0, 0.25);
        }
        let before = stats.success_ema;
        stats.record(false, 1.0, 1.0, 0.25);
        assert!((stats.success_ema - 0.75 * before).abs() < 1e-12);
    }

    #[test]
    fn failures_count_but_do_not_teach_duration() {
        let mut table = PatternTable::new();
        table.record("t", "a", false, 10.0, 1.0, 0.5);
        let stats = table.get("t", "a").cloned().unwrap_or_default();
        assert_eq!((stats.attempts, stats.successes), (1, 0));
        assert_eq!(stats.success_ema, 0.25);
        assert_eq!(stats.duration_ratio_ema, 1.0);
    }

    #[test]
    fn unknown_durations_are_skipped() {
        let mut stats = PatternStats::neutral();
        stats.record(true, 0.0, 5.0, 0.5);
        stats.record(true, 5.0, 0.0, 0.5);
        stats.record(true, f64::MIN_POSITIVE, f64::MAX, 0.5);
        assert_eq!(stats.duration_ratio_ema, 1.0);
        assert_eq!(stats.successes, 3);
    }

    #[test]
    fn converges_to_a_steady_success_rate() {
        let mut stats = PatternStats::neutral();
        for i in 0..2000 {
            stats.record(i % 5 == 0, 1.0, 1.0, 0.05);
        }
        assert!((stats.success_ema - 0.2).abs() < 0.05);
    }

    #[test]
    fn insert_get_and_iterate_in_order() {
        let mut table = PatternTable::new();
        let stats = PatternStats {
            attempts: 4,
            successes: 3,
            success_ema: 0.7,
            duration_ratio_ema: 1.2,
            explorations: 0,
        };
        table.insert("z", "b", stats.clone());
        table.insert("a", "y", PatternStats::neutral());
        table.insert("z", "a", PatternStats::default());
        assert_eq!(table.get("z", "b"), Some(&stats));
        let keys: Vec<_> = table.iter().map(|(t, a, _)| (t, a)).collect();
        assert_eq!(keys, [("a", "y"), ("z", "a"), ("z", "b")]);
        assert_eq!(table.len(), 3);
        let agents: Vec<_> = table.for_task("z").map(|(a, _)| a).collect();
        assert_eq!(agents, ["a", "b"]);
        assert_eq!(table.for_task("none").count(), 0);
    }

    #[test]
    fn stats_round_trip_through_json() {
        let stats = PatternStats {
            attempts: 2,
            successes: 1,
            success_ema: 0.5,
            duration_ratio_ema: 2.0,
            explorations: 0,
        };
        let json = serde_json::to_string(&stats).unwrap_or_default();
        let back: PatternStats = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, stats);
    }
}
