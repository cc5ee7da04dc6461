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

#[cfg(test)]
mod tests {
    use super::*;

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
