//! Receiving: one pulling task per priority (stored messages), one subscription task for core
//! messages (synchronous requests, fire-and-forget, acknowledgments, the coordinator's error
//! reports). Every message passes the same gate before it can take an inbox slot: decodable, not
//! expired, not a duplicate, not something a call is waiting for.

use crate::sync::lock;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{AckMode, InboxMessage, Shared};
use crate::error::{Error, nats_error};
use crate::transport;
use switchyard_protocol::{
    ALL_AGENTS, DeliveryMode, Envelope, ErrorReport, MessageAck, MessagePriority, MessageType,
    now_ms, validate_agent_id,
};

/// A message in the inbox, with what is needed to settle it once the application takes it.
pub(crate) struct Delivery {
    envelope: Envelope<Value>,
    reply: Option<String>,
    /// The stored copy, acknowledged to JetStream when the application takes the message (so
    /// unread messages count against the consumer's `max_ack_pending`: backpressure).
    stored: Option<jetstream::Message>,
}

impl Delivery {
    /// A message the client itself puts in the inbox (its own delivery failure reports).
    pub(crate) fn local(envelope: Envelope<Value>) -> Delivery {
        Delivery {
            envelope,
            reply: None,
            stored: None,
        }
    }
}

pub(crate) async fn start(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>, Error> {
    let o = &shared.options;
    let stream = transport::messages_stream_config(
        &shared.subjects,
        o.messages_max_age,
        o.duplicate_window,
        o.max_message_bytes,
    );
    transport::ensure_stream(&shared.js, stream).await?;
    let dead_letters = transport::dead_letter_stream_config(&shared.subjects);
    transport::ensure_stream(&shared.js, dead_letters).await?;
    let mut tasks = Vec::new();
    // Core first: an acknowledgment or response must never arrive unheard. Three tasks, so
    // that acknowledgments and the coordinator's refusals (which calls may be waiting for) are
    // never stuck behind a message waiting for an inbox slot.
    let me = shared.agent_id.as_str();
    let direct = subscribe_all(shared, shared.subjects.direct_filters(me)).await?;
    let acks = subscribe_all(shared, vec![shared.subjects.direct_acks(me)]);
    let acks = acks.await?;
    let errors = vec![shared.subjects.addressed(MessageType::ErrorReport, me)];
    let errors = subscribe_all(shared, errors).await?;
    tasks.push(tokio::spawn(receive_acks(shared.clone(), acks)));
    // The coordinator's error reports have no sender token: only the optimizer may publish them.
    tasks.push(tokio::spawn(receive_core(shared.clone(), errors, false)));
    tasks.push(tokio::spawn(receive_core(shared.clone(), direct, true)));
    let max_pending = i64::try_from(o.message_buffer_size).unwrap_or(i64::MAX);
    // A server that asks for credentials applies per-identity permissions, under which an agent
    // may not create consumers: the optimizer creates them when it applies the registration.
    let may_create = !shared.client.server_info().auth_required;
    for priority in MessagePriority::ALL {
        let cfg = transport::message_consumer_config(
            &shared.subjects,
            &shared.agent_id,
            priority,
            max_pending,
            o.redelivery_wait,
        );
        let wait = o.consumer_wait;
        let consumer =
            transport::message_consumer(&shared.js, &shared.subjects, cfg, may_create, wait)
                .await?;
        tasks.push(tokio::spawn(receive_stored(shared.clone(), consumer)));
    }
    Ok(tasks)
}

type CoreStream = futures::stream::SelectAll<async_nats::Subscriber>;

async fn subscribe_all(shared: &Shared, subjects: Vec<String>) -> Result<CoreStream, Error> {
    let mut subscriptions = Vec::new();
    for subject in subjects {
        let sub = shared
            .client
            .subscribe(subject)
            .await
            .map_err(|e| nats_error("cannot subscribe to direct messages", e))?;
        subscriptions.push(sub);
    }
    Ok(futures::stream::select_all(subscriptions))
}

async fn receive_acks(shared: Arc<Shared>, mut acks: CoreStream) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let message = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            next = acks.next() => match next { Some(m) => m, None => return },
        };
        let Some(envelope) = decode(&shared, &message.payload) else {
            continue;
        };
        if sender_proven(&shared, &message.subject, &envelope) {
            note_ack(&shared, &envelope);
        }
    }
}

/// Messages asked for per pull request, and how long a request waits on the server.
const PULL_BATCH: usize = 64;
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Pulls one priority's messages (see `transport::Puller` for why batch requests).
async fn receive_stored(shared: Arc<Shared>, consumer: jetstream::consumer::PullConsumer) {
    let mut shutdown = shared.shutdown.subscribe();
    let label = format!("messages of {}", shared.agent_id);
    let mut puller = transport::Puller::new(consumer, PULL_BATCH, PULL_EXPIRES, label);
    // A chunk is taken into the inbox before the next request is made, which keeps
    // backpressure simple.
    while let Some(chunk) = puller.next_chunk(&mut shutdown).await {
        for message in chunk {
            accept_stored(&shared, message).await;
        }
    }
}

async fn accept_stored(shared: &Shared, message: jetstream::Message) {
    let Some(envelope) = decode(shared, &message.payload) else {
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    if !sender_proven(shared, &message.subject, &envelope) {
        let _ = message.ack_with(AckKind::Term).await;
        report_mismatch(shared, &message.subject, &envelope).await;
        return;
    }
    if !admit(shared, &envelope).await {
        let _ = message.ack_with(AckKind::Term).await;
        return;
    }
    let priority = envelope.priority;
    let delivery = Delivery {
        envelope,
        reply: None,
        stored: Some(message),
    };
    route(shared, priority, delivery).await;
}

/// Receives core messages; `check_sender` for subjects that end in a sender token.
async fn receive_core(shared: Arc<Shared>, mut messages: CoreStream, check_sender: bool) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let message = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            next = messages.next() => match next { Some(m) => m, None => return },
        };
        let Some(envelope) = decode(shared.as_ref(), &message.payload) else {
            continue;
        };
        if envelope.message_type == MessageType::MessageAck {
            continue; // `receive_acks` has it too
        }
        if check_sender && !sender_proven(&shared, &message.subject, &envelope) {
            refuse_request(&shared, message.reply.as_deref(), &envelope).await;
            continue;
        }
        if !admit(&shared, &envelope).await {
            continue;
        }
        let priority = envelope.priority;
        let delivery = Delivery {
            envelope,
            reply: message.reply.map(|r| r.to_string()),
            stored: None,
        };
        route(&shared, priority, delivery).await;
    }
}

fn decode(shared: &Shared, bytes: &[u8]) -> Option<Envelope<Value>> {
    match serde_json::from_slice::<Envelope<Value>>(bytes) {
        Ok(envelope) => Some(envelope),
        Err(e) => {
            tracing::warn!(agent_id = %shared.agent_id, error = %e, "undecodable message dropped");
            None
        }
    }
}

/// True when the envelope's `sender` is the subject's sender token. A secured deployment's
/// permissions let an agent publish only on subjects ending in its own id, so the token is
/// proven and an envelope naming someone else is a forgery (in an unsecured deployment, a
/// broken or malicious client): it is counted, logged and never handed on.
fn sender_proven(shared: &Shared, subject: &str, envelope: &Envelope<Value>) -> bool {
    let token = shared.subjects.message_sender(subject);
    if token == Some(envelope.sender.as_str()) {
        return true;
    }
    shared.metrics.sender_mismatch.inc();
    tracing::warn!(
        agent_id = %shared.agent_id,
        subject,
        sender = %envelope.sender,
        message_id = %envelope.message_id,
        "message dropped: its sender is not its subject's sender token"
    );
    false
}

/// Tells the publisher of a stored message whose sender did not match (the subject's token,
/// the only sender known for sure) with an ERROR_REPORT `sender_mismatch`, when it waits for an
/// acknowledgment.
async fn report_mismatch(shared: &Shared, subject: &str, envelope: &Envelope<Value>) {
    let Some(publisher) = shared.subjects.message_sender(subject) else {
        return;
    };
    let waiting = envelope.requires_ack || envelope.delivery_mode == DeliveryMode::Guaranteed;
    if !waiting || publisher == shared.agent_id || !validate_agent_id(publisher) {
        return;
    }
    let text = format!(
        "{} names {} as its sender but was published as {publisher}",
        envelope.message_id, envelope.sender
    );
    report_to(shared, publisher, envelope, "sender_mismatch", text).await;
}

/// Answers a synchronous request whose sender did not match with an ERROR_REPORT
/// `sender_mismatch` on its reply subject, so the requester does not wait out its timeout.
async fn refuse_request(shared: &Shared, reply: Option<&str>, envelope: &Envelope<Value>) {
    let Some(reply) = reply else {
        return;
    };
    let report = ErrorReport {
        code: "sender_mismatch".into(),
        message: format!(
            "{} names {} as its sender, which is not its subject's sender token",
            envelope.message_id, envelope.sender
        ),
        subject: None,
    };
    let mut answer = Envelope::new(
        shared.agent_id.clone(),
        MessageType::ErrorReport,
        report,
        now_ms(),
    )
    .with_correlation(envelope.message_id.to_string());
    answer.delivery_mode = DeliveryMode::Synchronous;
    let sent = transport::publish_core(&shared.client, reply.to_string(), &answer).await;
    if let Err(e) = sent {
        tracing::warn!(agent_id = %shared.agent_id, error = %e, "sender mismatch not reported");
    }
}

fn note_ack(shared: &Shared, envelope: &Envelope<Value>) {
    let Ok(ack) = serde_json::from_value::<MessageAck>(envelope.payload.clone()) else {
        return;
    };
    if let Ok(id) = ack.message_id.parse::<Uuid>() {
        shared.tracker.acknowledge(&id, &ack.agent_id);
    }
}

/// The gate: false for a message past its TTL or already handed to the application.
async fn admit(shared: &Shared, envelope: &Envelope<Value>) -> bool {
    // A broadcast reaches its sender's own consumers too; "every agent" means every other one.
    let own_broadcast =
        envelope.sender == shared.agent_id && envelope.recipients.iter().any(|r| r == ALL_AGENTS);
    if own_broadcast {
        return false;
    }
    if envelope.is_expired(now_ms()) {
        drop_expired(shared, envelope).await;
        return false;
    }
    if !shared.options.enable_tracking {
        return true;
    }
    let seen = lock(&shared.seen).check_and_insert(envelope.message_id);
    match seen {
        None => true,
        Some(acknowledged) => {
            shared.metrics.duplicates.inc();
            // The sender is retrying because our acknowledgment went missing: say it again.
            if acknowledged {
                let _ = send_ack(shared, envelope).await;
            }
            false
        }
    }
}

/// Hands a message to the call waiting for it, or buffers it for the application.
async fn route(shared: &Shared, priority: MessagePriority, delivery: Delivery) {
    if let Some(waiter) = shared.take_waiter(delivery.envelope.correlation_id.as_deref()) {
        if let Some(stored) = &delivery.stored {
            let _ = stored.ack().await;
        }
        let _ = waiter.send(delivery.envelope);
        return;
    }
    // Waits while the inbox is full; false only when the endpoint is closing, and then the
    // stored copy stays unacknowledged and is redelivered next time.
    shared.inbox.push(priority, delivery).await;
}

/// The application's next message: re-checks the TTL (it may have run out while buffered),
/// settles the stored copy, counts, and acknowledges in auto mode.
pub(crate) async fn next_for_application(shared: &Shared) -> Option<InboxMessage> {
    loop {
        // Let receiving tasks woken by the last freed slot push first: on a busy single-thread
        // runtime an application popping in a tight loop would otherwise drain every buffered
        // low-priority message before a waiting critical one could take a slot.
        tokio::task::yield_now().await;
        let delivery = shared.inbox.pop().await?;
        if delivery.envelope.is_expired(now_ms()) {
            if let Some(stored) = &delivery.stored {
                let _ = stored.ack_with(AckKind::Term).await;
            }
            drop_expired(shared, &delivery.envelope).await;
            continue;
        }
        if let Some(stored) = &delivery.stored {
            let _ = stored.ack().await;
        }
        let envelope = delivery.envelope;
        observe_delivery(shared, &envelope);
        let is_request = delivery.reply.is_some();
        if envelope.requires_ack && !is_request && shared.options.ack_mode == AckMode::Auto {
            if let Err(e) = send_ack(shared, &envelope).await {
                tracing::warn!(agent_id = %shared.agent_id, error = %e, "acknowledgment not sent");
            }
        }
        return Some(InboxMessage {
            envelope,
            reply_subject: delivery.reply,
        });
    }
}

fn observe_delivery(shared: &Shared, envelope: &Envelope<Value>) {
    let m = &shared.metrics;
    m.messages
        .with_label_values(&[envelope.message_type.as_str(), "in"])
        .inc();
    let age_ms = now_ms().saturating_sub(envelope.created_at_ms);
    m.latency
        .with_label_values(&[envelope.priority.as_str()])
        .observe(age_ms as f64 / 1000.0);
}

/// Counts an expired message and, when its sender is waiting for an acknowledgment, tells it
/// with an ERROR_REPORT (code `expired`) in its inbox.
async fn drop_expired(shared: &Shared, envelope: &Envelope<Value>) {
    shared.metrics.expired.inc();
    tracing::info!(agent_id = %shared.agent_id, message_id = %envelope.message_id, "message expired before delivery");
    let waiting = envelope.requires_ack || envelope.delivery_mode == DeliveryMode::Guaranteed;
    if !waiting || envelope.sender == shared.agent_id {
        return;
    }
    let text = format!(
        "{} expired before {} received it",
        envelope.message_id, shared.agent_id
    );
    report_to(shared, &envelope.sender, envelope, "expired", text).await;
}

/// Stores an ERROR_REPORT with `code` about `envelope` in `recipient`'s inbox (high priority).
async fn report_to(
    shared: &Shared,
    recipient: &str,
    envelope: &Envelope<Value>,
    code: &str,
    text: String,
) {
    let report = ErrorReport {
        code: code.to_string(),
        message: text,
        subject: None,
    };
    let mut reply = Envelope::new(
        shared.agent_id.clone(),
        MessageType::ErrorReport,
        report,
        now_ms(),
    )
    .with_correlation(envelope.message_id.to_string())
    .with_recipient(recipient.to_string());
    reply.priority = MessagePriority::High;
    let me = shared.agent_id.as_str();
    let subject = shared
        .subjects
        .message(MessageType::ErrorReport, recipient, reply.priority, me);
    // Deterministic id: a redelivered copy does not report twice.
    let id = format!("{}:{code}:{me}", envelope.message_id);
    if let Err(e) = transport::publish_stored(&shared.js, subject, &id, &reply).await {
        tracing::warn!(agent_id = %me, error = %e, code, "error report not sent");
    }
}

/// Sends a MESSAGE_ACK for `envelope` to its sender (core NATS: a lost acknowledgment makes
/// the sender retry, and the retry is acknowledged again).
pub(crate) async fn send_ack(shared: &Shared, envelope: &Envelope<Value>) -> Result<(), Error> {
    {
        let mut seen = lock(&shared.seen);
        seen.mark_acknowledged(envelope.message_id);
    }
    let ack = MessageAck {
        message_id: envelope.message_id.to_string(),
        agent_id: shared.agent_id.clone(),
    };
    let mut reply = Envelope::new(
        shared.agent_id.clone(),
        MessageType::MessageAck,
        ack,
        now_ms(),
    )
    .with_correlation(envelope.message_id.to_string())
    .with_recipient(envelope.sender.clone());
    reply.delivery_mode = DeliveryMode::FireAndForget;
    let subject =
        shared
            .subjects
            .direct(MessageType::MessageAck, &envelope.sender, &shared.agent_id);
    transport::publish_core(&shared.client, subject, &reply).await
}
