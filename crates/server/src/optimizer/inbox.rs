//! Stored messages the optimizer puts in agents' inboxes (the messages stream): forwarded
//! handoffs, handoff verdicts and resource grants. Each carries a message id derived from what it
//! answers, so publishing it again for a redelivered event is dropped by JetStream as a duplicate.
//! In a secured deployment also the inboxes themselves: each agent's message consumers, made
//! when it registers.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use switchyard_client::error::Error;
use switchyard_client::transport;
use switchyard_protocol::{Envelope, MessagePriority};

/// One message for one agent's inbox, ready to publish.
#[derive(Debug, Clone)]
pub(crate) struct InboxDelivery {
    pub subject: String,
    /// Sent as `Nats-Msg-Id`: the envelope's own `message_id`.
    pub message_id: String,
    pub envelope: Envelope<Value>,
}

impl InboxDelivery {
    /// Addresses `envelope` to `recipient`'s inbox at `priority`, under the envelope's own sender
    /// (the optimizer's, or for a forwarded handoff the initiating agent's, whose event the
    /// optimizer read on that agent's own subject).
    pub(crate) fn new<P: Serialize>(
        ctx: &Ctx,
        recipient: &str,
        priority: MessagePriority,
        envelope: Envelope<P>,
    ) -> Result<InboxDelivery, Error> {
        let mut envelope: Envelope<Value> =
            serde_json::from_value(serde_json::to_value(envelope)?)?;
        envelope.priority = priority;
        Ok(InboxDelivery {
            subject: ctx.subjects.message(
                envelope.message_type,
                recipient,
                priority,
                &envelope.sender,
            ),
            message_id: envelope.message_id.to_string(),
            envelope,
        })
    }
}

/// A message id that is the same every time it is derived from the same `name`.
pub(crate) fn derived_id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// The wire name of a priority, read back from where it was stored (`normal` when unreadable).
pub(crate) fn parse_priority(name: &str) -> MessagePriority {
    MessagePriority::parse(name).unwrap_or(MessagePriority::Normal)
}

/// Publishes each message and waits until JetStream stored it. A failure fails the event, which
/// is then redelivered: its transition answers the same again and the messages go out again.
pub(crate) async fn publish_all(ctx: &Ctx, messages: &[InboxDelivery]) -> Result<(), Error> {
    for m in messages {
        transport::publish_stored(&ctx.js, m.subject.clone(), &m.message_id, &m.envelope).await?;
        ctx.metrics
            .messages
            .with_label_values(&[m.envelope.message_type.as_str(), "out"])
            .inc();
    }
    Ok(())
}

/// Creates each agent's message consumers unless they exist, with the settings a client of this
/// configuration would give them (its inbox size, its redelivery wait). Only in a secured
/// deployment (the optimizer connects with credentials), where agents may not create consumers;
/// elsewhere a client creates its own when it connects its messaging endpoint, so agents that
/// never message (most of a large fleet) cost the server no consumers.
pub(crate) async fn ensure_inboxes(ctx: &Ctx, agents: &[String]) -> Result<(), Error> {
    if agents.is_empty() || ctx.config.nats.creds_file.is_empty() {
        return Ok(());
    }
    let options = ctx.config.protocol_options();
    let max_pending = i64::try_from(options.message_buffer_size).unwrap_or(i64::MAX);
    for agent_id in agents {
        transport::ensure_message_consumers(
            &ctx.js,
            &ctx.subjects,
            agent_id,
            max_pending,
            options.redelivery_wait,
        )
        .await?;
    }
    Ok(())
}
