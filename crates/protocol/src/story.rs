//! One task's story and the dashboard timeline: what the optimizers recorded in Redis, as the
//! status answer ([`CoordinationSync::story`](crate::CoordinationSync::story)), the client, the
//! CLI (`switchyard task ID`) and the dashboard show it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds (ms, inclusive) of the request-to-grant latency buckets of the timeline; one
/// more bucket counts what is above the last. Fixed, so percentiles can be estimated from the
/// counts ([`estimate_percentile_ms`]), and shared with the scripts that count them.
pub const LATENCY_BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// Width of one timeline bucket, seconds.
pub const TIMELINE_BUCKET_S: u64 = 10;

/// The start of the timeline bucket of a moment (Unix ms), in Unix seconds.
pub fn timeline_bucket_start_s(now_ms: u64) -> u64 {
    now_ms / 1000 / TIMELINE_BUCKET_S * TIMELINE_BUCKET_S
}

/// What happened to a task at one moment of its story. A kind this version does not know (a
/// newer optimizer's) reads as [`StoryEvent::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoryEvent {
    /// Accepted (details: priority, tenant).
    Submitted,
    /// Waits on dependencies (details: unmet, their number).
    Waiting,
    /// One dependency completed; others are still unmet (details: dependency, unmet).
    DependencyMet,
    /// In the priority queue (details: after, when a dependency let it in).
    Queued,
    /// Granted (details: agent, grant_seq, attempt, strategy, candidate: the place of the agent
    /// among the candidates tried, scores when the submit asked for `explain`).
    Granted,
    /// A handoff to another agent began (details: handoff_id, from, to).
    HandoffBegun,
    /// The new agent took the task over (details: handoff_id, from, to, grant_seq).
    HandoffAccepted,
    /// The new agent said no (details: handoff_id, to).
    HandoffRejected,
    /// The handoff was refused; the task stays (details: handoff_id, to, code).
    HandoffRefused,
    /// Taken back from its agent and queued again (details: agent, reason: agent_died |
    /// agent_left).
    Requeued,
    /// An attempt failed and a retry is scheduled (details: agent, attempt: the one that
    /// failed, reason: failed | run_timeout, retry_at: Redis ms when the back-off ends).
    AttemptFailed,
    /// The back-off ended: back in the priority queue (details: attempt).
    RetryPromoted,
    /// A cancel of the granted task was asked; its agent is told to stop (details: by, reason,
    /// agent).
    CancelRequested,
    /// Cancelled (details: by, reason, agent).
    Cancelled,
    /// Completed (details: agent, duration_s, attempt).
    Completed,
    /// Failed for good (details: reason, such as failed, queue_timeout, run_timeout,
    /// dependency_failed:<id>, dependency_cancelled:<id>; agent when it had one).
    Failed,
    /// An event this version does not know.
    #[serde(other)]
    Other,
}

impl StoryEvent {
    /// The wire name (`granted`, `attempt_failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StoryEvent::Submitted => "submitted",
            StoryEvent::Waiting => "waiting",
            StoryEvent::DependencyMet => "dependency_met",
            StoryEvent::Queued => "queued",
            StoryEvent::Granted => "granted",
            StoryEvent::HandoffBegun => "handoff_begun",
            StoryEvent::HandoffAccepted => "handoff_accepted",
            StoryEvent::HandoffRejected => "handoff_rejected",
            StoryEvent::HandoffRefused => "handoff_refused",
            StoryEvent::Requeued => "requeued",
            StoryEvent::AttemptFailed => "attempt_failed",
            StoryEvent::RetryPromoted => "retry_promoted",
            StoryEvent::CancelRequested => "cancel_requested",
            StoryEvent::Cancelled => "cancelled",
            StoryEvent::Completed => "completed",
            StoryEvent::Failed => "failed",
            StoryEvent::Other => "other",
        }
    }
}

/// One entry of a task's story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryEntry {
    /// When (Unix ms, Redis clock).
    pub at_ms: u64,
    pub event: StoryEvent,
    /// What the event is about, by name (see [`StoryEvent`]); all values as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// One 10-second bucket of the dashboard timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// The bucket's start (Unix ms, a multiple of 10 s, the optimizers' clocks).
    pub start_ms: u64,
    pub submitted: u64,
    pub granted: u64,
    pub completed: u64,
    pub failed: u64,
    /// Request-to-grant latency counts per bucket of [`LATENCY_BOUNDS_MS`] (one more at the
    /// end: above the last bound). First grants only.
    pub latency_counts: Vec<u64>,
    /// Estimated request-to-grant latency percentiles (ms); absent when nothing was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// Estimates the `q` quantile (0..=1) of latencies counted per bucket of [`LATENCY_BOUNDS_MS`]
/// (`counts` has one more entry, above the last bound): linear inside the bucket the quantile
/// falls in, as Prometheus' histogram_quantile does; the last, open bucket answers its lower
/// bound. None when nothing was counted.
pub fn estimate_percentile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] } as f64;
            let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else {
                return Some(lower);
            };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper as f64 - lower) * within);
        }
        below += count;
    }
    LATENCY_BOUNDS_MS.last().map(|&b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(usize, u64)]) -> Vec<u64> {
        let mut out = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        for &(i, n) in pairs {
            out[i] = n;
        }
        out
    }

    #[test]
    fn nothing_counted_has_no_percentile() {
        assert_eq!(estimate_percentile_ms(&counts(&[]), 0.5), None);
    }

    #[test]
    fn one_bucket_interpolates_inside_it() {
        // 100 grants between 50 and 100 ms (bucket 6): the median half way.
        let c = counts(&[(6, 100)]);
        assert_eq!(estimate_percentile_ms(&c, 0.5), Some(75.0));
        assert_eq!(estimate_percentile_ms(&c, 1.0), Some(100.0));
    }

    #[test]
    fn percentiles_fall_in_the_right_buckets() {
        // 90 fast (<= 1 ms), 9 at 250..500 ms, 1 above 30 s.
        let c = counts(&[(0, 90), (8, 9), (14, 1)]);
        let p50 = estimate_percentile_ms(&c, 0.5).unwrap_or_default();
        assert!(p50 <= 1.0, "{p50}");
        let p95 = estimate_percentile_ms(&c, 0.95).unwrap_or_default();
        assert!((250.0..=500.0).contains(&p95), "{p95}");
        assert_eq!(estimate_percentile_ms(&c, 0.999), Some(30_000.0));
    }

    #[test]
    fn unknown_events_read_as_other() {
        let entry: StoryEntry =
            serde_json::from_str(r#"{"at_ms":1,"event":"teleported"}"#).unwrap();
        assert_eq!(entry.event, StoryEvent::Other);
    }
}
