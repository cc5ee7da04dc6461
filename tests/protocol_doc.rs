//! Keeps `docs/protocol.md` honest: every JSON example must be valid, every envelope example must
//! parse into the real types (and, for the events the optimizer consumes, pass its validation on
//! the subject the document names), every message type with a typed payload must have an example,
//! and every reason code the service can send must be documented. No servers needed.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;
use switchyard_decision::{ResourceError, ResourceKind};
use switchyard_protocol::{
    AgentDeregister, AgentRegister, CoordinationSync, CoordinatorReply, Envelope, ErrorReport,
    GrantAck, HandoffAcknowledge, HandoffInitiate, Heartbeat, MessageType, PROTOCOL_VERSION,
    RejectReason, ReplyStatus, ResourceGrant, ResourceRequest, StatusQuery, Subjects, TaskCancel,
    TaskCancelNotice, TaskComplete, TaskGrant, TaskSubmit, decode,
};

/// The message types whose payloads are typed, and so must be illustrated by an example.
const TYPED: [MessageType; 16] = [
    MessageType::AgentRegister,
    MessageType::AgentDeregister,
    MessageType::Heartbeat,
    MessageType::GrantAck,
    MessageType::TaskSubmit,
    MessageType::TaskRequest,
    MessageType::TaskComplete,
    MessageType::CoordinatorReply,
    MessageType::ErrorReport,
    MessageType::CoordinationSync,
    MessageType::StatusQuery,
    MessageType::HandoffInitiate,
    MessageType::HandoffAcknowledge,
    MessageType::ResourceRequest,
    MessageType::ResourceGrant,
    MessageType::TaskCancel,
];

/// A TASK_CANCEL from the optimizer to an agent (a notice, naming the grant) rather than from a
/// submitter or operator (an event).
fn is_cancel_notice(env: &Envelope<Value>) -> bool {
    env.message_type == MessageType::TaskCancel && env.payload.get("grant_seq").is_some()
}

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// One ```json block: its text, its first line number, and the subject the document names for it
/// in the line just before (`On `<subject>`:`), if any.
struct Block {
    line: usize,
    text: String,
    subject: Option<String>,
}

fn json_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut last_text_line = "";
    for (index, line) in doc.lines().enumerate() {
        match current.as_mut() {
            Some(block) => {
                if line.trim_end() == "```" {
                    blocks.extend(current.take());
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
            None if line.trim_end() == "```json" => {
                let subject = last_text_line
                    .strip_prefix("On `")
                    .and_then(|rest| rest.strip_suffix("`:"))
                    .map(str::to_string);
                current = Some(Block {
                    line: index + 1,
                    text: String::new(),
                    subject,
                });
            }
            None => {
                if !line.trim().is_empty() {
                    last_text_line = line.trim();
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated ```json block in the doc");
    blocks
}

fn typed_payload<P: DeserializeOwned>(line: usize, payload: &Value) {
    if let Err(e) = serde_json::from_value::<P>(payload.clone()) {
        panic!(
            "docs/protocol.md line {line}: payload is not a valid {}: {e}",
            std::any::type_name::<P>()
        );
    }
}

/// The subject a message of this envelope belongs on, when its trailing token follows from the
/// envelope itself.
fn expected_subject(subjects: &Subjects, env: &Envelope<Value>) -> Option<String> {
    let field = |name: &str| env.payload.get(name).and_then(Value::as_str);
    let token = match env.message_type {
        MessageType::AgentRegister
        | MessageType::AgentDeregister
        | MessageType::Heartbeat
        | MessageType::GrantAck
        | MessageType::TaskComplete => field("agent_id")?,
        MessageType::TaskSubmit => env.sender.as_str(),
        MessageType::TaskRequest | MessageType::CoordinatorReply | MessageType::ErrorReport => {
            env.recipients.first()?.as_str()
        }
        MessageType::StatusQuery => return Some(subjects.unaddressed(MessageType::StatusQuery)),
        MessageType::TaskCancel if is_cancel_notice(env) => {
            return Some(subjects.cancel_notice(env.recipients.first()?));
        }
        MessageType::TaskCancel => env.sender.as_str(),
        MessageType::HandoffInitiate => field("from_agent")?,
        MessageType::ResourceRequest => field("agent_id")?,
        MessageType::HandoffAcknowledge if is_event(env) => field("agent_id")?,
        // The optimizer's answers go to the recipient's inbox in the messages stream.
        MessageType::HandoffAcknowledge | MessageType::ResourceGrant => {
            let recipient = env.recipients.first()?;
            return Some(subjects.message(env.message_type, recipient, env.priority, &env.sender));
        }
        _ => return None,
    };
    Some(subjects.addressed(env.message_type, token))
}

/// True for the messages the optimizer consumes as events or core-lane signals (and so
/// validates).
fn is_event(env: &Envelope<Value>) -> bool {
    match env.message_type {
        MessageType::AgentRegister
        | MessageType::AgentDeregister
        | MessageType::Heartbeat
        | MessageType::GrantAck
        | MessageType::TaskSubmit
        | MessageType::TaskComplete
        | MessageType::HandoffInitiate
        | MessageType::ResourceRequest => true,
        MessageType::TaskCancel => !is_cancel_notice(env),
        // An agent's answer; the optimizer's verdict carries an `outcome`.
        MessageType::HandoffAcknowledge => env.payload.get("outcome").is_none(),
        _ => false,
    }
}

#[test]
fn every_json_example_is_valid_and_parses_into_the_real_types() {
    let doc = doc();
    let subjects = Subjects::default();
    let blocks = json_blocks(&doc);
    assert!(!blocks.is_empty(), "no ```json blocks found");
    let mut seen = BTreeSet::new();
    for block in &blocks {
        let line = block.line;
        let value: Value = serde_json::from_str(&block.text)
            .unwrap_or_else(|e| panic!("docs/protocol.md line {line}: invalid JSON: {e}"));
        if value.get("type").is_none() {
            continue;
        }
        let env: Envelope<Value> = serde_json::from_value(value)
            .unwrap_or_else(|e| panic!("docs/protocol.md line {line}: not an envelope: {e}"));
        assert_eq!(
            env.protocol_version, PROTOCOL_VERSION,
            "docs/protocol.md line {line}: protocol_version"
        );
        payload_parses_into_its_type(line, &env);
        seen.insert(env.message_type.as_str());
        on_its_subject_and_accepted(&subjects, block, &env);
    }
    for message_type in TYPED {
        assert!(
            seen.contains(message_type.as_str()),
            "docs/protocol.md has no JSON example of {message_type:?}"
        );
    }
}

/// The example's payload parses into the Rust type of its message type.
fn payload_parses_into_its_type(line: usize, env: &Envelope<Value>) {
    let payload = &env.payload;
    match env.message_type {
        MessageType::AgentRegister => typed_payload::<AgentRegister>(line, payload),
        MessageType::AgentDeregister => typed_payload::<AgentDeregister>(line, payload),
        MessageType::Heartbeat => typed_payload::<Heartbeat>(line, payload),
        MessageType::GrantAck => typed_payload::<GrantAck>(line, payload),
        MessageType::TaskSubmit => typed_payload::<TaskSubmit>(line, payload),
        MessageType::TaskRequest => typed_payload::<TaskGrant>(line, payload),
        MessageType::TaskComplete => typed_payload::<TaskComplete>(line, payload),
        MessageType::CoordinatorReply => typed_payload::<CoordinatorReply>(line, payload),
        MessageType::ErrorReport => typed_payload::<ErrorReport>(line, payload),
        MessageType::CoordinationSync => typed_payload::<CoordinationSync>(line, payload),
        MessageType::StatusQuery => typed_payload::<StatusQuery>(line, payload),
        MessageType::HandoffInitiate => typed_payload::<HandoffInitiate>(line, payload),
        MessageType::HandoffAcknowledge => typed_payload::<HandoffAcknowledge>(line, payload),
        MessageType::ResourceRequest => typed_payload::<ResourceRequest>(line, payload),
        MessageType::ResourceGrant => typed_payload::<ResourceGrant>(line, payload),
        MessageType::TaskCancel if is_cancel_notice(env) => {
            typed_payload::<TaskCancelNotice>(line, payload)
        }
        MessageType::TaskCancel => typed_payload::<TaskCancel>(line, payload),
        _ => {}
    }
}

/// The subject the example is said to travel on is the right one, and the events the
/// optimizer consumes pass its validation, on their subject, at the moment they were created.
fn on_its_subject_and_accepted(subjects: &Subjects, block: &Block, env: &Envelope<Value>) {
    let line = block.line;
    let expected = expected_subject(subjects, env);
    if let (Some(named), Some(expected)) = (&block.subject, &expected) {
        assert_eq!(
            named, expected,
            "docs/protocol.md line {line}: the example is said to travel on the wrong subject"
        );
    }
    if !is_event(env) {
        return;
    }
    let subject = expected
        .unwrap_or_else(|| panic!("docs/protocol.md line {line}: cannot tell the event's subject"));
    if let Err(rejection) = decode(
        subjects,
        &subject,
        block.text.as_bytes(),
        65_536,
        env.created_at_ms,
    ) {
        panic!(
            "docs/protocol.md line {line}: the optimizer would refuse this example with {}: {}",
            rejection.reason.as_str(),
            rejection.message
        );
    }
}

/// Every variant, spelled out; `exhaustive` stops compiling when a variant is added, so this list
/// (and the doc) cannot silently fall behind.
fn all_reject_reasons() -> Vec<RejectReason> {
    let mut all = vec![
        RejectReason::PayloadTooLarge,
        RejectReason::MalformedJson,
        RejectReason::InvalidEnvelope,
        RejectReason::UnsupportedVersion,
        RejectReason::Expired,
        RejectReason::SubjectMismatch,
        RejectReason::UnexpectedType,
        RejectReason::InvalidPayload,
        RejectReason::InvalidId,
        RejectReason::InvalidPriority,
        RejectReason::InvalidDuration,
        RejectReason::InvalidDependencies,
        RejectReason::InvalidStrategy,
        // The only resource code not from ResourceError (sent for a bad priority_weight).
        RejectReason::Resource("invalid_priority_weight"),
        RejectReason::UnknownAgent,
        RejectReason::AgentNotActive,
        RejectReason::UnknownTask,
        RejectReason::WrongAgent,
        RejectReason::TaskExists,
        RejectReason::TaskNotGranted,
        RejectReason::AgentConflict,
        RejectReason::StaleGrant,
        RejectReason::UnknownHandoff,
        RejectReason::InsufficientCapacity,
        RejectReason::Infeasible,
        RejectReason::NotSubmitter,
        RejectReason::TaskCancelling,
        RejectReason::InvalidBudget,
        RejectReason::UnknownBudget,
    ];
    all.extend(
        all_resource_errors()
            .iter()
            .map(|e| RejectReason::Resource(e.reason_code())),
    );
    for reason in &all {
        exhaustive(*reason);
    }
    all
}

fn exhaustive(reason: RejectReason) {
    match reason {
        RejectReason::PayloadTooLarge
        | RejectReason::MalformedJson
        | RejectReason::InvalidEnvelope
        | RejectReason::UnsupportedVersion
        | RejectReason::Expired
        | RejectReason::SubjectMismatch
        | RejectReason::UnexpectedType
        | RejectReason::InvalidPayload
        | RejectReason::InvalidId
        | RejectReason::InvalidPriority
        | RejectReason::InvalidDuration
        | RejectReason::InvalidDependencies
        | RejectReason::InvalidStrategy
        | RejectReason::Resource(_)
        | RejectReason::UnknownAgent
        | RejectReason::AgentNotActive
        | RejectReason::UnknownTask
        | RejectReason::WrongAgent
        | RejectReason::TaskExists
        | RejectReason::TaskNotGranted
        | RejectReason::AgentConflict
        | RejectReason::StaleGrant
        | RejectReason::UnknownHandoff
        | RejectReason::InsufficientCapacity
        | RejectReason::Infeasible => {}
        RejectReason::NotSubmitter | RejectReason::TaskCancelling => {}
        RejectReason::InvalidBudget | RejectReason::UnknownBudget => {}
    }
}

fn all_resource_errors() -> Vec<ResourceError> {
    let all = vec![
        ResourceError::UnknownKind("gpu".to_string()),
        ResourceError::NotFinite(ResourceKind::Cpu),
        ResourceError::Negative(ResourceKind::Cpu, -1.0),
        ResourceError::TooLarge(ResourceKind::Cpu, 2e12),
        ResourceError::Duplicate(ResourceKind::Cpu),
    ];
    for error in &all {
        match error {
            ResourceError::UnknownKind(_)
            | ResourceError::NotFinite(_)
            | ResourceError::Negative(..)
            | ResourceError::TooLarge(..)
            | ResourceError::Duplicate(_) => {}
        }
    }
    all
}

#[test]
fn every_reason_code_is_in_the_reason_table() {
    let doc = doc();
    let mut missing = Vec::new();
    for reason in all_reject_reasons() {
        let code = reason.as_str();
        // A row of the reason-code table starts with the code.
        if !doc.contains(&format!("| `{code}` |")) {
            missing.push(code);
        }
    }
    for error in all_resource_errors() {
        let code = error.reason_code();
        if !doc.contains(&format!("| `{code}` |")) {
            missing.push(code);
        }
    }
    assert!(
        missing.is_empty(),
        "reason codes missing from the table in docs/protocol.md: {missing:?}"
    );
}

#[test]
fn every_type_token_and_reply_status_is_documented() {
    let doc = doc();
    for message_type in MessageType::ALL {
        let name = serde_json::to_value(message_type).unwrap_or_default();
        let name = name.as_str().unwrap_or_default();
        assert!(
            doc.contains(&format!("| `{name}` | `{}` |", message_type.as_str())),
            "docs/protocol.md lacks the type table row for {name}"
        );
    }
    for status in [
        ReplyStatus::Registered,
        ReplyStatus::Deregistered,
        ReplyStatus::Granted,
        ReplyStatus::Queued,
        ReplyStatus::Waiting,
        ReplyStatus::Completed,
        ReplyStatus::Failed,
        ReplyStatus::Cancelled,
        ReplyStatus::Cancelling,
    ] {
        match status {
            ReplyStatus::Registered
            | ReplyStatus::Deregistered
            | ReplyStatus::Granted
            | ReplyStatus::Queued
            | ReplyStatus::Waiting
            | ReplyStatus::Completed
            | ReplyStatus::Failed
            | ReplyStatus::Cancelled
            | ReplyStatus::Cancelling => {}
        }
        let name = serde_json::to_value(status).unwrap_or_default();
        let name = name.as_str().unwrap_or_default().to_string();
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/protocol.md lacks the reply status row for {name}"
        );
    }
}

#[test]
fn the_optimizer_consumers_and_dead_letter_subjects_are_documented() {
    let doc = doc();
    let subjects = Subjects::default();
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let control = format!(
        "| `{}` | {} |",
        subjects.optimizer_control_consumer(),
        quoted(&subjects.control_event_subjects())
    );
    let submit = format!(
        "| `{}` | {} |",
        subjects.optimizer_consumer(),
        quoted(&[subjects.all_of(MessageType::TaskSubmit)])
    );
    for row in [&control, &submit] {
        assert!(
            doc.contains(row.as_str()),
            "docs/protocol.md lacks the consumer table row starting {row}"
        );
    }
    for name in [
        subjects.optimizer_control_consumer(),
        subjects.optimizer_consumer(),
    ] {
        assert!(
            doc.contains(&format!(
                "nats consumer info {} {name} ",
                subjects.events_stream()
            )),
            "docs/protocol.md §12 lacks `nats consumer info` for {name}"
        );
    }
    let dlq = format!(
        "| `{}` | `{}`, `{}`",
        subjects.dead_letter_stream(),
        subjects.all_dead_letters(),
        subjects.max_deliveries_advisory()
    );
    assert!(
        doc.contains(&dlq),
        "docs/protocol.md's stream table lacks the dead-letter row starting {dlq}"
    );
}
