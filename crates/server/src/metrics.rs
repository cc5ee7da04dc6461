//! Metric names and handles: the only place metrics are named. Labels are bounded sets (message
//! type, reason code, outcome, operation), never a task or agent id.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use switchyard_client::error::{Error, ErrorKind};

pub const COORDINATION_DURATION_SECONDS: &str = "switchyard_coordination_duration_seconds";
pub const TASK_TRANSITIONS_TOTAL: &str = "switchyard_task_transitions_total";
pub const EVENTS_IN_FLIGHT: &str = "switchyard_events_in_flight";
pub const FLEET_UTILIZATION_RATIO: &str = "switchyard_fleet_utilization_ratio";
// Shared with the agents' protocol client, which names it.
pub use switchyard_client::comm::AGENT_MESSAGES_TOTAL;
pub const REJECTED_MESSAGES_TOTAL: &str = "switchyard_rejected_messages_total";
pub const DEAD_LETTERS_TOTAL: &str = "switchyard_dead_letters_total";
pub const REDELIVERIES_TOTAL: &str = "switchyard_redeliveries_total";
pub const GRANT_LATENCY_SECONDS: &str = "switchyard_grant_latency_seconds";
pub const QUEUE_DEPTH: &str = "switchyard_queue_depth";
pub const WAITING_DEPTH: &str = "switchyard_waiting_depth";
pub const GRANT_REPUBLISHES_TOTAL: &str = "switchyard_grant_republishes_total";
pub const DISPATCH_ROUNDS_TOTAL: &str = "switchyard_dispatch_rounds_total";
pub const AGENTS_EXPIRED_TOTAL: &str = "switchyard_agents_expired_total";
pub const AGENT_DRIFTS_TOTAL: &str = "switchyard_agent_drifts_total";
pub const HANDOFF_DURATION_SECONDS: &str = "switchyard_handoff_duration_seconds";
pub const TASK_CANCELS_TOTAL: &str = "switchyard_task_cancels_total";
pub const CANCEL_NOTICES_TOTAL: &str = "switchyard_cancel_notices_total";
pub const TASK_TIMEOUTS_TOTAL: &str = "switchyard_task_timeouts_total";
pub const TASK_RETRIES_TOTAL: &str = "switchyard_task_retries_total";
pub const TENANT_GRANTED_TOTAL: &str = "switchyard_tenant_granted_total";
pub const HEAD_HOLDS_TOTAL: &str = "switchyard_head_holds_total";
pub const BUDGET_AVAILABLE: &str = "switchyard_budget_available";
pub const BUDGET_IN_USE: &str = "switchyard_budget_in_use";
pub const BUDGET_DEBT: &str = "switchyard_budget_debt";
pub const BUDGET_GRANTED_TOTAL: &str = "switchyard_budget_granted_total";
pub const BUDGET_BLOCKED_TOTAL: &str = "switchyard_budget_blocked_total";
pub const BUILD_INFO: &str = "switchyard_build_info";
pub const REPORTING_REPLICA: &str = "switchyard_reporting_replica";
pub const CONSUMER_PENDING: &str = "switchyard_consumer_pending_events";
pub const CONSUMER_ACK_PENDING: &str = "switchyard_consumer_ack_pending_events";
pub const DEAD_LETTER_DEPTH: &str = "switchyard_dead_letter_depth";
pub const DASHBOARD_REPLAYS_TOTAL: &str = "switchyard_dashboard_replays_total";
pub const TRACE_SPANS_TOTAL: &str = "switchyard_trace_spans_total";
pub const INVALID_TRACE_HEADERS_TOTAL: &str = "switchyard_invalid_trace_headers_total";

/// Deployment-wide gauges: every replica computes them, but only the replica holding the
/// coordination-sync lease exports them, so summing across replicas does not count them twice.
pub const GLOBAL_GAUGES: [&str; 9] = [
    QUEUE_DEPTH,
    WAITING_DEPTH,
    FLEET_UTILIZATION_RATIO,
    BUDGET_AVAILABLE,
    BUDGET_IN_USE,
    BUDGET_DEBT,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    DEAD_LETTER_DEPTH,
];

/// All metrics of one optimizer replica, in its own registry (so in-process replicas in tests
/// do not collide).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Seconds to apply one operation, by `op`: `batch` (one pulled batch of events, from decode
    /// to ack) and `dispatch` (one dispatch pass over the queue head).
    pub coordination_seconds: HistogramVec,
    /// Allocation outcomes by `outcome`: granted, queued, waiting, completed, failed, requeued,
    /// cancelled.
    pub allocations: IntCounterVec,
    /// Events being worked on right now.
    pub active_coordinations: IntGauge,
    /// Fleet utilization by `stat` (mean, max), refreshed by the maintenance pass.
    pub agent_utilization: GaugeVec,
    /// Messages by `type` and `direction` (in, out).
    pub messages: IntCounterVec,
    /// Refused messages by `reason` code.
    pub rejected: IntCounterVec,
    pub dead_letters: IntCounter,
    /// Dead letters replayed from the dashboard, by `outcome`: replayed, refused (replay not
    /// allowed, or not an event the dashboard can replay), failed (NATS did not take it).
    pub dashboard_replays: IntCounterVec,
    pub redeliveries: IntCounter,
    /// Submit (message creation) to grant publication.
    pub grant_latency: HistogramVec,
    pub queue_depth: Gauge,
    /// Tasks waiting on dependencies (not in the queue yet).
    pub waiting_depth: Gauge,
    pub grant_republishes: IntCounter,
    /// Spans by `outcome`: exported, dropped (the export queue was full), failed (the
    /// collector did not take them). Only with `[telemetry] otlp_endpoint` set.
    pub trace_spans: IntCounterVec,
    /// `traceparent` headers on inbound events that were not valid W3C trace context (ignored).
    pub invalid_trace_headers: IntCounter,
    /// Dispatch rounds that found a non-empty queue head (each reads the fleet log once and
    /// commits its grants in one script call).
    pub dispatch_rounds: IntCounter,
    /// Agents marked dead because their lease ran out.
    pub agents_expired: IntCounter,
    /// Changes in an agent's pace detected by the completions this replica applied (the agent
    /// became much slower or faster than it had been; its learned pace restarts). No agent label:
    /// `switchyard status` shows which agent, with its drift count.
    pub agent_drifts: IntCounter,
    /// Handoff begin to verdict, by `outcome`: accepted, rejected, refused.
    pub handoff_duration: HistogramVec,
    /// TASK_CANCEL events by `outcome`: cancelled (waiting or queued, or a repeat), cancelling
    /// (granted: its agent told), finished (already completed or failed), refused.
    pub task_cancels: IntCounterVec,
    /// Cancel notices published to agents (first sends and resends).
    pub cancel_notices: IntCounter,
    /// Time limits that ran out, by `kind`: queue (a task not granted in time: failed) or run
    /// (an attempt past its run timeout: taken back, then retried or failed).
    pub task_timeouts: IntCounterVec,
    /// Failed attempts sent back to the queue for another attempt, by `cause`: failed (reported
    /// by the agent) or run_timeout.
    pub task_retries: IntCounterVec,
    /// Grants by `tenant`: tenants named in `[tenants]` and `default` by name, the rest `other`.
    pub tenant_granted: IntCounterVec,
    /// Head holds taken or moved by this replica (a renewal of the same hold is not counted).
    pub head_holds: IntCounter,
    /// Per `budget` (names from the config, so bounded): units available now (rate) or free
    /// slots (concurrency), refreshed with the utilization gauges.
    pub budget_available: GaugeVec,
    /// Per `budget`: concurrency slots held.
    pub budget_in_use: GaugeVec,
    /// Per `budget`: rate units owed (usage beyond the draws, paid back by the refill).
    pub budget_debt: GaugeVec,
    /// Per `budget`: units drawn by this replica's grants.
    pub budget_granted: IntCounterVec,
    /// Per `budget`: grant attempts this replica saw blocked by the budget.
    pub budget_blocked: IntCounterVec,
    /// Always 1, labelled with the `version` of the binary and the `commit` it was built from.
    pub build_info: IntGaugeVec,
    /// 1 while this replica holds the coordination-sync lease and so exports the
    /// [`GLOBAL_GAUGES`], else 0.
    pub reporting: IntGauge,
    /// Per shared `consumer` (optimizer, optimizer_control): events not delivered yet (lag).
    pub consumer_pending: GaugeVec,
    /// Per shared `consumer`: events delivered and not acknowledged yet.
    pub consumer_ack_pending: GaugeVec,
    /// Entries in the dead-letter stream.
    pub dead_letter_depth: Gauge,
}

pub(crate) fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: Result<C, prometheus::Error>,
) -> Result<C, Error> {
    let collector = collector.map_err(|e| Error::with_source(ErrorKind::Config, "metric", e))?;
    registry
        .register(Box::new(collector.clone()))
        .map_err(|e| Error::with_source(ErrorKind::Config, "metric registration", e))?;
    Ok(collector)
}

pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Handoffs wait for another agent's answer: up to the handoff timeout (at most an hour).
const HANDOFF_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

impl Metrics {
    pub fn new() -> Result<Metrics, Error> {
        let registry = Registry::new();
        let add = Registrar(&registry);
        Ok(Metrics {
            coordination_seconds: add.latencies(
                COORDINATION_DURATION_SECONDS,
                "Time to apply coordination operations",
                &["op"],
            )?,
            allocations: add.counters(
                TASK_TRANSITIONS_TOTAL,
                "Allocation outcomes",
                &["outcome"],
            )?,
            active_coordinations: add
                .int_gauge(EVENTS_IN_FLIGHT, "Events in flight in this replica")?,
            agent_utilization: add.gauges(
                FLEET_UTILIZATION_RATIO,
                "Fleet resource utilization",
                &["stat"],
            )?,
            messages: add.counters(
                AGENT_MESSAGES_TOTAL,
                "Messages by type and direction",
                &["type", "direction"],
            )?,
            rejected: add.counters(
                REJECTED_MESSAGES_TOTAL,
                "Refused messages by reason code",
                &["reason"],
            )?,
            dead_letters: add.counter(
                DEAD_LETTERS_TOTAL,
                "Events parked in the dead-letter stream",
            )?,
            dashboard_replays: add.counters(
                DASHBOARD_REPLAYS_TOTAL,
                "Dead letters replayed from the dashboard, by outcome",
                &["outcome"],
            )?,
            redeliveries: add.counter(REDELIVERIES_TOTAL, "Events delivered more than once")?,
            grant_latency: add.latencies(
                GRANT_LATENCY_SECONDS,
                "Submit to grant publication",
                &["path"],
            )?,
            queue_depth: add.gauge(QUEUE_DEPTH, "Tasks waiting in the priority queue")?,
            waiting_depth: add.gauge(WAITING_DEPTH, "Tasks waiting on dependencies")?,
            grant_republishes: add.counter(
                GRANT_REPUBLISHES_TOTAL,
                "Grants sent again because their agent had not acknowledged them",
            )?,
            trace_spans: add.counters(
                TRACE_SPANS_TOTAL,
                "Trace spans by export outcome",
                &["outcome"],
            )?,
            invalid_trace_headers: add.counter(
                INVALID_TRACE_HEADERS_TOTAL,
                "Invalid traceparent headers ignored",
            )?,
            dispatch_rounds: add.counter(
                DISPATCH_ROUNDS_TOTAL,
                "Dispatch rounds over a non-empty queue head",
            )?,
            agents_expired: add.counter(
                AGENTS_EXPIRED_TOTAL,
                "Agents marked dead after missing their lease",
            )?,
            handoff_duration: add.histograms(
                HANDOFF_DURATION_SECONDS,
                "Handoff initiation to verdict, by outcome",
                &["outcome"],
                &HANDOFF_BUCKETS,
            )?,
            task_cancels: add.counters(
                TASK_CANCELS_TOTAL,
                "TASK_CANCEL events by outcome",
                &["outcome"],
            )?,
            cancel_notices: add.counter(
                CANCEL_NOTICES_TOTAL,
                "Cancel notices sent to agents holding a cancelled task",
            )?,
            task_timeouts: add.counters(
                TASK_TIMEOUTS_TOTAL,
                "Task time limits that ran out, by kind (queue, run)",
                &["kind"],
            )?,
            task_retries: add.counters(
                TASK_RETRIES_TOTAL,
                "Failed attempts queued again for another attempt, by cause (failed, run_timeout)",
                &["cause"],
            )?,
            tenant_granted: add.counters(
                TENANT_GRANTED_TOTAL,
                "Tasks granted by tenant (tenants not in the config: other)",
                &["tenant"],
            )?,
            agent_drifts: add.counter(
                AGENT_DRIFTS_TOTAL,
                "Changes detected in an agent's pace relative to its type (learned pace restarted)",
            )?,
            head_holds: add.counter(
                HEAD_HOLDS_TOTAL,
                "Agents held for a head task that fits nowhere (new holds)",
            )?,
            budget_available: add.gauges(
                BUDGET_AVAILABLE,
                "Budget units available now (rate) or free slots (concurrency)",
                &["budget"],
            )?,
            budget_in_use: add.gauges(BUDGET_IN_USE, "Concurrency slots held", &["budget"])?,
            budget_debt: add.gauges(BUDGET_DEBT, "Rate budget units owed", &["budget"])?,
            budget_granted: add.counters(
                BUDGET_GRANTED_TOTAL,
                "Budget units drawn by grants",
                &["budget"],
            )?,
            budget_blocked: add.counters(
                BUDGET_BLOCKED_TOTAL,
                "Grant attempts blocked by a budget",
                &["budget"],
            )?,
            build_info: add.build_info()?,
            reporting: add.int_gauge(
                REPORTING_REPLICA,
                "1 on the replica exporting the deployment-wide gauges, else 0",
            )?,
            consumer_pending: add.gauges(
                CONSUMER_PENDING,
                "Events a shared consumer has not delivered yet",
                &["consumer"],
            )?,
            consumer_ack_pending: add.gauges(
                CONSUMER_ACK_PENDING,
                "Events a shared consumer delivered and has not seen acknowledged",
                &["consumer"],
            )?,
            dead_letter_depth: add.gauge(DEAD_LETTER_DEPTH, "Entries in the dead-letter stream")?,
            registry,
        })
    }

    /// Whether this replica exports the [`GLOBAL_GAUGES`].
    pub fn is_reporting(&self) -> bool {
        self.reporting.get() == 1
    }

    /// Prometheus text exposition of every metric; the [`GLOBAL_GAUGES`] only while this
    /// replica is the reporting one.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        if !self.is_reporting() {
            families.retain(|f| !GLOBAL_GAUGES.contains(&f.name()));
        }
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Registers each metric as it is made, one method per kind, so [`Metrics::new`] reads as the
/// list of metrics.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, Error> {
        registered(self.0, IntCounter::new(name, help))
    }

    /// A counter per combination of `labels`.
    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, Error> {
        registered(self.0, IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// `switchyard_build_info{version,commit} 1` (commit `unknown` when the build named none).
    fn build_info(&self) -> Result<IntGaugeVec, Error> {
        let info = registered(
            self.0,
            IntGaugeVec::new(
                Opts::new(BUILD_INFO, "Always 1; the labels say which build runs"),
                &["version", "commit"],
            ),
        )?;
        let commit = crate::build::commit().unwrap_or("unknown");
        info.with_label_values(&[crate::build::VERSION, commit])
            .set(1);
        Ok(info)
    }

    fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, Error> {
        registered(self.0, IntGauge::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> Result<Gauge, Error> {
        registered(self.0, Gauge::new(name, help))
    }

    /// A gauge per combination of `labels`.
    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, Error> {
        registered(self.0, GaugeVec::new(Opts::new(name, help), labels))
    }

    /// A histogram per combination of `labels`, over `buckets` (seconds).
    fn histograms(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, Error> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        registered(self.0, HistogramVec::new(opts, labels))
    }

    /// A histogram over the [`LATENCY_BUCKETS`] of a coordination step.
    fn latencies(&self, name: &str, help: &str, labels: &[&str]) -> Result<HistogramVec, Error> {
        self.histograms(name, help, labels, &LATENCY_BUCKETS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_metric_names() {
        let m = Metrics::new().expect("metrics");
        m.allocations.with_label_values(&["granted"]).inc();
        m.coordination_seconds
            .with_label_values(&["submit"])
            .observe(0.001);
        m.agent_utilization.with_label_values(&["mean"]).set(0.5);
        m.messages.with_label_values(&["task_submit", "in"]).inc();
        m.reporting.set(1);
        let text = m.render();
        for name in [
            COORDINATION_DURATION_SECONDS,
            TASK_TRANSITIONS_TOTAL,
            EVENTS_IN_FLIGHT,
            FLEET_UTILIZATION_RATIO,
            AGENT_MESSAGES_TOTAL,
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn only_the_reporting_replica_renders_the_global_gauges() {
        let m = Metrics::new().expect("metrics");
        m.queue_depth.set(3.0);
        m.agent_utilization.with_label_values(&["mean"]).set(0.5);
        let has_global = |m: &Metrics| {
            let text = m.render();
            GLOBAL_GAUGES
                .iter()
                .any(|g| text.contains(&format!("\n{g} ")) || text.contains(&format!("\n{g}{{")))
        };
        assert!(!has_global(&m));
        assert!(m.render().contains(&format!("{REPORTING_REPLICA} 0")));
        m.reporting.set(1);
        assert!(has_global(&m));
        assert!(m.render().contains(&format!("{QUEUE_DEPTH} 3")));
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let m = Metrics::new().expect("metrics");
        let version = env!("CARGO_PKG_VERSION");
        let commit = crate::build::commit().unwrap_or("unknown");
        assert_eq!(m.build_info.with_label_values(&[version, commit]).get(), 1);
        let line = format!("{BUILD_INFO}{{commit=\"{commit}\",version=\"{version}\"}} 1");
        assert!(m.render().contains(&line), "{line} missing");
    }
}
