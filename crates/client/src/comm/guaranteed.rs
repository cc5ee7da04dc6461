//! Guaranteed delivery: store a copy per recipient, wait for their acknowledgments, re-send to
//! the silent ones with exponential backoff and jitter (`backon`), and when the retry policy is
//! spent (or the TTL passed) give up: park the message in the dead-letter stream and put an
//! ERROR_REPORT in the sender's own inbox.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::send::publish_copy;
use super::tracker::{DeliveryRecord, DeliveryStatus};
use super::{Shared, receive::Delivery};
use crate::error::Error;
use crate::transport;
use switchyard_protocol::{
    Envelope, ErrorReport, MessagePriority, MessageType, RetryPolicy, now_ms,
};

/// Stores the first copies (an error here reaches the caller) and starts the retry loop.
pub(crate) async fn start(shared: &Arc<Shared>, envelope: Envelope<Value>) -> Result<(), Error> {
    let rx = shared
        .tracker
        .start(envelope.message_id, envelope.recipients.clone());
    for recipient in &envelope.recipients {
        if let Err(e) = publish_copy(shared, &envelope, recipient, 1).await {
            shared.tracker.finish(
                &envelope.message_id,
                DeliveryStatus::Failed("not_stored".into()),
            );
            return Err(e);
        }
    }
    tokio::spawn(retry_until_acknowledged(shared.clone(), envelope, rx));
    Ok(())
}

fn backoff_of(policy: RetryPolicy) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(policy.initial_backoff_ms))
        .with_max_delay(Duration::from_millis(
            policy.max_backoff_ms.max(policy.initial_backoff_ms),
        ))
        .with_jitter()
        .with_max_times(policy.max_attempts.saturating_sub(1) as usize)
        .build()
}

/// Waits up to the ack timeout for every recipient; true when all acknowledged.
async fn all_acknowledged(shared: &Shared, rx: &mut watch::Receiver<DeliveryRecord>) -> bool {
    let wait = rx.wait_for(|r| r.unacknowledged().is_empty());
    matches!(
        tokio::time::timeout(shared.options.ack_timeout, wait).await,
        Ok(Ok(_))
    )
}

async fn retry_until_acknowledged(
    shared: Arc<Shared>,
    envelope: Envelope<Value>,
    mut rx: watch::Receiver<DeliveryRecord>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let policy = envelope.retry_policy.unwrap_or(shared.options.retry_policy);
    let mut backoff = backoff_of(policy);
    let mut attempt = 1;
    loop {
        if all_acknowledged(&shared, &mut rx).await {
            settle(
                &shared,
                &envelope.message_id,
                &rx,
                DeliveryStatus::Delivered,
            );
            return;
        }
        let give_up = if envelope.is_expired(now_ms()) {
            Some("expired")
        } else {
            None
        };
        let delay = match (give_up, backoff.next()) {
            (None, Some(delay)) => delay,
            (reason, _) => {
                give_up_on(&shared, &envelope, &rx, reason.unwrap_or("ack_timeout")).await;
                return;
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
        resend(&shared, &envelope, &rx, attempt).await;
    }
}

async fn resend(
    shared: &Shared,
    envelope: &Envelope<Value>,
    rx: &watch::Receiver<DeliveryRecord>,
    attempt: u32,
) {
    let silent = rx.borrow().unacknowledged();
    if silent.is_empty() {
        return;
    }
    shared.tracker.count_attempt(&envelope.message_id);
    shared.metrics.retries.inc();
    for recipient in silent {
        if let Err(e) = publish_copy(shared, envelope, &recipient, attempt).await {
            // The next attempt may get through; giving up is the retry policy's call.
            tracing::warn!(agent_id = %shared.agent_id, recipient = %recipient, error = %e, "re-send failed");
        }
    }
}

/// Counts each awaited acknowledgment once, then marks the record final.
fn settle(
    shared: &Shared,
    message_id: &Uuid,
    rx: &watch::Receiver<DeliveryRecord>,
    status: DeliveryStatus,
) {
    let (acked, missing) = {
        let record = rx.borrow();
        (record.acknowledged_by.len(), record.unacknowledged().len())
    };
    for _ in 0..acked {
        shared.metrics.record_ack(true);
    }
    for _ in 0..missing {
        shared.metrics.record_ack(false);
    }
    shared.tracker.finish(message_id, status);
}

async fn give_up_on(
    shared: &Shared,
    envelope: &Envelope<Value>,
    rx: &watch::Receiver<DeliveryRecord>,
    code: &str,
) {
    let silent = rx.borrow().unacknowledged();
    settle(
        shared,
        &envelope.message_id,
        rx,
        DeliveryStatus::Failed(code.to_string()),
    );
    shared.metrics.dead_lettered.inc();
    tracing::warn!(agent_id = %shared.agent_id, message_id = %envelope.message_id, code, "guaranteed delivery gave up");
    let dlq = shared
        .subjects
        .message_dead_letter(envelope.message_type, &shared.agent_id);
    let id = format!("{}:dead_letter", envelope.message_id);
    if let Err(e) = transport::publish_stored(&shared.js, dlq, &id, envelope).await {
        tracing::warn!(agent_id = %shared.agent_id, error = %e, "dead letter not stored");
    }
    let report = ErrorReport {
        code: code.to_string(),
        message: format!(
            "{} was not acknowledged by {} after {} attempt(s)",
            envelope.message_id,
            silent.join(", "),
            rx.borrow().attempts
        ),
        subject: None,
    };
    // Built with a JSON payload directly: the inbox holds untyped envelopes.
    let Ok(report) = serde_json::to_value(report) else {
        return;
    };
    let mut notice = Envelope::new(
        shared.agent_id.clone(),
        MessageType::ErrorReport,
        report,
        now_ms(),
    )
    .with_correlation(envelope.message_id.to_string())
    .with_recipient(shared.agent_id.clone());
    notice.priority = MessagePriority::High;
    shared
        .inbox
        .push(MessagePriority::High, Delivery::local(notice))
        .await;
}

/// Asynchronous mode with acknowledgment: one wait, no retries; counts the outcome.
pub(crate) async fn await_acks_once(
    shared: Arc<Shared>,
    message_id: Uuid,
    mut rx: watch::Receiver<DeliveryRecord>,
) {
    let status = if all_acknowledged(&shared, &mut rx).await {
        DeliveryStatus::Delivered
    } else {
        DeliveryStatus::TimedOut
    };
    settle(&shared, &message_id, &rx, status);
}
