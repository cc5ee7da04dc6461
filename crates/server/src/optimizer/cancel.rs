//! Cancellation (TASK_CANCEL). A waiting or queued task is cancelled at once by
//! `cancel_task.lua`, and its dependents fail with `dependency_cancelled:<id>`. A granted task is
//! marked `cancel_requested` and its agent is told with a TASK_CANCEL notice on its grant subject
//! (core NATS, like grants): the notice waits in the Redis cancel outbox and any replica sends it
//! again every `grant_resend_ms` until the agent confirms, by reporting the grant failed (the task
//! becomes `cancelled`, `complete_tasks.lua`), or its lease ends or it deregisters (the task is
//! cancelled instead of re-queued, `requeue_task.lua`). Either releases the reservation. Every
//! step is one idempotent script, so a redelivered or repeated cancel, or two replicas applying
//! cancels and completions of the same task, answer the same and change nothing twice.

use super::Ctx;
use super::applied::Applied;
use super::events::resolve_dependents;
use super::inbox::derived_id;
use super::publish::{OPTIMIZER_SENDER, Reply};
use crate::state::{CancelOutcome, DependencyOutcome};
use switchyard_client::error::Error;
use switchyard_client::transport;
use switchyard_decision::TaskState;
use switchyard_protocol::{
    Envelope, MessagePriority, MessageType, Replies, ReplyStatus, TaskCancel, TaskCancelNotice,
    now_ms,
};

/// Most cancel-outbox entries one resend pass looks at.
const RESEND_BATCH: usize = 512;

/// Applies one TASK_CANCEL (`operator`: it came on the operators' subject).
pub(crate) async fn apply_cancel(
    ctx: &Ctx,
    env: &Envelope<TaskCancel>,
    operator: bool,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let reason = p.reason.as_deref().unwrap_or("");
    let retention = ctx.config.coordination.task_retention_s;
    let outcome = ctx
        .store
        .cancel_task(&p.task_id, &env.sender, operator, reason, retention)
        .await?;
    let label = match &outcome {
        CancelOutcome::Cancelled { .. } => "cancelled",
        CancelOutcome::Cancelling { .. } => "cancelling",
        CancelOutcome::Finished { .. } => "finished",
        CancelOutcome::Refused(_) => "refused",
    };
    ctx.metrics.task_cancels.with_label_values(&[label]).inc();
    let reply = Reply::new(
        &env.sender,
        &env.message_id.to_string(),
        MessageType::TaskCancel,
        ReplyStatus::Cancelled,
    )
    .task(&p.task_id);
    let mut applied = Applied::default();
    match outcome {
        CancelOutcome::Refused(refusal) => return Ok(Applied::refused(refusal)),
        CancelOutcome::Cancelled {
            submitter,
            submit_message_id,
            dependents,
        } => {
            ctx.metrics
                .allocations
                .with_label_values(&["cancelled"])
                .inc();
            tracing::info!(task_id = %p.task_id, by = %env.sender, "task cancelled");
            applied.replies.push(reply);
            tell_submitter(&mut applied, &p.task_id, &submitter, &submit_message_id);
            let cancelled = DependencyOutcome::Cancelled;
            resolve_dependents(ctx, &p.task_id, cancelled, dependents, &mut applied).await?;
        }
        CancelOutcome::Cancelling {
            agent_id,
            grant_seq,
        } => telling_the_agent(env, reply, agent_id, grant_seq, &mut applied),
        CancelOutcome::Finished { state, agent_id } => {
            applied.replies.push(too_late(reply, state, &agent_id));
        }
    }
    Ok(applied)
}

/// A granted task: the canceller hears `cancelling`, and the agent gets its notice.
fn telling_the_agent(
    env: &Envelope<TaskCancel>,
    reply: Reply,
    agent_id: String,
    grant_seq: u64,
    applied: &mut Applied,
) {
    let p = &env.payload;
    tracing::info!(task_id = %p.task_id, agent_id = %agent_id, by = %env.sender, "cancel of a granted task: telling its agent");
    let mut reply = reply.agent(&agent_id);
    reply.body.status = ReplyStatus::Cancelling;
    applied.replies.push(reply);
    applied.cancel_notices.push(TaskCancelNotice {
        task_id: p.task_id.clone(),
        agent_id,
        grant_seq,
        reason: p.reason.clone(),
    });
}

/// The answer to a cancel of a task that had already completed or failed: its outcome.
fn too_late(reply: Reply, state: TaskState, agent_id: &str) -> Reply {
    let mut reply = reply
        .agent(agent_id)
        .detail(format!("already {state}: nothing to cancel"));
    reply.body.status = if state == TaskState::Completed {
        ReplyStatus::Completed
    } else {
        ReplyStatus::Failed
    };
    reply
}

/// Tells the submitter its task was cancelled (an empty `submitter` asked for no replies).
pub(crate) fn tell_submitter(
    applied: &mut Applied,
    task_id: &str,
    submitter: &str,
    submit_message_id: &str,
) {
    if submitter.is_empty() {
        return;
    }
    applied.replies.push(
        Reply::new(
            submitter,
            submit_message_id,
            MessageType::TaskSubmit,
            ReplyStatus::Cancelled,
        )
        .task(task_id),
    );
}

/// Granted tasks that were cancelled instead of re-queued when their agent left or died: tell
/// their submitters and fail their dependents, as a confirmed cancel does.
pub(crate) async fn cancelled_without_agent(
    ctx: &Ctx,
    task_ids: &[String],
    applied: &mut Applied,
) -> Result<(), Error> {
    for task_id in task_ids {
        ctx.metrics
            .allocations
            .with_label_values(&["cancelled"])
            .inc();
        tracing::info!(task_id = %task_id, "cancelled task released: its agent left or died");
        if let Some(record) = ctx.store.task_record(task_id).await? {
            let get = |k: &str| record.get(k).cloned().unwrap_or_default();
            if Replies::parse(&get("replies")) != Replies::None {
                tell_submitter(applied, task_id, &get("submitter"), &get("submit_msg_id"));
            }
        }
        let dependents = ctx.store.dependents_of(task_id).await?;
        let cancelled = DependencyOutcome::Cancelled;
        resolve_dependents(ctx, task_id, cancelled, dependents, applied).await?;
    }
    Ok(())
}

/// Publishes one cancel notice on the agent's grant subject. Its message id is derived from the
/// task and grant number, so every copy carries the same id and the agent can drop copies.
pub(crate) async fn publish_notice(ctx: &Ctx, notice: &TaskCancelNotice) -> Result<(), Error> {
    let agent = notice.agent_id.clone();
    let mut env = Envelope::new(
        OPTIMIZER_SENDER,
        MessageType::TaskCancel,
        notice.clone(),
        now_ms(),
    )
    .with_recipient(agent.clone());
    // A run-timeout stop of the same grant is a different message from its cancel.
    let kind = if notice.is_run_timeout() {
        "run_timeout"
    } else {
        "cancel"
    };
    env.message_id = derived_id(&format!("{kind}:{}:{}", notice.task_id, notice.grant_seq));
    env.priority = MessagePriority::High;
    transport::publish_core(&ctx.client, ctx.subjects.cancel_notice(&agent), &env).await?;
    ctx.metrics.cancel_notices.inc();
    ctx.metrics
        .messages
        .with_label_values(&[MessageType::TaskCancel.as_str(), "out"])
        .inc();
    Ok(())
}

/// Publishes notices; one that is lost is sent again by the resend pass.
pub(crate) async fn publish_notices(ctx: &Ctx, notices: &[TaskCancelNotice]) {
    for notice in notices {
        if let Err(e) = publish_notice(ctx, notice).await
            && let Some(held_back) = ctx.warnings.due("cancel notice not sent")
        {
            tracing::warn!(task_id = %notice.task_id, error = %e, held_back, "cancel notice not sent; it is sent again later");
        }
    }
}

/// Sends again every cancel notice that has waited `grant_resend_ms` for its agent, and drops
/// the entries of tasks no longer granted on that grant (confirmed, lease ended, completed).
pub(crate) async fn resend_cancel_notices(ctx: &Ctx) -> Result<usize, Error> {
    let due = ctx
        .store
        .due_cancel_notices(ctx.config.coordination.grant_resend_ms, RESEND_BATCH)
        .await?;
    let (mut sent, mut gone, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for (task_id, seq) in due {
        let record = ctx.store.task_record(&task_id).await?;
        match record.as_ref().and_then(pending_notice) {
            Some(notice) => {
                publish_notices(ctx, std::slice::from_ref(&notice)).await;
                if notice.grant_seq == seq {
                    sent.push((task_id, seq));
                } else {
                    // Handed off since: the new agent is told, under its own grant.
                    moved.push((task_id.clone(), notice.grant_seq));
                    gone.push((task_id, seq));
                }
            }
            None => gone.push((task_id, seq)),
        }
    }
    ctx.store.update_cancel_notices(&sent, &gone).await?;
    ctx.store.add_cancel_notices(&moved).await?;
    Ok(sent.len() + moved.len())
}

/// The notice still owed for this task record: it is still granted and its cancel was
/// requested. It names the current grant, which a handoff may have moved to another agent since
/// the cancel.
fn pending_notice(record: &std::collections::BTreeMap<String, String>) -> Option<TaskCancelNotice> {
    let get = |k: &str| record.get(k).cloned().unwrap_or_default();
    let granted = TaskState::parse(&get("state")) == Some(TaskState::Granted);
    let seq = get("grant_seq").parse::<u64>().ok()?;
    if !(granted && get("cancel_requested") == "1") {
        return None;
    }
    let reason = Some(get("cancel_reason")).filter(|r| !r.is_empty());
    Some(TaskCancelNotice {
        task_id: get("task_id"),
        agent_id: get("agent"),
        grant_seq: seq,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_notice_is_owed_for_the_current_grant_of_a_granted_task_being_cancelled() {
        let base = [
            ("task_id", "t1"),
            ("agent", "a1"),
            ("state", "granted"),
            ("grant_seq", "2"),
            ("cancel_requested", "1"),
            ("cancel_reason", "user asked"),
        ];
        let notice = pending_notice(&record(&base)).expect("owed");
        assert_eq!((notice.agent_id.as_str(), notice.grant_seq), ("a1", 2));
        assert_eq!(notice.reason.as_deref(), Some("user asked"));
        let mut done = base;
        done[2] = ("state", "cancelled");
        assert!(pending_notice(&record(&done)).is_none(), "confirmed");
        let mut not_asked = base;
        not_asked[4] = ("cancel_requested", "");
        assert!(pending_notice(&record(&not_asked)).is_none());
    }
}
