//! Grant delivery: a grant travels on core NATS to `<prefix>.task_request.<agent_id>` and stays in
//! the Redis outbox (written by the same script that reserved it) until the agent acknowledges it
//! with GRANT_ACK or completes the task. Until then any replica sends it again every
//! `grant_resend_ms`, and the agent's next registration brings all of its unacknowledged grants
//! at once. So no agent needs a durable consumer of its own, and an agent that was offline when
//! its grant was made gets it when it returns (or, if it never does, its lease ends and the task
//! goes back to the queue, which also takes the grant out of the outbox).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Ctx;
use super::dispatch::publish_grants;
use super::maintenance::run_every;
use super::publish::Grant;
use switchyard_client::error::Error;

/// Most outbox entries one resend pass looks at.
const RESEND_BATCH: usize = 512;

/// Sends overdue grants (and cancel notices) again every `grant_resend_ms`, and enforces time
/// limits and ends retry back-offs (`deadlines.rs`), until `stop`.
pub(crate) async fn run_resender(ctx: Arc<Ctx>, stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(ctx.config.coordination.grant_resend_ms);
    run_every(period, stop, "grant resend pass", || async {
        let grants = resend_overdue(&ctx).await?;
        let notices = super::cancel::resend_cancel_notices(&ctx).await?;
        let timed = super::deadlines::enforce(&ctx).await?;
        Ok(grants + notices + timed)
    })
    .await
}

/// Sends again every grant whose agent has not acknowledged it within `grant_resend_ms`. Several
/// replicas may send the same grant at once; agents drop copies by (task_id, grant_seq).
pub(crate) async fn resend_overdue(ctx: &Ctx) -> Result<usize, Error> {
    let overdue = ctx
        .store
        .stale_grants(ctx.config.coordination.grant_resend_ms, RESEND_BATCH)
        .await?;
    let mut grants = Vec::new();
    let mut gone = Vec::new();
    for (task_id, seq) in overdue {
        let record = ctx.store.task_record(&task_id).await?;
        match record.as_ref().and_then(Grant::from_record) {
            Some(grant) if grant.payload.grant_seq == seq => grants.push(grant),
            // Superseded (completed, re-queued or re-granted): only the entry is left.
            _ => gone.push((task_id, seq)),
        }
    }
    ctx.store.acknowledge_grants(&gone).await?;
    resend(ctx, grants).await
}

async fn resend(ctx: &Ctx, grants: Vec<Grant>) -> Result<usize, Error> {
    if grants.is_empty() {
        return Ok(0);
    }
    let sent: Vec<(String, u64)> = grants
        .iter()
        .map(|g| (g.payload.task_id.clone(), g.payload.grant_seq))
        .collect();
    tracing::debug!(count = sent.len(), "sending unacknowledged grants again");
    ctx.metrics.grant_republishes.inc_by(sent.len() as u64);
    // The submitter was told when the grant was first made.
    let quiet = grants.into_iter().map(Grant::without_replies).collect();
    publish_grants(ctx, quiet).await;
    ctx.store.mark_grants_resent(&sent).await?;
    Ok(sent.len())
}
