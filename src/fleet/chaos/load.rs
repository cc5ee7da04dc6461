//! The scenario's load: `rate` submits a second for `duration`, one in ten depending on a task
//! submitted a little earlier. A submit that JetStream does not acknowledge (NATS away) is sent
//! again with the same message id until it is stored, as a careful client would.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use switchyard_client::Coordinator;
use switchyard_protocol::{Envelope, MessageType, Replies, TaskSubmit, now_ms};

/// How long one submit is retried before it counts as never accepted.
const ACCEPT_WITHIN: Duration = Duration::from_secs(60);
/// One task in `DEPENDENT_EVERY` depends on the task submitted `DEPENDENCY_GAP` before it.
const DEPENDENT_EVERY: u64 = 10;
const DEPENDENCY_GAP: u64 = 3;

/// Every submit made, and whether JetStream stored it.
#[derive(Default, Clone)]
pub(crate) struct Submits(Arc<Mutex<Vec<Submitted>>>);

#[derive(Clone)]
pub(crate) struct Submitted {
    pub(crate) envelope: Envelope<TaskSubmit>,
    pub(crate) stored: bool,
}

impl Submits {
    fn push(&self, submitted: Submitted) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(submitted);
    }

    pub(crate) fn all(&self) -> Vec<Submitted> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The id of the `n`-th task of a run.
pub(crate) fn task_id(n: u64) -> String {
    format!("chaos-t{n:06}")
}

fn submit_for(orch: &Coordinator, n: u64) -> Envelope<TaskSubmit> {
    let mut task = TaskSubmit::new(task_id(n))
        .priority((n % 11) as u8)
        .resource("cpu", 1.0)
        .estimated_duration(0.5)
        .replies(Replies::None);
    if n % DEPENDENT_EVERY == DEPENDENT_EVERY - 1 && n >= DEPENDENCY_GAP {
        task = task.depends_on(task_id(n - DEPENDENCY_GAP));
    }
    Envelope::new(
        orch.client_id().to_string(),
        MessageType::TaskSubmit,
        task,
        now_ms(),
    )
}

/// Submits at `rate` a second for `duration`, then waits until every submit is stored or given
/// up on. Answers what was submitted.
pub(crate) async fn run(orch: Arc<Coordinator>, rate: f64, duration: Duration, submits: Submits) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut publishes = JoinSet::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let envelope = submit_for(&orch, sent);
            publishes.spawn(publish_until_stored(
                orch.clone(),
                envelope,
                submits.clone(),
            ));
            sent += 1;
        }
        while publishes.try_join_next().is_some() {}
    }
    while publishes.join_next().await.is_some() {}
}

async fn publish_until_stored(
    orch: Arc<Coordinator>,
    envelope: Envelope<TaskSubmit>,
    submits: Submits,
) {
    let started = Instant::now();
    let stored = loop {
        match orch.publish(&envelope).await {
            Ok(()) => break true,
            Err(e) if started.elapsed() > ACCEPT_WITHIN => {
                tracing::warn!(task_id = %envelope.payload.task_id, error = %e, "submit never stored");
                break false;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    submits.push(Submitted { envelope, stored });
}
