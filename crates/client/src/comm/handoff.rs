//! The coordinator-mediated operations of the protocol: handoffs, resource requests and
//! coordination-sync snapshots on request.
//!
//! A handoff is three messages: the holder sends HANDOFF_INITIATE to the coordinator, which
//! checks it, records it with a deadline (the Redis key's expiry) and forwards it to the new
//! agent's inbox; the new agent answers with HANDOFF_ACKNOWLEDGE; the coordinator moves ownership
//! and reservation atomically (or not) and sends the verdict to both. No answer by the deadline:
//! the record expires, a late acceptance is refused, and the task stays where it was.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::CommunicationProtocol;
use crate::error::{Error, ErrorKind};
use crate::transport;
use switchyard_protocol::{
    CoordinationSync, DEFAULT_HANDOFF_TIMEOUT_S, Envelope, HandoffAcknowledge, HandoffInitiate,
    HandoffOutcome, HandoffStatus, MessagePriority, MessageType, ResourceGrant, ResourceRequest,
    StatusQuery, now_ms,
};

/// What [`CommunicationProtocol::initiate_handoff`] hands over.
#[derive(Debug, Clone)]
pub struct HandoffRequest {
    pub to_agent: String,
    pub task_id: String,
    /// The grant being handed over (recommended: a handoff of an older grant is refused).
    pub grant_seq: Option<u64>,
    pub task_state: Value,
    pub intermediate_results: Value,
    pub resource_transfer: BTreeMap<String, f64>,
    pub reason: String,
    pub priority: MessagePriority,
    /// How long the new agent has to answer.
    pub timeout: Duration,
}

impl HandoffRequest {
    pub fn new(to_agent: impl Into<String>, task_id: impl Into<String>) -> HandoffRequest {
        HandoffRequest {
            to_agent: to_agent.into(),
            task_id: task_id.into(),
            grant_seq: None,
            task_state: Value::Null,
            intermediate_results: Value::Null,
            resource_transfer: BTreeMap::new(),
            reason: String::new(),
            priority: MessagePriority::Normal,
            timeout: Duration::from_secs_f64(DEFAULT_HANDOFF_TIMEOUT_S),
        }
    }
}

pub(crate) struct PendingHandoff {
    verdict: oneshot::Receiver<Envelope<Value>>,
    deadline: Instant,
    started: Instant,
}

impl CommunicationProtocol {
    /// Asks the coordinator to move a task this agent holds to `request.to_agent`; returns the
    /// handoff id at once. Await the verdict with [`handoff_outcome`].
    ///
    /// [`handoff_outcome`]: CommunicationProtocol::handoff_outcome
    pub async fn initiate_handoff(&self, request: HandoffRequest) -> Result<String, Error> {
        let shared = &self.shared;
        let handoff_id = Uuid::new_v4().to_string();
        let payload = HandoffInitiate {
            handoff_id: handoff_id.clone(),
            from_agent: shared.agent_id.clone(),
            to_agent: request.to_agent.clone(),
            task_id: request.task_id,
            grant_seq: request.grant_seq,
            task_state: request.task_state,
            intermediate_results: request.intermediate_results,
            resource_transfer: request.resource_transfer,
            reason: request.reason,
            timeout_s: request.timeout.as_secs_f64(),
        };
        let verdict = shared.expect(&handoff_id);
        let mut envelope = Envelope::new(
            shared.agent_id.clone(),
            MessageType::HandoffInitiate,
            payload,
            now_ms(),
        )
        .with_recipient(request.to_agent);
        envelope.priority = request.priority;
        if let Err(e) = self
            .publish_event(MessageType::HandoffInitiate, &envelope)
            .await
        {
            shared.forget(&handoff_id);
            return Err(e);
        }
        let now = Instant::now();
        let pending = PendingHandoff {
            verdict,
            deadline: now + request.timeout + shared.options.handoff_grace,
            started: now,
        };
        lock(&self.handoffs).insert(handoff_id.clone(), pending);
        Ok(handoff_id)
    }

    /// The verdict on a handoff this agent initiated. A `Timeout` error means the new agent did
    /// not answer in time: the task stays with this agent.
    pub async fn handoff_outcome(&self, handoff_id: &str) -> Result<HandoffOutcome, Error> {
        let pending = lock(&self.handoffs).remove(handoff_id).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("no handoff {handoff_id} is pending here"),
            )
        })?;
        let wait = pending.deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(wait, pending.verdict).await;
        self.shared.forget(handoff_id);
        let elapsed = pending.started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(Ok(envelope)) => verdict_of(envelope),
            Ok(Err(_)) => Err(Error::new(ErrorKind::Shutdown, "protocol closed")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("handoff {handoff_id} was not answered in time; the task stays here"),
            )),
        };
        let label = match &outcome {
            Ok(o) => o.status.as_str(),
            Err(_) => "timed_out",
        };
        self.shared
            .metrics
            .handoff
            .with_label_values(&[label])
            .observe(elapsed);
        outcome
    }

    /// The new agent's answer to a HANDOFF_INITIATE it received; returns the coordinator's
    /// verdict (on acceptance, with the task's new `grant_seq`).
    pub async fn acknowledge_handoff(
        &self,
        handoff_id: &str,
        accepted: bool,
        response_data: Value,
    ) -> Result<HandoffOutcome, Error> {
        let shared = &self.shared;
        let payload = HandoffAcknowledge {
            handoff_id: handoff_id.to_string(),
            agent_id: shared.agent_id.clone(),
            accepted,
            response_data,
            outcome: None,
        };
        let envelope = Envelope::new(
            shared.agent_id.clone(),
            MessageType::HandoffAcknowledge,
            payload,
            now_ms(),
        );
        let answer = self
            .publish_and_wait(MessageType::HandoffAcknowledge, &envelope, handoff_id)
            .await?;
        verdict_of(answer)
    }

    /// Asks for `additional` whole units on top of a running task's reservation; the answer says
    /// whether they were granted (refusals are answers, not errors).
    pub async fn request_resources(
        &self,
        task_id: &str,
        grant_seq: Option<u64>,
        additional: BTreeMap<String, f64>,
    ) -> Result<ResourceGrant, Error> {
        let shared = &self.shared;
        let payload = ResourceRequest {
            agent_id: shared.agent_id.clone(),
            task_id: task_id.to_string(),
            grant_seq,
            additional_resources: additional,
        };
        let envelope = Envelope::new(
            shared.agent_id.clone(),
            MessageType::ResourceRequest,
            payload,
            now_ms(),
        );
        let id = envelope.message_id.to_string();
        let answer = self
            .publish_and_wait(MessageType::ResourceRequest, &envelope, &id)
            .await?;
        if answer.message_type == MessageType::ErrorReport {
            let (code, message) = refusal_of(&answer);
            return Ok(ResourceGrant {
                task_id: task_id.to_string(),
                granted: false,
                resources: BTreeMap::new(),
                code: Some(code),
                message: Some(message),
            });
        }
        serde_json::from_value(answer.payload).map_err(Error::from)
    }

    /// A COORDINATION_SYNC snapshot on request (answered by any optimizer replica).
    pub async fn request_sync(&self, query: StatusQuery) -> Result<CoordinationSync, Error> {
        let shared = &self.shared;
        let timeout = shared.options.request_timeout;
        crate::calls::request_status(
            &shared.client,
            &shared.subjects,
            &shared.agent_id,
            query,
            timeout,
        )
        .await
    }

    /// Publishes an event for the coordinator on `<prefix>.<type>.<this agent>`.
    async fn publish_event<P: serde::Serialize>(
        &self,
        message_type: MessageType,
        envelope: &Envelope<P>,
    ) -> Result<(), Error> {
        let shared = &self.shared;
        let subject = shared.subjects.addressed(message_type, &shared.agent_id);
        shared
            .metrics
            .messages
            .with_label_values(&[message_type.as_str(), "out"])
            .inc();
        transport::publish_stored(
            &shared.js,
            subject,
            &envelope.message_id.to_string(),
            envelope,
        )
        .await
    }

    async fn publish_and_wait<P: serde::Serialize>(
        &self,
        message_type: MessageType,
        envelope: &Envelope<P>,
        correlation_id: &str,
    ) -> Result<Envelope<Value>, Error> {
        let shared = &self.shared;
        // The coordinator's refusal of the message itself comes as an ERROR_REPORT correlated
        // to the message id; its answer is correlated to `correlation_id` (the same id for
        // resource requests, the handoff id for handoffs).
        let message_id = envelope.message_id.to_string();
        let answer = shared.expect(correlation_id);
        let refusal = (message_id != correlation_id).then(|| shared.expect(&message_id));
        let refusal = async move {
            match refusal {
                Some(rx) => rx.await,
                None => std::future::pending().await,
            }
        };
        let result = match self.publish_event(message_type, envelope).await {
            Ok(()) => {
                let timeout = shared.options.request_timeout;
                tokio::select! {
                    a = answer => a.map_err(|_| Error::new(ErrorKind::Shutdown, "protocol closed")),
                    r = refusal => r.map_err(|_| Error::new(ErrorKind::Shutdown, "protocol closed")),
                    _ = tokio::time::sleep(timeout) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!("no answer from the coordinator within {timeout:?}"),
                    )),
                }
            }
            Err(e) => Err(e),
        };
        shared.forget(correlation_id);
        shared.forget(&message_id);
        result
    }
}

/// Reads the coordinator's verdict from a correlated message. A refusal of the message itself
/// (an ERROR_REPORT, which may overtake the stored verdict) reads as a `refused` verdict, so the
/// answer does not depend on which of the two arrives first.
fn verdict_of(envelope: Envelope<Value>) -> Result<HandoffOutcome, Error> {
    if envelope.message_type == MessageType::ErrorReport {
        let (code, message) = refusal_of(&envelope);
        return Ok(HandoffOutcome {
            status: HandoffStatus::Refused,
            task_id: String::new(),
            from_agent: String::new(),
            to_agent: String::new(),
            grant_seq: None,
            code: Some(code),
            message: Some(message),
            duration_s: 0.0,
        });
    }
    let ack: HandoffAcknowledge = serde_json::from_value(envelope.payload)?;
    ack.outcome.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "HANDOFF_ACKNOWLEDGE from the coordinator without an outcome",
        )
    })
}

/// (code, message) of an ERROR_REPORT.
fn refusal_of(envelope: &Envelope<Value>) -> (String, String) {
    let text = |field: &str, default: &str| {
        envelope.payload[field]
            .as_str()
            .unwrap_or(default)
            .to_string()
    };
    (
        text("code", "refused"),
        text("message", "refused by the coordinator"),
    )
}
