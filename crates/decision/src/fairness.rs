//! Weighted fairness between tenants: start-time fair queuing computed at enqueue.
//!
//! Every queued task gets a *virtual start* when it enters the queue:
//! `start = max(V, tenant's last virtual finish)`, and the tenant's finish becomes
//! `start + cost`, where `cost = COST_SCALE / weight` (rounded, at least 1) for every task. The
//! queue is ordered by priority first and by virtual start inside a priority (see the Lua
//! `queue_score`), so one sorted set still orders everything. `V`, the global virtual time, is
//! the largest virtual start granted so far: a tenant that was idle starts again at the point
//! the queue is being served, neither ahead of it (no credit for idleness) nor behind it.
//!
//! While tenants are backlogged, each gets grants in proportion to its weight: a tenant of
//! weight 2 has its starts 500 apart, one of weight 1 has them 1000 apart, so the head of the
//! queue interleaves them 2:1 whatever either submitted. Within one tenant the starts strictly
//! grow, so a tenant's own tasks keep their FIFO order (and a single tenant sees plain FIFO).
//!
//! The cost is one task (scaled by weight), not resources × duration: a submitter's duration is
//! an optional estimate and a task's share of "the fleet" depends on which agents are
//! registered, neither of which is known reliably when the task is queued. With tasks of
//! similar size, a share of grants is a share of granted capacity; see docs/operations.md.
//!
//! The same arithmetic runs in Lua (submit_task.lua, grant_tasks.lua); the server's state tests
//! cross-check the two.

use std::collections::BTreeMap;

/// Virtual time units one task costs a tenant of weight 1.
pub const COST_SCALE: u64 = 1000;

/// Largest weight a tenant may be given (a cost of one unit).
pub const MAX_WEIGHT: f64 = 1000.0;

/// Smallest weight a tenant may be given.
pub const MIN_WEIGHT: f64 = 0.001;

/// The tenant of a task that names none.
pub const DEFAULT_TENANT: &str = "default";

/// Virtual time one task costs a tenant of this weight: `COST_SCALE / weight`, rounded, at
/// least 1. Weights outside `MIN_WEIGHT..=MAX_WEIGHT` are clamped into it (config refuses them).
pub fn task_cost(weight: f64) -> u64 {
    let w = if weight.is_finite() {
        weight.clamp(MIN_WEIGHT, MAX_WEIGHT)
    } else {
        1.0
    };
    ((COST_SCALE as f64 / w).round() as u64).max(1)
}

/// A task's virtual start: never before the global virtual time, never before its tenant's
/// previous task finished.
pub fn virtual_start(vtime: u64, tenant_finish: u64) -> u64 {
    vtime.max(tenant_finish)
}

/// The global virtual time after a task with this virtual start is granted.
pub fn advance(vtime: u64, granted_start: u64) -> u64 {
    vtime.max(granted_start)
}

/// The whole fair-queuing state, for callers that keep it in memory (the simulator); the server
/// keeps the same numbers in Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FairClock {
    /// Global virtual time.
    pub vtime: u64,
    /// Each tenant's last virtual finish.
    pub finish: BTreeMap<String, u64>,
}

impl FairClock {
    /// A task of `tenant` with this cost enters the queue: its virtual start.
    pub fn enqueue(&mut self, tenant: &str, cost: u64) -> u64 {
        let last = self.finish.get(tenant).copied().unwrap_or(0);
        let start = virtual_start(self.vtime, last);
        self.finish
            .insert(tenant.to_string(), start.saturating_add(cost));
        start
    }

    /// A task with this virtual start was granted.
    pub fn granted(&mut self, start: u64) {
        self.vtime = advance(self.vtime, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_inverse_to_weight() {
        assert_eq!(task_cost(1.0), 1000);
        assert_eq!(task_cost(2.0), 500);
        assert_eq!(task_cost(3.0), 333);
        assert_eq!(task_cost(0.5), 2000);
        assert_eq!(task_cost(5000.0), 1);
        assert_eq!(task_cost(f64::NAN), 1000);
    }

    #[test]
    fn one_tenant_is_fifo() {
        let mut clock = FairClock::default();
        let starts: Vec<u64> = (0..5).map(|_| clock.enqueue("a", 1000)).collect();
        assert_eq!(starts, [0, 1000, 2000, 3000, 4000]);
    }

    #[test]
    fn an_idle_tenant_starts_at_the_served_point_not_before() {
        let mut clock = FairClock::default();
        for _ in 0..10 {
            clock.enqueue("flood", 1000);
        }
        clock.granted(3000);
        assert_eq!(clock.enqueue("late", 1000), 3000);
        // Time granted cannot move back.
        clock.granted(1000);
        assert_eq!(clock.vtime, 3000);
    }

    /// Two backlogged tenants, weights 2:1, one submitting ten times more: served in order of
    /// virtual start, the first 300 grants split 200:100.
    #[test]
    fn backlogged_tenants_share_by_weight() {
        let mut clock = FairClock::default();
        let mut queue: Vec<(u64, usize, &str)> = Vec::new();
        for i in 0..1000 {
            queue.push((clock.enqueue("big", task_cost(2.0)), i, "big"));
        }
        for i in 0..100 {
            queue.push((clock.enqueue("small", task_cost(1.0)), 1000 + i, "small"));
        }
        queue.sort();
        let first: Vec<&str> = queue.iter().take(300).map(|q| q.2).collect();
        let big = first.iter().filter(|t| **t == "big").count();
        assert!((199..=201).contains(&big), "{big}");
    }
}
