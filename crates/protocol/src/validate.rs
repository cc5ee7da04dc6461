//! Decoding untrusted bytes into typed messages. Every failure becomes a [`Rejection`] with a
//! stable reason code (a bounded metric label), the offending message's id for correlation, and
//! who to tell; nothing here panics.

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::envelope::{Envelope, MessageType, PROTOCOL_VERSION};
use super::messages::{
    AgentDeregister, AgentRegister, GrantAck, Heartbeat, MAX_GRANTS_PER_ACK, TaskCancel,
    TaskComplete, TaskSubmit,
};
use super::messaging::{HandoffAcknowledge, HandoffInitiate, ResourceRequest};
pub use super::reasons::RejectReason;
use super::subjects::{OPERATOR_CANCEL_TOKEN, Subjects};
use switchyard_decision::{ResourceError, Resources, StrategyKind};

/// Highest task priority accepted.
pub const MAX_TASK_PRIORITY: u8 = 10;
/// Most dependencies one task may name.
pub const MAX_DEPENDENCIES: usize = 64;
/// Largest time limit or retry back-off a TASK_SUBMIT may ask for, seconds (30 days).
pub const MAX_TIME_LIMIT_S: f64 = 2_592_000.0;
/// Most attempts a TASK_SUBMIT may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// A refused message: what to report and to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
    /// Where the error report goes: the sender's id, or `unknown`.
    pub reply_to: String,
    /// The offending message's `message_id`, when it could be read.
    pub correlation_id: Option<String>,
    pub message_type: Option<MessageType>,
}

/// A decoded, validated event for the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Register(Envelope<AgentRegister>, Resources),
    Deregister(Envelope<AgentDeregister>),
    /// A submit, its required resources and the strategy it asked for (parsed here, once).
    Submit(Envelope<TaskSubmit>, Resources, Option<StrategyKind>),
    Complete(Envelope<TaskComplete>),
    Heartbeat(Envelope<Heartbeat>),
    GrantAck(Envelope<GrantAck>),
    HandoffInitiate(Envelope<HandoffInitiate>),
    HandoffAcknowledge(Envelope<HandoffAcknowledge>),
    /// A resource request and the extra resources it asks for.
    ResourceRequest(Envelope<ResourceRequest>, Resources),
    /// A cancel, and whether it came on the operators' subject (so from an operator, in a
    /// secured deployment).
    Cancel(Envelope<TaskCancel>, bool),
}

impl Inbound {
    /// Attaches the trace context read from the message's headers (decode sees only the body).
    pub fn set_trace(&mut self, trace: Option<crate::TraceContext>) {
        match self {
            Inbound::Register(e, _) => e.trace = trace,
            Inbound::Deregister(e) => e.trace = trace,
            Inbound::Submit(e, ..) => e.trace = trace,
            Inbound::Complete(e) => e.trace = trace,
            Inbound::Heartbeat(e) => e.trace = trace,
            Inbound::GrantAck(e) => e.trace = trace,
            Inbound::HandoffInitiate(e) => e.trace = trace,
            Inbound::HandoffAcknowledge(e) => e.trace = trace,
            Inbound::ResourceRequest(e, _) => e.trace = trace,
            Inbound::Cancel(e, _) => e.trace = trace,
        }
    }

    pub fn message_type(&self) -> MessageType {
        match self {
            Inbound::Register(..) => MessageType::AgentRegister,
            Inbound::Deregister(_) => MessageType::AgentDeregister,
            Inbound::Submit(..) => MessageType::TaskSubmit,
            Inbound::Complete(_) => MessageType::TaskComplete,
            Inbound::Heartbeat(_) => MessageType::Heartbeat,
            Inbound::GrantAck(_) => MessageType::GrantAck,
            Inbound::HandoffInitiate(_) => MessageType::HandoffInitiate,
            Inbound::HandoffAcknowledge(_) => MessageType::HandoffAcknowledge,
            Inbound::ResourceRequest(..) => MessageType::ResourceRequest,
            Inbound::Cancel(..) => MessageType::TaskCancel,
        }
    }

    pub fn message_id(&self) -> String {
        match self {
            Inbound::Register(e, _) => e.message_id.to_string(),
            Inbound::Deregister(e) => e.message_id.to_string(),
            Inbound::Submit(e, ..) => e.message_id.to_string(),
            Inbound::Complete(e) => e.message_id.to_string(),
            Inbound::Heartbeat(e) => e.message_id.to_string(),
            Inbound::GrantAck(e) => e.message_id.to_string(),
            Inbound::HandoffInitiate(e) => e.message_id.to_string(),
            Inbound::HandoffAcknowledge(e) => e.message_id.to_string(),
            Inbound::ResourceRequest(e, _) => e.message_id.to_string(),
            Inbound::Cancel(e, _) => e.message_id.to_string(),
        }
    }

    /// Who sent the event (and is told about a refusal).
    pub fn sender(&self) -> &str {
        match self {
            Inbound::Register(e, _) => &e.sender,
            Inbound::Deregister(e) => &e.sender,
            Inbound::Submit(e, ..) => &e.sender,
            Inbound::Complete(e) => &e.sender,
            Inbound::Heartbeat(e) => &e.sender,
            Inbound::GrantAck(e) => &e.sender,
            Inbound::HandoffInitiate(e) => &e.sender,
            Inbound::HandoffAcknowledge(e) => &e.sender,
            Inbound::ResourceRequest(e, _) => &e.sender,
            Inbound::Cancel(e, _) => &e.sender,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Agent ids become subject tokens and consumer names: 1–64 of `[A-Za-z0-9_-]`, and not `all`
/// (the broadcast recipient).
pub fn validate_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id != super::subjects::ALL_AGENTS
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Task and agent types key the learned patterns (`<task>|<agent>|<stat>`): 1–64 printable
/// characters, no `|`.
fn valid_type_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.chars().any(|c| c == '|' || c.is_control())
}

/// Task ids become Redis key parts and message ids: 1–128 of `[A-Za-z0-9_.:-]`.
/// A task or tenant id: 1-128 of `[A-Za-z0-9_.:-]`.
pub fn is_valid_id(id: &str) -> bool {
    validate_task_id(id)
}

fn validate_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

struct Context<'a> {
    subject: &'a str,
    token: Option<&'a str>,
    /// The event came on an operators' subject (`task_cancel.operator.<name>`).
    operator: bool,
    reply_to: String,
    correlation_id: Option<String>,
    message_type: Option<MessageType>,
}

impl Context<'_> {
    fn reject(&self, reason: RejectReason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
            reply_to: self.reply_to.clone(),
            correlation_id: self.correlation_id.clone(),
            message_type: self.message_type,
        }
    }
}

/// Decodes and validates one inbound event message.
pub fn decode(
    subjects: &Subjects,
    subject: &str,
    bytes: &[u8],
    max_bytes: usize,
    now_ms: u64,
) -> Result<Inbound, Rejection> {
    let parsed = subjects.parse(subject);
    let mut token = parsed.and_then(|(_, token)| token);
    let operator_token = match (parsed, token) {
        (Some((MessageType::TaskCancel, _)), Some(t)) => t
            .strip_prefix(OPERATOR_CANCEL_TOKEN)
            .and_then(|rest| rest.strip_prefix('.')),
        _ => None,
    };
    if operator_token.is_some() {
        token = operator_token;
    }
    let mut ctx = Context {
        subject,
        token,
        operator: operator_token.is_some(),
        reply_to: token
            .filter(|t| validate_agent_id(t))
            .unwrap_or("unknown")
            .to_string(),
        correlation_id: None,
        message_type: parsed.map(|(t, _)| t),
    };
    if bytes.len() > max_bytes {
        return Err(ctx.reject(
            RejectReason::PayloadTooLarge,
            format!("message is {} bytes, the limit is {max_bytes}", bytes.len()),
        ));
    }
    // The payload stays raw text until its type is known, then is read once into that type.
    let envelope: RawEnvelope =
        serde_json::from_slice(bytes).map_err(|e| refuse_unreadable(&mut ctx, bytes, e))?;
    ctx.correlation_id = Some(envelope.message_id.to_string());
    if validate_agent_id(&envelope.sender) {
        ctx.reply_to = envelope.sender.clone();
    }
    check_envelope(&ctx, &envelope, now_ms)?;
    decode_payload(&ctx, envelope)
}

/// An envelope whose payload is still JSON text (`None` when the field is missing, which the
/// payload's own type then refuses as it would `null`).
type RawEnvelope = Envelope<Option<Box<RawValue>>>;

/// Why bytes that are not a valid envelope were refused: not JSON at all, or JSON that is not an
/// envelope. Whatever can be read (message id, sender) still goes into the error report.
fn refuse_unreadable(ctx: &mut Context<'_>, bytes: &[u8], error: serde_json::Error) -> Rejection {
    let identity = match identity::read(bytes) {
        Ok(identity) => identity,
        Err(e) => return ctx.reject(RejectReason::MalformedJson, format!("not valid JSON: {e}")),
    };
    ctx.correlation_id = identity.message_id;
    if let Some(sender) = identity.sender.filter(|s| validate_agent_id(s)) {
        ctx.reply_to = sender;
    }
    ctx.reject(
        RejectReason::InvalidEnvelope,
        format!("bad envelope: {error}"),
    )
}

fn check_envelope(ctx: &Context<'_>, env: &RawEnvelope, now_ms: u64) -> Result<(), Rejection> {
    // Replies go to `<prefix>.reply.<sender>`: a sender that is not a plain token would make an
    // invalid (or wildcard) subject.
    if !validate_agent_id(&env.sender) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "sender must be 1-64 of [A-Za-z0-9_-]",
        ));
    }
    if env.protocol_version != PROTOCOL_VERSION {
        return Err(ctx.reject(
            RejectReason::UnsupportedVersion,
            format!(
                "protocol_version {} is not supported (expected {PROTOCOL_VERSION})",
                env.protocol_version
            ),
        ));
    }
    if env.is_expired(now_ms) {
        return Err(ctx.reject(
            RejectReason::Expired,
            "message arrived after its ttl_seconds ran out",
        ));
    }
    // The subject's last token is who the event is from (agents' and orchestrators'
    // credentials allow only their own), so a sender that names someone else is a forgery;
    // except that an orchestrator may register an agent, or take it out, on its behalf.
    let on_behalf = matches!(
        env.message_type,
        MessageType::AgentRegister | MessageType::AgentDeregister
    );
    if let Some(token) = ctx.token
        && token != env.sender
        && !on_behalf
    {
        return Err(ctx.reject(
            RejectReason::SubjectMismatch,
            format!(
                "sender {:?} does not match subject {} (events are sent on the sender's own subject)",
                env.sender, ctx.subject
            ),
        ));
    }
    if ctx.message_type != Some(env.message_type) {
        return Err(ctx.reject(
            RejectReason::SubjectMismatch,
            format!(
                "type {:?} does not belong on subject {}",
                env.message_type, ctx.subject
            ),
        ));
    }
    Ok(())
}

/// The envelope with its payload read into `P`.
fn typed<P: DeserializeOwned>(
    ctx: &Context<'_>,
    env: RawEnvelope,
) -> Result<Envelope<P>, Rejection> {
    let text = env.payload.as_deref().map_or("null", RawValue::get);
    let payload: P = serde_json::from_str(text).map_err(|e| match e.is_syntax() {
        // The envelope's reader only checked the payload's shape; a number beyond f64 shows now.
        true => ctx.reject(RejectReason::MalformedJson, format!("not valid JSON: {e}")),
        false => ctx.reject(RejectReason::InvalidPayload, format!("bad payload: {e}")),
    })?;
    Ok(env.with_payload(payload))
}

fn decode_payload(ctx: &Context<'_>, env: RawEnvelope) -> Result<Inbound, Rejection> {
    match env.message_type {
        MessageType::AgentRegister => check_register(ctx, typed(ctx, env)?),
        MessageType::AgentDeregister => {
            let env: Envelope<AgentDeregister> = typed(ctx, env)?;
            check_agent_token(ctx, &env.payload.agent_id)?;
            Ok(Inbound::Deregister(env))
        }
        MessageType::Heartbeat => {
            let env: Envelope<Heartbeat> = typed(ctx, env)?;
            check_agent_token(ctx, &env.payload.agent_id)?;
            Ok(Inbound::Heartbeat(env))
        }
        MessageType::GrantAck => {
            let env: Envelope<GrantAck> = typed(ctx, env)?;
            check_agent_token(ctx, &env.payload.agent_id)?;
            check_grant_ack(ctx, &env.payload)?;
            Ok(Inbound::GrantAck(env))
        }
        MessageType::TaskSubmit => {
            let env: Envelope<TaskSubmit> = typed(ctx, env)?;
            let strategy = check_submit(ctx, &env)?;
            let required = resources(ctx, &env.payload.required_resources)?;
            Ok(Inbound::Submit(env, required, strategy))
        }
        MessageType::TaskComplete => check_complete(ctx, typed(ctx, env)?),
        MessageType::HandoffInitiate => checks::handoff_initiate(ctx, typed(ctx, env)?),
        MessageType::HandoffAcknowledge => checks::handoff_acknowledge(ctx, typed(ctx, env)?),
        MessageType::ResourceRequest => checks::resource_request(ctx, typed(ctx, env)?),
        MessageType::TaskCancel => check_cancel(ctx, typed(ctx, env)?),
        other => Err(ctx.reject(
            RejectReason::UnexpectedType,
            format!("{other:?} is not an event the optimizer consumes"),
        )),
    }
}

fn check_register(ctx: &Context<'_>, env: Envelope<AgentRegister>) -> Result<Inbound, Rejection> {
    check_agent_token(ctx, &env.payload.agent_id)?;
    let capacity = resources(ctx, &env.payload.max_resources)?;
    if !env.payload.priority_weight.is_finite() || env.payload.priority_weight < 0.0 {
        return Err(ctx.reject(
            RejectReason::Resource("invalid_priority_weight"),
            "priority_weight must be a finite number >= 0",
        ));
    }
    if !valid_type_name(&env.payload.agent_type) {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            "agent_type must be 1-64 printable characters without |",
        ));
    }
    let lease_ok = |l: f64| l.is_finite() && (0.0..=86_400.0).contains(&l);
    if env.payload.lease_s.is_some_and(|l| !lease_ok(l)) {
        return Err(ctx.reject(
            RejectReason::InvalidDuration,
            "lease_s must be 0..=86400 seconds",
        ));
    }
    Ok(Inbound::Register(env, capacity))
}

fn check_complete(ctx: &Context<'_>, env: Envelope<TaskComplete>) -> Result<Inbound, Rejection> {
    check_agent_token(ctx, &env.payload.agent_id)?;
    if !validate_task_id(&env.payload.task_id) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "task_id must be 1-128 of [A-Za-z0-9_.:-]",
        ));
    }
    if !env.payload.execution_time_s.is_finite() || env.payload.execution_time_s < 0.0 {
        return Err(ctx.reject(
            RejectReason::InvalidDuration,
            "execution_time_s must be finite and >= 0",
        ));
    }
    check_amounts(ctx, "usage", &env.payload.usage, valid_unit_name, 0)?;
    Ok(Inbound::Complete(env))
}

/// Most budgets one task draws from (and units one completion reports).
pub const MAX_TASK_BUDGETS: usize = 16;
/// Largest amount one task draws from a budget, or reports as used.
pub const MAX_BUDGET_AMOUNT: u64 = 1_000_000_000_000;

/// A budget name: 1..=64 of `A-Za-z0-9_.-` (the config accepts the same).
pub fn valid_budget_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A usage unit: 1..=32 of `A-Za-z0-9_`.
pub fn valid_unit_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A submit's `budgets` or a completion's `usage`: at most [`MAX_TASK_BUDGETS`] entries, each
/// name valid and each amount `min..=MAX_BUDGET_AMOUNT`.
fn check_amounts(
    ctx: &Context<'_>,
    field: &str,
    map: &std::collections::BTreeMap<String, u64>,
    valid_name: fn(&str) -> bool,
    min: u64,
) -> Result<(), Rejection> {
    let bad = map.len() > MAX_TASK_BUDGETS
        || map
            .iter()
            .any(|(name, n)| !valid_name(name) || !(min..=MAX_BUDGET_AMOUNT).contains(n));
    if bad {
        return Err(ctx.reject(
            RejectReason::InvalidBudget,
            format!(
                "{field}: at most {MAX_TASK_BUDGETS} entries, names 1-64 of [A-Za-z0-9_.-] (units 1-32 of [A-Za-z0-9_]), amounts {min}..={MAX_BUDGET_AMOUNT}"
            ),
        ));
    }
    Ok(())
}

/// Longest `reason` a TASK_CANCEL may give.
pub const MAX_CANCEL_REASON_BYTES: usize = 256;

fn check_cancel(ctx: &Context<'_>, env: Envelope<TaskCancel>) -> Result<Inbound, Rejection> {
    if !validate_task_id(&env.payload.task_id) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "task_id must be 1-128 of [A-Za-z0-9_.:-]",
        ));
    }
    if env
        .payload
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_CANCEL_REASON_BYTES)
    {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            format!("reason must be at most {MAX_CANCEL_REASON_BYTES} bytes"),
        ));
    }
    Ok(Inbound::Cancel(env, ctx.operator))
}

/// Agent messages must come on the agent's own subject, so permissions can scope agents.
fn check_agent_token(ctx: &Context<'_>, agent_id: &str) -> Result<(), Rejection> {
    if !validate_agent_id(agent_id) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "agent_id must be 1-64 of [A-Za-z0-9_-]",
        ));
    }
    if ctx.token != Some(agent_id) {
        return Err(ctx.reject(
            RejectReason::SubjectMismatch,
            format!(
                "agent_id {agent_id} does not match the subject {}",
                ctx.subject
            ),
        ));
    }
    Ok(())
}

fn resources(
    ctx: &Context<'_>,
    map: &std::collections::BTreeMap<String, f64>,
) -> Result<Resources, Rejection> {
    Resources::from_units(map).map_err(|e: ResourceError| {
        ctx.reject(RejectReason::Resource(e.reason_code()), e.to_string())
    })
}

/// Checks a submit's fields; answers the strategy it asked for.
fn check_submit(
    ctx: &Context<'_>,
    env: &Envelope<TaskSubmit>,
) -> Result<Option<StrategyKind>, Rejection> {
    let task = &env.payload;
    if ctx.token != Some(env.sender.as_str()) || !validate_agent_id(&env.sender) {
        return Err(ctx.reject(
            RejectReason::SubjectMismatch,
            format!(
                "sender must be 1-64 of [A-Za-z0-9_-] and match the subject {}",
                ctx.subject
            ),
        ));
    }
    if !validate_task_id(&task.task_id) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "task_id must be 1-128 of [A-Za-z0-9_.:-]",
        ));
    }
    if !valid_type_name(&task.task_type) {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            "task_type must be 1-64 printable characters without |",
        ));
    }
    if task.priority > MAX_TASK_PRIORITY {
        return Err(ctx.reject(
            RejectReason::InvalidPriority,
            format!("priority must be 0..={MAX_TASK_PRIORITY}"),
        ));
    }
    if !task.estimated_duration_s.is_finite() || task.estimated_duration_s < 0.0 {
        return Err(ctx.reject(
            RejectReason::InvalidDuration,
            "estimated_duration_s must be finite and >= 0",
        ));
    }
    check_limits(ctx, task)?;
    if task.tenant.as_deref().is_some_and(|t| !validate_task_id(t)) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "tenant must be 1-128 of [A-Za-z0-9_.:-]",
        ));
    }
    let deps_ok = task.dependencies.len() <= MAX_DEPENDENCIES
        && task
            .dependencies
            .iter()
            .all(|d| validate_task_id(d) && *d != task.task_id);
    if !deps_ok {
        return Err(ctx.reject(
            RejectReason::InvalidDependencies,
            format!("at most {MAX_DEPENDENCIES} valid task ids, not the task itself"),
        ));
    }
    check_amounts(ctx, "budgets", &task.budgets, valid_budget_name, 1)?;
    let Some(name) = &task.strategy else {
        return Ok(None);
    };
    match StrategyKind::parse(name) {
        Some(kind) => Ok(Some(kind)),
        None => Err(ctx.reject(
            RejectReason::InvalidStrategy,
            format!("unknown strategy {name:?}: least_loaded, round_robin, priority_based, load_balanced, adaptive or historical"),
        )),
    }
}

/// Time limits and retries of a submit: each absent, or in range (`invalid_duration`,
/// `invalid_payload` for `max_attempts`).
fn check_limits(ctx: &Context<'_>, task: &TaskSubmit) -> Result<(), Rejection> {
    let seconds = [
        ("queue_timeout_s", task.queue_timeout_s),
        ("run_timeout_s", task.run_timeout_s),
        ("retry_backoff_s", task.retry_backoff_s),
    ];
    for (name, value) in seconds {
        if value.is_some_and(|s| !(s.is_finite() && (0.0..=MAX_TIME_LIMIT_S).contains(&s))) {
            return Err(ctx.reject(
                RejectReason::InvalidDuration,
                format!("{name} must be 0..={MAX_TIME_LIMIT_S} seconds"),
            ));
        }
    }
    if task
        .max_attempts
        .is_some_and(|n| !(1..=MAX_ATTEMPTS).contains(&n))
    {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            format!("max_attempts must be 1..={MAX_ATTEMPTS}"),
        ));
    }
    Ok(())
}

#[path = "validate_messaging.rs"]
mod checks;

#[path = "validate_identity.rs"]
mod identity;

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "validate_hostile_tests.rs"]
mod hostile_tests;

fn check_grant_ack(ctx: &Context<'_>, ack: &GrantAck) -> Result<(), Rejection> {
    if ack.grants.is_empty() || ack.grants.len() > MAX_GRANTS_PER_ACK {
        return Err(ctx.reject(
            RejectReason::InvalidPayload,
            format!("grants must list 1..={MAX_GRANTS_PER_ACK} grants"),
        ));
    }
    if !ack.grants.iter().all(|g| validate_task_id(&g.task_id)) {
        return Err(ctx.reject(
            RejectReason::InvalidId,
            "task_id must be 1-128 of [A-Za-z0-9_.:-]",
        ));
    }
    Ok(())
}
