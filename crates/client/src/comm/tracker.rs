//! Delivery bookkeeping: which recipients of a sent message have acknowledged it, and which
//! received message ids the application already has (duplicate suppression).

use crate::sync::lock;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

/// Where a sent message stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "code")]
pub enum DeliveryStatus {
    /// Sent (stored, for stored modes); acknowledgments, if asked for, are still awaited.
    Pending,
    /// Every recipient acknowledged (or no acknowledgment was asked for).
    Delivered,
    /// Acknowledgments did not arrive in time (asynchronous mode: no retries).
    TimedOut,
    /// Guaranteed delivery gave up; the code says why (`ack_timeout`, `expired`, ...).
    Failed(String),
}

impl DeliveryStatus {
    pub fn is_final(&self) -> bool {
        !matches!(self, DeliveryStatus::Pending)
    }
}

/// One sent message's delivery record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub message_id: Uuid,
    pub recipients: Vec<String>,
    pub acknowledged_by: Vec<String>,
    pub attempts: u32,
    pub status: DeliveryStatus,
}

impl DeliveryRecord {
    /// Recipients that have not acknowledged yet.
    pub fn unacknowledged(&self) -> Vec<String> {
        let acked: HashSet<&String> = self.acknowledged_by.iter().collect();
        self.recipients
            .iter()
            .filter(|r| !acked.contains(r))
            .cloned()
            .collect()
    }
}

/// How many finished records are kept for [`Tracker::record`] when tracking is on.
const FINISHED_RECORDS_KEPT: usize = 10_000;

#[derive(Default)]
struct Records {
    live: HashMap<Uuid, watch::Sender<DeliveryRecord>>,
    finished_order: VecDeque<Uuid>,
}

pub(crate) struct Tracker {
    records: Mutex<Records>,
    keep_finished: bool,
}

impl Tracker {
    pub(crate) fn new(keep_finished: bool) -> Tracker {
        Tracker {
            records: Mutex::new(Records::default()),
            keep_finished,
        }
    }

    /// Starts tracking a message; the receiver sees every change to its record.
    pub(crate) fn start(
        &self,
        message_id: Uuid,
        recipients: Vec<String>,
    ) -> watch::Receiver<DeliveryRecord> {
        let (tx, rx) = watch::channel(DeliveryRecord {
            message_id,
            recipients,
            acknowledged_by: Vec::new(),
            attempts: 1,
            status: DeliveryStatus::Pending,
        });
        lock(&self.records).live.insert(message_id, tx);
        rx
    }

    fn update(&self, message_id: &Uuid, change: impl FnOnce(&mut DeliveryRecord) -> bool) -> bool {
        let records = lock(&self.records);
        match records.live.get(message_id) {
            Some(tx) => tx.send_if_modified(change),
            None => false,
        }
    }

    /// Notes `agent`'s acknowledgment; false if unknown, already noted, or not a recipient.
    pub(crate) fn acknowledge(&self, message_id: &Uuid, agent: &str) -> bool {
        self.update(message_id, |record| {
            let expected = record.recipients.iter().any(|r| r == agent);
            let fresh = !record.acknowledged_by.iter().any(|a| a == agent);
            if expected && fresh && !record.status.is_final() {
                record.acknowledged_by.push(agent.to_string());
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn count_attempt(&self, message_id: &Uuid) {
        self.update(message_id, |record| {
            record.attempts += 1;
            true
        });
    }

    /// Sets the final status; the record is kept for queries only when tracking is on.
    pub(crate) fn finish(&self, message_id: &Uuid, status: DeliveryStatus) {
        self.update(message_id, |record| {
            record.status = status;
            true
        });
        let mut records = lock(&self.records);
        if !self.keep_finished {
            records.live.remove(message_id);
            return;
        }
        records.finished_order.push_back(*message_id);
        while records.finished_order.len() > FINISHED_RECORDS_KEPT {
            if let Some(old) = records.finished_order.pop_front() {
                records.live.remove(&old);
            }
        }
    }

    pub(crate) fn record(&self, message_id: &Uuid) -> Option<DeliveryRecord> {
        let records = lock(&self.records);
        records.live.get(message_id).map(|tx| tx.borrow().clone())
    }

    pub(crate) fn subscribe(&self, message_id: &Uuid) -> Option<watch::Receiver<DeliveryRecord>> {
        let records = lock(&self.records);
        records.live.get(message_id).map(watch::Sender::subscribe)
    }
}

/// Received message ids the application already has, oldest forgotten first.
pub(crate) struct SeenIds {
    /// id → whether the application acknowledged it (a duplicate of an acknowledged message is
    /// acknowledged again: the sender retried because the first acknowledgment was lost).
    seen: HashMap<Uuid, bool>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl SeenIds {
    pub(crate) fn new(capacity: usize) -> SeenIds {
        SeenIds {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remembers `id`; returns `Some(acknowledged)` if it was already seen.
    pub(crate) fn check_and_insert(&mut self, id: Uuid) -> Option<bool> {
        if let Some(acked) = self.seen.get(&id) {
            return Some(*acked);
        }
        self.seen.insert(id, false);
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        None
    }

    pub(crate) fn mark_acknowledged(&mut self, id: Uuid) {
        if let Some(acked) = self.seen.get_mut(&id) {
            *acked = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgments_count_once_and_only_from_recipients() {
        let tracker = Tracker::new(true);
        let id = Uuid::new_v4();
        let rx = tracker.start(id, vec!["a".into(), "b".into()]);
        assert!(tracker.acknowledge(&id, "a"));
        assert!(!tracker.acknowledge(&id, "a"), "second ack of a is a no-op");
        assert!(!tracker.acknowledge(&id, "z"), "z was not a recipient");
        assert_eq!(rx.borrow().unacknowledged(), vec!["b".to_string()]);
        tracker.finish(&id, DeliveryStatus::Delivered);
        assert!(
            !tracker.acknowledge(&id, "b"),
            "a finished record takes no acks"
        );
        assert_eq!(
            tracker.record(&id).map(|r| r.status),
            Some(DeliveryStatus::Delivered)
        );
    }

    #[test]
    fn without_tracking_finished_records_are_dropped() {
        let tracker = Tracker::new(false);
        let id = Uuid::new_v4();
        let _rx = tracker.start(id, vec!["a".into()]);
        assert!(tracker.record(&id).is_some());
        tracker.finish(&id, DeliveryStatus::TimedOut);
        assert!(tracker.record(&id).is_none());
    }

    #[test]
    fn seen_ids_detect_duplicates_and_forget_the_oldest() {
        let mut seen = SeenIds::new(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(seen.check_and_insert(a), None);
        assert_eq!(seen.check_and_insert(a), Some(false));
        seen.mark_acknowledged(a);
        assert_eq!(seen.check_and_insert(a), Some(true));
        assert_eq!(seen.check_and_insert(b), None);
        assert_eq!(seen.check_and_insert(c), None);
        assert_eq!(seen.check_and_insert(a), None, "a was forgotten");
    }
}
