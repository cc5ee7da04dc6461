//! The messages stream and the per-agent, per-priority consumers behind the inter-agent
//! protocol's stored delivery modes (asynchronous and guaranteed).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::{Error, nats_error};
use switchyard_protocol::{MessagePriority, Subjects};

/// Settings of the messages stream, shared by the optimizer (which creates or updates it) and
/// clients (which create it when no optimizer has yet).
pub fn messages_stream_config(
    subjects: &Subjects,
    max_age: Duration,
    duplicate_window: Duration,
    max_message_bytes: usize,
) -> stream::Config {
    stream::Config {
        name: subjects.messages_stream(),
        subjects: vec![subjects.all_messages()],
        // Limits, not a work queue: a broadcast is read by every agent's own consumer.
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window,
        max_age,
        max_message_size: i32::try_from(max_message_bytes).unwrap_or(i32::MAX),
        description: Some("Switchyard inter-agent messages".into()),
        ..Default::default()
    }
}

/// Makes sure a stream exists without changing one an optimizer configured.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), Error> {
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| nats_error(&format!("cannot create stream {name}"), e))?;
    Ok(())
}

/// One agent's durable consumer for one priority. `max_ack_pending` is the agent's inbox size:
/// JetStream stops delivering while that many messages are unacknowledged, which is how a full
/// inbox pushes back on the server instead of dropping messages.
pub(crate) async fn message_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    agent_id: &str,
    priority: MessagePriority,
    max_ack_pending: i64,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, Error> {
    let stream = js
        .get_stream(subjects.messages_stream())
        .await
        .map_err(|e| nats_error("messages stream missing", e))?;
    let name = subjects.message_consumer(agent_id, priority);
    let cfg = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subjects: subjects.message_filters(agent_id, priority),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending,
        inactive_threshold: Duration::from_secs(24 * 3600),
        description: Some(format!(
            "inbox of {agent_id}, {} priority",
            priority.as_str()
        )),
        ..Default::default()
    };
    stream
        .get_or_create_consumer(&name, cfg)
        .await
        .map_err(|e| nats_error(&format!("cannot create the message consumer {name}"), e))
}
