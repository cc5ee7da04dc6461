//! Liveness: heartbeats renew an agent's lease; the maintenance pass marks agents whose lease
//! ran out (by the Redis clock, never the agents') dead and gives their tasks back to the queue.

use super::Ctx;
use super::applied::Applied;
use crate::state::{ExpireOutcome, HeartbeatOutcome, RequeueOutcome};
use switchyard_client::error::Error;

/// A HEARTBEAT: renew the lease. No reply on success (heartbeats are frequent); a dead or unknown
/// agent is told, so it can register again.
pub(crate) async fn apply_heartbeat(ctx: &Ctx, agent_id: &str) -> Result<Applied, Error> {
    Ok(match ctx.store.record_heartbeat(agent_id).await? {
        HeartbeatOutcome::Alive => Applied::default(),
        HeartbeatOutcome::Refused(refusal) => Applied::refused(refusal),
    })
}

/// Gives an agent's granted tasks back to the queue, one idempotent transition each. Returns
/// the tasks whose cancel had been requested: those are cancelled instead, and the caller tells
/// their submitters and fails their dependents (`cancel::cancelled_without_agent`).
pub(crate) async fn requeue_tasks(
    ctx: &Ctx,
    agent_id: &str,
    tasks: &[String],
) -> Result<Vec<String>, Error> {
    let retention = ctx.config.coordination.task_retention_s;
    let mut cancelled = Vec::new();
    for task_id in tasks {
        let outcome = ctx.store.requeue_task(task_id, agent_id, retention).await?;
        if ctx.tracer.enabled() {
            traced_requeue(ctx, task_id, agent_id, &outcome).await;
        }
        match outcome {
            RequeueOutcome::Requeued => {
                ctx.metrics
                    .allocations
                    .with_label_values(&["requeued"])
                    .inc();
                tracing::info!(task_id = %task_id, agent_id, "task re-queued from an agent that left or died");
            }
            RequeueOutcome::Cancelled => cancelled.push(task_id.clone()),
            RequeueOutcome::Noop => {}
        }
    }
    Ok(cancelled)
}

/// The `run` and `completion` spans of an attempt taken back from an agent that left or died
/// (outcome `requeued`, or `cancelled` for a task whose cancel was waiting on that agent).
async fn traced_requeue(ctx: &Ctx, task_id: &str, agent_id: &str, outcome: &RequeueOutcome) {
    let (name, state) = match outcome {
        RequeueOutcome::Requeued => ("requeued", "queued"),
        RequeueOutcome::Cancelled => ("cancelled", "cancelled"),
        RequeueOutcome::Noop => return,
    };
    let end = super::traces::AttemptEnd {
        task_id,
        agent_id,
        grant_seq: None,
        next_attempt: None,
        success: false,
        execution_time_s: None,
        outcome: name,
        reason: "agent_left".to_string(),
        only_in_state: Some(state),
    };
    end.record(ctx).await;
}

/// Marks every active agent whose lease ran out dead and re-queues its tasks. Returns how many
/// agents died. Safe with several replicas: the expiry check and the write are one script. Reads
/// only the agents past their lease (the leases index), never the whole fleet.
pub(crate) async fn expire_silent_agents(ctx: &Ctx) -> Result<usize, Error> {
    let listening_since = ctx
        .listening_since_ms
        .load(std::sync::atomic::Ordering::SeqCst);
    if listening_since == 0 {
        // Not hearing heartbeats yet: silence means nothing.
        return Ok(0);
    }
    let mut died = 0;
    for agent_id in ctx.store.agents_past_lease(EXPIRE_BATCH).await? {
        if let ExpireOutcome::Dead { tasks, just_died } =
            ctx.store.expire_agent(&agent_id, listening_since).await?
        {
            if just_died {
                died += 1;
                tracing::warn!(agent_id = %agent_id, tasks = tasks.len(), "agent missed its lease: marked dead");
            }
            let cancelled = requeue_tasks(ctx, &agent_id, &tasks).await?;
            finish_cancelled(ctx, &cancelled).await?;
        }
    }
    if died > 0 {
        ctx.metrics.agents_expired.inc_by(died as u64);
    }
    Ok(died)
}

/// Tells about tasks cancelled because their agent died (no event to answer: replies go out
/// now). A failure here leaves the agent dead and its tasks cancelled; only replies and the
/// dependents' cascade are lost, and a repeated cancel of the task sends them again.
async fn finish_cancelled(ctx: &Ctx, cancelled: &[String]) -> Result<(), Error> {
    if cancelled.is_empty() {
        return Ok(());
    }
    let mut applied = Applied::default();
    super::cancel::cancelled_without_agent(ctx, cancelled, &mut applied).await?;
    for reply in applied.replies {
        super::publish::send_reply(ctx, reply).await;
    }
    Ok(())
}

/// Most agents one maintenance pass looks at; the rest wait for the next pass.
const EXPIRE_BATCH: usize = 1024;
