//! The protocol client's metrics, in a registry of its own per [`CommunicationProtocol`] (so
//! several agents in one process do not collide); render it or register it with your exporter.
//!
//! [`CommunicationProtocol`]: super::CommunicationProtocol

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::error::Error;
use crate::metrics::{
    AGENT_CLIENT_HANDOFF_SECONDS, AGENT_MESSAGE_ACK_RATE, AGENT_MESSAGE_ACKS_TOTAL,
    AGENT_MESSAGE_LATENCY_SECONDS, AGENT_MESSAGE_RETRIES_TOTAL, AGENT_MESSAGES_DEAD_LETTERED_TOTAL,
    AGENT_MESSAGES_DUPLICATE_TOTAL, AGENT_MESSAGES_EXPIRED_TOTAL, AGENT_MESSAGES_TOTAL,
    LATENCY_BUCKETS, registered,
};

/// Handles to one protocol client's metrics. Labels are bounded: message type, direction,
/// priority, outcome.
#[derive(Clone)]
pub struct CommMetrics {
    registry: Registry,
    /// Messages by `type` and `direction` (`out` sent, `in` handed to the application).
    pub messages: IntCounterVec,
    /// Creation at the sender to hand-over to the application, by `priority`.
    pub latency: HistogramVec,
    /// Acknowledgments awaited by this sender, by `outcome` (`acked`, `timed_out`).
    pub acks: IntCounterVec,
    /// acked / (acked + timed_out) over this client's life; 1 before anything was awaited.
    pub ack_rate: Gauge,
    /// Received messages dropped because their TTL ran out before the application got them.
    pub expired: IntCounter,
    /// Guaranteed messages given up on (retries spent or TTL passed), parked in the DLQ stream.
    pub dead_lettered: IntCounter,
    /// Deliveries dropped because the application already had the message.
    pub duplicates: IntCounter,
    /// Re-sends of guaranteed messages that were not acknowledged in time.
    pub retries: IntCounter,
    /// Initiating a handoff to its verdict (or timeout), by `outcome`.
    pub handoff: HistogramVec,
}

impl CommMetrics {
    pub(crate) fn new() -> Result<CommMetrics, Error> {
        let r = Registry::new();
        let counter = |name: &str, help: &str| registered(&r, IntCounter::new(name, help));
        Ok(CommMetrics {
            messages: registered(
                &r,
                IntCounterVec::new(
                    Opts::new(AGENT_MESSAGES_TOTAL, "Messages by type and direction"),
                    &["type", "direction"],
                ),
            )?,
            latency: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        AGENT_MESSAGE_LATENCY_SECONDS,
                        "Message creation to delivery to the application, by priority",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["priority"],
                ),
            )?,
            acks: registered(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        AGENT_MESSAGE_ACKS_TOTAL,
                        "Awaited acknowledgments by outcome",
                    ),
                    &["outcome"],
                ),
            )?,
            ack_rate: registered(
                &r,
                Gauge::new(
                    AGENT_MESSAGE_ACK_RATE,
                    "Share of awaited acknowledgments received",
                ),
            )?,
            expired: counter(
                AGENT_MESSAGES_EXPIRED_TOTAL,
                "Messages dropped past their TTL",
            )?,
            dead_lettered: counter(
                AGENT_MESSAGES_DEAD_LETTERED_TOTAL,
                "Guaranteed messages given up on and dead-lettered",
            )?,
            duplicates: counter(
                AGENT_MESSAGES_DUPLICATE_TOTAL,
                "Duplicate deliveries kept from the application",
            )?,
            retries: counter(
                AGENT_MESSAGE_RETRIES_TOTAL,
                "Re-sends of unacknowledged guaranteed messages",
            )?,
            handoff: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        AGENT_CLIENT_HANDOFF_SECONDS,
                        "Handoff initiation to verdict, seen by the initiator",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["outcome"],
                ),
            )?,
            registry: r,
        })
    }

    /// Counts an awaited acknowledgment's outcome and refreshes the rate.
    pub(crate) fn record_ack(&self, acked: bool) {
        let outcome = if acked { "acked" } else { "timed_out" };
        self.acks.with_label_values(&[outcome]).inc();
        let ok = self.acks.with_label_values(&["acked"]).get() as f64;
        let missed = self.acks.with_label_values(&["timed_out"]).get() as f64;
        self.ack_rate.set(ok / (ok + missed).max(1.0));
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of these metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
