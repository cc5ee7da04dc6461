//! The messages stream and the per-agent, per-priority consumers behind the inter-agent
//! protocol's stored delivery modes (asynchronous and guaranteed).

use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer, stream};

use crate::error::{Error, ErrorKind, nats_error};
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

const CONSUMER_POLL: Duration = Duration::from_millis(250);

/// The settings of one agent's durable consumer for one priority, the same whoever creates it
/// (the optimizer on registration, or the client itself in an unsecured deployment).
/// `max_ack_pending` is the agent's inbox size: JetStream stops delivering while that many
/// messages are unacknowledged, which is how a full inbox pushes back on the server instead of
/// dropping messages.
pub fn message_consumer_config(
    subjects: &Subjects,
    agent_id: &str,
    priority: MessagePriority,
    max_ack_pending: i64,
    ack_wait: Duration,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects.message_consumer(agent_id, priority)),
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
    }
}

/// Creates an agent's message consumers (one per priority) unless they exist: what the optimizer
/// does when it applies a registration, so an agent never needs the permission to create one.
pub async fn ensure_message_consumers(
    js: &jetstream::Context,
    subjects: &Subjects,
    agent_id: &str,
    max_ack_pending: i64,
    ack_wait: Duration,
) -> Result<(), Error> {
    let stream = messages_stream(js, subjects).await?;
    for priority in MessagePriority::ALL {
        let cfg = message_consumer_config(subjects, agent_id, priority, max_ack_pending, ack_wait);
        let name = subjects.message_consumer(agent_id, priority);
        stream
            .get_or_create_consumer(&name, cfg)
            .await
            .map_err(|e| nats_error(&format!("cannot create the message consumer {name}"), e))?;
    }
    Ok(())
}

async fn messages_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<stream::Stream, Error> {
    js.get_stream(subjects.messages_stream())
        .await
        .map_err(|e| nats_error("messages stream missing", e))
}

/// One agent's durable consumer for one priority, looked up first. When it is missing and
/// `may_create` (an unsecured deployment), the client creates it with `cfg`; otherwise it waits
/// (at most `wait`) for the optimizer to create it on the agent's registration.
pub(crate) async fn message_consumer(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: consumer::pull::Config,
    may_create: bool,
    wait: Duration,
) -> Result<consumer::PullConsumer, Error> {
    let stream = messages_stream(js, subjects).await?;
    let name = cfg.durable_name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match stream.consumer_info(&name).await {
            Ok(_) => {
                return stream
                    .get_consumer(&name)
                    .await
                    .map_err(|e| Error::new(ErrorKind::Nats, format!("{name}: {e}")));
            }
            Err(e) if !matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
                return Err(nats_error(
                    &format!("cannot look up the message consumer {name}"),
                    e,
                ));
            }
            Err(_) if may_create => {
                return stream
                    .get_or_create_consumer(&name, cfg)
                    .await
                    .map_err(|e| {
                        nats_error(&format!("cannot create the message consumer {name}"), e)
                    });
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(not_created(&name, wait));
            }
            Err(_) => tokio::time::sleep(CONSUMER_POLL).await,
        }
    }
}

fn not_created(name: &str, wait: Duration) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the message consumer {name} does not exist after {wait:?}: in a secured \
             deployment the optimizer creates an agent's message consumers when it applies the \
             agent's registration, so the agent must register before it connects its messaging \
             endpoint"
        ),
    )
}
