//! The benchmark's report: what was offered, what came back, how fast, against what reference,
//! and at what cost to the servers.

use serde::Serialize;

use crate::fleet::LatencySummary;
use crate::fleet::counters::Cost;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Optimizer replicas, in this process.
    pub replicas: usize,
    /// Simulated agents registered before the load.
    pub agents: usize,
    /// Offered submits per second; 0 = closed loop.
    pub offered_rate: u64,
    /// `closed_loop` (rate 0: `inflight` tasks kept in flight) or `open_loop`.
    pub mode: &'static str,
    /// Most tasks in flight (submitted, not yet completed or failed).
    pub inflight: usize,
    /// Seconds of offered load (the measured window).
    pub duration_s: f64,
    /// Seconds to register the whole fleet (`registration_concurrency` at a time).
    pub registration_s: f64,
    /// Registrations awaited at once.
    pub registration_concurrency: usize,
    /// NATS connections the simulated agents share.
    pub agent_connections: usize,
    /// Submits JetStream stored (failed publishes not included).
    pub submitted: u64,
    /// Distinct tasks completed, each task id counted once, load window and drain together.
    pub completed: u64,
    /// Distinct tasks whose first completion arrived inside the load window.
    pub completed_in_window: u64,
    /// Distinct tasks completed inside the load window per second of it.
    pub lifecycles_per_s: f64,
    /// Request → grant, as seen by the granted agent.
    pub grant_latency_ms: LatencySummary,
    /// Tasks granted more than once (a defect: must be 0).
    pub double_grants: u64,
    /// Completion replies for a task already completed (a defect: must be 0).
    pub duplicate_completions: u64,
    /// Distinct tasks the coordinator answered `failed`.
    pub failed: u64,
    /// Error reports received for submits (refusals).
    pub error_reports: u64,
    /// Submits whose JetStream publish failed.
    pub submit_errors: u64,
    /// Submitted tasks neither completed nor failed by the end of the drain period.
    pub unfinished: u64,
    /// Replies the bench read too slowly and lost (counts are then low).
    pub replies_lost: u64,
    /// The bare allocation loop on the same servers (`--baseline`), allocations per second.
    pub baseline_allocations_per_s: Option<f64>,
    /// `lifecycles_per_s / baseline_allocations_per_s`.
    pub ratio_to_baseline: Option<f64>,
    /// Server work over the load window divided by `completed_in_window`.
    pub per_lifecycle: Option<Cost>,
    /// Server work per second with the fleet registered and no load (`--idle-seconds`).
    pub idle_per_s: Option<Cost>,
}

impl BenchReport {
    pub fn render(&self) -> String {
        let mut lines = vec![
            format!(
                "replicas {} · agents {} (registered in {:.1}s over {} connections) · {} · in flight ≤ {} · {:.0}s",
                self.replicas,
                self.agents,
                self.registration_s,
                self.agent_connections,
                self.load_label(),
                self.inflight,
                self.duration_s,
            ),
            format!(
                "submitted {} · completed {} ({} in window) · failed {} · unfinished {}",
                self.submitted,
                self.completed,
                self.completed_in_window,
                self.failed,
                self.unfinished
            ),
            format!(
                "defects: double grants {} · duplicate completions {} · error reports {} · submit errors {} · replies lost {}",
                self.double_grants,
                self.duplicate_completions,
                self.error_reports,
                self.submit_errors,
                self.replies_lost
            ),
            self.throughput_line(),
            format!(
                "request→grant ms: p50 {:.3} · p99 {:.3} · p999 {:.3} · max {:.3} ({} samples)",
                self.grant_latency_ms.p50,
                self.grant_latency_ms.p99,
                self.grant_latency_ms.p999,
                self.grant_latency_ms.max,
                self.grant_latency_ms.samples
            ),
        ];
        if let Some(cost) = &self.per_lifecycle {
            lines.push(format!("per lifecycle:\n{}", cost.render("lifecycle")));
        }
        if let Some(cost) = &self.idle_per_s {
            lines.push(format!("idle fleet, per second:\n{}", cost.render("s")));
        }
        lines.join("\n")
    }

    fn load_label(&self) -> String {
        if self.offered_rate == 0 {
            "closed loop".to_string()
        } else {
            format!("offered {}/s", self.offered_rate)
        }
    }

    fn throughput_line(&self) -> String {
        match (self.baseline_allocations_per_s, self.ratio_to_baseline) {
            (Some(base), Some(ratio)) => format!(
                "lifecycles/s {:.0} · bare allocation loop {:.0}/s · ratio {:.3}",
                self.lifecycles_per_s, base, ratio
            ),
            _ => format!("lifecycles/s {:.0}", self.lifecycles_per_s),
        }
    }
}
