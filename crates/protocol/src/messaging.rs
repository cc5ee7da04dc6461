//! Payloads of the inter-agent protocol: acknowledgments, handoffs and resource requests.
//! Messages between agents otherwise carry whatever JSON payload the application chooses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `MESSAGE_ACK`: a recipient confirms it received a message that asked for acknowledgment.
/// Sent to `<prefix>.direct.message_ack.<original sender>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageAck {
    /// The acknowledged message's `message_id`.
    pub message_id: String,
    /// The recipient that acknowledges.
    pub agent_id: String,
}

/// `HANDOFF_INITIATE`: the agent holding a task asks to move it to another agent. Sent to the
/// coordinator (`<prefix>.handoff_initiate.<from_agent>`), which checks it, records it with a
/// deadline and forwards it to the new agent's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffInitiate {
    /// Chosen by the initiator (a UUID); names the handoff in every later message.
    pub handoff_id: String,
    pub from_agent: String,
    pub to_agent: String,
    pub task_id: String,
    /// The grant being handed over; when given, a handoff of an older grant is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_seq: Option<u64>,
    /// Whatever the new agent needs to resume (progress, checkpoint, ...).
    #[serde(default)]
    pub task_state: Value,
    #[serde(default)]
    pub intermediate_results: Value,
    /// Informational: resources the initiator says travel with the task. The coordinator always
    /// moves the task's whole reservation.
    #[serde(default)]
    pub resource_transfer: BTreeMap<String, f64>,
    #[serde(default)]
    pub reason: String,
    /// Seconds the new agent has to answer; afterwards the task stays with the old agent.
    #[serde(default = "default_handoff_timeout_s")]
    pub timeout_s: f64,
}

pub const DEFAULT_HANDOFF_TIMEOUT_S: f64 = 30.0;

fn default_handoff_timeout_s() -> f64 {
    DEFAULT_HANDOFF_TIMEOUT_S
}

/// `HANDOFF_ACKNOWLEDGE`, two directions on two subjects:
/// * new agent → coordinator (`<prefix>.handoff_acknowledge.<agent_id>`): `accepted` says the
///   answer, `outcome` is absent;
/// * coordinator → both agents (their inboxes): the verdict, with `outcome` filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffAcknowledge {
    pub handoff_id: String,
    /// The agent answering (the handoff's `to_agent`).
    pub agent_id: String,
    pub accepted: bool,
    #[serde(default)]
    pub response_data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<HandoffOutcome>,
}

/// The coordinator's verdict on a handoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffOutcome {
    pub status: HandoffStatus,
    pub task_id: String,
    pub from_agent: String,
    pub to_agent: String,
    /// The task's grant number after the move (the new owner reports completion with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_seq: Option<u64>,
    /// Reason code when `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Seconds from the coordinator recording the handoff to this verdict.
    #[serde(default)]
    pub duration_s: f64,
}

impl HandoffOutcome {
    /// Whether the handoff went through: the task now belongs to the new owner.
    pub fn accepted(&self) -> bool {
        self.status == HandoffStatus::Accepted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStatus {
    /// Ownership and reservation moved to `to_agent`.
    Accepted,
    /// The new agent said no; the task stays with `from_agent`.
    Rejected,
    /// The coordinator refused the move (`code` says why); the task stays with `from_agent`.
    Refused,
}

impl HandoffStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffStatus::Accepted => "accepted",
            HandoffStatus::Rejected => "rejected",
            HandoffStatus::Refused => "refused",
        }
    }
}

/// `RESOURCE_REQUEST`: an agent asks for more capacity for a task it is running. Sent to
/// `<prefix>.resource_request.<agent_id>`; answered with a `RESOURCE_GRANT` in the agent's inbox
/// whose `correlation_id` is this request's `message_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub agent_id: String,
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_seq: Option<u64>,
    /// Extra whole units per resource, on top of the task's current reservation.
    pub additional_resources: BTreeMap<String, f64>,
}

/// `RESOURCE_GRANT`: the coordinator's answer to a [`ResourceRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceGrant {
    pub task_id: String,
    pub granted: bool,
    /// The task's whole reservation after the answer.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
