//! What a replica remembers of the shared budgets that refused its grants: which to leave out
//! of the queue head until they refill, and when to wake to dispatch again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::state::QueuedTask;

/// Budgets this replica saw refuse a draw, and when the refill alone would allow it (the
/// script's wait, from now on this replica's clock). Until then the tasks drawing from them are
/// left out of the queue head, so each budget keeps its tasks in queue order while tasks of other
/// budgets (or none) behind them go on; and the dispatcher wakes by itself when the earliest is
/// due, since no event may come to do it. A concurrency budget has no such time (a completion,
/// which dispatches anyway, frees its slot), so it is not remembered.
#[derive(Default)]
pub(crate) struct BudgetHints {
    until: HashMap<String, Instant>,
}

impl BudgetHints {
    pub(super) fn note(&mut self, budget: &str, wait_ms: Option<u64>) {
        if let Some(wait) = wait_ms {
            let due = Instant::now() + Duration::from_millis(wait);
            self.until.insert(budget.to_string(), due);
        }
    }

    pub(super) fn forget_past(&mut self, now: Instant) {
        self.until.retain(|_, due| *due > now);
    }

    pub(super) fn blocks(&self, task: &QueuedTask) -> bool {
        task.budgets
            .iter()
            .any(|(name, _)| self.until.contains_key(name))
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
