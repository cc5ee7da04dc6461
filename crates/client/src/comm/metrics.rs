//! The protocol client's metrics, one set per [`CommunicationProtocol`] (so several agents in one
//! process do not collide), rendered in the Prometheus text format by [`CommMetrics::render`].
//!
//! Kept on plain atomics rather than the `prometheus` crate so that an agent depending on this
//! crate compiles no metrics library: a handful of counters, a gauge and two histograms with
//! bounded labels need nothing more, and the text format is small and stable.
//!
//! [`CommunicationProtocol`]: super::CommunicationProtocol

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

// The names of the protocol client's metrics: the only place they are written.
/// Messages by type and direction (the optimizer exports the same name for what it handles).
pub const AGENT_MESSAGES_TOTAL: &str = "agent_messages_total";
pub const AGENT_MESSAGE_LATENCY_SECONDS: &str = "agent_message_latency_seconds";
pub const AGENT_MESSAGE_ACKS_TOTAL: &str = "agent_message_acks_total";
pub const AGENT_MESSAGE_ACK_RATE: &str = "agent_message_ack_rate";
pub const AGENT_MESSAGES_EXPIRED_TOTAL: &str = "agent_messages_expired_total";
pub const AGENT_MESSAGES_DEAD_LETTERED_TOTAL: &str = "agent_messages_dead_lettered_total";
pub const AGENT_MESSAGES_DUPLICATE_TOTAL: &str = "agent_messages_duplicate_total";
pub const AGENT_MESSAGE_RETRIES_TOTAL: &str = "agent_message_retries_total";
pub const AGENT_MESSAGES_SENDER_MISMATCH_TOTAL: &str = "agent_messages_sender_mismatch_total";
pub const AGENT_CLIENT_HANDOFF_SECONDS: &str = "agent_client_handoff_seconds";

/// Histogram buckets for latencies, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Handles to one protocol client's metrics. Labels are bounded: message type, direction,
/// priority, outcome.
#[derive(Clone, Default)]
pub struct CommMetrics {
    /// Messages by `type` and `direction` (`out` sent, `in` handed to the application).
    pub messages: CounterVec,
    /// Creation at the sender to hand-over to the application, by `priority`.
    pub latency: HistogramVec,
    /// Acknowledgments awaited by this sender, by `outcome` (`acked`, `timed_out`).
    pub acks: CounterVec,
    /// acked / (acked + timed_out) over this client's life; 1 before anything was awaited.
    pub ack_rate: Gauge,
    /// Received messages dropped because their TTL ran out before the application got them.
    pub expired: Counter,
    /// Guaranteed messages given up on (retries spent or TTL passed), parked in the DLQ stream.
    pub dead_lettered: Counter,
    /// Deliveries dropped because the application already had the message.
    pub duplicates: Counter,
    /// Re-sends of guaranteed messages that were not acknowledged in time.
    pub retries: Counter,
    /// Received messages dropped because their envelope's sender is not their subject's sender
    /// token (a forgery, which a secured deployment's permissions let no agent publish).
    pub sender_mismatch: Counter,
    /// Initiating a handoff to its verdict (or timeout), by `outcome`.
    pub handoff: HistogramVec,
}

impl CommMetrics {
    pub(crate) fn new() -> CommMetrics {
        let metrics = CommMetrics::default();
        metrics.ack_rate.set(1.0);
        metrics
    }

    /// Counts an awaited acknowledgment's outcome and refreshes the rate.
    pub(crate) fn record_ack(&self, acked: bool) {
        let outcome = if acked { "acked" } else { "timed_out" };
        self.acks.with_label_values(&[outcome]).inc();
        let ok = self.acks.with_label_values(&["acked"]).get() as f64;
        let missed = self.acks.with_label_values(&["timed_out"]).get() as f64;
        self.ack_rate.set(ok / (ok + missed).max(1.0));
    }

    /// Prometheus text exposition of these metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_traffic(&mut out);
        self.render_acks(&mut out);
        self.render_losses_and_retries(&mut out);
        family(
            &mut out,
            AGENT_CLIENT_HANDOFF_SECONDS,
            "Handoff initiation to verdict, seen by the initiator",
            "histogram",
        );
        self.handoff
            .render(&mut out, AGENT_CLIENT_HANDOFF_SECONDS, "outcome");
        out
    }

    /// Messages sent and received, and how long they took to arrive.
    fn render_traffic(&self, out: &mut String) {
        family(
            out,
            AGENT_MESSAGES_TOTAL,
            "Messages by type and direction",
            "counter",
        );
        self.messages
            .render(out, AGENT_MESSAGES_TOTAL, &["type", "direction"]);
        family(
            out,
            AGENT_MESSAGE_LATENCY_SECONDS,
            "Message creation to delivery to the application, by priority",
            "histogram",
        );
        self.latency
            .render(out, AGENT_MESSAGE_LATENCY_SECONDS, "priority");
    }

    /// Awaited acknowledgments: the count by outcome and the share received.
    fn render_acks(&self, out: &mut String) {
        family(
            out,
            AGENT_MESSAGE_ACKS_TOTAL,
            "Awaited acknowledgments by outcome",
            "counter",
        );
        self.acks
            .render(out, AGENT_MESSAGE_ACKS_TOTAL, &["outcome"]);
        family(
            out,
            AGENT_MESSAGE_ACK_RATE,
            "Share of awaited acknowledgments received",
            "gauge",
        );
        let _ = writeln!(out, "{AGENT_MESSAGE_ACK_RATE} {}", self.ack_rate.get());
    }

    /// Messages dropped or given up on, duplicates kept back, and re-sends.
    fn render_losses_and_retries(&self, out: &mut String) {
        counter_family(
            out,
            AGENT_MESSAGES_EXPIRED_TOTAL,
            "Messages dropped past their TTL",
            &self.expired,
        );
        counter_family(
            out,
            AGENT_MESSAGES_DEAD_LETTERED_TOTAL,
            "Guaranteed messages given up on and dead-lettered",
            &self.dead_lettered,
        );
        counter_family(
            out,
            AGENT_MESSAGES_DUPLICATE_TOTAL,
            "Duplicate deliveries kept from the application",
            &self.duplicates,
        );
        counter_family(
            out,
            AGENT_MESSAGE_RETRIES_TOTAL,
            "Re-sends of unacknowledged guaranteed messages",
            &self.retries,
        );
        counter_family(
            out,
            AGENT_MESSAGES_SENDER_MISMATCH_TOTAL,
            "Messages dropped because their sender is not their subject's sender token",
            &self.sender_mismatch,
        );
    }
}

/// A label-less counter with its HELP and TYPE lines.
fn counter_family(out: &mut String, name: &str, help: &str, counter: &Counter) {
    family(out, name, help, "counter");
    let _ = writeln!(out, "{name} {}", counter.get());
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` with the text format's escapes.
fn labels(names: &[&str], values: &[String]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{n}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A monotonic count.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Counters by label values (a bounded set: the callers pass enum names, never ids).
#[derive(Clone, Default)]
pub struct CounterVec(Arc<Mutex<BTreeMap<Vec<String>, Counter>>>);

impl CounterVec {
    pub fn with_label_values(&self, values: &[&str]) -> Counter {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut map = lock(&self.0);
        map.entry(key).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, label_names: &[&str]) {
        let map = lock(&self.0);
        for (values, counter) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{} {}",
                labels(label_names, values),
                counter.get()
            );
        }
    }
}

/// Observations in the latency buckets (seconds).
#[derive(Clone, Default)]
pub struct Histogram(Arc<Mutex<HistogramData>>);

#[derive(Default)]
struct HistogramData {
    /// Observations at or below each of `LATENCY_BUCKETS`, not cumulative.
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let mut h = lock(&self.0);
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn get_sample_count(&self) -> u64 {
        lock(&self.0).count
    }

    pub fn get_sample_sum(&self) -> f64 {
        lock(&self.0).sum
    }

    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let h = lock(&self.0);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count);
    }
}

/// Histograms by one label's value.
#[derive(Clone, Default)]
pub struct HistogramVec(Arc<Mutex<BTreeMap<String, Histogram>>>);

impl HistogramVec {
    pub fn with_label_values(&self, values: &[&str]) -> Histogram {
        let key = values.first().copied().unwrap_or_default().to_string();
        let mut map = lock(&self.0);
        map.entry(key).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let map = lock(&self.0);
        for (value, histogram) in map.iter() {
            histogram.render(out, name, label, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets_in_the_text_format() {
        let m = CommMetrics::new();
        m.messages.with_label_values(&["broadcast", "out"]).inc();
        m.messages.with_label_values(&["broadcast", "out"]).inc();
        m.record_ack(true);
        m.record_ack(false);
        m.latency.with_label_values(&["high"]).observe(0.003);
        m.latency.with_label_values(&["high"]).observe(20.0);
        let text = m.render();
        assert!(
            text.contains("agent_messages_total{type=\"broadcast\",direction=\"out\"} 2"),
            "{text}"
        );
        assert!(text.contains("agent_message_ack_rate 0.5"), "{text}");
        assert!(
            text.contains("agent_message_acks_total{outcome=\"timed_out\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("agent_message_latency_seconds_bucket{priority=\"high\",le=\"0.002\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("agent_message_latency_seconds_bucket{priority=\"high\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("agent_message_latency_seconds_bucket{priority=\"high\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("agent_message_latency_seconds_count{priority=\"high\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE agent_message_retries_total counter"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&["a"], &["x\"y".to_string()]), "{a=\"x\\\"y\"}");
    }
}
