//! The bounded priority inbox between the receiving tasks and the application.
//!
//! Why not one channel: a channel is FIFO, so a critical message would wait behind every normal
//! one already buffered. Here each priority has its own queue and the application always gets the
//! highest non-empty one. The bound is shared, and a slot freed by the application goes to the
//! highest-priority producer waiting for one: otherwise slots would be handed out in turn, and a
//! critical message would wait on the server as long as a normal one. A producer waits while the
//! inbox is full, so a full inbox stops pulling (and JetStream, at `max_ack_pending`, stops
//! delivering) instead of dropping anything.

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use switchyard_protocol::MessagePriority;

fn lane(priority: MessagePriority) -> usize {
    MessagePriority::ALL
        .iter()
        .position(|p| *p == priority)
        .unwrap_or(2)
}

struct Lanes<T> {
    queues: [VecDeque<T>; 4],
    len: usize,
    /// Producers waiting for a slot, per lane.
    waiting: [usize; 4],
    closed: bool,
}

pub(crate) struct PriorityInbox<T> {
    lanes: Mutex<Lanes<T>>,
    capacity: usize,
    /// Wakes the application when something arrives.
    ready: Notify,
    /// Wakes one waiting producer of a lane when a slot frees up.
    slot_freed: [Notify; 4],
}

impl<T> PriorityInbox<T> {
    pub(crate) fn new(capacity: usize) -> PriorityInbox<T> {
        PriorityInbox {
            lanes: Mutex::new(Lanes {
                queues: Default::default(),
                len: 0,
                waiting: [0; 4],
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            slot_freed: Default::default(),
        }
    }

    /// Waits for a free slot, then buffers `item`. Returns false once the inbox is closed.
    pub(crate) async fn push(&self, priority: MessagePriority, item: T) -> bool {
        let lane = lane(priority);
        loop {
            {
                let mut lanes = lock(&self.lanes);
                if lanes.closed {
                    return false;
                }
                if lanes.len < self.capacity {
                    lanes.queues[lane].push_back(item);
                    lanes.len += 1;
                    drop(lanes);
                    self.ready.notify_one();
                    return true;
                }
                // Taken off again by the `pop` that wakes this producer, so two pops in a row
                // wake two producers instead of the same one twice.
                lanes.waiting[lane] += 1;
            }
            // notify_one keeps a permit when nobody waits yet, so a slot freed between the
            // unlock above and this await is not missed.
            self.slot_freed[lane].notified().await;
        }
    }

    fn try_pop(&self) -> Option<T> {
        let mut lanes = lock(&self.lanes);
        let item = lanes.queues.iter_mut().find_map(VecDeque::pop_front)?;
        lanes.len -= 1;
        let first_waiting = lanes.waiting.iter().position(|w| *w > 0);
        if let Some(lane) = first_waiting {
            lanes.waiting[lane] -= 1;
        }
        drop(lanes);
        if let Some(lane) = first_waiting {
            self.slot_freed[lane].notify_one();
        }
        Some(item)
    }

    /// The highest-priority buffered item, waiting for one; `None` once closed and drained.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if lock(&self.lanes).closed {
                return None;
            }
            notified.await;
        }
    }

    /// Items buffered now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.lanes).len
    }

    /// Wakes every waiter; producers stop, `pop` drains what is buffered and then ends.
    pub(crate) fn close(&self) {
        lock(&self.lanes).closed = true;
        for lane in &self.slot_freed {
            lane.notify_waiters();
            lane.notify_one();
        }
        self.ready.notify_waiters();
        // A consumer between its check and its wait would miss notify_waiters.
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn drains_highest_priority_first_then_fifo() {
        let inbox = PriorityInbox::new(10);
        assert!(inbox.push(MessagePriority::Low, "low-1").await);
        assert!(inbox.push(MessagePriority::Normal, "normal-1").await);
        assert!(inbox.push(MessagePriority::Critical, "critical-1").await);
        assert!(inbox.push(MessagePriority::Normal, "normal-2").await);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(inbox.pop().await.unwrap_or_default());
        }
        assert_eq!(order, ["critical-1", "normal-1", "normal-2", "low-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_inbox_makes_producers_wait_instead_of_dropping() {
        let inbox = Arc::new(PriorityInbox::new(2));
        assert!(inbox.push(MessagePriority::Normal, 1).await);
        assert!(inbox.push(MessagePriority::Normal, 2).await);
        let producer = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.push(MessagePriority::Normal, 3).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !producer.is_finished(),
            "the third push must wait for a slot"
        );
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.pop().await, Some(1));
        assert_eq!(producer.await.ok(), Some(true));
        assert_eq!(inbox.pop().await, Some(2));
        assert_eq!(inbox.pop().await, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_highest_priority_waiting_producer() {
        let inbox = Arc::new(PriorityInbox::new(1));
        assert!(inbox.push(MessagePriority::Low, "low-0").await);
        // A low producer starts waiting first, then a critical one.
        let low = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.push(MessagePriority::Low, "low-1").await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let critical = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.push(MessagePriority::Critical, "critical").await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(inbox.pop().await, Some("low-0"));
        assert_eq!(inbox.pop().await, Some("critical"));
        assert_eq!(inbox.pop().await, Some("low-1"));
        assert_eq!(critical.await.ok(), Some(true));
        assert_eq!(low.await.ok(), Some(true));
    }

    #[tokio::test]
    async fn close_ends_pop_after_draining() {
        let inbox = PriorityInbox::new(4);
        assert!(inbox.push(MessagePriority::High, 7).await);
        inbox.close();
        assert!(!inbox.push(MessagePriority::High, 8).await);
        assert_eq!(inbox.pop().await, Some(7));
        assert_eq!(inbox.pop().await, None);
    }
}
