//! Time limits and retries, enforced by every replica's resend pass (every `grant_resend_ms`;
//! the maintenance interval is too coarse for timeouts of a few seconds). Deadlines and back-offs
//! are kept in Redis sorted sets scored by the Redis clock (`state/deadlines.rs`); each due entry
//! is acted on by one script that checks again that it is due and still applies, so several
//! replicas enforcing the same deadline time the task out once and retry it once.
//!
//! - A queue deadline (`queue_timeout_s`) fails a waiting or queued task with the reason
//!   `queue_timeout`; its submitter gets the final `failed` reply, its dependents fail.
//! - A run deadline (`run_timeout_s`) releases the grant's reservation at once, tells the agent
//!   to stop (a TASK_CANCEL notice on its grant subject with the reason `run_timeout`, sent once:
//!   the reservation no longer waits for the agent, and a report of that grant is refused
//!   `stale_grant`), and retries the task if attempts remain, else fails it (`run_timeout`).
//! - A retry whose back-off is over enters the priority queue at its old place.

use super::Ctx;
use super::applied::Applied;
use super::events::{Retry, resolve_dependents};
use super::publish::{Reply, send_reply};
use crate::state::{Deadline, DeadlineKind, DeadlineOutcome, DependencyOutcome};
use switchyard_client::error::Error;
use switchyard_protocol::{MessageType, QUEUE_TIMEOUT, RUN_TIMEOUT, ReplyStatus, TaskCancelNotice};

/// Most deadlines of each kind, and most retries, one pass acts on; the rest wait a pass.
const DEADLINE_BATCH: usize = 256;

/// One pass: due deadlines, then due retries. Returns how many entries acted.
pub(crate) async fn enforce(ctx: &Ctx) -> Result<usize, Error> {
    let mut applied = Applied::default();
    let mut acted = 0;
    for deadline in ctx.store.due_deadlines(DEADLINE_BATCH).await? {
        if enforce_one(ctx, &deadline, &mut applied).await? {
            acted += 1;
        }
    }
    let due = ctx.store.due_retries(DEADLINE_BATCH).await?;
    let promoted = ctx.store.promote_retries(&due).await?;
    if !promoted.is_empty() {
        tracing::debug!(count = promoted.len(), "retries back in the queue");
        applied.dispatch = true;
    }
    acted += promoted.len();
    publish(ctx, applied).await;
    Ok(acted)
}

/// Replies, stop notices and a dispatch pass (capacity freed, or retries queued).
async fn publish(ctx: &Ctx, applied: Applied) {
    super::cancel::publish_notices(ctx, &applied.cancel_notices).await;
    for reply in applied.replies {
        send_reply(ctx, reply).await;
    }
    if applied.dispatch {
        ctx.dispatcher.dispatch_after_commit().await;
    }
}

/// Acts on one due deadline; true when it timed a task out.
async fn enforce_one(ctx: &Ctx, deadline: &Deadline, applied: &mut Applied) -> Result<bool, Error> {
    let retention = ctx.config.coordination.task_retention_s;
    let learning_rate = ctx.config.coordination.learning_rate;
    let mut agent = match deadline.kind {
        DeadlineKind::Queue => String::new(),
        DeadlineKind::Run => holder(ctx, &deadline.task_id).await?,
    };
    // A handoff between the read and the script moves the task: once more, naming its holder.
    let mut outcome = ctx
        .store
        .enforce_deadline(deadline, &agent, learning_rate, retention)
        .await?;
    if let DeadlineOutcome::Moved { agent_id } = outcome {
        agent = agent_id;
        outcome = ctx
            .store
            .enforce_deadline(deadline, &agent, learning_rate, retention)
            .await?;
    }
    if ctx.tracer.enabled() {
        traced(ctx, deadline, &outcome).await;
    }
    react(ctx, deadline, outcome, applied).await
}

/// The spans of an attempt (or a wait) a time limit ended.
async fn traced(ctx: &Ctx, deadline: &Deadline, outcome: &DeadlineOutcome) {
    let (agent_id, grant_seq, next_attempt, name) = match outcome {
        DeadlineOutcome::Failed {
            agent_id,
            grant_seq,
            ..
        } => (agent_id, *grant_seq, None, "failed"),
        DeadlineOutcome::Retrying {
            agent_id,
            grant_seq,
            attempt,
            ..
        } => (agent_id, *grant_seq, Some(*attempt), "retrying"),
        DeadlineOutcome::Cancelled {
            agent_id,
            grant_seq,
            ..
        } => (agent_id, *grant_seq, None, "cancelled"),
        _ => return,
    };
    let reason = match deadline.kind {
        DeadlineKind::Queue => QUEUE_TIMEOUT,
        DeadlineKind::Run => RUN_TIMEOUT,
    };
    let end = super::traces::AttemptEnd {
        task_id: &deadline.task_id,
        agent_id,
        grant_seq: Some(grant_seq),
        next_attempt,
        success: false,
        execution_time_s: None,
        outcome: name,
        reason: reason.to_string(),
        only_in_state: None,
    };
    end.record(ctx).await;
}

/// What a deadline's outcome calls for: the agent stopped, the submitter told, dependents
/// resolved, counted; true when it timed a task out.
async fn react(
    ctx: &Ctx,
    deadline: &Deadline,
    outcome: DeadlineOutcome,
    applied: &mut Applied,
) -> Result<bool, Error> {
    let task_id = deadline.task_id.as_str();
    match outcome {
        DeadlineOutcome::NotDue | DeadlineOutcome::Gone | DeadlineOutcome::Moved { .. } => {
            return Ok(false);
        }
        DeadlineOutcome::Failed {
            agent_id,
            grant_seq,
            submitter,
            submit_message_id,
            dependents,
        } => {
            stop_agent(task_id, &agent_id, grant_seq, applied);
            let told = (submitter.as_str(), submit_message_id.as_str());
            timed_out(ctx, deadline, &agent_id, told, dependents, applied).await?;
        }
        DeadlineOutcome::Retrying {
            agent_id,
            grant_seq,
            retry_at_ms,
            attempt,
            submitter,
            submit_message_id,
        } => {
            stop_agent(task_id, &agent_id, grant_seq, applied);
            let retry = Retry {
                task_id,
                cause: RUN_TIMEOUT,
                submitter: &submitter,
                submit_message_id: &submit_message_id,
                retry_at_ms,
                attempt,
            };
            retry.tell(ctx, applied);
        }
        DeadlineOutcome::Cancelled {
            agent_id,
            grant_seq,
            submitter,
            submit_message_id,
            dependents,
        } => {
            stop_agent(task_id, &agent_id, grant_seq, applied);
            let told = (submitter.as_str(), submit_message_id.as_str());
            cancelled(ctx, task_id, &agent_id, told, dependents, applied).await?;
        }
    }
    ctx.metrics
        .task_timeouts
        .with_label_values(&[deadline.kind.as_str()])
        .inc();
    // Capacity was freed (run) or the queue changed (queue): let the next tasks go.
    applied.dispatch = true;
    Ok(true)
}

/// A task failed for its time limit: the submitter's final `failed` reply (`detail` the
/// reason), and its dependents fail in turn.
async fn timed_out(
    ctx: &Ctx,
    deadline: &Deadline,
    agent_id: &str,
    (submitter, submit_message_id): (&str, &str),
    dependents: Vec<String>,
    applied: &mut Applied,
) -> Result<(), Error> {
    let task_id = deadline.task_id.as_str();
    let reason = match deadline.kind {
        DeadlineKind::Queue => QUEUE_TIMEOUT,
        DeadlineKind::Run => RUN_TIMEOUT,
    };
    tracing::info!(task_id, reason, agent_id, "task timed out: failed");
    ctx.metrics.allocations.with_label_values(&["failed"]).inc();
    if !submitter.is_empty() {
        applied.replies.push(
            Reply::new(
                submitter,
                submit_message_id,
                MessageType::TaskSubmit,
                ReplyStatus::Failed,
            )
            .task(task_id)
            .detail(reason),
        );
    }
    let failed = DependencyOutcome::Failed;
    resolve_dependents(ctx, task_id, failed, dependents, applied).await
}

/// A task being cancelled reached its run timeout: cancelled now, as if its agent confirmed.
async fn cancelled(
    ctx: &Ctx,
    task_id: &str,
    agent_id: &str,
    (submitter, submit_message_id): (&str, &str),
    dependents: Vec<String>,
    applied: &mut Applied,
) -> Result<(), Error> {
    tracing::info!(
        task_id,
        agent_id,
        "run timeout of a task being cancelled: cancelled"
    );
    ctx.metrics
        .allocations
        .with_label_values(&["cancelled"])
        .inc();
    super::cancel::tell_submitter(applied, task_id, submitter, submit_message_id);
    let cancelled = DependencyOutcome::Cancelled;
    resolve_dependents(ctx, task_id, cancelled, dependents, applied).await
}

/// The agent holding a task now (empty when none).
async fn holder(ctx: &Ctx, task_id: &str) -> Result<String, Error> {
    let record = ctx.store.task_record(task_id).await?;
    Ok(record
        .and_then(|r| r.get("agent").cloned())
        .unwrap_or_default())
}

/// The agent of a grant taken back at its run timeout is told to stop (no notice for a queue
/// timeout: no agent had it).
fn stop_agent(task_id: &str, agent_id: &str, grant_seq: u64, applied: &mut Applied) {
    if agent_id.is_empty() {
        return;
    }
    applied.cancel_notices.push(TaskCancelNotice {
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        grant_seq,
        reason: Some(RUN_TIMEOUT.to_string()),
    });
}
