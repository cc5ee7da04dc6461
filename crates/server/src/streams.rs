//! The JetStream streams and the optimizers' durable consumers, created or updated idempotently
//! by every replica at start. The stream shapes clients rely on (dead letters, messages) are
//! defined in the client's transport; the events stream and the optimizer consumers are the
//! service's own.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use switchyard_client::error::{Error, nats_error};
use switchyard_client::transport::{dead_letter_stream_config, messages_stream_config};
use switchyard_protocol::{MessageType, Subjects};

use crate::config::JetStreamConfig;

/// Creates or updates the events, dead-letter and messages streams with `config.replicas`
/// copies each, or more when a stream already has more: an optimizer never lowers replication
/// (one started with an old or default config must not undo an operator's choice), it warns
/// instead. Grants need no stream: they travel on core NATS and wait in the Redis outbox until
/// acknowledged.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &JetStreamConfig,
    max_message_bytes: usize,
) -> Result<(), Error> {
    let mut kept = Vec::new();
    for mut cfg in stream_configs(subjects, config, max_message_bytes) {
        let name = cfg.name.clone();
        let existing = existing_replicas(js, &name).await?;
        cfg.num_replicas = replicas_to_apply(config.replicas, existing);
        if cfg.num_replicas > config.replicas {
            kept.push(format!("{name} has {}", cfg.num_replicas));
        }
        let replicas = cfg.num_replicas;
        js.create_or_update_stream(cfg).await.map_err(|e| {
            nats_error(
                &format!("cannot create stream {name} with {replicas} replicas"),
                e,
            )
        })?;
    }
    if !kept.is_empty() {
        tracing::warn!(
            configured = config.replicas,
            kept = %kept.join(", "),
            "jetstream.replicas is {} but existing streams have more replicas ({}); keeping \
             their counts, an optimizer never lowers replication (lower it by hand if intended)",
            config.replicas,
            kept.join(", ")
        );
    }
    Ok(())
}

/// The events, dead-letter and messages streams, before replication is decided.
fn stream_configs(
    subjects: &Subjects,
    config: &JetStreamConfig,
    max_message_bytes: usize,
) -> [stream::Config; 3] {
    let dedupe = Duration::from_secs(config.duplicate_window_s);
    let events = stream::Config {
        name: subjects.events_stream(),
        subjects: subjects.event_subjects(),
        // Work queue: an event is deleted once an optimizer acks it.
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: dedupe,
        // Oversized messages are stored (up to the server's max_payload) so the optimizer can
        // refuse them with an error report instead of the publisher getting an opaque failure.
        max_message_size: -1,
        description: Some("Switchyard optimizer events".into()),
        ..Default::default()
    };
    let dead = dead_letter_stream_config(subjects);
    let messages = messages_stream_config(
        subjects,
        Duration::from_secs(config.messages_max_age_s),
        dedupe,
        max_message_bytes,
    );
    [events, dead, messages]
}

/// The replica count of the stream `name`, `None` if it does not exist yet.
async fn existing_replicas(js: &jetstream::Context, name: &str) -> Result<Option<usize>, Error> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.num_replicas)),
        Err(e) if is_stream_not_found(&e) => Ok(None),
        Err(e) => Err(nats_error(&format!("cannot look up stream {name}"), e)),
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The configured count, raised to what the stream already has.
fn replicas_to_apply(configured: usize, existing: Option<usize>) -> usize {
    existing.map_or(configured, |found| found.max(configured))
}

/// The two durable pull consumers every optimizer replica shares: the control lane
/// (registrations, heartbeats, completions) and the submit lane. Returns (control, submit).
/// Created or updated (filters change between versions); identical settings are a no-op.
pub async fn optimizer_consumers(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &JetStreamConfig,
) -> Result<(consumer::PullConsumer, consumer::PullConsumer), Error> {
    let control = optimizer_consumer(
        js,
        subjects,
        config,
        subjects.optimizer_control_consumer(),
        subjects.control_event_subjects(),
    )
    .await?;
    let submit = vec![subjects.all_of(MessageType::TaskSubmit)];
    let submit =
        optimizer_consumer(js, subjects, config, subjects.optimizer_consumer(), submit).await?;
    Ok((control, submit))
}

async fn optimizer_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &JetStreamConfig,
    name: String,
    filter_subjects: Vec<String>,
) -> Result<consumer::PullConsumer, Error> {
    let stream = js
        .get_stream(subjects.events_stream())
        .await
        .map_err(|e| nats_error("events stream missing", e))?;
    // As many copies as the stream has: JetStream wants a work queue's consumers replicated
    // like the stream, and the stream may have more than configured (never lowered).
    let num_replicas = stream.cached_info().config.num_replicas;
    let cfg = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subjects,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_millis(config.ack_wait_ms),
        max_deliver: config.max_deliver,
        max_ack_pending: 100_000,
        description: Some("Switchyard optimizer replicas".into()),
        num_replicas,
        ..Default::default()
    };
    create_consumer(&stream, cfg, &name).await
}

/// How long a consumer waits for its stream's new peers after the stream's replication was
/// raised.
const SCALE_UP_WITHIN: Duration = Duration::from_secs(15);

/// Creates or updates a consumer. Right after a stream's replication was raised, JetStream
/// refuses a consumer with the new count until the stream's new peers are placed; that passes
/// within moments, so it is retried for a while rather than failing the start.
async fn create_consumer(
    stream: &stream::Stream,
    cfg: consumer::pull::Config,
    name: &str,
) -> Result<consumer::PullConsumer, Error> {
    let started = Instant::now();
    loop {
        match stream.create_consumer(cfg.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if is_scaling_up(&e) && started.elapsed() < SCALE_UP_WITHIN => {
                tracing::debug!(consumer = name, error = %e, "stream still scaling up; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let context = format!("cannot create the optimizer consumer {name}");
                return Err(nats_error(&context, e));
            }
        }
    }
}

fn is_scaling_up(e: &stream::ConsumerError) -> bool {
    matches!(
        e.kind(),
        stream::ConsumerErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::CONSUMER_REPLICAS_EXCEEDS_STREAM
    )
}

#[cfg(test)]
mod tests {
    use super::replicas_to_apply;

    #[test]
    fn replication_is_raised_but_never_lowered() {
        assert_eq!(replicas_to_apply(3, None), 3);
        assert_eq!(replicas_to_apply(3, Some(1)), 3);
        assert_eq!(replicas_to_apply(1, Some(3)), 3);
        assert_eq!(replicas_to_apply(5, Some(5)), 5);
    }
}
