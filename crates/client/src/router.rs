//! Routes the coordinator's replies and error reports addressed to one client id to whoever is
//! waiting on the correlation id, and to any number of event watchers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, nats_error};
use crate::transport;
use switchyard_protocol::{CoordinatorReply, Envelope, ErrorReport, MessageType, Subjects};

/// Something the coordinator said to this client.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Reply(Envelope<CoordinatorReply>),
    Error(Envelope<ErrorReport>),
}

impl ClientEvent {
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            ClientEvent::Reply(e) => e.correlation_id.as_deref(),
            ClientEvent::Error(e) => e.correlation_id.as_deref(),
        }
    }
}

type Waiters = Arc<transport::Waiters<ClientEvent>>;

pub(crate) struct Router {
    waiters: Waiters,
    events: broadcast::Sender<ClientEvent>,
    task: JoinHandle<()>,
}

impl Router {
    /// Subscribes to `reply.<id>` and `error_report.<id>` before anything is sent, so no answer
    /// can arrive unheard.
    pub(crate) async fn start(
        client: &async_nats::Client,
        subjects: &Subjects,
        id: &str,
        buffer: usize,
    ) -> Result<Router, Error> {
        let replies = client
            .subscribe(subjects.addressed(MessageType::CoordinatorReply, id))
            .await
            .map_err(|e| nats_error("cannot subscribe to replies", e))?;
        let errors = client
            .subscribe(subjects.addressed(MessageType::ErrorReport, id))
            .await
            .map_err(|e| nats_error("cannot subscribe to error reports", e))?;
        let waiters: Waiters = Arc::default();
        let (events, _) = broadcast::channel(buffer.max(16));
        let task = tokio::spawn(route(
            futures::stream::select(replies, errors),
            waiters.clone(),
            events.clone(),
        ));
        Ok(Router {
            waiters,
            events,
            task,
        })
    }

    /// Registers interest in the first answer to `correlation_id`; call before sending.
    pub(crate) fn expect(&self, correlation_id: &str) -> oneshot::Receiver<ClientEvent> {
        self.waiters.expect(correlation_id)
    }

    pub(crate) fn forget(&self, correlation_id: &str) {
        self.waiters.forget(correlation_id);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Waits for the answer registered with [`Router::expect`].
    pub(crate) async fn wait(
        &self,
        correlation_id: &str,
        rx: oneshot::Receiver<ClientEvent>,
        timeout: Duration,
    ) -> Result<ClientEvent, Error> {
        self.waiters.wait(correlation_id, rx, timeout).await
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // The routing task only lives as long as its client handle.
        self.task.abort();
    }
}

async fn route(
    mut messages: impl futures::Stream<Item = async_nats::Message> + Unpin,
    waiters: Waiters,
    events: broadcast::Sender<ClientEvent>,
) {
    while let Some(message) = messages.next().await {
        let event = if message.subject.as_str().contains(".error_report.") {
            serde_json::from_slice(&message.payload)
                .ok()
                .map(ClientEvent::Error)
        } else {
            serde_json::from_slice(&message.payload)
                .ok()
                .map(ClientEvent::Reply)
        };
        let Some(event) = event else {
            tracing::warn!(subject = %message.subject, "undecodable message from the coordinator");
            continue;
        };
        let _ = waiters.deliver(event.correlation_id(), event.clone());
        // No watcher is fine; a lagging watcher loses the oldest events, never blocks routing.
        let _ = events.send(event);
    }
}

/// Turns an answer into the reply it carries, or the refusal it reports.
pub(crate) fn into_reply(event: ClientEvent) -> Result<CoordinatorReply, Error> {
    match event {
        ClientEvent::Reply(env) => Ok(env.payload),
        ClientEvent::Error(env) => Err(Error::rejected(env.payload.code, env.payload.message)),
    }
}
