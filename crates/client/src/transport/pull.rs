//! [`Puller`]: the one way Switchyard pulls from a JetStream consumer. Consecutive batch requests
//! (each `max_messages`, expiring after `expires`), never async-nats' continuous `messages()`
//! stream: under load that stream's client-side count of outstanding messages was seen to drift
//! from the server's (`num_waiting` 0 with messages pending) and stop asking for more for up to
//! its 35 s fallback. Independent batch requests cannot drift.
//!
//! Messages are handed out in chunks as they arrive (a request is not waited out before its
//! first messages are used). Any error, whether the request fails or arrives inside a batch
//! (a 503 while the stream's server is down, say), ends the request and pauses before the next
//! one, so an outage costs one warning per pause, not a busy loop.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;
use tokio::sync::watch;

use super::throttle::{Throttle, WARN_EVERY};

/// Pause after a failed pull before asking again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Pulls one consumer in consecutive batch requests.
pub struct Puller {
    consumer: PullConsumer,
    max_messages: usize,
    expires: Duration,
    /// Who pulls, for the logs.
    label: String,
    batch: Option<futures::stream::ReadyChunks<pull::Batch>>,
    /// The errors of one outage are written once per interval, not once per request.
    warnings: Throttle,
}

impl Puller {
    pub fn new(
        consumer: PullConsumer,
        max_messages: usize,
        expires: Duration,
        label: impl Into<String>,
    ) -> Puller {
        Puller {
            consumer,
            max_messages,
            expires,
            label: label.into(),
            batch: None,
            warnings: Throttle::new(WARN_EVERY),
        }
    }

    /// The messages that have arrived (at least one), waiting for them; `None` once `stop` turns
    /// true. Requests are renewed as they fill or expire.
    pub async fn next_chunk(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<jetstream::Message>> {
        loop {
            let pulled = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return None,
                pulled = self.pull() => pulled,
            };
            match pulled {
                Pulled::Messages(messages) => return Some(messages),
                Pulled::Renew => {}
                Pulled::Failed(error) => {
                    if let Some(held_back) = self.warnings.allow(Instant::now()) {
                        tracing::warn!(puller = %self.label, error = %error, held_back, "pull failed; pausing before the next request");
                    }
                    tokio::select! {
                        _ = stop.wait_for(|stopped| *stopped) => return None,
                        _ = tokio::time::sleep(ERROR_PAUSE) => {}
                    }
                }
            }
        }
    }

    async fn pull(&mut self) -> Pulled {
        let batch = match self.batch.as_mut() {
            Some(batch) => batch,
            None => {
                let request = self
                    .consumer
                    .batch()
                    .max_messages(self.max_messages)
                    .expires(self.expires)
                    .messages()
                    .await;
                match request {
                    Ok(batch) => self.batch.insert(batch.ready_chunks(self.max_messages)),
                    Err(e) => return Pulled::Failed(e.to_string()),
                }
            }
        };
        let Some(chunk) = batch.next().await else {
            // Filled or expired: ask again.
            self.batch = None;
            return Pulled::Renew;
        };
        let mut messages = Vec::with_capacity(chunk.len());
        let mut error = None;
        for item in chunk {
            match item {
                Ok(message) => messages.push(message),
                Err(e) => error = Some(e.to_string()),
            }
        }
        if let Some(error) = error {
            self.batch = None;
            if messages.is_empty() {
                return Pulled::Failed(error);
            }
            if let Some(held_back) = self.warnings.allow(Instant::now()) {
                tracing::warn!(puller = %self.label, error = %error, held_back, "pull request ended by an error");
            }
        }
        if messages.is_empty() {
            Pulled::Renew
        } else {
            Pulled::Messages(messages)
        }
    }
}

enum Pulled {
    Messages(Vec<jetstream::Message>),
    Renew,
    Failed(String),
}
