//! A repeated warning let through at most once per interval, with a count of what was held back:
//! during an outage a pull loop can meet the same error thousands of times a second, and a log
//! that size hides everything else (and costs a good share of a core to write).

use std::time::{Duration, Instant};

/// How often one repeated warning is written at most.
pub const WARN_EVERY: Duration = Duration::from_secs(5);

/// The gate of one warning site. Pure: the caller passes the time.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when this occurrence should be written, `n` being how many were held back since
    /// the last one written; `None` when it is held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if !due {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_count_held_back() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(5));
        assert_eq!(throttle.allow(start), Some(0), "the first is written");
        for ms in [1, 10, 4_000] {
            assert_eq!(throttle.allow(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.allow(start + Duration::from_secs(5)), Some(3));
        assert_eq!(throttle.allow(start + Duration::from_secs(6)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(11)), Some(1));
    }
}
