//! Sending in the four delivery modes.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::guaranteed;
use super::{InboxMessage, OutgoingMessage, Sent, Shared};
use crate::error::{Error, ErrorKind, nats_error};
use crate::transport;
use switchyard_protocol::{
    ALL_AGENTS, DeliveryMode, Envelope, MessageType, now_ms, validate_agent_id,
};

pub(crate) async fn send_message(
    shared: &std::sync::Arc<Shared>,
    message: OutgoingMessage,
) -> Result<Sent, Error> {
    check(&message)?;
    let envelope = envelope_of(shared, message);
    let message_id = envelope.message_id;
    shared
        .metrics
        .messages
        .with_label_values(&[envelope.message_type.as_str(), "out"])
        .inc();
    let responses = match envelope.delivery_mode {
        DeliveryMode::Synchronous => request_each(shared, &envelope).await?,
        DeliveryMode::FireAndForget => {
            publish_direct(shared, &envelope).await?;
            Vec::new()
        }
        DeliveryMode::Asynchronous => {
            let tracked = envelope.requires_ack.then(|| {
                shared
                    .tracker
                    .start(message_id, envelope.recipients.clone())
            });
            for recipient in &envelope.recipients {
                publish_copy(shared, &envelope, recipient, 1).await?;
            }
            if let Some(rx) = tracked {
                tokio::spawn(guaranteed::await_acks_once(shared.clone(), message_id, rx));
            }
            Vec::new()
        }
        DeliveryMode::Guaranteed => {
            guaranteed::start(shared, envelope).await?;
            Vec::new()
        }
    };
    Ok(Sent {
        message_id,
        responses,
    })
}

fn check(message: &OutgoingMessage) -> Result<(), Error> {
    let invalid = |why: &str| Err(Error::new(ErrorKind::InvalidInput, why.to_string()));
    if message.recipients.is_empty() {
        return invalid("a message needs at least one recipient (or to_all)");
    }
    let bad = message
        .recipients
        .iter()
        .any(|r| r != ALL_AGENTS && !validate_agent_id(r));
    if bad {
        return invalid("recipients must be agent ids (1-64 of [A-Za-z0-9_-])");
    }
    let stored_or_core = matches!(
        message.delivery_mode,
        DeliveryMode::Asynchronous | DeliveryMode::FireAndForget
    );
    if message.is_broadcast() && (!stored_or_core || message.recipients.len() > 1) {
        return invalid(
            "a broadcast goes to every agent alone, asynchronous or fire-and-forget: \
             synchronous and guaranteed delivery need a known list of recipients",
        );
    }
    Ok(())
}

fn envelope_of(shared: &Shared, message: OutgoingMessage) -> Envelope<Value> {
    let mut envelope = Envelope::new(
        shared.agent_id.clone(),
        message.message_type,
        message.payload,
        now_ms(),
    );
    envelope.recipients = message.recipients;
    envelope.priority = message.priority;
    envelope.delivery_mode = message.delivery_mode;
    // Guaranteed delivery is defined by acknowledgments; a synchronous response is its own.
    envelope.requires_ack = match message.delivery_mode {
        DeliveryMode::Guaranteed => true,
        DeliveryMode::Synchronous => false,
        _ => message.requires_ack,
    };
    envelope.ttl_seconds = message.ttl_s.or(shared.options.default_ttl_s);
    envelope.correlation_id = message.correlation_id;
    envelope.retry_policy = match message.delivery_mode {
        DeliveryMode::Guaranteed => {
            Some(message.retry_policy.unwrap_or(shared.options.retry_policy))
        }
        _ => message.retry_policy,
    };
    envelope
}

/// Stores one copy for `recipient`. Each recipient and attempt has its own `Nats-Msg-Id`: the
/// first attempt's id makes a re-sent publish (after a lost PubAck) a no-op, while a deliberate
/// retry is stored again and the recipient's duplicate check keeps it from the application.
pub(crate) async fn publish_copy(
    shared: &Shared,
    envelope: &Envelope<Value>,
    recipient: &str,
    attempt: u32,
) -> Result<(), Error> {
    let subject = shared.subjects.message(
        envelope.message_type,
        recipient,
        envelope.priority,
        &shared.agent_id,
    );
    let id = format!("{}:{recipient}:{attempt}", envelope.message_id);
    transport::publish_stored(&shared.js, subject, &id, envelope).await
}

async fn publish_direct(shared: &Shared, envelope: &Envelope<Value>) -> Result<(), Error> {
    for recipient in &envelope.recipients {
        let subject = shared
            .subjects
            .direct(envelope.message_type, recipient, &shared.agent_id);
        transport::publish_core(&shared.client, subject, envelope).await?;
    }
    Ok(())
}

/// Synchronous: one core request per recipient, concurrently; every recipient must answer.
async fn request_each(
    shared: &Shared,
    envelope: &Envelope<Value>,
) -> Result<Vec<Envelope<Value>>, Error> {
    let bytes = Bytes::from(serde_json::to_vec(envelope)?);
    let timeout = shared.options.request_timeout;
    let requests = envelope
        .recipients
        .iter()
        .map(|r| request_one(shared, r, envelope.message_type, bytes.clone(), timeout));
    futures::future::join_all(requests)
        .await
        .into_iter()
        .collect()
}

async fn request_one(
    shared: &Shared,
    recipient: &str,
    message_type: MessageType,
    bytes: Bytes,
    timeout: Duration,
) -> Result<Envelope<Value>, Error> {
    let subject = shared
        .subjects
        .direct(message_type, recipient, &shared.agent_id);
    let answer = tokio::time::timeout(timeout, shared.client.request(subject, bytes))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("{recipient} did not respond within {timeout:?}"),
            )
        })?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => Error::new(
                ErrorKind::Timeout,
                format!("{recipient} is not listening (offline?)"),
            ),
            _ => nats_error(&format!("request to {recipient} failed"), e),
        })?;
    serde_json::from_slice(&answer.payload).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("undecodable response from {recipient}: {e}"),
        )
    })
}

pub(crate) async fn respond(
    shared: &Shared,
    request: &InboxMessage,
    message_type: MessageType,
    payload: Value,
) -> Result<(), Error> {
    let Some(reply) = &request.reply_subject else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "only synchronous requests can be responded to",
        ));
    };
    let mut envelope = Envelope::new(shared.agent_id.clone(), message_type, payload, now_ms())
        .with_correlation(request.envelope.message_id.to_string())
        .with_recipient(request.envelope.sender.clone());
    envelope.delivery_mode = DeliveryMode::Synchronous;
    envelope.priority = request.envelope.priority;
    shared
        .metrics
        .messages
        .with_label_values(&[message_type.as_str(), "out"])
        .inc();
    transport::publish_core(&shared.client, reply.clone(), &envelope).await
}
