//! The inter-agent communication protocol (the seed's `CommunicationProtocol`): one instance per
//! agent sends messages in four delivery modes, receives them through a bounded priority inbox,
//! acknowledges, and takes part in handoffs and resource requests.
//!
//! | mode | travels as | `send_message` returns | guarantee |
//! |---|---|---|---|
//! | `synchronous` | core NATS request to each recipient | their responses | answered, or a timeout error |
//! | `asynchronous` | JetStream publish per recipient | once stored | stored; an offline recipient gets it when back (within TTL) |
//! | `fire_and_forget` | core NATS publish | once handed to the client | none: lost if the recipient is offline |
//! | `guaranteed` | JetStream + acknowledgments + retries | once stored | acknowledged by every recipient, or an ERROR_REPORT to the sender |
//!
//! Layout: [`inbox`] (bounded priority queue), [`receive`] (pulling, TTL, duplicates, routing),
//! [`send`] (the modes), [`guaranteed`] (retry loop), [`tracker`] (acknowledgment records),
//! [`handoff`] (handoffs, resource requests, sync snapshots), [`metrics`], [`pattern`] (which
//! communication pattern suits a group: the seed's protocol selection rule).

mod guaranteed;
mod handoff;
mod inbox;
mod metrics;
mod options;
mod pattern;
mod receive;
mod send;
mod tracker;

pub use handoff::HandoffRequest;
pub use metrics::{AGENT_MESSAGES_TOTAL, CommMetrics};
pub use options::{AckMode, OutgoingMessage, ProtocolOptions};
pub use pattern::{CommunicationPattern, WorkflowShape, recommend_pattern};
pub use tracker::{DeliveryRecord, DeliveryStatus};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Error, ErrorKind};
use inbox::PriorityInbox;
use receive::Delivery;
use switchyard_protocol::{Envelope, Subjects, validate_agent_id};
use tracker::{SeenIds, Tracker};

/// A message handed to the application.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    pub envelope: Envelope<Value>,
    /// Set for synchronous requests: answer with [`CommunicationProtocol::respond`].
    pub reply_subject: Option<String>,
}

/// State shared by the handle, its receiving tasks and its guaranteed-delivery loops.
pub(crate) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    agent_id: String,
    options: ProtocolOptions,
    inbox: PriorityInbox<Delivery>,
    tracker: Tracker,
    seen: Mutex<SeenIds>,
    /// Messages a call is waiting for, by correlation id (handoff verdicts, resource grants).
    waiters: crate::transport::Waiters<Envelope<Value>>,
    metrics: CommMetrics,
    shutdown: watch::Sender<bool>,
}

/// One agent's endpoint of the protocol. Dropping it stops its background tasks.
pub struct CommunicationProtocol {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Handoffs this agent initiated, waiting for their verdicts.
    handoffs: Mutex<HashMap<String, handoff::PendingHandoff>>,
}

impl CommunicationProtocol {
    /// Connects `agent_id` (the seed's `initialize`): makes sure the messages stream exists,
    /// creates the agent's per-priority consumers and starts receiving. Messages stored while the
    /// agent was away are delivered now.
    pub async fn connect(
        client: async_nats::Client,
        subjects: Subjects,
        agent_id: impl Into<String>,
        options: ProtocolOptions,
    ) -> Result<CommunicationProtocol, Error> {
        let agent_id = agent_id.into();
        if !validate_agent_id(&agent_id) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("agent id {agent_id:?} must be 1-64 of [A-Za-z0-9_-] and not `all`"),
            ));
        }
        let js = jetstream::new(client.clone());
        let metrics = CommMetrics::new();
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            client,
            js,
            subjects,
            agent_id,
            inbox: PriorityInbox::new(options.message_buffer_size),
            tracker: Tracker::new(options.enable_tracking),
            seen: Mutex::new(SeenIds::new(options.message_buffer_size.max(1) * 16)),
            waiters: crate::transport::Waiters::default(),
            metrics,
            shutdown,
            options,
        });
        let tasks = receive::start(&shared).await?;
        Ok(CommunicationProtocol {
            shared,
            tasks,
            handoffs: Mutex::new(HashMap::new()),
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.shared.agent_id
    }

    /// Sends a message in its delivery mode; see the module table for what each returns and
    /// guarantees. The message id is also the `Nats-Msg-Id` stem of stored copies.
    pub async fn send_message(&self, message: OutgoingMessage) -> Result<Sent, Error> {
        send::send_message(&self.shared, message).await
    }

    /// Broadcasts this agent's state to every other agent: a `STATUS_UPDATE`, stored
    /// (asynchronous), so agents that are offline get it when they return, within the TTL.
    pub async fn broadcast_status(&self, state: Value) -> Result<Sent, Error> {
        let update = OutgoingMessage::new(switchyard_protocol::MessageType::StatusUpdate, state)
            .to_all()
            .delivery(switchyard_protocol::DeliveryMode::Asynchronous);
        self.send_message(update).await
    }

    /// The next message, highest priority first; waits for one. `None` after [`close`].
    /// A message past its TTL is never returned (it is counted and, when its sender asked for an
    /// acknowledgment, reported back). In [`AckMode::Auto`] a message asking for an
    /// acknowledgment is acknowledged as it is returned.
    ///
    /// [`close`]: CommunicationProtocol::close
    pub async fn recv(&self) -> Option<InboxMessage> {
        receive::next_for_application(&self.shared).await
    }

    /// Like [`recv`](CommunicationProtocol::recv), but gives up after `timeout`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Option<InboxMessage> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// Acknowledges a received message explicitly ([`AckMode::Explicit`]); a no-op for
    /// messages that did not ask for it.
    pub async fn acknowledge(&self, message: &InboxMessage) -> Result<(), Error> {
        if message.envelope.requires_ack && message.reply_subject.is_none() {
            receive::send_ack(&self.shared, &message.envelope).await?;
        }
        Ok(())
    }

    /// Answers a synchronous request with a message of `message_type` carrying `payload`.
    pub async fn respond(
        &self,
        request: &InboxMessage,
        message_type: switchyard_protocol::MessageType,
        payload: Value,
    ) -> Result<(), Error> {
        send::respond(&self.shared, request, message_type, payload).await
    }

    /// Where a sent message stands (guaranteed messages and those asking for acknowledgment).
    /// Finished records are kept only with tracking on (`ENABLE_MESSAGE_TRACKING`).
    pub fn delivery(&self, message_id: &Uuid) -> Option<DeliveryRecord> {
        self.shared.tracker.record(message_id)
    }

    /// Waits until the message's delivery is final (delivered, timed out or failed).
    pub async fn wait_delivery(
        &self,
        message_id: &Uuid,
        timeout: Duration,
    ) -> Result<DeliveryRecord, Error> {
        let mut rx = self.shared.tracker.subscribe(message_id).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("message {message_id} is not tracked"),
            )
        })?;
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| r.status.is_final())).await;
        match waited {
            Ok(Ok(record)) => Ok(record.clone()),
            Ok(Err(_)) => Err(Error::new(ErrorKind::Shutdown, "protocol closed")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("delivery of {message_id} not final within {timeout:?}"),
            )),
        }
    }

    /// Messages buffered in the inbox right now.
    pub fn inbox_len(&self) -> usize {
        self.shared.inbox.len()
    }

    pub fn metrics(&self) -> &CommMetrics {
        &self.shared.metrics
    }

    /// Stops receiving and retrying; buffered messages can still be drained with `recv`.
    pub fn close(&self) {
        let _ = self.shared.shutdown.send(true);
        self.shared.inbox.close();
    }

    /// Goes offline cleanly: stops receiving, waits for the receiving tasks to end and makes
    /// sure the server has seen their pull requests' subscriptions go. Why it matters: a pull
    /// request the server still holds for a vanished client is still served, and the messages
    /// it takes wait out the consumer's ack wait (60 s) before anyone else gets them. Dropping
    /// the endpoint does the same without the waiting.
    pub async fn shutdown(mut self) {
        self.close();
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = self.shared.client.flush().await {
            tracing::debug!(agent_id = %self.shared.agent_id, error = %e, "flush on shutdown failed");
        }
    }
}

impl Drop for CommunicationProtocol {
    fn drop(&mut self) {
        self.close();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What [`CommunicationProtocol::send_message`] returns.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: Uuid,
    /// The recipients' responses (synchronous mode only), in recipient order.
    pub responses: Vec<Envelope<Value>>,
}

impl Shared {
    /// Registers interest in the first message correlated to `id`; call before sending.
    pub(crate) fn expect(&self, id: &str) -> oneshot::Receiver<Envelope<Value>> {
        self.waiters.expect(id)
    }

    pub(crate) fn forget(&self, id: &str) {
        self.waiters.forget(id);
    }

    fn take_waiter(&self, id: Option<&str>) -> Option<oneshot::Sender<Envelope<Value>>> {
        self.waiters.take(id)
    }
}
