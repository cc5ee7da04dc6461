//! Building and sending the optimizer's outbound messages: grants (stored in JetStream, deduped
//! by a message id derived from task and grant number), replies and error reports (core NATS).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::Ctx;
use crate::state::QueuedTask;
use switchyard_client::error::Error;
use switchyard_client::transport;
use switchyard_decision::{Explanation, Resources, TaskState};
use switchyard_protocol::{
    CoordinatorReply, Envelope, ErrorReport, ExplainedCandidate, GrantExplanation, MessagePriority,
    MessageType, Rejection, Replies, ReplyStatus, TaskGrant, TraceContext, now_ms,
};

/// Who the optimizer says it is in `sender`.
pub(crate) const OPTIMIZER_SENDER: &str = "optimizer";

/// A reply to send: `to` is the recipient's id, `correlation_id` the request's message id.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub to: String,
    pub correlation_id: String,
    pub body: CoordinatorReply,
}

impl Reply {
    pub(crate) fn new(
        to: &str,
        correlation_id: &str,
        op: MessageType,
        status: ReplyStatus,
    ) -> Reply {
        Reply {
            to: to.to_string(),
            correlation_id: correlation_id.to_string(),
            body: CoordinatorReply {
                op: op.as_str().to_string(),
                status,
                task_id: None,
                agent_id: None,
                detail: None,
            },
        }
    }

    pub(crate) fn task(mut self, task_id: &str) -> Reply {
        self.body.task_id = Some(task_id.to_string());
        self
    }

    pub(crate) fn agent(mut self, agent_id: &str) -> Reply {
        if !agent_id.is_empty() {
            self.body.agent_id = Some(agent_id.to_string());
        }
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Reply {
        self.body.detail = Some(detail.into());
        self
    }
}

/// A grant ready to publish.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub payload: TaskGrant,
    pub submit_message_id: String,
    pub submitted_at_ms: u64,
    /// Which replies the submitter wants.
    pub replies: Replies,
    /// The grant span's trace context, sent to the agent as `traceparent` (derived from the
    /// task's stored context and the grant number, so every copy carries the same).
    pub trace: Option<TraceContext>,
}

impl Grant {
    pub(crate) fn from_queued(task: &QueuedTask, agent_id: &str, grant_seq: u64) -> Grant {
        Grant {
            payload: TaskGrant {
                task_id: task.view.task_id.clone(),
                task_type: task.view.task_type.clone(),
                agent_id: agent_id.to_string(),
                priority: task.view.priority,
                resources: task.view.required.to_units(),
                estimated_duration_s: task.view.estimated_duration_s,
                grant_seq,
                submitter: task.submitter.clone(),
                explanation: None,
            },
            submit_message_id: task.submit_message_id.clone(),
            submitted_at_ms: task.submitted_at_ms,
            replies: task.replies,
            trace: task
                .trace
                .as_ref()
                .map(|t| super::traces::grant_context(t, &task.view.task_id, grant_seq)),
        }
    }

    /// Rebuilds the grant of a task record that is currently granted (for re-publication).
    pub(crate) fn from_record(record: &BTreeMap<String, String>) -> Option<Grant> {
        let state = record.get("state").and_then(|s| TaskState::parse(s));
        if state != Some(TaskState::Granted) {
            return None;
        }
        let get = |k: &str| record.get(k).cloned().unwrap_or_default();
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        let required = Resources {
            cpu: num("req_cpu"),
            memory: num("req_memory"),
            tokens: num("req_tokens"),
            time: num("req_time"),
        };
        let trace = TraceContext::from_headers(
            record.get("traceparent").map(String::as_str),
            record.get("tracestate").map(String::as_str),
        )
        .map(|t| super::traces::grant_context(&t, &get("task_id"), num("grant_seq")));
        Some(Grant {
            trace,
            payload: TaskGrant {
                task_id: get("task_id"),
                task_type: get("task_type"),
                agent_id: get("agent"),
                priority: get("priority").parse().unwrap_or(0),
                resources: required.to_units(),
                estimated_duration_s: get("estimated_duration_s").parse().unwrap_or(0.0),
                grant_seq: num("grant_seq"),
                submitter: get("submitter"),
                // Explanations are not stored, so a re-published grant goes without one.
                explanation: None,
            },
            submit_message_id: get("submit_msg_id"),
            submitted_at_ms: num("submitted_at"),
            replies: Replies::parse(&get("replies")),
        })
    }

    /// The same grant, telling nobody but the agent (a copy sent again).
    pub(crate) fn without_replies(mut self) -> Grant {
        self.replies = Replies::None;
        self
    }

    /// Attaches the decision's explanation, naming the agent actually granted as `chosen` (a
    /// fallback candidate when the planned first one filled up before the grant).
    pub(crate) fn explained(mut self, explanation: Option<&Explanation>) -> Grant {
        self.payload.explanation = explanation.map(|e| GrantExplanation {
            strategy: e.strategy.to_string(),
            chosen: self.payload.agent_id.clone(),
            candidates: e
                .candidates
                .iter()
                .map(|c| ExplainedCandidate {
                    agent_id: c.agent_id.to_string(),
                    score: finite(c.score),
                })
                .collect(),
        });
        self
    }

    /// Deterministic per (task, grant number): a re-publication is a JetStream duplicate.
    pub(crate) fn message_id(&self) -> Uuid {
        let name = format!("grant:{}:{}", self.payload.task_id, self.payload.grant_seq);
        Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
    }
}

/// JSON has no NaN or infinity (serde_json would write `null`, which no reader takes for a
/// number, and the agent would drop the grant), so a faulty strategy's score is clamped; NaN
/// reads as the worst.
fn finite(score: f64) -> f64 {
    if score.is_nan() {
        f64::MIN
    } else {
        score.clamp(f64::MIN, f64::MAX)
    }
}

/// Task priority (0..=10) as message priority, so grants of urgent work read as such.
pub(crate) fn message_priority(task_priority: u8) -> MessagePriority {
    match task_priority {
        9.. => MessagePriority::Critical,
        7..=8 => MessagePriority::High,
        3..=6 => MessagePriority::Normal,
        _ => MessagePriority::Low,
    }
}

/// Publishes one grant on the agent's subject (core NATS: the outbox in Redis, not a stream, is
/// what keeps it until the agent acknowledges). The message id stays deterministic per (task,
/// grant number), so every copy of a grant carries the same id.
pub(crate) async fn publish_grant(ctx: &Ctx, grant: &Grant) -> Result<(), Error> {
    let agent = grant.payload.agent_id.clone();
    let mut env = Envelope::new(
        OPTIMIZER_SENDER,
        MessageType::TaskRequest,
        grant.payload.clone(),
        now_ms(),
    )
    .with_correlation(grant.submit_message_id.clone())
    .with_recipient(agent.clone());
    env.message_id = grant.message_id();
    env.priority = message_priority(grant.payload.priority);
    let subject = ctx.subjects.addressed(MessageType::TaskRequest, &agent);
    transport::publish_core_traced(&ctx.client, subject, &env, grant.trace.as_ref()).await?;
    ctx.metrics
        .messages
        .with_label_values(&[MessageType::TaskRequest.as_str(), "out"])
        .inc();
    Ok(())
}

/// Sends a reply; a lost reply is logged, not fatal (the state in Redis is authoritative and
/// queryable), so this never fails the batch.
pub(crate) async fn send_reply(ctx: &Ctx, reply: Reply) {
    let env = Envelope::new(
        OPTIMIZER_SENDER,
        MessageType::CoordinatorReply,
        reply.body,
        now_ms(),
    )
    .with_correlation(reply.correlation_id)
    .with_recipient(reply.to.clone());
    let subject = ctx
        .subjects
        .addressed(MessageType::CoordinatorReply, &reply.to);
    match transport::publish_core(&ctx.client, subject, &env).await {
        Ok(()) => ctx
            .metrics
            .messages
            .with_label_values(&[MessageType::CoordinatorReply.as_str(), "out"])
            .inc(),
        Err(e) => {
            if let Some(held_back) = ctx.warnings.due("reply not sent") {
                tracing::warn!(error = %e, to = %reply.to, held_back, "reply not sent");
            }
        }
    }
}

/// Reports a refused message on `<prefix>.error_report.<sender>` and counts it.
pub(crate) async fn send_rejection(ctx: &Ctx, subject: &str, rejection: &Rejection) {
    ctx.metrics
        .rejected
        .with_label_values(&[rejection.reason.as_str()])
        .inc();
    tracing::info!(reason = rejection.reason.as_str(), subject, to = %rejection.reply_to, "message refused: {}", rejection.message);
    let report = ErrorReport {
        code: rejection.reason.as_str().to_string(),
        message: rejection.message.clone(),
        subject: Some(subject.to_string()),
    };
    let mut env = Envelope::new(OPTIMIZER_SENDER, MessageType::ErrorReport, report, now_ms())
        .with_recipient(rejection.reply_to.clone());
    env.correlation_id = rejection.correlation_id.clone();
    env.priority = MessagePriority::High;
    let out = ctx
        .subjects
        .addressed(MessageType::ErrorReport, &rejection.reply_to);
    match transport::publish_core(&ctx.client, out, &env).await {
        Ok(()) => ctx
            .metrics
            .messages
            .with_label_values(&[MessageType::ErrorReport.as_str(), "out"])
            .inc(),
        Err(e) => {
            if let Some(held_back) = ctx.warnings.due("error report not sent") {
                tracing::warn!(error = %e, held_back, "error report not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_decision::CandidateScore;

    fn queued() -> QueuedTask {
        QueuedTask {
            view: switchyard_decision::TaskView {
                task_id: "t1".into(),
                task_type: "build".into(),
                priority: 5,
                required: Resources::default(),
                seq: 1,
                estimated_duration_s: 1.0,
                avoid_agents: Vec::new(),
            },
            submitter: "orch".into(),
            submit_message_id: "m1".into(),
            submitted_at_ms: 0,
            strategy: None,
            explain: true,
            replies: Replies::All,
            tenant: "default".into(),
            budgets: Vec::new(),
            trace: None,
            attempt: 1,
        }
    }

    fn candidate(agent_id: &str, score: f64) -> CandidateScore {
        CandidateScore {
            index: 0,
            agent_id: agent_id.into(),
            score,
        }
    }

    #[test]
    fn an_explained_grant_names_the_granted_agent_and_stays_valid_json() {
        let explanation = Explanation {
            strategy: "adaptive",
            candidates: vec![
                candidate("a", f64::INFINITY),
                candidate("b", 0.5),
                candidate("c", f64::NAN),
            ],
        };
        // "a" filled up before the grant; "b" got it.
        let grant = Grant::from_queued(&queued(), "b", 1).explained(Some(&explanation));
        let wire = serde_json::to_string(&grant.payload).expect("serializes");
        let back: TaskGrant = serde_json::from_str(&wire).expect("an agent can read it back");
        let explained = back.explanation.expect("explanation kept");
        assert_eq!(explained.strategy, "adaptive");
        assert_eq!(explained.chosen, "b");
        let scores: Vec<f64> = explained.candidates.iter().map(|c| c.score).collect();
        assert_eq!(scores, [f64::MAX, 0.5, f64::MIN]);
        let plain = Grant::from_queued(&queued(), "b", 1).explained(None);
        let wire = serde_json::to_string(&plain.payload).expect("serializes");
        assert!(!wire.contains("explanation"), "{wire}");
    }
}
