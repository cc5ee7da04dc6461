//! Settings of a protocol endpoint and the builder of outgoing messages.

use std::time::Duration;

use serde_json::Value;

use switchyard_protocol::{ALL_AGENTS, DeliveryMode, MessagePriority, MessageType, RetryPolicy};

/// Who acknowledges messages that ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The client, as `recv` hands the message to the application.
    #[default]
    Auto,
    /// The application, by calling `acknowledge` once it has processed the message.
    Explicit,
}

/// Settings of one [`CommunicationProtocol`](super::CommunicationProtocol).
#[derive(Debug, Clone)]
pub struct ProtocolOptions {
    /// `MESSAGE_BUFFER_SIZE`: messages the inbox holds before receiving pauses.
    pub message_buffer_size: usize,
    /// `ENABLE_MESSAGE_TRACKING`: keep finished delivery records and remember received ids so
    /// a duplicate delivery reaches the application once. Off: duplicates may get through.
    pub enable_tracking: bool,
    /// `DEFAULT_MESSAGE_TTL`: TTL of messages sent without one (`None`: no TTL).
    pub default_ttl_s: Option<u64>,
    pub ack_mode: AckMode,
    /// `MESSAGE_ACK_TIMEOUT_MS`: how long a sender waits for acknowledgments before retrying
    /// (guaranteed) or counting them as timed out (asynchronous).
    pub ack_timeout: Duration,
    /// How long a synchronous send waits for each recipient's response.
    pub request_timeout: Duration,
    /// Retries of guaranteed messages sent without a policy of their own.
    pub retry_policy: RetryPolicy,
    /// How long a delivered but unread stored message may sit before JetStream offers it again.
    pub redelivery_wait: Duration,
    /// Extra time the initiator of a handoff waits past its deadline for the verdict.
    pub handoff_grace: Duration,
    /// In a secured deployment, how long connecting waits for the optimizer to create this
    /// agent's message consumers (it does when it applies the agent's registration).
    pub consumer_wait: Duration,
    /// Used when this client is the first to create the messages stream.
    pub messages_max_age: Duration,
    pub duplicate_window: Duration,
    pub max_message_bytes: usize,
}

/// The defaults of `config/default.toml`'s `[messages]` and `[jetstream]` sections (the optimizer's
/// `Config::protocol_options` builds the same from a loaded configuration, and a test there holds
/// the two equal).
impl Default for ProtocolOptions {
    fn default() -> Self {
        ProtocolOptions {
            message_buffer_size: 1000,
            enable_tracking: true,
            default_ttl_s: Some(300),
            ack_mode: AckMode::Auto,
            ack_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_secs(10),
            retry_policy: RetryPolicy::default(),
            redelivery_wait: Duration::from_secs(60),
            handoff_grace: Duration::from_secs(5),
            consumer_wait: Duration::from_secs(15),
            messages_max_age: Duration::from_secs(86_400),
            duplicate_window: Duration::from_secs(120),
            max_message_bytes: 65_536,
        }
    }
}

/// A message to send. Built with [`OutgoingMessage::new`] and the chained setters; defaults:
/// normal priority, guaranteed delivery (which always asks for acknowledgment), the endpoint's
/// default TTL.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub(crate) recipients: Vec<String>,
    pub(crate) message_type: MessageType,
    pub(crate) payload: Value,
    pub(crate) priority: MessagePriority,
    pub(crate) delivery_mode: DeliveryMode,
    pub(crate) requires_ack: bool,
    pub(crate) ttl_s: Option<u64>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) retry_policy: Option<RetryPolicy>,
}

impl OutgoingMessage {
    pub fn new(message_type: MessageType, payload: Value) -> OutgoingMessage {
        OutgoingMessage {
            recipients: Vec::new(),
            message_type,
            payload,
            priority: MessagePriority::Normal,
            delivery_mode: DeliveryMode::Guaranteed,
            requires_ack: false,
            ttl_s: None,
            correlation_id: None,
            retry_policy: None,
        }
    }

    pub fn to(mut self, agent_id: impl Into<String>) -> Self {
        self.recipients.push(agent_id.into());
        self
    }

    pub fn to_many<I: IntoIterator<Item = S>, S: Into<String>>(mut self, agents: I) -> Self {
        self.recipients.extend(agents.into_iter().map(Into::into));
        self
    }

    /// Addressed to every agent (asynchronous or fire-and-forget only).
    pub fn to_all(mut self) -> Self {
        self.recipients = vec![ALL_AGENTS.to_string()];
        self
    }

    pub fn priority(mut self, priority: MessagePriority) -> Self {
        self.priority = priority;
        self
    }

    pub fn delivery(mut self, mode: DeliveryMode) -> Self {
        self.delivery_mode = mode;
        self
    }

    pub fn requires_ack(mut self, requires: bool) -> Self {
        self.requires_ack = requires;
        self
    }

    pub fn ttl_seconds(mut self, ttl: u64) -> Self {
        self.ttl_s = Some(ttl);
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    pub(crate) fn is_broadcast(&self) -> bool {
        self.recipients.iter().any(|r| r == ALL_AGENTS)
    }
}
