//! `switchyard message-bench`: the inter-agent protocol measured over a real nats-server.
//!
//! Two measurements:
//! * **throughput** per delivery mode: one agent sends `messages` to another as fast as it can
//!   (64 sends in flight), the other drains its inbox; messages per second from the first send to
//!   the last delivery, and creation→delivery latency;
//! * **priority under backlog**: the receiver works 1 ms per message while the sender offers
//!   twice that rate, with the four priorities mixed evenly; latency per priority shows critical
//!   messages overtaking the backlog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::LatencySummary;
use super::deployment::Deployment;
use switchyard_client::comm::{CommunicationProtocol, OutgoingMessage};
use switchyard_client::error::Error;
use switchyard_protocol::{DeliveryMode, MessagePriority, MessageType};
use switchyard_server::config::Config;

#[derive(Debug, Clone)]
pub struct MessageBenchOptions {
    /// Messages per delivery mode in the throughput runs.
    pub messages: usize,
    /// Length of the backlog run.
    pub backlog_s: f64,
    pub start_servers: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: String,
    pub messages: usize,
    pub delivered: usize,
    pub messages_per_s: f64,
    pub latency_ms: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageBenchReport {
    pub throughput: Vec<ModeResult>,
    /// Latency per priority while the receiver is backed up.
    pub backlog_latency_ms: BTreeMap<String, LatencySummary>,
    pub backlog_offered_per_s: f64,
}

fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run_message_bench(
    config: &Config,
    options: &MessageBenchOptions,
) -> Result<MessageBenchReport, Error> {
    let deployment = Deployment::start(config, 0, options.start_servers).await?;
    let result = measure(&deployment, options).await;
    deployment.stop().await;
    result
}

async fn measure(
    deployment: &Deployment,
    options: &MessageBenchOptions,
) -> Result<MessageBenchReport, Error> {
    let mut throughput = Vec::new();
    for (i, mode) in [
        DeliveryMode::FireAndForget,
        DeliveryMode::Asynchronous,
        DeliveryMode::Guaranteed,
    ]
    .into_iter()
    .enumerate()
    {
        let (tx, rx) = pair(deployment, &format!("mb{i}")).await?;
        throughput.push(run_mode(&tx, rx, mode, options.messages).await?);
    }
    let (tx, rx) = pair(deployment, "mbq").await?;
    let (backlog_latency_ms, offered) = run_backlog(&tx, rx, options.backlog_s).await?;
    Ok(MessageBenchReport {
        throughput,
        backlog_latency_ms,
        backlog_offered_per_s: offered,
    })
}

async fn pair(
    deployment: &Deployment,
    run: &str,
) -> Result<(CommunicationProtocol, Arc<CommunicationProtocol>), Error> {
    let subjects = deployment.subjects();
    let options = deployment.config().protocol_options();
    let connect = |id: String| {
        let subjects = subjects.clone();
        let options = options.clone();
        async move {
            let client = deployment.nats_client(&id).await?;
            CommunicationProtocol::connect(client, subjects, id, options).await
        }
    };
    let sender = connect(format!("{run}-sender")).await?;
    let receiver = connect(format!("{run}-receiver")).await?;
    Ok((sender, Arc::new(receiver)))
}

/// Drains `receiver` until `expected` messages or `idle` without one; returns latencies (µs)
/// per priority and the time of the last delivery.
fn drain(
    receiver: Arc<CommunicationProtocol>,
    expected: usize,
    work: Duration,
) -> tokio::task::JoinHandle<(BTreeMap<MessagePriority, Vec<Duration>>, Instant)> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<MessagePriority, Vec<Duration>> = BTreeMap::new();
        let mut last = Instant::now();
        let mut count = 0;
        while count < expected {
            let Some(message) = receiver.recv_timeout(Duration::from_secs(5)).await else {
                break;
            };
            let sent = message.envelope.payload["t_us"].as_u64().unwrap_or(0);
            let latency = Duration::from_micros(micros_now().saturating_sub(sent));
            seen.entry(message.envelope.priority)
                .or_default()
                .push(latency);
            last = Instant::now();
            count += 1;
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
        }
        (seen, last)
    })
}

fn message(mode: DeliveryMode, to: &str, priority: MessagePriority) -> OutgoingMessage {
    OutgoingMessage::new(MessageType::StatusUpdate, json!({ "t_us": micros_now() }))
        .to(to)
        .delivery(mode)
        .priority(priority)
}

async fn run_mode(
    sender: &CommunicationProtocol,
    receiver: Arc<CommunicationProtocol>,
    mode: DeliveryMode,
    count: usize,
) -> Result<ModeResult, Error> {
    let to = receiver.agent_id().to_string();
    let draining = drain(receiver, count, Duration::ZERO);
    let started = Instant::now();
    let sends = futures::stream::iter(0..count)
        .map(|_| sender.send_message(message(mode, &to, MessagePriority::Normal)))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for sent in sends {
        sent?;
    }
    let (seen, last) = draining
        .await
        .map_err(|e| Error::new(switchyard_client::error::ErrorKind::Shutdown, e.to_string()))?;
    let latencies: Vec<Duration> = seen.into_values().flatten().collect();
    let elapsed = last.saturating_duration_since(started).as_secs_f64();
    Ok(ModeResult {
        mode: format!("{mode:?}"),
        messages: count,
        delivered: latencies.len(),
        messages_per_s: latencies.len() as f64 / elapsed.max(1e-9),
        latency_ms: LatencySummary::from_durations(&latencies),
    })
}

/// The receiver works 1 ms per message; the sender offers ~2 000 messages/s for `seconds`.
async fn run_backlog(
    sender: &CommunicationProtocol,
    receiver: Arc<CommunicationProtocol>,
    seconds: f64,
) -> Result<(BTreeMap<String, LatencySummary>, f64), Error> {
    let to = receiver.agent_id().to_string();
    let rate = 2_000.0;
    let total = (rate * seconds) as usize;
    let draining = drain(receiver, total, Duration::from_millis(1));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100.0) as usize;
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let priority = MessagePriority::ALL[sent % MessagePriority::ALL.len()];
            sender
                .send_message(message(DeliveryMode::Asynchronous, &to, priority))
                .await?;
            sent += 1;
        }
    }
    let offered = sent as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let (seen, _) = draining
        .await
        .map_err(|e| Error::new(switchyard_client::error::ErrorKind::Shutdown, e.to_string()))?;
    let summary = seen
        .into_iter()
        .map(|(p, l)| (p.as_str().to_string(), LatencySummary::from_durations(&l)))
        .collect();
    Ok((summary, offered))
}

/// The report as a table.
pub fn render_message_bench(r: &MessageBenchReport) -> String {
    let mut out = String::from("\nthroughput (one sender, one receiver, 64 sends in flight)\n");
    out.push_str(&format!(
        "  {:<15} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
        "mode", "sent", "delivered", "msgs/s", "p50 ms", "p99 ms"
    ));
    for m in &r.throughput {
        out.push_str(&format!(
            "  {:<15} {:>8} {:>10} {:>10.0} {:>10.2} {:>10.2}\n",
            m.mode, m.messages, m.delivered, m.messages_per_s, m.latency_ms.p50, m.latency_ms.p99
        ));
    }
    out.push_str(&format!(
        "\nbacklog: {:.0} messages/s offered to a receiver that takes 1 ms each\n",
        r.backlog_offered_per_s
    ));
    out.push_str(&format!(
        "  {:<10} {:>9} {:>10} {:>10}\n",
        "priority", "delivered", "p50 ms", "p99 ms"
    ));
    for p in ["critical", "high", "normal", "low"] {
        if let Some(l) = r.backlog_latency_ms.get(p) {
            out.push_str(&format!(
                "  {:<10} {:>9} {:>10.1} {:>10.1}\n",
                p, l.samples, l.p50, l.p99
            ));
        }
    }
    out
}
