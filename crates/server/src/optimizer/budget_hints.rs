//! What a replica remembers of the shared budgets that refused its grants: which to leave out
//! of the queue head until they refill, and when to wake to dispatch again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::state::QueuedTask;

/// Budgets this replica saw refuse a draw, and when the refill alone would allow it (the
/// script's wait, from now on this replica's clock). Until then the tasks drawing from them are
/// left out of the queue head, so each budget keeps its tasks in queue order while tasks of other
/// budgets (or none) behind them go on; and the dispatcher wakes by itself when the earliest is
/// due, since no event may come to do it. A concurrency budget has no such time (a completion,
/// which dispatches anyway, frees its slot), so it is remembered for the rest of one dispatch
/// call only: enough for the call's next round to reach the tasks behind a window full of tasks
/// waiting for its slots, and forgotten by the next call, which a completion may have started.
#[derive(Default)]
pub(crate) struct BudgetHints {
    until: HashMap<String, Instant>,
    this_call: HashSet<String>,
}

impl BudgetHints {
    /// A dispatch call begins: the concurrency budgets blocked in the last one may have a slot.
    pub(super) fn start_call(&mut self) {
        self.this_call.clear();
    }

    /// Budget `budget` refused a draw; `wait_ms`: when its refill alone allows it (rate), `None`
    /// for a slot. Returns whether it was not known to be blocked (the head now reads past it).
    pub(super) fn note(&mut self, budget: &str, wait_ms: Option<u64>) -> bool {
        let known = self.until.contains_key(budget) || self.this_call.contains(budget);
        match wait_ms {
            Some(wait) => {
                let due = Instant::now() + Duration::from_millis(wait);
                self.until.insert(budget.to_string(), due);
            }
            None => {
                self.this_call.insert(budget.to_string());
            }
        }
        !known
    }

    pub(super) fn forget_past(&mut self, now: Instant) {
        self.until.retain(|_, due| *due > now);
    }

    pub(super) fn blocks(&self, task: &QueuedTask) -> bool {
        task.budgets
            .iter()
            .any(|(name, _)| self.until.contains_key(name) || self.this_call.contains(name))
    }

    /// The earliest time a remembered budget refills enough.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }
}

/// Sleeps until `due`, or forever when there is nothing due.
pub(super) async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawing(budget: &str) -> QueuedTask {
        QueuedTask {
            view: switchyard_decision::TaskView {
                task_id: "t".into(),
                task_type: "default".into(),
                priority: 5,
                required: switchyard_decision::Resources::default(),
                seq: 0,
                estimated_duration_s: 0.0,
                avoid_agents: Vec::new(),
            },
            submitter: String::new(),
            submit_message_id: String::new(),
            submitted_at_ms: 0,
            strategy: None,
            explain: false,
            replies: switchyard_protocol::Replies::default(),
            tenant: String::new(),
            budgets: vec![(budget.to_string(), 1)],
            trace: None,
            attempt: 1,
        }
    }

    #[test]
    fn a_slot_budget_is_skipped_for_the_rest_of_the_call_only() {
        let mut hints = BudgetHints::default();
        hints.start_call();
        assert!(hints.note("gpu", None), "newly blocked");
        assert!(!hints.note("gpu", None), "already known");
        assert!(hints.blocks(&drawing("gpu")));
        assert!(!hints.blocks(&drawing("tpm")));
        assert_eq!(hints.next_due(), None, "no refill to wake for");
        hints.start_call();
        assert!(
            !hints.blocks(&drawing("gpu")),
            "a completion may have freed a slot"
        );
    }

    #[test]
    fn a_rate_budget_is_skipped_until_its_refill() {
        let mut hints = BudgetHints::default();
        assert!(hints.note("tpm", Some(60_000)));
        hints.start_call();
        assert!(hints.blocks(&drawing("tpm")), "kept across calls");
        assert!(hints.next_due().is_some());
        hints.forget_past(Instant::now() + Duration::from_secs(61));
        assert!(!hints.blocks(&drawing("tpm")));
    }
}
