//! The JetStream streams and the optimizers' durable consumers, created or updated idempotently
//! by every replica at start. The stream shapes clients rely on (dead letters, messages) are
//! defined in the client's transport; the events stream and the optimizer consumers are the
//! service's own.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use switchyard_client::error::{Error, nats_error};
use switchyard_client::transport::{dead_letter_stream_config, messages_stream_config};
use switchyard_protocol::{MessageType, Subjects};

use crate::config::JetStreamConfig;

/// Creates or updates the events, dead-letter and messages streams. Grants need no stream: they
/// travel on core NATS and wait in the Redis outbox until acknowledged.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    config: &JetStreamConfig,
    max_message_bytes: usize,
) -> Result<(), Error> {
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
    for cfg in [events, dead, messages] {
        let name = cfg.name.clone();
        js.create_or_update_stream(cfg)
            .await
            .map_err(|e| nats_error(&format!("cannot create stream {name}"), e))?;
    }
    Ok(())
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
    let cfg = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subjects,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_millis(config.ack_wait_ms),
        max_deliver: config.max_deliver,
        max_ack_pending: 100_000,
        description: Some("Switchyard optimizer replicas".into()),
        ..Default::default()
    };
    stream
        .create_consumer(cfg)
        .await
        .map_err(|e| nats_error(&format!("cannot create the optimizer consumer {name}"), e))
}
