//! Counting what came back: each task once, whatever the number of replies about it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;

use crate::fleet::FleetEvent;
use switchyard_client::ClientEvent;
use switchyard_protocol::ReplyStatus;

/// What the bench has heard so far.
#[derive(Default)]
pub(super) struct Tally {
    /// Task ids completed at least once.
    pub(super) completed: HashSet<String>,
    pub(super) completed_in_window: u64,
    /// Completion replies beyond the first for a task.
    pub(super) duplicate_completions: u64,
    /// Task ids answered `failed`.
    pub(super) failed: HashSet<String>,
    pub(super) error_reports: u64,
    pub(super) replies_lost: u64,
    pub(super) latencies: Vec<Duration>,
    /// Grants per task id.
    pub(super) grants: HashMap<String, u32>,
}

impl Tally {
    /// Counts one reply to the submitter. A task's first terminal answer (completed or failed)
    /// frees its in-flight slot in `slots`; later ones are counted as defects, not as work.
    pub(super) fn reply(
        &mut self,
        event: Result<ClientEvent, RecvError>,
        in_window: bool,
        slots: &Semaphore,
    ) {
        match event {
            Ok(ClientEvent::Reply(r)) => {
                let Some(task_id) = r.payload.task_id else {
                    return;
                };
                match r.payload.status {
                    ReplyStatus::Completed => self.completion(task_id, in_window, slots),
                    ReplyStatus::Failed => self.failure(task_id, slots),
                    _ => {}
                }
            }
            // A refused submit never completes: its slot is given back.
            Ok(ClientEvent::Error(_)) => {
                self.error_reports += 1;
                slots.add_permits(1);
            }
            Err(RecvError::Lagged(n)) => {
                self.replies_lost += n;
                tracing::warn!(
                    lost = n,
                    "bench fell behind reading replies; counts are low"
                );
            }
            Err(RecvError::Closed) => {}
        }
    }

    fn failure(&mut self, task_id: String, slots: &Semaphore) {
        if !self.completed.contains(&task_id) && self.failed.insert(task_id) {
            slots.add_permits(1);
        }
    }

    fn completion(&mut self, task_id: String, in_window: bool, slots: &Semaphore) {
        let freed = !self.failed.contains(&task_id);
        if self.completed.insert(task_id) {
            self.completed_in_window += u64::from(in_window);
            if freed {
                slots.add_permits(1);
            }
        } else {
            self.duplicate_completions += 1;
        }
    }

    pub(super) fn fleet(&mut self, event: FleetEvent) {
        if let FleetEvent::Granted {
            task_id, latency, ..
        } = event
        {
            *self.grants.entry(task_id).or_default() += 1;
            self.latencies.extend(latency);
        }
    }

    /// Tasks with a terminal answer.
    pub(super) fn finished(&self) -> u64 {
        (self.completed.len() + self.failed.len()) as u64 + self.error_reports
    }

    pub(super) fn double_grants(&self) -> u64 {
        self.grants.values().filter(|n| **n > 1).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::{CoordinatorReply, Envelope, MessageType, now_ms};

    fn reply(task: &str, status: ReplyStatus) -> Result<ClientEvent, RecvError> {
        let payload = CoordinatorReply {
            op: "task_submit".into(),
            status,
            task_id: Some(task.into()),
            agent_id: None,
            detail: None,
        };
        Ok(ClientEvent::Reply(Envelope::new(
            "optimizer",
            MessageType::CoordinatorReply,
            payload,
            now_ms(),
        )))
    }

    #[test]
    fn a_task_completed_twice_counts_once_and_frees_one_slot() {
        let slots = Semaphore::new(0);
        let mut tally = Tally::default();
        tally.reply(reply("t1", ReplyStatus::Granted), true, &slots);
        tally.reply(reply("t1", ReplyStatus::Completed), true, &slots);
        tally.reply(reply("t1", ReplyStatus::Completed), false, &slots);
        tally.reply(reply("t2", ReplyStatus::Completed), false, &slots);
        assert_eq!(tally.completed.len(), 2);
        assert_eq!(tally.completed_in_window, 1);
        assert_eq!(tally.duplicate_completions, 1);
        assert_eq!(slots.available_permits(), 2);
        assert_eq!(tally.finished(), 2);
    }

    #[test]
    fn grants_per_task_find_double_grants() {
        let mut tally = Tally::default();
        for task in ["a", "b", "a"] {
            tally.fleet(FleetEvent::Granted {
                task_id: task.into(),
                agent_id: "x".into(),
                grant_seq: 1,
                latency: Some(Duration::from_millis(1)),
            });
        }
        assert_eq!(tally.double_grants(), 1);
        assert_eq!(tally.latencies.len(), 3);
    }
}
