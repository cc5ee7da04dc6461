//! Small statistics for the demo and benchmark reports.

use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentile of sorted samples (`q` in 0..=1); 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: usize,
}

impl LatencySummary {
    pub fn from_durations(samples: &[Duration]) -> LatencySummary {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        LatencySummary {
            p50: round(percentile(&ms, 0.50)),
            p99: round(percentile(&ms, 0.99)),
            p999: round(percentile(&ms, 0.999)),
            max: round(ms.last().copied().unwrap_or(0.0)),
            samples: ms.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.999), 7.0);
    }

    #[test]
    fn summary_in_milliseconds() {
        let d: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let s = LatencySummary::from_durations(&d);
        assert_eq!(s.samples, 1000);
        assert_eq!(s.p50, 0.5);
        assert_eq!(s.max, 1.0);
    }
}
