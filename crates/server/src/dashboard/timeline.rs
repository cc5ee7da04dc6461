//! The throughput timeline as the serving process sees it: every [`super::SAMPLE_EVERY`] it
//! samples the deployment's lifetime counters (Redis) and its own grant-latency histogram into a
//! bounded ring, and the view turns consecutive samples into per-10-second buckets. Good enough
//! for display; history starts when the process does, and the latencies are those of the grants
//! this process made (none in `switchyard dashboard`). The deployment-wide record written by the
//! scripts replaces it where `views::timeline` says.

use std::collections::{BTreeMap, VecDeque};

use prometheus::core::Collector;
use serde::Serialize;

use crate::metrics::Metrics;

/// Ten minutes of samples at one per two seconds.
const CAPACITY: usize = 300;
/// The width of one bucket of the view.
pub(super) const BUCKET_MS: u64 = 10_000;
/// The counters shown.
const SHOWN: [&str; 4] = ["submitted", "granted", "completed", "failed"];

/// Cumulative histogram buckets: (upper bound in seconds, observations at or below it).
pub(super) type LatencyBuckets = Vec<(f64, u64)>;

struct Sample {
    at_ms: u64,
    counters: BTreeMap<String, u64>,
    latency: LatencyBuckets,
}

#[derive(Default)]
pub(super) struct Ring {
    samples: VecDeque<Sample>,
}

/// One bucket of the view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Bucket {
    /// Start of the bucket (Redis clock, ms).
    pub at_ms: u64,
    /// Counter increments in the bucket, by counter name.
    pub counts: BTreeMap<String, u64>,
    /// Submit → grant latency percentiles of the grants in the bucket (ms), when there were some.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Ring {
    pub(super) fn push(
        &mut self,
        at_ms: u64,
        counters: BTreeMap<String, u64>,
        latency: LatencyBuckets,
    ) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms,
            counters,
            latency,
        });
    }

    /// Buckets covering the last `last_seconds` before the newest sample, oldest first.
    pub(super) fn buckets(&self, last_seconds: u64) -> Vec<Bucket> {
        let Some(newest) = self.samples.back() else {
            return Vec::new();
        };
        let since = newest.at_ms.saturating_sub(last_seconds * 1000);
        let mut buckets: BTreeMap<u64, (Bucket, Vec<u64>)> = BTreeMap::new();
        for (prev, cur) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            if cur.at_ms < since {
                continue;
            }
            let start = cur.at_ms / BUCKET_MS * BUCKET_MS;
            let (bucket, latency) = buckets.entry(start).or_default();
            bucket.at_ms = start;
            for name in SHOWN {
                let delta = count(cur, name).saturating_sub(count(prev, name));
                *bucket.counts.entry(name.to_string()).or_default() += delta;
            }
            add_delta(latency, &prev.latency, &cur.latency);
        }
        buckets
            .into_values()
            .map(|(mut bucket, latency)| {
                let bounds: Vec<f64> = newest.latency.iter().map(|(b, _)| *b).collect();
                bucket.p50_ms = percentile_ms(&bounds, &latency, 0.50);
                bucket.p95_ms = percentile_ms(&bounds, &latency, 0.95);
                bucket.p99_ms = percentile_ms(&bounds, &latency, 0.99);
                bucket
            })
            .collect()
    }
}

fn count(sample: &Sample, name: &str) -> u64 {
    sample.counters.get(name).copied().unwrap_or(0)
}

/// Adds the per-bucket observations made between two samples (non-cumulative) to `into`.
fn add_delta(into: &mut Vec<u64>, prev: &LatencyBuckets, cur: &LatencyBuckets) {
    if into.len() < cur.len() {
        into.resize(cur.len(), 0);
    }
    let mut below = 0;
    for (i, (_, cumulative)) in cur.iter().enumerate() {
        let before = prev.get(i).map_or(0, |(_, c)| *c);
        let delta = cumulative.saturating_sub(before);
        into[i] += delta.saturating_sub(below);
        below = delta;
    }
}

/// The upper bound (ms) of the bucket holding the `q` quantile of these observations.
fn percentile_ms(bounds: &[f64], per_bucket: &[u64], q: f64) -> Option<f64> {
    let total: u64 = per_bucket.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in per_bucket.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bounds.get(i).map(|b| b * 1000.0);
        }
    }
    bounds.last().map(|b| b * 1000.0)
}

/// This process's grant latencies so far, summed over the histogram's label values.
pub(super) fn latency_buckets(metrics: &Metrics) -> LatencyBuckets {
    let mut sum: LatencyBuckets = Vec::new();
    for family in metrics.grant_latency.collect() {
        for metric in family.get_metric() {
            for (i, b) in metric.get_histogram().get_bucket().iter().enumerate() {
                if sum.len() <= i {
                    sum.push((b.upper_bound(), 0));
                }
                sum[i].1 += b.cumulative_count();
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(submitted: u64, granted: u64) -> BTreeMap<String, u64> {
        [("submitted", submitted), ("granted", granted)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn samples_turn_into_increments_and_percentiles_per_bucket() {
        let mut ring = Ring::default();
        let lat = |a: u64, b: u64| vec![(0.01, a), (0.1, a + b), (f64::INFINITY, a + b)];
        ring.push(20_000, counters(0, 0), lat(0, 0));
        ring.push(22_000, counters(5, 3), lat(2, 1));
        ring.push(31_000, counters(9, 9), lat(2, 7));
        let buckets = ring.buckets(600);
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].at_ms, 20_000);
        assert_eq!(buckets[0].counts["submitted"], 5);
        assert_eq!(buckets[0].counts["granted"], 3);
        assert_eq!(buckets[0].p50_ms, Some(10.0));
        assert_eq!(buckets[1].counts["granted"], 6);
        assert_eq!(buckets[1].p50_ms, Some(100.0));
        assert!(ring.buckets(1).len() <= 1);
    }
}
