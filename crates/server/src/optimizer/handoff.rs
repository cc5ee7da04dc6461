//! Handoffs and resource requests, the optimizer's side.
//!
//! A handoff moves a granted task, with its whole reservation, from the agent holding it to
//! another one: `HANDOFF_INITIATE` is checked and recorded (with the new agent's deadline as the
//! record's expiry) and forwarded to the new agent's inbox; the new agent's `HANDOFF_ACKNOWLEDGE`
//! moves the task (accepted) or leaves it (rejected), and both agents get the verdict in their
//! inboxes. A `RESOURCE_REQUEST` grows a running task's reservation from its agent's free
//! capacity and is answered with a `RESOURCE_GRANT` in the agent's inbox. Every step is one
//! idempotent Redis transition whose answer is remembered, so a redelivered event publishes the
//! same messages under the same ids and JetStream drops the copies.

use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use super::applied::Applied;
use super::inbox::{InboxDelivery, derived_id, parse_priority};
use super::publish::OPTIMIZER_SENDER;
use crate::state::{
    AnswerOutcome, BeginHandoff, BeginOutcome, GrowOutcome, GrowRequest, HandoffVerdict, Refusal,
};
use switchyard_client::error::Error;
use switchyard_decision::Resources;
use switchyard_protocol::{
    Envelope, HandoffAcknowledge, HandoffInitiate, HandoffOutcome, HandoffStatus, MessagePriority,
    MessageType, RejectReason, ResourceGrant, ResourceRequest, now_ms,
};

/// How long verdicts, refusals and resource answers are remembered so that a redelivered event
/// (or a client's resend) is answered the same: well beyond redelivery (`max_deliver` ×
/// `ack_wait`) and JetStream's duplicate window.
const ANSWER_RETENTION_MS: u64 = 600_000;

/// `HANDOFF_INITIATE` from the task's current agent.
pub(crate) async fn begin(ctx: &Ctx, env: &Envelope<HandoffInitiate>) -> Result<Applied, Error> {
    let p = &env.payload;
    let request = BeginHandoff {
        handoff_id: &p.handoff_id,
        task_id: &p.task_id,
        from_agent: &p.from_agent,
        to_agent: &p.to_agent,
        grant_seq: p.grant_seq,
        timeout_ms: (p.timeout_s * 1000.0).ceil() as u64,
        priority: env.priority.as_str(),
    };
    match ctx
        .store
        .begin_handoff(&request, ANSWER_RETENTION_MS)
        .await?
    {
        BeginOutcome::Pending { repeat, .. } => {
            if !repeat {
                tracing::info!(task_id = %p.task_id, agent_id = %p.from_agent, to_agent = %p.to_agent, handoff_id = %p.handoff_id, "handoff begun");
            }
            // The initiate goes on unchanged (same sender, same message id, so a repeat is a
            // JetStream duplicate): the new agent gets the task state and results as sent.
            let forward = InboxDelivery::new(ctx, &p.to_agent, env.priority, env.clone())?;
            Ok(Applied {
                messages: vec![forward],
                ..Applied::default()
            })
        }
        BeginOutcome::Refused {
            refusal, repeat, ..
        } => begin_refused(ctx, env, refusal, repeat),
        BeginOutcome::Answered { .. } => Ok(Applied::default()),
        BeginOutcome::Conflict => Ok(Applied::refuse(
            RejectReason::InvalidId,
            format!(
                "handoff_id {} already names a handoff of another task or other agents",
                p.handoff_id
            ),
        )),
    }
}

/// A handoff refused before it began: the initiator hears it twice, as an error report about its
/// message and as a verdict on the handoff in its inbox (where a client waiting on the handoff
/// looks).
fn begin_refused(
    ctx: &Ctx,
    env: &Envelope<HandoffInitiate>,
    refusal: Refusal,
    repeat: bool,
) -> Result<Applied, Error> {
    let p = &env.payload;
    if !repeat {
        observe(ctx, HandoffStatus::Refused, 0.0);
        tracing::info!(task_id = %p.task_id, agent_id = %p.from_agent, to_agent = %p.to_agent, code = refusal.reason.as_str(), "handoff refused");
    }
    let outcome = HandoffOutcome {
        status: HandoffStatus::Refused,
        task_id: p.task_id.clone(),
        from_agent: p.from_agent.clone(),
        to_agent: p.to_agent.clone(),
        grant_seq: None,
        code: Some(refusal.reason.as_str().to_string()),
        message: Some(refusal.message.clone()),
        duration_s: 0.0,
    };
    let verdict = Verdict::new(&p.handoff_id, &p.to_agent, outcome, env.priority);
    let id = verdict_id(&p.handoff_id, &p.from_agent);
    let mut applied = refused(&refusal);
    applied.messages.push(verdict.to(ctx, &p.from_agent, id)?);
    Ok(applied)
}

/// `HANDOFF_ACKNOWLEDGE` from the new agent.
pub(crate) async fn resolve(
    ctx: &Ctx,
    env: &Envelope<HandoffAcknowledge>,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let answer = ctx
        .store
        .answer_handoff(&p.handoff_id, &p.agent_id, p.accepted, ANSWER_RETENTION_MS)
        .await?;
    match answer {
        AnswerOutcome::Decided(verdict) => decided(ctx, env, verdict),
        AnswerOutcome::UnknownHandoff => answer_refused(
            ctx,
            env,
            "",
            Refusal {
                reason: RejectReason::UnknownHandoff,
                message: format!(
                    "handoff {} is unknown: never begun, or its deadline passed (the task stays \
                     with its agent)",
                    p.handoff_id
                ),
            },
        ),
        AnswerOutcome::WrongAgent { to_agent } => answer_refused(
            ctx,
            env,
            &to_agent,
            Refusal {
                reason: RejectReason::WrongAgent,
                message: format!(
                    "handoff {} is addressed to {to_agent}, not {}",
                    p.handoff_id, p.agent_id
                ),
            },
        ),
    }
}

/// The verdict on a known handoff goes to both agents.
fn decided(
    ctx: &Ctx,
    env: &Envelope<HandoffAcknowledge>,
    v: HandoffVerdict,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let h = &v.handoff;
    let duration_s = v.decided_ms.saturating_sub(v.created_ms) as f64 / 1000.0;
    if !v.repeat {
        observe(ctx, v.status, duration_s);
        tracing::info!(task_id = %h.task_id, agent_id = %h.from_agent, to_agent = %h.to_agent, handoff_id = %p.handoff_id, outcome = v.status.as_str(), duration_s, "handoff decided");
    }
    let outcome = HandoffOutcome {
        status: v.status,
        task_id: h.task_id.clone(),
        from_agent: h.from_agent.clone(),
        to_agent: h.to_agent.clone(),
        grant_seq: v.grant_seq,
        code: v.refusal.as_ref().map(|r| r.reason.as_str().to_string()),
        message: v.refusal.as_ref().map(|r| r.message.clone()),
        duration_s,
    };
    let mut verdict = Verdict::new(
        &p.handoff_id,
        &p.agent_id,
        outcome,
        parse_priority(&h.priority),
    );
    verdict.response_data = p.response_data.clone();
    let mut applied = v.refusal.as_ref().map(refused).unwrap_or_default();
    // The old agent's capacity is free now: queued work may fit there.
    applied.dispatch = v.status == HandoffStatus::Accepted;
    for recipient in [&h.from_agent, &h.to_agent] {
        let id = verdict_id(&p.handoff_id, recipient);
        applied.messages.push(verdict.to(ctx, recipient, id)?);
    }
    Ok(applied)
}

/// An answer about no handoff the acknowledging agent may answer: refused, and told in its own
/// inbox too (the initiator, if any, is not known or not concerned).
fn answer_refused(
    ctx: &Ctx,
    env: &Envelope<HandoffAcknowledge>,
    to_agent: &str,
    refusal: Refusal,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let outcome = HandoffOutcome {
        status: HandoffStatus::Refused,
        task_id: String::new(),
        from_agent: String::new(),
        to_agent: if to_agent.is_empty() {
            p.agent_id.clone()
        } else {
            to_agent.to_string()
        },
        grant_seq: None,
        code: Some(refusal.reason.as_str().to_string()),
        message: Some(refusal.message.clone()),
        duration_s: 0.0,
    };
    let mut verdict = Verdict::new(&p.handoff_id, &p.agent_id, outcome, env.priority);
    verdict.response_data = p.response_data.clone();
    // Derived from this acknowledge, not the handoff: it must not collide with a real verdict.
    let id = derived_id(&format!("handoff-refusal:{}", env.message_id));
    let mut applied = refused(&refusal);
    applied.messages.push(verdict.to(ctx, &p.agent_id, id)?);
    Ok(applied)
}

/// `RESOURCE_REQUEST` from an agent running the task.
pub(crate) async fn grow_reservation(
    ctx: &Ctx,
    env: &Envelope<ResourceRequest>,
    extra: &Resources,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let message_id = env.message_id.to_string();
    let request = GrowRequest {
        message_id: &message_id,
        task_id: &p.task_id,
        agent_id: &p.agent_id,
        grant_seq: p.grant_seq,
        extra: *extra,
    };
    let out = ctx
        .store
        .grow_reservation(&request, ANSWER_RETENTION_MS)
        .await?;
    if !out.repeat {
        let code = out
            .refusal
            .as_ref()
            .map(|r| r.reason.as_str())
            .unwrap_or("granted");
        tracing::info!(task_id = %p.task_id, agent_id = %p.agent_id, outcome = code, "resource request answered");
    }
    let mut applied = out.refusal.as_ref().map(refused).unwrap_or_default();
    applied.messages.push(resource_grant(ctx, env, &out)?);
    Ok(applied)
}

/// The `RESOURCE_GRANT` answering a request, for the requesting agent's inbox.
fn resource_grant(
    ctx: &Ctx,
    env: &Envelope<ResourceRequest>,
    out: &GrowOutcome,
) -> Result<InboxDelivery, Error> {
    let p = &env.payload;
    let request_id = env.message_id.to_string();
    let payload = ResourceGrant {
        task_id: p.task_id.clone(),
        granted: out.refusal.is_none(),
        resources: out.reservation.map(|r| r.to_units()).unwrap_or_default(),
        code: out.refusal.as_ref().map(|r| r.reason.as_str().to_string()),
        message: out.refusal.as_ref().map(|r| r.message.clone()),
    };
    let mut reply = Envelope::new(
        OPTIMIZER_SENDER,
        MessageType::ResourceGrant,
        payload,
        now_ms(),
    )
    .with_correlation(request_id.clone())
    .with_recipient(p.agent_id.clone());
    reply.message_id = derived_id(&format!("resource-grant:{request_id}"));
    InboxDelivery::new(ctx, &p.agent_id, env.priority, reply)
}

/// A `HANDOFF_ACKNOWLEDGE` from the optimizer, carrying the verdict.
struct Verdict<'a> {
    handoff_id: &'a str,
    /// The agent whose answer this is (the handoff's `to_agent`).
    agent_id: &'a str,
    response_data: Value,
    outcome: HandoffOutcome,
    priority: MessagePriority,
}

impl<'a> Verdict<'a> {
    fn new(
        handoff_id: &'a str,
        agent_id: &'a str,
        outcome: HandoffOutcome,
        priority: MessagePriority,
    ) -> Verdict<'a> {
        Verdict {
            handoff_id,
            agent_id,
            response_data: Value::Null,
            outcome,
            priority,
        }
    }

    fn to(&self, ctx: &Ctx, recipient: &str, message_id: Uuid) -> Result<InboxDelivery, Error> {
        let payload = HandoffAcknowledge {
            handoff_id: self.handoff_id.to_string(),
            agent_id: self.agent_id.to_string(),
            // True only when the task moved, whatever the new agent answered.
            accepted: self.outcome.status == HandoffStatus::Accepted,
            response_data: self.response_data.clone(),
            outcome: Some(self.outcome.clone()),
        };
        let mut env = Envelope::new(
            OPTIMIZER_SENDER,
            MessageType::HandoffAcknowledge,
            payload,
            now_ms(),
        )
        .with_correlation(self.handoff_id)
        .with_recipient(recipient);
        env.message_id = message_id;
        InboxDelivery::new(ctx, recipient, self.priority, env)
    }
}

/// One verdict message per handoff and recipient, whichever event produced it.
fn verdict_id(handoff_id: &str, recipient: &str) -> Uuid {
    derived_id(&format!("handoff-verdict:{handoff_id}:{recipient}"))
}

fn refused(refusal: &Refusal) -> Applied {
    Applied::refuse(refusal.reason, refusal.message.clone())
}

fn observe(ctx: &Ctx, status: HandoffStatus, duration_s: f64) {
    ctx.metrics
        .handoff_duration
        .with_label_values(&[status.as_str()])
        .observe(duration_s);
}
