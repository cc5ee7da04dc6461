//! Calls to the optimizer that every kind of client makes, written once: an orchestrator's
//! [`Coordinator`](crate::Coordinator) and an agent's
//! [`CommunicationProtocol`](crate::comm::CommunicationProtocol) both ask for status this way.

use std::time::Duration;

use switchyard_protocol::{CoordinationSync, Envelope, MessageType, StatusQuery, Subjects, now_ms};

use crate::error::{Error, ErrorKind, nats_error};

/// A COORDINATION_SYNC snapshot with what `query` asks for, answered by any optimizer replica
/// (core NATS request/reply: nothing is stored, a lost query is simply asked again). Needs no
/// subscription but the client's inbox, so a read-only operator identity can make it.
pub async fn request_status(
    client: &async_nats::Client,
    subjects: &Subjects,
    sender: &str,
    query: StatusQuery,
    timeout: Duration,
) -> Result<CoordinationSync, Error> {
    let envelope = Envelope::new(sender, MessageType::StatusQuery, query, now_ms());
    let bytes = serde_json::to_vec(&envelope)?;
    let subject = subjects.unaddressed(MessageType::StatusQuery);
    let answer = tokio::time::timeout(timeout, client.request(subject, bytes.into()))
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout, "no optimizer answered the status query"))?
        .map_err(|e| nats_error("status query failed (is an optimizer running?)", e))?;
    let answer: Envelope<CoordinationSync> = serde_json::from_slice(&answer.payload)?;
    Ok(answer.payload)
}
