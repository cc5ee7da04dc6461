//! Retries of failed attempts: how long a failed attempt waits before it runs again.
//!
//! The one formula the service (`retry_backoff_ms` in the Lua library, checked against this one
//! by `tests/limits.rs`) and the simulator both follow: the task's base back-off, doubled for
//! every failed attempt after the first, capped.

/// The back-off before the next attempt of a task whose `failed_attempts`-th attempt just
/// failed (1 for the first failure), in seconds: `base_s * 2^(failed_attempts - 1)`, at most
/// `max_s`. Zero or negative inputs (and non-finite ones) give no back-off.
pub fn retry_backoff_s(base_s: f64, failed_attempts: u32, max_s: f64) -> f64 {
    if !(base_s.is_finite() && base_s > 0.0) || failed_attempts == 0 {
        return 0.0;
    }
    // 2^63 and beyond overflow nothing in f64, but the cap applies long before.
    let doublings = failed_attempts.saturating_sub(1).min(63) as i32;
    let backoff = base_s * 2f64.powi(doublings);
    if max_s.is_finite() && max_s >= 0.0 {
        backoff.min(max_s)
    } else {
        backoff
    }
}

/// [`retry_backoff_s`] in whole milliseconds, as the service stores deadlines (rounded).
pub fn retry_backoff_ms(base_ms: u64, failed_attempts: u32, max_ms: u64) -> u64 {
    let s = retry_backoff_s(
        base_ms as f64 / 1000.0,
        failed_attempts,
        max_ms as f64 / 1000.0,
    );
    (s * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_per_failed_attempt_up_to_the_cap() {
        assert_eq!(retry_backoff_s(1.0, 1, 60.0), 1.0);
        assert_eq!(retry_backoff_s(1.0, 2, 60.0), 2.0);
        assert_eq!(retry_backoff_s(1.0, 3, 60.0), 4.0);
        assert_eq!(retry_backoff_s(1.0, 7, 60.0), 60.0);
        assert_eq!(retry_backoff_s(0.5, 1_000, 60.0), 60.0);
        assert_eq!(retry_backoff_ms(250, 3, 60_000), 1000);
    }

    #[test]
    fn no_base_or_no_failure_means_no_back_off() {
        assert_eq!(retry_backoff_s(0.0, 3, 60.0), 0.0);
        assert_eq!(retry_backoff_s(1.0, 0, 60.0), 0.0);
        assert_eq!(retry_backoff_s(f64::NAN, 2, 60.0), 0.0);
        assert_eq!(retry_backoff_s(1.0, 2, 0.0), 0.0);
    }
}
