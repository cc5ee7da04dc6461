//! One batch of events: decode all, commit all (concurrently, so the Redis calls share round
//! trips), dispatch once, publish, and only then acknowledge. A replica that dies anywhere before
//! the acks leaves the whole batch to be redelivered, and every step is idempotent.

use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use futures::future::join_all;

use super::Ctx;
use super::applied::Applied;
use super::dispatch::publish_grants;
use super::events::apply_batch;
use super::publish::{Reply, send_rejection, send_reply};
use crate::config::JetStreamConfig;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_protocol::{Inbound, MessageType, Rejection, ReplyStatus, decode, now_ms};

pub(crate) async fn process_batch(ctx: &Ctx, messages: Vec<Message>) {
    let started = Instant::now();
    let count = messages.len() as i64;
    ctx.metrics.active_coordinations.add(count);
    let events = decode_batch(ctx, messages).await;
    let t_decoded = Instant::now();
    let inbound: Vec<&Inbound> = events.iter().map(|(_, event)| event).collect();
    let results = apply_batch(ctx, &inbound).await;
    let t_applied = Instant::now();
    let needs_dispatch = results.iter().any(|r| matches!(r, Ok(a) if a.dispatch));
    let granted = if needs_dispatch {
        ctx.dispatcher.dispatch_after_commit().await
    } else {
        Default::default()
    };
    if ctx.faults.stall_after_commit {
        tracing::warn!("fault injection: stalling after commit, before publish and ack");
        std::future::pending::<()>().await;
    }
    // Replies, re-publications and acks of the batch go out together, not one round trip each.
    let granted = &granted;
    let finishing = events
        .iter()
        .zip(results)
        .map(|((message, event), result)| finish_event(ctx, message, event, result, granted));
    let t_dispatched = Instant::now();
    join_all(finishing).await;
    tracing::debug!(
        size = count,
        decode_us = (t_decoded - started).as_micros() as u64,
        apply_us = (t_applied - t_decoded).as_micros() as u64,
        dispatch_us = (t_dispatched - t_applied).as_micros() as u64,
        finish_us = t_dispatched.elapsed().as_micros() as u64,
        "batch"
    );
    ctx.metrics.active_coordinations.sub(count);
    ctx.metrics
        .coordination_seconds
        .with_label_values(&["batch"])
        .observe(started.elapsed().as_secs_f64());
}

/// Decodes every message; refused ones get their error report and are terminated here (they
/// would fail the same way on every redelivery).
async fn decode_batch(ctx: &Ctx, messages: Vec<Message>) -> Vec<(Message, Inbound)> {
    let now = now_ms();
    let max_bytes = ctx.config.messages.max_message_bytes;
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        note_delivery(ctx, &message);
        let subject = message.subject.as_str();
        match decode(&ctx.subjects, subject, &message.payload, max_bytes, now) {
            Ok(mut event) => {
                event.set_trace(trace_of(ctx, &message));
                events.push((message, event));
            }
            Err(rejection) => {
                send_rejection(ctx, subject, &rejection).await;
                acknowledge(ctx, &message, AckKind::Term).await;
            }
        }
    }
    events
}

/// The W3C trace context of an event's headers; an invalid `traceparent` is counted and ignored.
fn trace_of(ctx: &Ctx, message: &Message) -> Option<switchyard_protocol::TraceContext> {
    let headers = message.headers.as_ref()?;
    let context = switchyard_client::transport::trace_of(Some(headers));
    if context.is_none()
        && headers
            .get(switchyard_protocol::TRACEPARENT_HEADER)
            .is_some()
    {
        ctx.metrics.invalid_trace_headers.inc();
    }
    context
}

fn note_delivery(ctx: &Ctx, message: &Message) {
    let kind = ctx
        .subjects
        .parse(message.subject.as_str())
        .map(|(t, _)| t.as_str())
        .unwrap_or("unknown");
    ctx.metrics.messages.with_label_values(&[kind, "in"]).inc();
    if message.info().map(|i| i.delivered > 1).unwrap_or(false) {
        ctx.metrics.redeliveries.inc();
    }
}

/// Sends what an applied event calls for, then acknowledges it; or, when it could not be
/// applied, asks for redelivery (or dead-letters it on its last delivery).
async fn finish_event(
    ctx: &Ctx,
    message: &Message,
    event: &Inbound,
    result: Result<Applied, Error>,
    granted: &std::collections::HashSet<String>,
) {
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => return retry_or_dead_letter(ctx, message, event, &e).await,
    };
    // A registered agent's message consumers exist before it hears it is registered (it reads
    // its messages through them as soon as it does); if they cannot be made, redeliver.
    if let Err(e) = super::inbox::ensure_inboxes(ctx, &applied.inboxes).await {
        return retry_or_dead_letter(ctx, message, event, &e).await;
    }
    // Inbox messages are stored ones an agent waits for (a handoff, a verdict): if they cannot be
    // published, redeliver the event, whose transition answers the same again.
    if let Err(e) = super::inbox::publish_all(ctx, &applied.messages).await {
        return retry_or_dead_letter(ctx, message, event, &e).await;
    }
    publish_grants(ctx, applied.republish).await;
    super::cancel::publish_notices(ctx, &applied.cancel_notices).await;
    for reply in applied.replies {
        send_reply(ctx, reply).await;
    }
    if let Some((task_id, submitter, message_id)) = applied.queued_submit {
        if !granted.contains(&task_id) {
            ctx.metrics.allocations.with_label_values(&["queued"]).inc();
            let reply = Reply::new(
                &submitter,
                &message_id,
                MessageType::TaskSubmit,
                ReplyStatus::Queued,
            )
            .task(&task_id);
            send_reply(ctx, reply).await;
        }
    }
    if let Some((reason, text)) = applied.refusal {
        let sender = sender_of(event);
        let rejection = Rejection {
            reason,
            message: text,
            reply_to: sender,
            correlation_id: Some(event.message_id()),
            message_type: Some(event.message_type()),
        };
        send_rejection(ctx, message.subject.as_str(), &rejection).await;
    }
    acknowledge(ctx, message, AckKind::Ack).await;
}

fn sender_of(event: &Inbound) -> String {
    event.sender().to_string()
}

/// What becomes of an event that could not be applied.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Disposition {
    /// Transient trouble (Redis or NATS): JetStream delivers it again after this pause.
    Redeliver(Duration),
    /// It cannot succeed as sent, or it has had its last delivery: park it in the dead-letter
    /// stream rather than drop it, so an operator can see and replay it.
    DeadLetter,
}

/// Retries only what may succeed later ([`Error::is_retryable`]), after the configured pause for
/// this delivery (the last one repeats), and never past `max_deliver` deliveries.
fn disposition(error: &Error, delivered: i64, jetstream: &JetStreamConfig) -> Disposition {
    if !error.is_retryable() || delivered >= jetstream.max_deliver {
        return Disposition::DeadLetter;
    }
    let backoff = &jetstream.redelivery_backoff_ms;
    let step = usize::try_from(delivered.max(1) - 1).unwrap_or(0);
    let pause = backoff
        .get(step)
        .or(backoff.last())
        .copied()
        .unwrap_or(1_000);
    Disposition::Redeliver(Duration::from_millis(pause))
}

async fn retry_or_dead_letter(ctx: &Ctx, message: &Message, event: &Inbound, error: &Error) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let kind = event.message_type().as_str();
    if error.kind() == ErrorKind::Redis {
        // Stop pulling until the probe hears Redis again, rather than spend more deliveries.
        ctx.readiness.set_redis(false);
    }
    match disposition(error, delivered, &ctx.config.jetstream) {
        Disposition::Redeliver(pause) => {
            if let Some(held_back) = ctx.warnings.due("event failed") {
                tracing::warn!(error = %error, delivered, kind, held_back, "event failed; asking for redelivery");
            }
            acknowledge(ctx, message, AckKind::Nak(Some(pause))).await;
        }
        Disposition::DeadLetter => {
            if dead_letter(ctx, message, event, error).await {
                ctx.metrics.dead_letters.inc();
                tracing::error!(error = %error, delivered, kind, retryable = error.is_retryable(), "event dead-lettered");
                acknowledge(ctx, message, AckKind::Term).await;
            } else {
                acknowledge(ctx, message, AckKind::Nak(None)).await;
            }
        }
    }
}

/// Stores a copy of the event in the dead-letter stream, with the error that put it there in a
/// `Switchyard-Error` header; true once JetStream has stored it.
async fn dead_letter(ctx: &Ctx, message: &Message, event: &Inbound, error: &Error) -> bool {
    let subject = ctx.subjects.dead_letter(event.message_type().as_str());
    let id = format!("dlq:{}", event.message_id());
    let mut headers = switchyard_client::transport::msg_id_headers(&id);
    headers.insert(DEAD_LETTER_ERROR_HEADER, error.to_string().as_str());
    let took_effect = super::took_effect::took_effect(ctx, event).await;
    headers.insert(DEAD_LETTER_TOOK_EFFECT_HEADER, took_effect);
    // Where it came from, so the dashboard can replay it there.
    headers.insert(
        crate::dashboard::ORIGINAL_SUBJECT_HEADER,
        message.subject.as_str(),
    );
    let published = ctx
        .js
        .publish_with_headers(subject, headers, message.payload.clone())
        .await;
    match published {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

/// The header of a dead letter that says why it was dead-lettered.
const DEAD_LETTER_ERROR_HEADER: &str = "Switchyard-Error";
/// The header that says whether its transition took effect after all: yes, no or unknown.
const DEAD_LETTER_TOOK_EFFECT_HEADER: &str = "Switchyard-Took-Effect";

async fn acknowledge(ctx: &Ctx, message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        // The server will redeliver after ack_wait; every transition is idempotent. While NATS is
        // out of reach every message of every batch fails here, so the warning is throttled.
        if let Some(held_back) = ctx.warnings.due("acknowledgement not sent") {
            tracing::warn!(error = %e, held_back, "acknowledgement not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jetstream(max_deliver: i64, backoff: &[u64]) -> JetStreamConfig {
        JetStreamConfig {
            max_deliver,
            redelivery_backoff_ms: backoff.to_vec(),
            ..crate::config::Config::default().jetstream
        }
    }

    #[test]
    fn transient_errors_are_redelivered_after_the_configured_pauses() {
        let redis = Error::new(ErrorKind::Redis, "connection reset");
        let js = jetstream(5, &[1_000, 5_000]);
        let pause = |delivered| disposition(&redis, delivered, &js);
        let ms = |n| Disposition::Redeliver(Duration::from_millis(n));
        assert_eq!(pause(1), ms(1_000));
        assert_eq!(pause(2), ms(5_000));
        assert_eq!(pause(4), ms(5_000), "the last pause repeats");
        assert_eq!(
            pause(5),
            Disposition::DeadLetter,
            "no delivery past max_deliver"
        );
    }

    #[test]
    fn what_cannot_succeed_is_dead_lettered_at_once() {
        let js = jetstream(5, &[1_000]);
        for kind in [
            ErrorKind::RedisRefused,
            ErrorKind::Unexpected,
            ErrorKind::InvalidInput,
        ] {
            let error = Error::new(kind, "unexpected script reply");
            assert_eq!(
                disposition(&error, 1, &js),
                Disposition::DeadLetter,
                "{kind:?}"
            );
        }
    }
}
