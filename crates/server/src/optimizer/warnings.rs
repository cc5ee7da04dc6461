//! Repeated warnings let through once per interval and site, with a count of what was held back
//! (the [`Throttle`] of the pull loops, keyed by site): while NATS or Redis is out of reach the
//! same failure can repeat thousands of times a second, and a log that size hides everything
//! else.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use switchyard_client::transport::Throttle;

/// One throttle per warning site, made on first use.
#[derive(Debug)]
pub(crate) struct Warnings {
    every: Duration,
    sites: Mutex<HashMap<&'static str, Throttle>>,
}

impl Warnings {
    pub(crate) fn new(every: Duration) -> Warnings {
        Warnings {
            every,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held_back)` when the warning of `site` should be written now (`held_back`: how many
    /// were not written since the last one), `None` when it is held back.
    pub(crate) fn due(&self, site: &'static str) -> Option<u64> {
        let now = tokio::time::Instant::now().into_std();
        // A map of counters and times: whole even after a panic elsewhere.
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        sites
            .entry(site)
            .or_insert_with(|| Throttle::new(self.every))
            .allow(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_site_and_interval_with_the_count_held_back() {
        let warnings = Warnings::new(Duration::from_secs(5));
        assert_eq!(warnings.due("grant"), Some(0), "the first is written");
        assert_eq!(warnings.due("reply"), Some(0), "sites are apart");
        for _ in 0..1_000 {
            assert_eq!(warnings.due("grant"), None);
        }
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(warnings.due("grant"), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            warnings.due("grant"),
            Some(1_001),
            "with the count held back"
        );
        assert_eq!(warnings.due("grant"), None);
        assert_eq!(warnings.due("reply"), Some(0));
    }
}
