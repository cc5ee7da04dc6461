//! The load generator: closed loop (`--rate 0`) or open loop (`--rate N`), both holding at most
//! `--inflight` tasks in flight. A slot is taken per submit and given back by the tally when
//! the task's first terminal reply arrives (or at once when the publish fails).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Semaphore, watch};

use crate::fleet::SubmitClock;
use switchyard_client::Coordinator;
use switchyard_client::error::Error;
use switchyard_protocol::{Envelope, MessageType, TaskSubmit, now_ms};

/// Submits so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SubmitCount {
    /// Publishes started.
    pub(super) sent: u64,
    /// Publishes that failed (not stored by JetStream).
    pub(super) failed: u64,
}

impl SubmitCount {
    pub(super) fn submitted(&self) -> u64 {
        self.sent - self.failed
    }
}

/// One submitter's fixed inputs.
pub(super) struct Load {
    pub(super) orch: Arc<Coordinator>,
    pub(super) clock: SubmitClock,
    /// Task ids are `<run>-<n>`.
    pub(super) run: String,
    /// Offered submits per second; 0 = closed loop.
    pub(super) rate: u64,
    pub(super) slots: Arc<Semaphore>,
    pub(super) end: Instant,
}

type Pending = FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>>;

impl Load {
    /// Submits until `end`, then waits for the publishes still awaiting their ack.
    pub(super) async fn run(self, count: watch::Sender<SubmitCount>) {
        let mut pending: Pending = FuturesUnordered::new();
        let mut c = SubmitCount::default();
        if self.rate == 0 {
            self.closed_loop(&mut pending, &mut c, &count).await;
        } else {
            self.open_loop(&mut pending, &mut c, &count).await;
        }
        while let Some(result) = pending.next().await {
            self.settle(result, &mut c);
        }
        let _ = count.send(c);
    }

    /// Submits whenever a slot is free: exactly `--inflight` tasks in flight.
    async fn closed_loop(
        &self,
        pending: &mut Pending,
        c: &mut SubmitCount,
        count: &watch::Sender<SubmitCount>,
    ) {
        let end = tokio::time::Instant::from_std(self.end);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                Some(result) = pending.next(), if !pending.is_empty() => self.settle(result, c),
                permit = self.slots.acquire() => {
                    let Ok(permit) = permit else { break };
                    permit.forget();
                    pending.push(self.submit(c.sent));
                    c.sent += 1;
                }
            }
            let _ = count.send(*c);
        }
    }

    /// Every millisecond, sends what the offered rate says is due, as far as slots allow
    /// (what cannot be sent yet is sent late, so the offered rate may not be met).
    async fn open_loop(
        &self,
        pending: &mut Pending,
        c: &mut SubmitCount,
        count: &watch::Sender<SubmitCount>,
    ) {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while Instant::now() < self.end {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(result) = pending.next(), if !pending.is_empty() => {
                    self.settle(result, c);
                    continue;
                }
            }
            let due = (started.elapsed().as_secs_f64() * self.rate as f64) as u64;
            while c.sent < due {
                let Ok(permit) = self.slots.try_acquire() else {
                    break;
                };
                permit.forget();
                pending.push(self.submit(c.sent));
                c.sent += 1;
            }
            let _ = count.send(*c);
        }
    }

    fn settle(&self, result: Result<(), Error>, c: &mut SubmitCount) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "submit failed");
            c.failed += 1;
            self.slots.add_permits(1);
        }
    }

    fn submit(&self, n: u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> {
        // The bench waits only for the outcome, so it asks for nothing else.
        let task = TaskSubmit::new(format!("{}-{n}", self.run))
            .resource("cpu", 1.0)
            .estimated_duration(0.0)
            .replies(switchyard_protocol::Replies::Final);
        let envelope = Envelope::new(
            self.orch.client_id().to_string(),
            MessageType::TaskSubmit,
            task,
            now_ms(),
        );
        self.clock.record(envelope.message_id.to_string());
        let orch = self.orch.clone();
        Box::pin(async move { orch.publish(&envelope).await })
    }
}
