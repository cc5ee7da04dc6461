//! The simulator's mutable state of agents and tasks, and the invariants it checks.

use std::sync::Arc;

use switchyard_decision::resources::ResourceKind;
use switchyard_decision::task_state::initial_state;
use switchyard_decision::{AgentLearning, AgentView, Resources, TaskEvent, TaskState};

/// One task's progress.
///
/// Its lifecycle is the service's own [`TaskState`], moved only through [`TaskState::apply`]
/// (by [`Run::step`]) so the simulator cannot drift from the state machine the Lua scripts
/// implement. What only a simulation needs sits next to it as data: not having arrived yet
/// (`state` is `None`), the agent and grant number of the running attempt, and the back-off
/// deadline of a failed attempt that will be retried.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// `None` until the task arrives.
    pub state: Option<TaskState>,
    /// While `Granted`: the agent running the current attempt, which is grant number `grants`.
    pub agent: Option<usize>,
    /// While a failed attempt waits out its retry back-off: when it re-enters the ready queue,
    /// µs. The task is `Queued` again (a retried attempt is `Requeued`), just not ready yet.
    pub retry_at_us: Option<u64>,
    /// Parents not yet completed.
    pub pending_parents: u32,
    /// Tasks that depend on this one.
    pub children: Vec<usize>,
    /// Grants so far (attempts, including ones cut short by a dying agent).
    pub grants: u32,
    /// Failed attempts so far (what the retry policy counts).
    pub failures: u32,
    /// Agents whose attempts failed: placement proposes them last (as the service does).
    pub failed_agents: Vec<usize>,
    /// Failed attempts that were run again (the retry policy's retries).
    pub retries: u32,
    /// Time limits that ran out: queue (then the task failed) and run (attempts stopped).
    pub queue_timeouts: u32,
    pub run_timeouts: u32,
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
            state: None,
            agent: None,
            retry_at_us: None,
            pending_parents,
            children: Vec::new(),
            grants: 0,
            failures: 0,
            failed_agents: Vec::new(),
            retries: 0,
            queue_timeouts: 0,
            run_timeouts: 0,
            first_ok: None,
            first_start_us: None,
            last_start_us: 0,
            completed_us: None,
            outcome: (false, 0.0),
        }
    }

    /// The task arrives: its first state is the state machine's [`initial_state`].
    pub fn arrive(&mut self, parent_failed: bool) -> Result<TaskState, String> {
        if let Some(state) = self.state {
            return Err(format!("arrived again while {state}"));
        }
        let state = initial_state(self.pending_parents as usize, parent_failed);
        self.state = Some(state);
        Ok(state)
    }

    /// Applies `event` through [`TaskState::apply`]; `Err` says why it does not apply.
    pub fn step(&mut self, event: TaskEvent) -> Result<TaskState, String> {
        let Some(from) = self.state else {
            return Err(format!("event {} before the task arrived", event.name()));
        };
        let next = from.apply(&event).map_err(|e| e.to_string())?;
        self.state = Some(next);
        Ok(next)
    }

    pub fn is(&self, state: TaskState) -> bool {
        self.state == Some(state)
    }

    /// Queued and not waiting out a back-off: what dispatch may grant.
    pub fn is_ready(&self) -> bool {
        self.is(TaskState::Queued) && self.retry_at_us.is_none()
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
    /// What placement has learned about this agent beyond its type; `learned_at_ms` is in
    /// simulated milliseconds.
    pub learned: AgentLearning,
}

impl SimAgent {
    /// The snapshot placement sees at `now_us`, as the optimizer reads it from Redis.
    pub fn view(&self, now_us: u64) -> AgentView {
        AgentView {
            agent_id: self.id.clone(),
            agent_type: self.type_name.clone(),
            capacity: self.capacity,
            reserved: self.reserved,
            score: self.score,
            priority_weight: 1.0,
            active_tasks: self.active,
            learned: self.learned,
            idle_s: self.learned.idle_s(self.active, now_us / 1000),
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
            learned: AgentLearning::default(),
        }
    }

    #[test]
    fn a_run_moves_only_through_the_state_machine() {
        let mut run = Run::new(1);
        let err = run.step(TaskEvent::DependenciesMet).unwrap_err();
        assert!(err.contains("before the task arrived"), "{err}");
        assert_eq!(run.arrive(false), Ok(TaskState::WaitingDependencies));
        assert!(run.arrive(false).unwrap_err().contains("arrived again"));
        let err = run.step(TaskEvent::Granted).unwrap_err();
        assert!(err.contains("granted") && err.contains("waiting"), "{err}");
        assert_eq!(
            run.state,
            Some(TaskState::WaitingDependencies),
            "refused: unchanged"
        );
        for (event, want) in [
            (TaskEvent::DependenciesMet, TaskState::Queued),
            (TaskEvent::Granted, TaskState::Granted),
            (TaskEvent::Requeued, TaskState::Queued),
        ] {
            assert_eq!(run.step(event), Ok(want));
        }
        assert!(run.is_ready());
        run.retry_at_us = Some(5);
        assert!(!run.is_ready(), "backing off is queued but not ready");
    }

    #[test]
    fn a_run_with_a_failed_parent_fails_on_arrival() {
        let mut run = Run::new(2);
        assert_eq!(run.arrive(true), Ok(TaskState::Failed));
        assert!(run.state.is_some_and(TaskState::is_terminal));
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
