//! The simulator's mutable state of agents and tasks, and the invariants it checks.

use std::sync::Arc;

use switchyard_decision::resources::ResourceKind;
use switchyard_decision::{AgentView, Resources};

/// Where one task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not submitted yet.
    Future,
    /// Submitted, waiting for parents.
    Blocked,
    /// In the ready queue.
    Queued,
    /// Granted to `agent`; `grant` numbers the grants of this task (1 = first).
    Running { agent: usize, grant: u32 },
    /// Failed an attempt, waiting out the retry backoff.
    BackingOff,
    /// Completed successfully.
    Done,
    /// Failed for good (retries exhausted, or a parent failed for good).
    Failed,
}

/// One task's progress.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub phase: Phase,
    /// Parents not yet completed.
    pub pending_parents: u32,
    /// Tasks that depend on this one.
    pub children: Vec<usize>,
    /// Grants so far (attempts, including ones cut short by a dying agent).
    pub grants: u32,
    /// Failed attempts so far (what the retry policy counts).
    pub failures: u32,
    /// Outcome of the first attempt, once known.
    pub first_ok: Option<bool>,
    /// Virtual time of the first grant, µs.
    pub first_start_us: Option<u64>,
    /// Virtual time of the latest grant, µs.
    pub last_start_us: u64,
    /// Virtual time of the successful completion, µs.
    pub completed_us: Option<u64>,
    /// What the running attempt will do: success, and its actual duration in seconds.
    pub outcome: (bool, f64),
}

impl Run {
    pub fn new(pending_parents: u32) -> Run {
        Run {
            phase: Phase::Future,
            pending_parents,
            children: Vec::new(),
            grants: 0,
            failures: 0,
            first_ok: None,
            first_start_us: None,
            last_start_us: 0,
            completed_us: None,
            outcome: (false, 0.0),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }
}

/// One simulated agent.
#[derive(Debug, Clone)]
pub(crate) struct SimAgent {
    /// Shared with every [`AgentView`] of the agent, so a dispatch round's snapshot copies no
    /// strings.
    pub id: Arc<str>,
    pub type_index: usize,
    pub type_name: Arc<str>,
    pub capacity: Resources,
    pub reserved: Resources,
    pub active: u32,
    pub score: f64,
    pub alive: bool,
    /// Duration multiplier from degradation events (1.0 = healthy).
    pub speed_factor: f64,
    /// Tasks currently granted here.
    pub running: Vec<usize>,
}

impl SimAgent {
    /// The snapshot placement sees, as the optimizer reads it from Redis.
    pub fn view(&self) -> AgentView {
        AgentView {
            agent_id: self.id.clone(),
            agent_type: self.type_name.clone(),
            capacity: self.capacity,
            reserved: self.reserved,
            score: self.score,
            priority_weight: 1.0,
            active_tasks: self.active,
        }
    }

    /// Reserves `required` for `task`, exactly as the grant script does.
    pub fn reserve(&mut self, task: usize, required: &Resources) {
        self.reserved = self.reserved.saturating_add(required);
        self.active += 1;
        self.running.push(task);
    }

    /// Releases what `task` reserved, exactly as the completion script does.
    pub fn release(&mut self, task: usize, required: &Resources) {
        self.reserved = self.reserved.saturating_sub(required);
        self.active = self.active.saturating_sub(1);
        self.running.retain(|&t| t != task);
    }

    /// `Err` naming the kind when more is reserved than the agent has.
    pub fn check_capacity(&self) -> Result<(), String> {
        for kind in ResourceKind::ALL {
            if self.reserved.get(kind) > self.capacity.get(kind) {
                return Err(format!(
                    "agent {} over capacity in {kind}: reserved {} of {}",
                    self.id,
                    self.reserved.get(kind),
                    self.capacity.get(kind)
                ));
            }
        }
        if self.running.is_empty() && !self.reserved.is_zero() {
            return Err(format!(
                "agent {} idle but still reserves {:?}",
                self.id, self.reserved
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> SimAgent {
        SimAgent {
            id: "a-000".into(),
            type_index: 0,
            type_name: "a".into(),
            capacity: Resources {
                cpu: 1000,
                ..Resources::default()
            },
            reserved: Resources::default(),
            active: 0,
            score: 0.5,
            alive: true,
            speed_factor: 1.0,
            running: Vec::new(),
        }
    }

    #[test]
    fn reserve_release_round_trips() {
        let mut a = agent();
        let r = Resources {
            cpu: 400,
            ..Resources::default()
        };
        a.reserve(1, &r);
        a.reserve(2, &r);
        assert_eq!(a.reserved.cpu, 800);
        assert!(a.check_capacity().is_ok());
        a.release(1, &r);
        a.release(2, &r);
        assert!(a.reserved.is_zero() && a.running.is_empty() && a.active == 0);
        assert!(a.check_capacity().is_ok());
    }

    #[test]
    fn over_reservation_is_an_error_not_a_panic() {
        let mut a = agent();
        a.reserve(
            1,
            &Resources {
                cpu: 1001,
                ..Resources::default()
            },
        );
        let err = a.check_capacity().unwrap_err();
        assert!(err.contains("over capacity in cpu"), "{err}");
        a.running.clear();
        a.reserved = Resources {
            cpu: 1,
            ..Resources::default()
        };
        assert!(a.check_capacity().unwrap_err().contains("idle"));
    }
}
