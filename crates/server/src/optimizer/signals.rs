//! The core lane: HEARTBEAT and GRANT_ACK, the two frequent small signals agents send, arrive on
//! core NATS (no stream: storing them would cost four messages and a disk write each).
//!
//! Every replica receives every heartbeat (a plain subscription), while grant acks go through a
//! queue group, so each reaches one replica. The difference is what a replica that is alive to
//! nats-server but cannot apply what it receives (frozen, or cut off from Redis) does to them: in
//! a queue group it would keep taking its share and drop it, so with two replicas half of every
//! agent's heartbeats would be lost while it is stalled, and three lost in a row end a lease: a
//! live agent judged dead and its tasks granted to another while it still works on them (the
//! chaos matrix's `optimizer-stop` showed it). Recording a heartbeat twice is harmless (the script
//! renews the lease to the Redis clock's now), and each replica records a whole batch in one
//! script call, so the cost is one call per batch per replica. A lost grant ack costs only a
//! resend, so acks stay in the queue group.
//!
//! Both are applied in batches: one script call renews every lease of a batch, one ZREM clears
//! every acknowledged grant.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::sync::watch;

use super::Ctx;
use super::publish::send_rejection;
use crate::state::HeartbeatOutcome;
use switchyard_client::error::Error;
use switchyard_protocol::{Inbound, MessageType, Rejection, decode, now_ms};

/// Most signals applied together.
const SIGNAL_BATCH: usize = 1024;

/// Receives heartbeats and grant acknowledgments until `stop`.
pub(crate) async fn run_signals(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let group = ctx.subjects.optimizer_queue_group();
    let (heartbeats, acks) = match tokio::try_join!(
        ctx.client
            .subscribe(ctx.subjects.all_of(MessageType::Heartbeat)),
        ctx.client
            .queue_subscribe(ctx.subjects.all_of(MessageType::GrantAck), group)
    ) {
        Ok(subs) => subs,
        Err(e) => {
            return tracing::error!(error = %e, "cannot subscribe to heartbeats and grant acks");
        }
    };
    mark_listening(&ctx).await;
    let mut batches = futures::stream::select(heartbeats, acks).ready_chunks(SIGNAL_BATCH);
    loop {
        let batch = tokio::select! {
            _ = stop.changed() => return,
            batch = batches.next() => batch,
        };
        let Some(batch) = batch else { return };
        if let Err(e) = apply_signals(&ctx, batch).await {
            tracing::warn!(error = %e, "heartbeats or grant acks not applied");
        }
    }
}

/// Records since when (Redis clock) this replica hears heartbeats: leases are never judged over a
/// stretch in which no replica may have been listening (see `lua/expire_agent.lua`).
async fn mark_listening(ctx: &Ctx) {
    loop {
        match ctx.store.redis_now_ms().await {
            Ok(now) => return ctx.listening_since_ms.store(now, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Redis clock; leases are not judged yet");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

async fn apply_signals(ctx: &Ctx, batch: Vec<async_nats::Message>) -> Result<(), Error> {
    let (mut beats, mut acks) = (Vec::new(), Vec::new());
    let now = now_ms();
    let max_bytes = ctx.config.messages.max_message_bytes;
    for message in &batch {
        let subject = message.subject.as_str();
        match decode(&ctx.subjects, subject, &message.payload, max_bytes, now) {
            Ok(Inbound::Heartbeat(env)) => {
                beats.push((env.payload.agent_id, env.sender, env.message_id.to_string()))
            }
            Ok(Inbound::GrantAck(env)) => acks.extend(
                env.payload
                    .grants
                    .into_iter()
                    .map(|g| (g.task_id, g.grant_seq)),
            ),
            Ok(_) => {} // the subscriptions deliver nothing else
            Err(rejection) => send_rejection(ctx, subject, &rejection).await,
        }
    }
    count_in(ctx, &batch);
    let ids: Vec<&str> = beats.iter().map(|(agent, ..)| agent.as_str()).collect();
    let (outcomes, ()) = tokio::try_join!(
        ctx.store.record_heartbeats(&ids),
        ctx.store.acknowledge_grants(&acks)
    )?;
    for ((agent_id, sender, message_id), outcome) in beats.iter().zip(outcomes) {
        if let Some(mut rejection) = heartbeat_refusal(sender, outcome) {
            rejection.correlation_id = Some(message_id.clone());
            let subject = ctx.subjects.addressed(MessageType::Heartbeat, agent_id);
            send_rejection(ctx, &subject, &rejection).await;
        }
    }
    Ok(())
}

fn count_in(ctx: &Ctx, batch: &[async_nats::Message]) {
    for message in batch {
        let kind = ctx
            .subjects
            .parse(message.subject.as_str())
            .map_or("unknown", |(t, _)| t.as_str());
        ctx.metrics.messages.with_label_values(&[kind, "in"]).inc();
    }
}

/// A heartbeat of an agent that is not (or no longer) active is answered, so it can register
/// again; an alive one is not (heartbeats are frequent).
fn heartbeat_refusal(sender: &str, outcome: HeartbeatOutcome) -> Option<Rejection> {
    let HeartbeatOutcome::Refused(refusal) = outcome else {
        return None;
    };
    Some(Rejection {
        reason: refusal.reason,
        message: refusal.message,
        reply_to: sender.to_string(),
        correlation_id: None,
        message_type: Some(MessageType::Heartbeat),
    })
}
