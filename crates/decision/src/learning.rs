//! Performance scores: how an agent's score learns from each completion.
//!
//! The Redis script `complete_task.lua` applies this update atomically in production; this is the
//! reference it must match, so the simulator and the tests learn exactly as the live system does.

/// The score a new agent starts from: no evidence either way, so neither favoured nor starved.
pub const NEUTRAL_SCORE: f64 = 0.5;

/// The agent score after one completion: an exponential moving average of outcomes.
///
/// The outcome is `x = min(1, estimated / actual)` on success (1 when either duration is unknown,
/// i.e. not positive) and `0` on failure, so the score rewards both succeeding and finishing
/// within the estimate; finishing early earns no more than finishing on time, which keeps
/// generous estimates from inflating a score. The result is `score + lr * (x - score)`, the
/// same arithmetic as `complete_task.lua` (which stores the result with Lua's 14 significant
/// digits, so the two agree to that precision).
pub fn updated_score(
    score: f64,
    learning_rate: f64,
    success: bool,
    estimated_s: f64,
    actual_s: f64,
) -> f64 {
    let x = if !success {
        0.0
    } else if estimated_s > 0.0 && actual_s > 0.0 {
        (estimated_s / actual_s).min(1.0)
    } else {
        1.0
    };
    score + learning_rate * (x - score)
}

/// Weight of the newest completion in the fast estimates behind the change test: fast enough
/// that one run of a newly 8× slower agent moves it by half the gap.
const FAST_RATE: f64 = 0.5;
/// The change test fires when the fast and slow pace estimates differ by more than this many
/// standard deviations of the fast one (the noise the agent has shown)...
const DRIFT_SIGMAS: f64 = 3.0;
/// ...and by at least this much in log-duration (×1.3): smaller shifts are left to the slow
/// estimate, which follows them within a few runs anyway.
const DRIFT_MIN_LOG: f64 = 0.262_364_264_467_491;
/// Log-durations are kept within ±ln(1000), so one absurd report cannot dominate.
const LOG_LIMIT: f64 = 6.907_755_278_982_137;
/// An avoided agent's penalties halve every this many runs it could have done while idle
/// ([`AgentLearning::faded`]). Measured (release build, `sim --workload`) on the shipped
/// `recovering` fleet (its fastest agent 8× slower for 100 s, 40% load; five seeds): 30 runs took
/// 19% off adaptive's mean, 60 17%, 120 13%. Trying again an agent that stays slow (the same
/// fleet, no recovery) cost 0.7%, 0.5% and 0.3%; `degrading` over twelve seeds +0.2%, +0.1%, 0.
pub const FADE_HALF_LIFE_RUNS: f64 = 60.0;
/// Weight of the newest attempt in the agent's failure excess: three failures in a row of an
/// agent whose type almost never fails bring its expected success to about a third.
const FAILURE_RATE: f64 = 0.3;

/// What has been learned about one agent beyond its type: how much slower or faster than its
/// type's pattern it runs (its *pace*), how much more often it fails, and whether that changed.
///
/// Patterns ([`crate::PatternTable`]) say how a *type* of agent does a type of task; agents of a
/// type differ (a host degrades, a model endpoint slows, a worker starts failing), and a type
/// average learned over hundreds of runs hides that for a long time. So each agent keeps its
/// residual against its type, in log-duration (a multiplicative model: a 2× slower agent is 2×
/// slower at every task type):
///
/// * `pace` — the estimate placement uses, `ln(actual / (estimated × type ratio))` averaged at
///   `max(learning_rate, 1 / (n + 1))` like patterns;
/// * `pace_fast` — the same at rate 0.5, and `pace_var` the noise the agent has shown: the
///   **change test**. When the two differ by more than 3 standard deviations of the fast one
///   (and at least ×1.3), the agent changed: the estimates restart from the newest run (what
///   came before describes another agent), the warm-up starts again, and `drifts` counts it. An agent that became 8× slower is caught at its first completion after the change, one
///   2× slower within two or three, and one that comes back is caught the same way;
/// * `failure_excess` — a moving average (rate 0.3) of `failed − (1 − type success)`: zero for an
///   agent failing as often as its type, up to 1 for one that fails where its type succeeds.
///
/// The same arithmetic runs in `complete_tasks.lua`, as the score's does.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentLearning {
    /// Successful completions with known durations folded into `pace` since the last change.
    pub observations: u64,
    /// Log-duration residual against the agent's type, as placement uses it (0: as its type).
    pub pace: f64,
    /// Fast-moving residual for the change test.
    pub pace_fast: f64,
    /// Moving variance of the residual around `pace`: the agent's own noise.
    pub pace_var: f64,
    /// Moving average of failing beyond the type's failure rate, in `[-1, 1]`.
    pub failure_excess: f64,
    /// Changes detected so far.
    pub drifts: u64,
    /// When the newest attempt was folded in, milliseconds since the Unix epoch by the store's
    /// clock (0: never). [`AgentLearning::record`] sees no clock: whoever records sets it (the
    /// scripts, the simulator), and placement reads its age through [`AgentLearning::idle_s`].
    #[serde(default)]
    pub learned_at_ms: u64,
}

impl AgentLearning {
    /// The agent's expected duration as a multiple of its type's: `exp(pace)`.
    pub fn pace_factor(&self) -> f64 {
        if self.pace.is_finite() {
            self.pace.clamp(-LOG_LIMIT, LOG_LIMIT).exp()
        } else {
            1.0
        }
    }

    /// The agent's success probability given its type's: `type_success − failure_excess`,
    /// within `[floor, 1]`.
    pub fn success_given(&self, type_success: f64, floor: f64) -> f64 {
        let excess = if self.failure_excess.is_finite() {
            self.failure_excess
        } else {
            0.0
        };
        (type_success - excess).clamp(floor, 1.0)
    }

    /// Seconds since the newest attempt was learned at `now_ms`, while the agent runs nothing
    /// (`active_tasks` 0); 0 while one of its runs is out (its result is on the way) or when
    /// nothing was learned yet.
    pub fn idle_s(&self, active_tasks: u32, now_ms: u64) -> f64 {
        if active_tasks > 0 || self.learned_at_ms == 0 {
            return 0.0;
        }
        now_ms.saturating_sub(self.learned_at_ms) as f64 / 1000.0
    }

    /// What placement believes of an agent whose evidence is `idle_runs` runs old (how many runs
    /// of the task at hand the agent could have done since it last ran): if the agent has
    /// changed before (`drifts` > 0), its *penalties* — a pace slower than its type, failing
    /// more than its type — halve every [`FADE_HALF_LIFE_RUNS`].
    ///
    /// An agent that slowed down is avoided, and an avoided agent sends no evidence: without
    /// this, an agent that came back would stay shunned for as long as faster agents have room
    /// (a fleet's fastest agent, 8× slower for 100 s, never ran again in a 1,200 s run at 40%
    /// load). With it, the penalty fades until the agent is worth a task again; one run then
    /// tells (the change test restarts its estimate if it came back), and the stored estimate is
    /// left as learned.
    ///
    /// Only an agent that has changed is expected to change back. An agent slow or failing since
    /// it started is so by nature, or its penalty is noise from its first runs: fading those on
    /// generated workloads (where agents of a type are alike) sent work to agents no better than
    /// before and cost 0.3% of adaptive's mean over 90 workloads at a 30-run half-life (one
    /// 80-agent fleet 6%);
    /// gated on a change, the cost is nil. A bonus does not fade: an agent better than its type
    /// keeps being chosen, so its evidence stays fresh.
    pub fn faded(&self, idle_runs: f64) -> AgentLearning {
        if self.drifts == 0 || !(idle_runs.is_finite() && idle_runs > 0.0) {
            return *self;
        }
        let keep = 0.5f64.powf(idle_runs / FADE_HALF_LIFE_RUNS);
        let mut faded = *self;
        if faded.pace > 0.0 {
            faded.pace *= keep;
        }
        if faded.failure_excess > 0.0 {
            faded.failure_excess *= keep;
        }
        faded
    }

    /// Folds one completion in. `type_ratio` and `type_success` are the agent type's pattern for
    /// the task type *before* this completion is folded into it (what placement expected).
    /// Durations count on success only and when known (positive, finite), as for patterns.
    pub fn record(&mut self, outcome: Completion, type_ratio: f64, type_success: f64, lr: f64) {
        let failed = if outcome.success { 0.0 } else { 1.0 };
        let expected_failure = 1.0 - clean_unit(type_success);
        self.failure_excess += FAILURE_RATE * (failed - expected_failure - self.failure_excess);
        if !outcome.success {
            return;
        }
        let Some(residual) = log_residual(outcome, type_ratio) else {
            return;
        };
        self.observations = self.observations.saturating_add(1);
        let rate = warm(lr, self.observations);
        let before = self.pace;
        self.pace += rate * (residual - self.pace);
        self.pace_fast += FAST_RATE * (residual - self.pace_fast);
        let gap = (self.pace_fast - self.pace).abs();
        // The fast estimate's own spread under the agent's noise: var × rate / (2 − rate).
        let fast_sd = (self.pace_var * FAST_RATE / (2.0 - FAST_RATE)).sqrt();
        if self.observations > 1 && gap > DRIFT_MIN_LOG.max(DRIFT_SIGMAS * fast_sd) {
            // A change: what came before describes another agent. Restart from the newest
            // run, and leave the variance alone (the jump is not noise).
            self.pace = residual;
            self.pace_fast = residual;
            self.observations = 1;
            self.drifts = self.drifts.saturating_add(1);
            return;
        }
        let deviation = residual - before;
        self.pace_var += rate * (deviation * deviation - self.pace_var);
    }
}

/// One completion as learning sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub success: bool,
    /// The submitter's estimate, seconds (0 or less: unknown).
    pub estimated_s: f64,
    /// How long the attempt ran, seconds (0 or less: unknown).
    pub actual_s: f64,
}

/// `ln(actual / (estimated × type_ratio))` within ±ln(1000); `None` when a duration is unknown.
fn log_residual(outcome: Completion, type_ratio: f64) -> Option<f64> {
    let expected = outcome.estimated_s * type_ratio;
    let ok = |x: f64| x.is_finite() && x > 0.0;
    (ok(expected) && ok(outcome.actual_s)).then(|| {
        (outcome.actual_s / expected)
            .ln()
            .clamp(-LOG_LIMIT, LOG_LIMIT)
    })
}

/// `max(lr, 1 / (n + 1))` within [0, 1]: the plain mean while evidence is thin, then a moving
/// average (the same warm-up as patterns).
fn warm(lr: f64, observations: u64) -> f64 {
    let lr = if lr.is_finite() {
        lr.clamp(0.0, 1.0)
    } else {
        0.0
    };
    lr.max(1.0 / (observations as f64 + 1.0))
}

/// A probability; non-finite reads as neutral.
fn clean_unit(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        NEUTRAL_SCORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(learning: &mut AgentLearning, actual_s: f64) {
        let done = Completion {
            success: true,
            estimated_s: 10.0,
            actual_s,
        };
        learning.record(done, 1.0, 0.95, 0.1);
    }

    #[test]
    fn an_agent_like_its_type_keeps_pace_zero() {
        let mut learning = AgentLearning::default();
        for _ in 0..50 {
            run(&mut learning, 10.0);
        }
        assert!(learning.pace.abs() < 1e-12);
        assert_eq!(learning.drifts, 0);
        assert!((learning.pace_factor() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_eightfold_slowdown_is_caught_at_the_first_run_after_it() {
        let mut learning = AgentLearning::default();
        for _ in 0..40 {
            run(&mut learning, 10.0);
        }
        run(&mut learning, 80.0);
        assert_eq!(learning.drifts, 1);
        // The estimate restarted from the newest run, where a plain moving average at 0.1 would
        // say 8^0.1 ≈ 1.23×.
        assert!(
            (learning.pace_factor() - 8.0).abs() < 1e-9,
            "{}",
            learning.pace_factor()
        );
        run(&mut learning, 80.0);
        assert!((learning.pace_factor() - 8.0).abs() < 1e-9);
        assert_eq!(learning.drifts, 1);
    }

    #[test]
    fn a_recovered_agent_is_trusted_again_within_a_few_runs() {
        let mut learning = AgentLearning::default();
        for _ in 0..20 {
            run(&mut learning, 10.0);
        }
        for _ in 0..10 {
            run(&mut learning, 80.0);
        }
        assert!(learning.pace_factor() > 6.0);
        for _ in 0..3 {
            run(&mut learning, 10.0);
        }
        assert!(learning.pace_factor() < 1.5, "{}", learning.pace_factor());
        assert!(learning.drifts >= 2);
    }

    #[test]
    fn a_changed_idle_agents_penalties_halve_every_half_life_and_its_bonus_stays() {
        let slow = AgentLearning {
            pace: 8f64.ln(),
            failure_excess: 0.4,
            drifts: 1,
            learned_at_ms: 1_000,
            ..AgentLearning::default()
        };
        let faded = slow.faded(FADE_HALF_LIFE_RUNS);
        assert!((faded.pace_factor() - 8f64.sqrt()).abs() < 1e-9);
        assert!((faded.failure_excess - 0.2).abs() < 1e-12);
        let long_gone = slow.faded(10.0 * FADE_HALF_LIFE_RUNS);
        assert!(long_gone.pace_factor() < 1.01);
        // What is stored is not changed, and no idle time changes nothing.
        assert_eq!(slow.faded(0.0), slow);
        assert_eq!(slow.faded(f64::NAN), slow);
        // A fast agent keeps its bonus: it is chosen, so its evidence stays fresh anyway.
        let fast = AgentLearning {
            pace: -(2f64.ln()),
            failure_excess: -0.05,
            drifts: 1,
            ..AgentLearning::default()
        };
        assert_eq!(fast.faded(100.0), fast);
        // An agent that never changed is slow by nature (or by its first runs' noise): kept.
        let steady = AgentLearning { drifts: 0, ..slow };
        assert_eq!(steady.faded(100.0), steady);
    }

    #[test]
    fn an_agent_is_idle_only_with_no_run_out() {
        let learned = AgentLearning {
            learned_at_ms: 10_000,
            ..AgentLearning::default()
        };
        assert_eq!(learned.idle_s(0, 25_000), 15.0);
        // A run is out: its result is on the way.
        assert_eq!(learned.idle_s(1, 25_000), 0.0);
        // Nothing learned yet, or a clock behind the store's.
        assert_eq!(AgentLearning::default().idle_s(0, 25_000), 0.0);
        assert_eq!(learned.idle_s(0, 5_000), 0.0);
    }

    #[test]
    fn noise_alone_does_not_trip_the_change_test_often() {
        // ±40% alternating noise around the type: the agent's variance grows and the test
        // stays quiet after the first few runs.
        let mut learning = AgentLearning::default();
        for i in 0..200 {
            run(&mut learning, if i % 2 == 0 { 14.0 } else { 7.0 });
        }
        assert!(learning.drifts <= 2, "{}", learning.drifts);
        assert!(learning.pace_factor() > 0.8 && learning.pace_factor() < 1.25);
    }

    #[test]
    fn failures_beyond_the_type_lower_the_expected_success_and_recover() {
        let mut learning = AgentLearning::default();
        let fail = Completion {
            success: false,
            estimated_s: 10.0,
            actual_s: 10.0,
        };
        for _ in 0..3 {
            learning.record(fail, 1.0, 0.95, 0.1);
        }
        let p = learning.success_given(0.95, 0.05);
        assert!(p < 0.4, "{p}");
        for _ in 0..8 {
            run(&mut learning, 10.0);
        }
        assert!(learning.success_given(0.95, 0.05) > 0.85);
        // A failing run teaches nothing about pace.
        assert_eq!(learning.observations, 8);
    }

    #[test]
    fn unknown_durations_teach_nothing_about_pace() {
        let mut learning = AgentLearning::default();
        let unknown = Completion {
            success: true,
            estimated_s: 0.0,
            actual_s: 5.0,
        };
        learning.record(unknown, 1.0, 0.9, 0.1);
        assert_eq!(learning.observations, 0);
        assert_eq!(learning.pace, 0.0);
        // Non-finite stored values read as neutral.
        let broken = AgentLearning {
            pace: f64::NAN,
            failure_excess: f64::NAN,
            ..AgentLearning::default()
        };
        assert_eq!(broken.pace_factor(), 1.0);
        assert_eq!(broken.success_given(0.9, 0.05), 0.9);
    }

    #[test]
    fn matches_the_lua_sequence() {
        // complete_task.lua at lr 0.5: an on-time success then a failure.
        let s1 = updated_score(NEUTRAL_SCORE, 0.5, true, 10.0, 10.0);
        assert_eq!(s1, 0.75);
        let s2 = updated_score(s1, 0.5, false, 10.0, 10.0);
        assert_eq!(s2, 0.375);
    }

    #[test]
    fn slow_success_counts_partially() {
        // Took twice the estimate: x = 0.5, so a neutral score stays put.
        assert_eq!(updated_score(0.5, 0.5, true, 10.0, 20.0), 0.5);
        assert_eq!(updated_score(1.0, 0.5, true, 10.0, 40.0), 0.625);
    }

    #[test]
    fn early_success_is_capped_at_one() {
        assert_eq!(updated_score(0.5, 0.5, true, 10.0, 1.0), 0.75);
    }

    #[test]
    fn unknown_durations_count_as_on_time() {
        assert_eq!(updated_score(0.5, 0.5, true, 0.0, 5.0), 0.75);
        assert_eq!(updated_score(0.5, 0.5, true, 5.0, 0.0), 0.75);
        assert_eq!(updated_score(0.5, 0.5, true, -1.0, -1.0), 0.75);
    }

    #[test]
    fn failure_ignores_durations() {
        assert_eq!(updated_score(0.5, 0.5, false, 0.0, 0.0), 0.25);
    }

    #[test]
    fn learning_rate_one_replaces_the_score() {
        assert_eq!(updated_score(0.2, 1.0, true, 3.0, 3.0), 1.0);
        assert_eq!(updated_score(0.9, 1.0, false, 3.0, 3.0), 0.0);
    }

    #[test]
    fn repeated_outcomes_converge() {
        let mut score = NEUTRAL_SCORE;
        for _ in 0..200 {
            score = updated_score(score, 0.1, true, 10.0, 10.0);
        }
        assert!((score - 1.0).abs() < 1e-6);
    }
}
