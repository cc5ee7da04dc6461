//! The envelope shared by every message, and its enumerations.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped on incompatible wire changes; receivers reject versions they do not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every message type, the seed's eleven plus the coordinator's own operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageType {
    // The seed's communication protocol.
    TaskRequest,
    TaskResponse,
    StatusUpdate,
    ResourceRequest,
    ResourceGrant,
    CoordinationSync,
    HandoffInitiate,
    HandoffAcknowledge,
    Broadcast,
    Heartbeat,
    ErrorReport,
    // The coordinator's operations.
    AgentRegister,
    AgentDeregister,
    TaskSubmit,
    TaskComplete,
    StatusQuery,
    CoordinatorReply,
    // The inter-agent protocol's own acknowledgment.
    MessageAck,
    // An agent acknowledges the grants it received.
    GrantAck,
    // A task's submitter (or an operator) cancels it; also the notice to its agent.
    TaskCancel,
}

impl MessageType {
    pub const ALL: [MessageType; 20] = [
        MessageType::TaskRequest,
        MessageType::TaskResponse,
        MessageType::StatusUpdate,
        MessageType::ResourceRequest,
        MessageType::ResourceGrant,
        MessageType::CoordinationSync,
        MessageType::HandoffInitiate,
        MessageType::HandoffAcknowledge,
        MessageType::Broadcast,
        MessageType::Heartbeat,
        MessageType::ErrorReport,
        MessageType::AgentRegister,
        MessageType::AgentDeregister,
        MessageType::TaskSubmit,
        MessageType::TaskComplete,
        MessageType::StatusQuery,
        MessageType::CoordinatorReply,
        MessageType::MessageAck,
        MessageType::GrantAck,
        MessageType::TaskCancel,
    ];

    /// The subject token of this type, also its lowercase wire name (a bounded metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::TaskRequest => "task_request",
            MessageType::TaskResponse => "task_response",
            MessageType::StatusUpdate => "status_update",
            MessageType::ResourceRequest => "resource_request",
            MessageType::ResourceGrant => "resource_grant",
            MessageType::CoordinationSync => "coordination_sync",
            MessageType::HandoffInitiate => "handoff_initiate",
            MessageType::HandoffAcknowledge => "handoff_acknowledge",
            MessageType::Broadcast => "broadcast",
            MessageType::Heartbeat => "heartbeat",
            MessageType::ErrorReport => "error_report",
            MessageType::AgentRegister => "agent_register",
            MessageType::AgentDeregister => "agent_deregister",
            MessageType::TaskSubmit => "task_submit",
            MessageType::TaskComplete => "task_complete",
            MessageType::StatusQuery => "status_query",
            MessageType::CoordinatorReply => "reply",
            MessageType::MessageAck => "message_ack",
            MessageType::GrantAck => "grant_ack",
            MessageType::TaskCancel => "task_cancel",
        }
    }

    pub fn from_token(token: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == token)
    }
}

/// Message priority (the seed's `MessagePriority`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum MessagePriority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl MessagePriority {
    /// Every priority, highest first (the order an inbox drains them).
    pub const ALL: [MessagePriority; 4] = [
        MessagePriority::Critical,
        MessagePriority::High,
        MessagePriority::Normal,
        MessagePriority::Low,
    ];

    /// The priority of a wire name (`low`, `normal`, `high`, `critical`).
    pub fn parse(name: &str) -> Option<MessagePriority> {
        MessagePriority::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessagePriority::Low => "low",
            MessagePriority::Normal => "normal",
            MessagePriority::High => "high",
            MessagePriority::Critical => "critical",
        }
    }
}

/// How a message is delivered (the seed's `DeliveryMode`). Coordinator operations always travel
/// through JetStream; the mode is carried so receivers and operators can see what the sender asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    Synchronous,
    Asynchronous,
    FireAndForget,
    #[default]
    Guaranteed,
}

/// Retry policy a sender asks for (used by guaranteed delivery).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
        }
    }
}

/// The envelope every message shares. `P` is the typed payload; the raw form is
/// `Envelope<serde_json::Value>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = serde_json::Value> {
    pub protocol_version: u32,
    /// Unique per message; also sent as the `Nats-Msg-Id` header so JetStream drops duplicates.
    pub message_id: Uuid,
    /// Ties a reply to its request: replies carry the request's `message_id` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub sender: String,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(rename = "type")]
    pub message_type: MessageType,
    #[serde(default)]
    pub priority: MessagePriority,
    #[serde(default)]
    pub delivery_mode: DeliveryMode,
    #[serde(default)]
    pub requires_ack: bool,
    /// Unix epoch milliseconds at the sender.
    pub created_at_ms: u64,
    /// Seconds after `created_at_ms` past which the message must not be acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    pub payload: P,
    /// The W3C trace context, carried in the `traceparent`/`tracestate` NATS headers, never in
    /// the JSON (so agents that know nothing of tracing read the same bytes). `None` when the
    /// message had none or it was invalid.
    #[serde(skip)]
    pub trace: Option<crate::TraceContext>,
}

impl<P> Envelope<P> {
    /// The same envelope around another payload (a raw payload once it has been read).
    pub fn with_payload<Q>(self, payload: Q) -> Envelope<Q> {
        Envelope {
            protocol_version: self.protocol_version,
            message_id: self.message_id,
            correlation_id: self.correlation_id,
            sender: self.sender,
            recipients: self.recipients,
            message_type: self.message_type,
            priority: self.priority,
            delivery_mode: self.delivery_mode,
            requires_ack: self.requires_ack,
            created_at_ms: self.created_at_ms,
            ttl_seconds: self.ttl_seconds,
            retry_policy: self.retry_policy,
            payload,
            trace: self.trace,
        }
    }

    /// A new message from `sender` with defaults: normal priority, guaranteed, no ttl.
    pub fn new(
        sender: impl Into<String>,
        message_type: MessageType,
        payload: P,
        now_ms: u64,
    ) -> Self {
        Envelope {
            protocol_version: PROTOCOL_VERSION,
            message_id: Uuid::new_v4(),
            correlation_id: None,
            sender: sender.into(),
            recipients: Vec::new(),
            message_type,
            priority: MessagePriority::Normal,
            delivery_mode: DeliveryMode::Guaranteed,
            requires_ack: false,
            created_at_ms: now_ms,
            ttl_seconds: None,
            retry_policy: None,
            payload,
            trace: None,
        }
    }

    /// The same message with a trace context (sent in the headers).
    pub fn with_trace(mut self, trace: Option<crate::TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    pub fn with_correlation(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    pub fn with_recipient(mut self, recipient: impl Into<String>) -> Self {
        self.recipients.push(recipient.into());
        self
    }

    pub fn with_ttl(mut self, ttl_seconds: u64) -> Self {
        self.ttl_seconds = Some(ttl_seconds);
        self
    }

    /// True when the message's TTL has run out at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        match self.ttl_seconds {
            Some(ttl) => now_ms > self.created_at_ms.saturating_add(ttl.saturating_mul(1000)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_tokens_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in MessageType::ALL {
            assert!(seen.insert(t.as_str()), "duplicate token {}", t.as_str());
            assert_eq!(MessageType::from_token(t.as_str()), Some(t));
        }
        assert_eq!(MessageType::from_token("nope"), None);
    }

    #[test]
    fn envelope_serializes_type_in_screaming_case() {
        let env = Envelope::new("a1", MessageType::TaskSubmit, serde_json::json!({}), 5);
        let v = serde_json::to_value(&env).unwrap_or_default();
        assert_eq!(v["type"], "TASK_SUBMIT");
        assert_eq!(v["priority"], "normal");
        assert_eq!(v["delivery_mode"], "guaranteed");
        assert_eq!(v["protocol_version"], 1);
    }

    #[test]
    fn expiry_uses_ttl_from_creation() {
        let env = Envelope::new("a", MessageType::Heartbeat, (), 1_000).with_ttl(2);
        assert!(!env.is_expired(3_000));
        assert!(env.is_expired(3_001));
        let forever = Envelope::new("a", MessageType::Heartbeat, (), 0);
        assert!(!forever.is_expired(u64::MAX));
    }
}
